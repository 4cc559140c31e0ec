import Testing
@testable import RelayModel
@testable import RelaySMTP
import RelayTestSupport

/// A server reply ClientSession must refuse, by name.
struct HostileReply: CustomTestStringConvertible, Sendable {
    let label: String
    let script: String
    init(_ label: String, _ script: String) { self.label = label; self.script = script }
    var testDescription: String { label }
}

@Suite struct ClientSessionTests {
    func envelope(_ rcpts: [String] = ["a@far.example", "b@far.example"], utf8: Bool = false) -> Envelope {
        var env = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<s@example.test>")!),
                           origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        env.recipients = rcpts.map { Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<\($0)>")!,
                                                       notify: [.failure], originalRecipient: "rfc822;\($0)") }
        env.smtpUTF8 = utf8
        env.ret = .headers
        return env
    }

    func config(_ tls: TLSRequirement, rcpts: [String] = ["a@far.example", "b@far.example"], size: Int = 100) -> ClientSessionConfiguration {
        ClientSessionConfiguration(heloName: "relay.test", tls: tls, envelope: envelope(rcpts), bodySize: size)
    }

    let ehloTLS = "250-mx.far.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-DSN\r\n250 STARTTLS\r\n"
    let ehloNoTLS = "250-mx.far.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"

    @Test("a whole session with STARTTLS and pipelining", arguments: [false, true])
    func fullSessionWithSTARTTLSAndPipelining(byteAtATime: Bool) {
        var h = ClientHarness(config(.required))
        h.server("220 mx.far.example ESMTP\r\n", byteAtATime: byteAtATime)
        #expect(h.commands == ["EHLO relay.test"])
        h.server(ehloTLS, byteAtATime: byteAtATime)
        #expect(h.commands.last == "STARTTLS")
        h.server("220 2.0.0 go ahead\r\n", byteAtATime: byteAtATime)
        #expect(h.tlsRequested == 1)
        h.apply(h.session.tlsEstablished())
        #expect(h.commands.last == "EHLO relay.test")
        h.server(ehloTLS.replacingOccurrences(of: "250 STARTTLS", with: "250 ENHANCEDSTATUSCODES"), byteAtATime: byteAtATime)
        #expect(Array(h.commands.suffix(3)) == [
            "MAIL FROM:<s@example.test> SIZE=100 RET=HDRS",
            "RCPT TO:<a@far.example> NOTIFY=FAILURE ORCPT=rfc822;a@far.example",
            "RCPT TO:<b@far.example> NOTIFY=FAILURE ORCPT=rfc822;b@far.example"], "MAIL and RCPTs in one group")
        h.server("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n", byteAtATime: byteAtATime)
        #expect(h.commands.last == "DATA")
        h.server("354 go\r\n", byteAtATime: byteAtATime)
        #expect(h.bodySent == 1)
        h.server("250 2.0.0 queued as X\r\n", byteAtATime: byteAtATime)
        #expect(h.commands.last == "QUIT")
        guard case .completed(let replies) = h.outcome else {
            Issue.record("\(String(describing: h.outcome))")
            return
        }
        #expect(replies[0]?.code == 250)
        #expect(replies[1]?.code == 550)
        #expect(replies[1]?.enhanced == "5.1.1")
        #expect(h.session.usedTLS)
    }

    @Test func requiredTLSNotOfferedNeverSendsMail() {
        var h = ClientHarness(config(.required))
        h.server("220 hi\r\n" + ehloNoTLS)
        #expect(h.outcome == .failed(.tlsNotOffered))
        #expect(!(h.commands.contains { $0.hasPrefix("MAIL") }))
        #expect(h.commands.last == "QUIT")
    }

    @Test func requiredTLSRefusedOrHELOOnlyServer() {
        var h = ClientHarness(config(.required))
        h.server("220 hi\r\n" + ehloTLS + "454 4.7.0 TLS not available\r\n")
        #expect(h.outcome == .failed(.tlsRefused(Reply(454, "4.7.0", "TLS not available"))))
        #expect(!(h.commands.contains { $0.hasPrefix("MAIL") }))

        var old = ClientHarness(config(.required))
        old.server("220 hi\r\n502 5.5.1 EHLO not implemented\r\n")
        #expect(old.outcome == .failed(.tlsNotOffered), "no HELO fallback when TLS is required")
    }

    @Test func opportunisticFallsBackToPlaintextAndHELO() {
        var h = ClientHarness(config(.opportunistic))
        h.server("220 hi\r\n" + ehloNoTLS)
        #expect(h.commands.contains { $0.hasPrefix("MAIL FROM:<s@example.test>") })
        var old = ClientHarness(config(.opportunistic, rcpts: ["a@far.example"]))
        old.server("220 hi\r\n500 what\r\n")
        #expect(old.commands.last == "HELO relay.test")
        old.server("250 ok\r\n")
        #expect(old.commands.last == "MAIL FROM:<s@example.test>", "no extensions after HELO")
        old.server("250 ok\r\n")
        #expect(old.commands.last == "RCPT TO:<a@far.example>", "no pipelining without the extension")
    }

    @Test func neverLevelDoesNotStartTLS() {
        var h = ClientHarness(config(.never))
        h.server("220 hi\r\n" + ehloTLS)
        #expect(!h.commands.contains("STARTTLS"))
        #expect(h.commands.contains { $0.hasPrefix("MAIL") })
    }

    @Test func bytesInjectedAfterSTARTTLSReplyAreDiscarded() {
        var h = ClientHarness(config(.required))
        h.server("220 hi\r\n" + ehloTLS)
        h.server("220 go ahead\r\n250 2.1.0 fake MAIL ok\r\n")
        h.apply(h.session.tlsEstablished())
        h.server(ehloTLS)
        #expect(h.commands.last!.hasPrefix("RCPT"), "pipelined group sent after the real EHLO")
        h.server("250 ok\r\n250 ok\r\n250 ok\r\n")
        #expect(h.commands.last == "DATA", "the injected 250 was not taken as the MAIL reply")
    }

    @Test func tlsHandshakeFailureIsReported() {
        var h = ClientHarness(config(.required))
        h.server("220 hi\r\n" + ehloTLS + "220 go\r\n")
        h.apply(h.session.tlsFailed(TLSFailure(kind: .hostnameMismatch, detail: "x")))
        #expect(h.outcome == .failed(.tls(TLSFailure(kind: .hostnameMismatch, detail: "x"))))
        #expect(h.closed)
    }

    @Test func greetingAndMailRejections() {
        var h = ClientHarness(config(.opportunistic))
        h.server("421 busy\r\n")
        #expect(h.outcome == .failed(.greeting(Reply(421, nil, "busy"))))

        var m = ClientHarness(config(.opportunistic))
        m.server("220 hi\r\n" + ehloNoTLS + "553 5.7.1 sender refused\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n")
        #expect(m.outcome == .failed(.rejected(Reply(553, "5.7.1", "sender refused"), stage: .mail)))
        #expect(!m.commands.contains("DATA"))
    }

    @Test func allRecipientsRefusedSkipsData() {
        var h = ClientHarness(config(.opportunistic))
        h.server("220 hi\r\n" + ehloNoTLS + "250 ok\r\n450 4.2.0 later\r\n550 5.1.1 unknown\r\n")
        #expect(!h.commands.contains("DATA"))
        guard case .completed(let r) = h.outcome else {
            Issue.record("not completed: \(String(describing: h.outcome))")
            return
        }
        #expect(r[0]?.code == 450)
        #expect(r[1]?.code == 550)
    }

    @Test func dataRefusalAppliesToAcceptedRecipients() {
        var h = ClientHarness(config(.opportunistic))
        h.server("220 hi\r\n" + ehloNoTLS + "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n554 5.6.0 content rejected\r\n")
        guard case .completed(let r) = h.outcome else {
            Issue.record("not completed: \(String(describing: h.outcome))")
            return
        }
        #expect(r[0]?.code == 554)
        #expect(r[1]?.code == 554)
    }

    @Test func sizeAndSMTPUTF8Limits() {
        var big = ClientHarness(config(.opportunistic, size: 5000))
        big.server("220 hi\r\n" + ehloNoTLS)
        #expect(big.outcome == .failed(.messageTooBig(limit: 1000)))
        var cfg = config(.opportunistic)
        cfg.envelope.smtpUTF8 = true
        var u = ClientHarness(cfg)
        u.server("220 hi\r\n" + ehloNoTLS)
        #expect(u.outcome == .failed(.needsSMTPUTF8))
        #expect(!(u.commands.contains { $0.hasPrefix("MAIL") }))
    }

    static let hostile: [HostileReply] = [
        .init("bad code", "220 hi\r\n" + "999 what\r\n"),
        .init("code changes mid reply", "220 hi\r\n250-a\r\n251 b\r\n"),
        .init("no digits", "hello there\r\n"),
        .init("overlong line", "220 " + String(repeating: "x", count: 5000) + "\r\n"),
        .init("overlong without newline", String(repeating: "2", count: 5000)),
        .init("too many lines", "220 hi\r\n" + String(repeating: "250-x\r\n", count: 300)),
        .init("control char", "220 hi\u{1}\r\n"),
        .init("bad separator", "220xhi\r\n"),
    ]

    @Test("a hostile reply is a protocol error and no MAIL is sent", arguments: hostile, [false, true])
    func hostileReplies(_ reply: HostileReply, byteAtATime: Bool) {
        var h = ClientHarness(config(.opportunistic))
        h.server(reply.script, byteAtATime: byteAtATime)
        guard case .failed(let f)? = h.outcome else {
            Issue.record("\(reply.label): \(String(describing: h.outcome))")
            return
        }
        if case .protocolError = f {} else { Issue.record("\(reply.label): \(f)") }
        #expect(!h.commands.contains { $0.hasPrefix("MAIL") }, "\(reply.label)")
    }

    @Test func multiLineReplySplitAnywhereParsesTheSame() throws {
        let text = "250-mx.example greets you\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 2.0.0 DSN\r\n"
        var whole = ReplyParser()
        let expected = try whole.feed(Array(text.utf8))
        #expect(expected.count == 1)
        for split in 1..<text.utf8.count {
            var p = ReplyParser()
            let bytes = Array(text.utf8)
            let a = try p.feed(Array(bytes[..<split]))
            let b = try p.feed(Array(bytes[split...]))
            #expect(a + b == expected, "split at \(split)")
        }
        #expect(ClientSession.parseExtensions(expected[0])["SIZE"] == "10240000")
    }

    @Test func authOnlyOverTLS() {
        var cfg = config(.opportunistic)
        cfg.credentials = Credentials(username: "u", password: Array("p".utf8))
        var h = ClientHarness(cfg)
        h.server("220 hi\r\n" + ehloNoTLS)
        #expect(h.outcome == .failed(.tlsNotOffered))
        #expect(!(h.commands.contains { $0.hasPrefix("AUTH") }))
        cfg.implicitTLS = true
        var tls = ClientHarness(cfg)
        tls.server("220 hi\r\n" + ehloNoTLS)
        #expect(tls.commands.last == "AUTH PLAIN AHUAcA==")
        tls.server("235 ok\r\n")
        #expect(tls.commands.contains { $0.hasPrefix("MAIL FROM") })
    }

    @Test func connectionLossAndTimeout() {
        var h = ClientHarness(config(.opportunistic))
        h.server("220 hi\r\n")
        h.apply(h.session.connectionClosed())
        #expect(h.outcome == .failed(.connectionLost(stage: .ehlo)))
        var t = ClientHarness(config(.opportunistic))
        t.apply(t.session.timedOut())
        #expect(t.outcome == .failed(.timeout(stage: .greeting)))
    }
}

