import XCTest
@testable import RelayCore

/// Plays a scripted server against ClientSession.
struct ClientHarness {
    var session: ClientSession
    var sent: [String] = []
    var outcome: ClientOutcome?
    var tlsRequested = 0
    var bodySent = 0
    var closed = false

    init(_ config: ClientSessionConfiguration) { session = ClientSession(configuration: config) }

    mutating func apply(_ actions: [ClientAction]) {
        for a in actions {
            switch a {
            case .send(let bytes): sent.append(String(decoding: bytes, as: UTF8.self))
            case .startTLS: tlsRequested += 1
            case .sendBody: bodySent += 1
            case .close: closed = true
            case .finished(let o): outcome = o
            }
        }
    }

    mutating func server(_ text: String, byteAtATime: Bool = false) {
        if byteAtATime {
            for b in Array(text.utf8) { apply(session.receive([b])) }
        } else {
            apply(session.receive(Array(text.utf8)))
        }
    }

    var commands: [String] { sent.flatMap { $0.split(separator: "\r\n").map(String.init) } }
}

final class ClientSessionTests: XCTestCase {
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

    func testFullSessionWithSTARTTLSAndPipelining() {
        for byteAtATime in [false, true] {
            var h = ClientHarness(config(.required))
            h.server("220 mx.far.example ESMTP\r\n", byteAtATime: byteAtATime)
            XCTAssertEqual(h.commands, ["EHLO relay.test"])
            h.server(ehloTLS, byteAtATime: byteAtATime)
            XCTAssertEqual(h.commands.last, "STARTTLS")
            h.server("220 2.0.0 go ahead\r\n", byteAtATime: byteAtATime)
            XCTAssertEqual(h.tlsRequested, 1)
            h.apply(h.session.tlsEstablished())
            XCTAssertEqual(h.commands.last, "EHLO relay.test")
            h.server(ehloTLS.replacingOccurrences(of: "250 STARTTLS", with: "250 ENHANCEDSTATUSCODES"), byteAtATime: byteAtATime)
            XCTAssertEqual(Array(h.commands.suffix(3)), [
                "MAIL FROM:<s@example.test> SIZE=100 RET=HDRS",
                "RCPT TO:<a@far.example> NOTIFY=FAILURE ORCPT=rfc822;a@far.example",
                "RCPT TO:<b@far.example> NOTIFY=FAILURE ORCPT=rfc822;b@far.example"], "MAIL and RCPTs in one group")
            h.server("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n", byteAtATime: byteAtATime)
            XCTAssertEqual(h.commands.last, "DATA")
            h.server("354 go\r\n", byteAtATime: byteAtATime)
            XCTAssertEqual(h.bodySent, 1)
            h.server("250 2.0.0 queued as X\r\n", byteAtATime: byteAtATime)
            XCTAssertEqual(h.commands.last, "QUIT")
            guard case .completed(let replies) = h.outcome else { return XCTFail("\(String(describing: h.outcome))") }
            XCTAssertEqual(replies[0]?.code, 250)
            XCTAssertEqual(replies[1]?.code, 550)
            XCTAssertEqual(replies[1]?.enhanced, "5.1.1")
            XCTAssertTrue(h.session.usedTLS)
        }
    }

    func testRequiredTLSNotOfferedNeverSendsMail() {
        var h = ClientHarness(config(.required))
        h.server("220 hi\r\n" + ehloNoTLS)
        XCTAssertEqual(h.outcome, .failed(.tlsNotOffered))
        XCTAssertFalse(h.commands.contains { $0.hasPrefix("MAIL") })
        XCTAssertEqual(h.commands.last, "QUIT")
    }

