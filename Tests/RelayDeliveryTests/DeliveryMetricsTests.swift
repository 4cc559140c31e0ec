import Dispatch
import Foundation
import Logging
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayPolicy
@testable import RelayTLS
@testable import RelayDNS
@testable import RelayQueue
@testable import RelayConfig
@testable import RelayDelivery
@testable import RelayTLSRPT
@testable import RelayMetrics
import RelayTestSupport

/// What a delivery attempt counts in the Prometheus metrics.
@Suite struct DeliveryMetricsTests {
    static let build = RelayMetrics.BuildInfo(version: "test", openssl: "test", cares: "test")

    func samples(_ m: RelayMetrics) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in String(decoding: m.render(), as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " ") else { continue }
            out[String(line[..<space])] = Double(line[line.index(after: space)...])
        }
        return out
    }

    /// One attempt for user@`domain` with DNS faked (no sockets).
    func attempt(_ domain: String, dns: FakeResolver, metrics: RelayMetrics) async throws -> DomainDeliveryReport {
        let config = try configForTests("""
            [outbound]
            default_level = "opportunistic"
            """, spool: "spool")
        let now = 1_800_000_000
        var env = DeliveryEnvironment(config: config, engine: OutboundSettings.engine(config), mx: MXResolver(resolver: dns),
                                      dns: dns, tlsContext: try makeClientContext(), logger: Logger(label: "test"),
                                      queue: DispatchQueue(label: "test.attempt"), now: { now })
        env.metrics = metrics
        var envelope = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<s@example.test>")!),
                                origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        envelope.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<user@\(domain)>")!)]
        let message = QueuedMessage(id: "TESTID", arrival: now - 10, envelope: envelope, body: Array("x\r\n".utf8))
        return await withCheckedContinuation { done in
            DomainDelivery(env: env, message: SpooledMessage(message), domain: domain, recipientIndexes: [0]).run { done.resume(returning: $0) }
        }
    }

    @Test func concludingAttemptsAreCountedByOutcomeAndTimed() async throws {
        let metrics = RelayMetrics(listeners: [], build: Self.build)
        let dns = FakeResolver()
        dns.set("nullmx.test", .mx, [.mx(preference: 0, exchange: "")])
        dns.setRcode("servfail.test", .mx, .servFail)
        _ = try await attempt("nullmx.test", dns: dns, metrics: metrics)
        _ = try await attempt("servfail.test", dns: dns, metrics: metrics)
        _ = try await attempt("servfail.test", dns: dns, metrics: metrics)
        let s = samples(metrics)
        #expect(s[#"relayd_delivery_attempts_total{result="bounced"}"#] == 1)
        #expect(s[#"relayd_delivery_attempts_total{result="deferred"}"#] == 2)
        #expect(s[#"relayd_delivery_attempts_total{result="delivered"}"#] == 0)
        #expect(s["relayd_delivery_duration_seconds_count"] == 3)
        // No MX session was had: nothing counted per session.
        let sessions = s.filter { $0.key.hasPrefix("relayd_outbound_tls_sessions_total") }.values.reduce(0, +)
        #expect(sessions == 0)
    }

    @Test func aMixedAttemptCountsOnceUnderEachDisposition() {
        #expect(DomainDelivery.attemptResults(.mixed(delivered: 2, deferred: 0, bounced: 1, dropped: 0)) == [.delivered, .bounced])
        #expect(DomainDelivery.attemptResults(.fallback(status: "4.7.10")) == [.fallback])
        #expect(DomainDelivery.attemptResults(.nextAddress(status: "4.4.1")).isEmpty)
        #expect(DomainDelivery.attemptResults(.plaintextRetry(status: "4.7.5")).isEmpty)
        #expect(DomainDelivery.attemptResults(.dropped) == [.dropped])
    }

    static func info(_ verification: TLSVerification, dane: Bool = false) -> TLSSessionInfo {
        TLSSessionInfo(protocolVersion: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", cipherBits: 256, forwardSecret: true,
                       peerChainLength: 1, verification: verification, resumed: false,
                       daneMatch: dane ? TLSARecord(usage: 3, selector: 1, matchingType: 1, data: Array(repeating: 1, count: 32)) : nil)
    }

    @Test func aSessionsTLSOutcome() {
        let ok = ClientOutcome.completed([0: Reply(250, "2.0.0", "ok")])
        func run(_ outcome: ClientOutcome, _ tls: TLSSessionInfo?) -> ClientRunResult {
            ClientRunResult(outcome: outcome, tls: tls, tlsFailure: nil)
        }
        #expect(DomainDelivery.tlsOutcome(run(ok, Self.info(.trusted, dane: true))) == .daneVerified)
        #expect(DomainDelivery.tlsOutcome(run(ok, Self.info(.trusted))) == .pkixVerified)
        #expect(DomainDelivery.tlsOutcome(run(ok, Self.info(.failed(TLSFailure(kind: .certificateUntrusted, detail: "self-signed"))))) == .unauthenticated)
        #expect(DomainDelivery.tlsOutcome(run(ok, nil)) == .plaintext)
        #expect(DomainDelivery.tlsOutcome(run(.failed(.tlsNotOffered), nil)) == .plaintext)
        #expect(DomainDelivery.tlsOutcome(run(.failed(.tls(TLSFailure(kind: .hostnameMismatch, detail: "x"))), nil)) == .failed)
        #expect(DomainDelivery.tlsOutcome(run(.failed(.connectFailed("refused")), nil)) == nil)
        #expect(DomainDelivery.tlsOutcome(run(.failed(.keptConnectionLost), nil)) == nil)
    }

    @Test func everyLayerAndResultTypeHasItsLabel() {
        let layers = PolicyLayer.allCases.map { DomainDelivery.metricsLayer($0).rawValue }
        #expect(layers == ["operator", "dane", "mta_sts", "learned", "default", "message"])
    }
}
