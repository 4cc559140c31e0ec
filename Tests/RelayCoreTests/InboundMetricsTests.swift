import Testing
@testable import RelaySMTP
@testable import RelayCore
@testable import RelayMetrics
import RelayTestSupport

/// Which refusals count in relayd_messages_refused_total, driven through
/// the real ServerSession with the SessionHarness: each refusal reply is
/// judged as InboundSession judges it.
@Suite struct InboundMetricsTests {
    static func config(requireTLS: Bool = false, requireAuth: Bool = false) -> ServerSessionConfiguration {
        ServerSessionConfiguration(hostname: "relay.test", startTLSAvailable: true, requireTLS: requireTLS,
                                   requireAuth: requireAuth, authAvailable: true, clientIsTrusted: false,
                                   relayDomains: ["example.org"], requireTLSSenderDomains: [], maxMessageSize: 100,
                                   maxRecipients: 10, maxErrors: 50, maxAuthFailures: 3, maxHops: 30)
    }

    /// Sends each line and returns the reasons the refusals count under.
    func reasons(_ config: ServerSessionConfiguration, _ lines: [String], store: StoreResult? = nil) -> [RelayMetrics.RefusalReason?] {
        var h = SessionHarness(config)
        h.storeResult = store
        var out: [RelayMetrics.RefusalReason?] = []
        for line in lines {
            let before = h.output.count
            h.send(line)
            let text = String(decoding: h.output[before...], as: UTF8.self)
            guard let last = text.split(separator: "\r\n").last, let code = Int(last.prefix(3)), code >= 400 else { continue }
            let parts = last.split(separator: " ", maxSplits: 2)
            let reply = Reply(code, parts.count > 1 ? String(parts[1]) : nil, parts.count > 2 ? String(parts[2]) : "")
            out.append(RelayMetrics.RefusalReason.of(reply, verb: h.session.lastVerb))
        }
        return out
    }

    @Test func refusalsOfAMessageCountUnderTheirReason() {
        #expect(reasons(Self.config(), ["EHLO c\r\n", "MAIL FROM:<a@b.test>\r\n", "RCPT TO:<x@elsewhere.test>\r\n"]) == [.relayDenied])
        #expect(reasons(Self.config(), ["EHLO c\r\n", "MAIL FROM:<a@b.test> SIZE=1000\r\n"]) == [.size])
        #expect(reasons(Self.config(), ["EHLO c\r\n", "MAIL FROM:<a@@b>\r\n"]) == [.syntax])
        #expect(reasons(Self.config(requireTLS: true), ["EHLO c\r\n", "MAIL FROM:<a@b.test>\r\n"]) == [.tlsRequired])
        #expect(reasons(Self.config(requireAuth: true), ["EHLO c\r\n", "STARTTLS\r\n", "EHLO c\r\n", "MAIL FROM:<a@b.test>\r\n"])
                == [.authRequired])
        #expect(reasons(Self.config(), ["EHLO c\r\n", "MAIL FROM:<a@b.test>\r\n", "RCPT TO:<x@example.org>\r\n", "DATA\r\n",
                                        "Subject: x\r\n\r\nbody\r\n.\r\n"], store: .failed(reason: "disk")) == [.storage])
        #expect(reasons(Self.config(), ["EHLO c\r\n", "DATA\r\n"]) == [.syntax], "503 bad sequence is a protocol error")
    }

    @Test func otherRefusalsAreNoMessageRefused() {
        // An unknown command, a bad AUTH: refused, but no message was.
        #expect(reasons(Self.config(), ["EHLO c\r\n", "FOO\r\n"]) == [nil])
        #expect(reasons(Self.config(), ["EHLO c\r\n", "STARTTLS\r\n", "EHLO c\r\n", "AUTH PLAIN AGFAAHdyb25n\r\n"]) == [nil])
        #expect(RelayMetrics.RefusalReason.of(Reply(250, "2.0.0", "Ok"), verb: "MAIL") == nil)
        #expect(RelayMetrics.RefusalReason.of(Reply(554, "5.4.6", "too many hops"), verb: "DATA") == .other)
    }

    @Test func countedRefusalsShowInTheExposition() {
        let m = RelayMetrics(listeners: ["127.0.0.1:25"], build: .init(version: "t", openssl: "t", cares: "t"))
        for r in reasons(Self.config(), ["EHLO c\r\n", "MAIL FROM:<a@b.test>\r\n", "RCPT TO:<x@elsewhere.test>\r\n",
                                          "RCPT TO:<y@elsewhere.test>\r\n"]) {
            if let r { m.messageRefused(r) }
        }
        let text = String(decoding: m.render(), as: UTF8.self)
        #expect(text.contains("relayd_messages_refused_total{reason=\"relay_denied\"} 2\n"))
    }
}