    func testRequiredTLSRefusedOrHELOOnlyServer() {
        var h = ClientHarness(config(.required))
        h.server("220 hi\r\n" + ehloTLS + "454 4.7.0 TLS not available\r\n")
        XCTAssertEqual(h.outcome, .failed(.tlsRefused(Reply(454, "4.7.0", "TLS not available"))))
        XCTAssertFalse(h.commands.contains { $0.hasPrefix("MAIL") })

        var old = ClientHarness(config(.required))
        old.server("220 hi\r\n502 5.5.1 EHLO not implemented\r\n")
        XCTAssertEqual(old.outcome, .failed(.tlsNotOffered), "no HELO fallback when TLS is required")
    }

    func testOpportunisticFallsBackToPlaintextAndHELO() {
        var h = ClientHarness(config(.opportunistic))
        h.server("220 hi\r\n" + ehloNoTLS)
        XCTAssertTrue(h.commands.contains { $0.hasPrefix("MAIL FROM:<s@example.test>") })
        var old = ClientHarness(config(.opportunistic, rcpts: ["a@far.example"]))
        old.server("220 hi\r\n500 what\r\n")
        XCTAssertEqual(old.commands.last, "HELO relay.test")
        old.server("250 ok\r\n")
        XCTAssertEqual(old.commands.last, "MAIL FROM:<s@example.test>", "no extensions after HELO")
        old.server("250 ok\r\n")
        XCTAssertEqual(old.commands.last, "RCPT TO:<a@far.example>", "no pipelining without the extension")
    }

    func testNeverLevelDoesNotStartTLS() {
        var h = ClientHarness(config(.never))
        h.server("220 hi\r\n" + ehloTLS)
        XCTAssertFalse(h.commands.contains("STARTTLS"))
        XCTAssertTrue(h.commands.contains { $0.hasPrefix("MAIL") })
    }

    func testBytesInjectedAfterSTARTTLSReplyAreDiscarded() {
        var h = ClientHarness(config(.required))
        h.server("220 hi\r\n" + ehloTLS)
        h.server("220 go ahead\r\n250 2.1.0 fake MAIL ok\r\n")
        h.apply(h.session.tlsEstablished())
        h.server(ehloTLS)
        XCTAssertTrue(h.commands.last!.hasPrefix("RCPT"), "pipelined group sent after the real EHLO")
        h.server("250 ok\r\n250 ok\r\n250 ok\r\n")
        XCTAssertEqual(h.commands.last, "DATA", "the injected 250 was not taken as the MAIL reply")
    }

    func testTLSHandshakeFailureIsReported() {
        var h = ClientHarness(config(.required))
        h.server("220 hi\r\n" + ehloTLS + "220 go\r\n")
        h.apply(h.session.tlsFailed(TLSFailure(kind: .hostnameMismatch, detail: "x")))
        XCTAssertEqual(h.outcome, .failed(.tls(TLSFailure(kind: .hostnameMismatch, detail: "x"))))
        XCTAssertTrue(h.closed)
    }

    func testGreetingAndMailRejections() {
        var h = ClientHarness(config(.opportunistic))
        h.server("421 busy\r\n")
        XCTAssertEqual(h.outcome, .failed(.greeting(Reply(421, nil, "busy"))))

        var m = ClientHarness(config(.opportunistic))
        m.server("220 hi\r\n" + ehloNoTLS + "553 5.7.1 sender refused\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n")
        XCTAssertEqual(m.outcome, .failed(.rejected(Reply(553, "5.7.1", "sender refused"), stage: .mail)))
        XCTAssertFalse(m.commands.contains("DATA"))
    }

    func testAllRecipientsRefusedSkipsData() {
        var h = ClientHarness(config(.opportunistic))
        h.server("220 hi\r\n" + ehloNoTLS + "250 ok\r\n450 4.2.0 later\r\n550 5.1.1 unknown\r\n")
        XCTAssertFalse(h.commands.contains("DATA"))
        guard case .completed(let r) = h.outcome else { return XCTFail() }
        XCTAssertEqual(r[0]?.code, 450)
        XCTAssertEqual(r[1]?.code, 550)
    }