@Suite struct ClientSessionInjectionTests {
    @Test func garbageAfterSTARTTLSReplyInSameReadIsNotParsed() {
        var env = Envelope(sender: .null, origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<a@b.test>")!)]
        var h = ClientHarness(ClientSessionConfiguration(heloName: "r.test", tls: .required, envelope: env, bodySize: 1))
        h.server("220 hi\r\n250-x\r\n250 STARTTLS\r\n")
        h.server("220 go\r\n\u{15}\u{3}\u{3} not TLS at all\r\n")
        #expect(h.tlsRequested == 1, "the handshake starts; the garbage is left for TLS to reject")
        #expect(h.outcome == nil)
    }
}

extension ClientSessionInjectionTests {
    @Test func connectionLostDuringHandshakeIsATLSFailure() {
        var env = Envelope(sender: .null, origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<a@b.test>")!)]
        var h = ClientHarness(ClientSessionConfiguration(heloName: "r.test", tls: .opportunistic, envelope: env, bodySize: 1))
        h.server("220 hi\r\n250-x\r\n250 STARTTLS\r\n220 go\r\n")
        h.apply(h.session.connectionClosed())
        guard case .failed(.tls(let f))? = h.outcome else {
            Issue.record("\(String(describing: h.outcome))")
            return
        }
        #expect(f.kind == .peerClosed)
        #expect(ClientFailure.tls(f).isTLSPolicyFailure)
    }
}

@Suite struct ClientSessionReuseTests {
    func config(keepAlive: Bool) -> ClientSessionConfiguration {
        var env = Envelope(sender: .null, origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<a@b.test>")!)]
        return ClientSessionConfiguration(heloName: "r.test", tls: .required, envelope: env, bodySize: 10, keepAlive: keepAlive)
    }

    @Test func keepAliveEndsWithoutQuitAndReuseStartsWithRSET() {
        var first = ClientHarness(config(keepAlive: true))
        first.server("220 hi\r\n250-x\r\n250-PIPELINING\r\n250 STARTTLS\r\n220 go\r\n")
        first.apply(first.session.tlsEstablished())
        first.server("250-x\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n")
        #expect(!first.commands.contains("QUIT"), "a kept connection is not closed")
        #expect(!first.closed)
        #expect(first.session.endedReusable)
        guard case .completed? = first.outcome else {
            Issue.record("not completed: \(String(describing: first.outcome))")
            return
        }

        var second = ClientHarness(config(keepAlive: true))
        second.session = ClientSession(configuration: config(keepAlive: true), reusing: first.session.extensions, tlsActive: true)
        second.apply(second.session.start())
        #expect(second.commands == ["RSET", "MAIL FROM:<>", "RCPT TO:<a@b.test>"],
                "RSET, MAIL and RCPT in one group with the kept PIPELINING")
        second.server("250 ok\r\n")
        #expect(second.commands.count == 3, "nothing more until MAIL and RCPT are answered")
        second.server("250 ok\r\n250 ok\r\n")
        #expect(second.commands.last == "DATA")
        second.server("354 go\r\n250 queued\r\n")
        guard case .completed? = second.outcome else {
            Issue.record("not completed: \(String(describing: second.outcome))")
            return
        }
        #expect(second.session.usedTLS)

        var refused = ClientHarness(config(keepAlive: true))
        refused.session = ClientSession(configuration: config(keepAlive: true), reusing: [:], tlsActive: true)
        refused.apply(refused.session.start())
        refused.server("421 4.4.2 idle too long\r\n")
        #expect(refused.outcome == .failed(.keptConnectionLost))

        // Pipelined: a refused RSET, or the connection gone before its
        // reply, is a lost kept connection (retried on a fresh one), and
        // the replies queued behind it change nothing.
        let kept = ["PIPELINING": ""]
        var refusedPipelined = ClientHarness(config(keepAlive: true))
        refusedPipelined.session = ClientSession(configuration: config(keepAlive: true), reusing: kept, tlsActive: true)
        refusedPipelined.apply(refusedPipelined.session.start())
        #expect(refusedPipelined.commands.first == "RSET" && refusedPipelined.commands.count == 3)
        refusedPipelined.server("421 4.4.2 idle too long\r\n250 ok\r\n250 ok\r\n")
        #expect(refusedPipelined.outcome == .failed(.keptConnectionLost))
        #expect(!refusedPipelined.commands.contains("DATA"))

        var dropped = ClientHarness(config(keepAlive: true))
        dropped.session = ClientSession(configuration: config(keepAlive: true), reusing: kept, tlsActive: true)
        dropped.apply(dropped.session.start())
        dropped.apply(dropped.session.connectionClosed())
        #expect(dropped.outcome == .failed(.keptConnectionLost))

        var silent = ClientHarness(config(keepAlive: true))
        silent.session = ClientSession(configuration: config(keepAlive: true), reusing: kept, tlsActive: true)
        silent.apply(silent.session.start())
        silent.apply(silent.session.timedOut())
        #expect(silent.outcome == .failed(.timeout(stage: .rset)), "a timeout before the RSET's reply is the RSET's")

        // After the RSET's 250, a drop is an ordinary lost connection at MAIL.
        var late = ClientHarness(config(keepAlive: true))
        late.session = ClientSession(configuration: config(keepAlive: true), reusing: kept, tlsActive: true)
        late.apply(late.session.start())
        late.server("250 ok\r\n")
        late.apply(late.session.connectionClosed())
        #expect(late.outcome == .failed(.connectionLost(stage: .mail)))

        // Refused before MAIL on a kept connection: no RSET, just QUIT.
        var tooBig = ClientHarness(config(keepAlive: true))
        tooBig.session = ClientSession(configuration: config(keepAlive: true), reusing: ["PIPELINING": "", "SIZE": "5"],
                                       tlsActive: true)
        tooBig.apply(tooBig.session.start())
        #expect(tooBig.commands == ["QUIT"])
        #expect(tooBig.outcome == .failed(.messageTooBig(limit: 5)))
    }

    @Test func withoutKeepAliveTheSessionQuits() {
        var h = ClientHarness(config(keepAlive: false))
        h.server("220 hi\r\n250-x\r\n250 STARTTLS\r\n220 go\r\n")
        h.apply(h.session.tlsEstablished())
        h.server("250 x\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n")
        #expect(h.commands.last == "QUIT")
        #expect(!h.session.endedReusable)
    }
}