    func testDataRefusalAppliesToAcceptedRecipients() {
        var h = ClientHarness(config(.opportunistic))
        h.server("220 hi\r\n" + ehloNoTLS + "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n554 5.6.0 content rejected\r\n")
        guard case .completed(let r) = h.outcome else { return XCTFail() }
        XCTAssertEqual(r[0]?.code, 554)
        XCTAssertEqual(r[1]?.code, 554)
    }

    func testSizeAndSMTPUTF8Limits() {
        var big = ClientHarness(config(.opportunistic, size: 5000))
        big.server("220 hi\r\n" + ehloNoTLS)
        XCTAssertEqual(big.outcome, .failed(.messageTooBig(limit: 1000)))
        var cfg = config(.opportunistic)
        cfg.envelope.smtpUTF8 = true
        var u = ClientHarness(cfg)
        u.server("220 hi\r\n" + ehloNoTLS)
        XCTAssertEqual(u.outcome, .failed(.needsSMTPUTF8))
        XCTAssertFalse(u.commands.contains { $0.hasPrefix("MAIL") })
    }

    func testHostileReplies() {
        let hostile: [(String, String)] = [
            ("bad code", "220 hi\r\n" + "999 what\r\n"),
            ("code changes mid reply", "220 hi\r\n250-a\r\n251 b\r\n"),
            ("no digits", "hello there\r\n"),
            ("overlong line", "220 " + String(repeating: "x", count: 5000) + "\r\n"),
            ("overlong without newline", String(repeating: "2", count: 5000)),
            ("too many lines", "220 hi\r\n" + String(repeating: "250-x\r\n", count: 300)),
            ("control char", "220 hi\u{1}\r\n"),
            ("bad separator", "220xhi\r\n"),
        ]
        for (label, script) in hostile {
            for byteAtATime in [false, true] {
                var h = ClientHarness(config(.opportunistic))
                h.server(script, byteAtATime: byteAtATime)
                guard case .failed(let f)? = h.outcome else { XCTFail("\(label): \(String(describing: h.outcome))"); continue }
                if case .protocolError = f {} else { XCTFail("\(label): \(f)") }
                XCTAssertFalse(h.commands.contains { $0.hasPrefix("MAIL") }, label)
            }
        }
    }

    func testMultiLineReplySplitAnywhereParsesTheSame() throws {
        let text = "250-mx.example greets you\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 2.0.0 DSN\r\n"
        var whole = ReplyParser()
        let expected = try whole.feed(Array(text.utf8))
        XCTAssertEqual(expected.count, 1)
        for split in 1..<text.utf8.count {
            var p = ReplyParser()
            let bytes = Array(text.utf8)
            let a = try p.feed(Array(bytes[..<split]))
            let b = try p.feed(Array(bytes[split...]))
            XCTAssertEqual(a + b, expected, "split at \(split)")
        }
        XCTAssertEqual(ClientSession.parseExtensions(expected[0])["SIZE"], "10240000")
    }

    func testAuthOnlyOverTLS() {
        var cfg = config(.opportunistic)
        cfg.credentials = Credentials(username: "u", password: Array("p".utf8))
        var h = ClientHarness(cfg)
        h.server("220 hi\r\n" + ehloNoTLS)
        XCTAssertEqual(h.outcome, .failed(.tlsNotOffered))
        XCTAssertFalse(h.commands.contains { $0.hasPrefix("AUTH") })
        cfg.implicitTLS = true
        var tls = ClientHarness(cfg)
        tls.server("220 hi\r\n" + ehloNoTLS)
        XCTAssertEqual(tls.commands.last, "AUTH PLAIN AHUAcA==")
        tls.server("235 ok\r\n")
        XCTAssertTrue(tls.commands.contains { $0.hasPrefix("MAIL FROM") })
    }

    func testConnectionLossAndTimeout() {
        var h = ClientHarness(config(.opportunistic))
        h.server("220 hi\r\n")
        h.apply(h.session.connectionClosed())
        XCTAssertEqual(h.outcome, .failed(.connectionLost(stage: .ehlo)))
        var t = ClientHarness(config(.opportunistic))
        t.apply(t.session.timedOut())
        XCTAssertEqual(t.outcome, .failed(.timeout(stage: .greeting)))
    }
}

final class ClientSessionInjectionTests: XCTestCase {
    func testGarbageAfterSTARTTLSReplyInSameReadIsNotParsed() {
        var env = Envelope(sender: .null, origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<a@b.test>")!)]
        var h = ClientHarness(ClientSessionConfiguration(heloName: "r.test", tls: .required, envelope: env, bodySize: 1))
        h.server("220 hi\r\n250-x\r\n250 STARTTLS\r\n")
        h.server("220 go\r\n\u{15}\u{3}\u{3} not TLS at all\r\n")
        XCTAssertEqual(h.tlsRequested, 1, "the handshake starts; the garbage is left for TLS to reject")
        XCTAssertNil(h.outcome)
    }
}

extension ClientSessionInjectionTests {
    func testConnectionLostDuringHandshakeIsATLSFailure() {
        var env = Envelope(sender: .null, origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<a@b.test>")!)]
        var h = ClientHarness(ClientSessionConfiguration(heloName: "r.test", tls: .opportunistic, envelope: env, bodySize: 1))
        h.server("220 hi\r\n250-x\r\n250 STARTTLS\r\n220 go\r\n")
        h.apply(h.session.connectionClosed())
        guard case .failed(.tls(let f))? = h.outcome else { return XCTFail("\(String(describing: h.outcome))") }
        XCTAssertEqual(f.kind, .peerClosed)
        XCTAssertTrue(ClientFailure.tls(f).isTLSPolicyFailure)
    }
}

final class ClientSessionReuseTests: XCTestCase {
    func config(keepAlive: Bool) -> ClientSessionConfiguration {
        var env = Envelope(sender: .null, origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<a@b.test>")!)]
        return ClientSessionConfiguration(heloName: "r.test", tls: .required, envelope: env, bodySize: 10, keepAlive: keepAlive)
    }

    func testKeepAliveEndsWithoutQuitAndReuseStartsWithRSET() {
        var first = ClientHarness(config(keepAlive: true))
        first.server("220 hi\r\n250-x\r\n250-PIPELINING\r\n250 STARTTLS\r\n220 go\r\n")
        first.apply(first.session.tlsEstablished())
        first.server("250-x\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n")
        XCTAssertFalse(first.commands.contains("QUIT"), "a kept connection is not closed")
        XCTAssertFalse(first.closed)
        XCTAssertTrue(first.session.endedReusable)
        guard case .completed? = first.outcome else { return XCTFail() }

        var second = ClientHarness(config(keepAlive: true))
        second.session = ClientSession(configuration: config(keepAlive: true), reusing: first.session.extensions, tlsActive: true)
        second.apply(second.session.start())
        XCTAssertEqual(second.commands, ["RSET"])
        second.server("250 ok\r\n")
        XCTAssertEqual(Array(second.commands.suffix(2)), ["MAIL FROM:<>", "RCPT TO:<a@b.test>"], "pipelined with the kept extensions")
        second.server("250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n")
        guard case .completed? = second.outcome else { return XCTFail() }
        XCTAssertTrue(second.session.usedTLS)

        var refused = ClientHarness(config(keepAlive: true))
        refused.session = ClientSession(configuration: config(keepAlive: true), reusing: [:], tlsActive: true)
        refused.apply(refused.session.start())
        refused.server("421 4.4.2 idle too long\r\n")
        XCTAssertEqual(refused.outcome, .failed(.keptConnectionLost))
    }

    func testWithoutKeepAliveTheSessionQuits() {
        var h = ClientHarness(config(keepAlive: false))
        h.server("220 hi\r\n250-x\r\n250 STARTTLS\r\n220 go\r\n")
        h.apply(h.session.tlsEstablished())
        h.server("250 x\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n")
        XCTAssertEqual(h.commands.last, "QUIT")
        XCTAssertFalse(h.session.endedReusable)
    }
}
