import Testing
import XCTest
@testable import RelayCore

/// Drives a ServerSession like the real server would, resolving its
/// requests at once: TLS "succeeds", AUTH checks a fixed password, stores
/// are recorded.
struct SessionHarness {
    var session: ServerSession
    var output: [UInt8] = []
    var stored: [(Envelope, [UInt8])] = []
    var closed = false
    var tlsStarted = 0
    var authAttempts: [Credentials] = []
    var storeResult: StoreResult?
    var discarded: [Int] = []

    init(_ config: ServerSessionConfiguration, client: String = "192.0.2.10") {
        session = ServerSession(configuration: config, clientAddress: client)
        run(session.start())
    }

    mutating func run(_ actions: [ServerAction]) {
        var queue = actions
        while !queue.isEmpty {
            let action = queue.removeFirst()
            switch action {
            case .send(let reply): output += reply.wire
            case .close: closed = true
            case .startTLS:
                tlsStarted += 1
                queue += session.tlsEstablished(TLSState(version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", bits: 256))
            case .authenticate(let c, _):
                authAttempts.append(c)
                queue += session.authenticationFinished(username: c.username, success: c.password == Array("secret".utf8))
            case .discarded(let bytes, _):
                discarded.append(bytes)
            case .store(let env, let body):
                stored.append((env, body))
                queue += session.storeFinished(storeResult ?? .queued(id: "Q\(stored.count)"))
            }
        }
    }

    mutating func send(_ text: String) { run(session.receive(Array(text.utf8))) }
    mutating func sendBytes(_ bytes: [UInt8]) { run(session.receive(bytes)) }
    mutating func sendOneByteAtATime(_ text: String) {
        for b in Array(text.utf8) { run(session.receive([b])) }
    }

    var replies: [String] {
        String(decoding: output, as: UTF8.self).split(separator: "\r\n").map(String.init)
    }
    /// The final line of each reply: "250 2.1.0 Ok".
    var finalReplies: [String] { replies.filter { $0.count >= 4 && $0[$0.index($0.startIndex, offsetBy: 3)] == " " } }
    var codes: [Int] { finalReplies.map { Int($0.prefix(3))! } }
}

final class ServerSessionTests: XCTestCase {
    let mx = ServerSessionConfiguration(hostname: "relay.test", relayDomains: ["example.org"])
    var submission: ServerSessionConfiguration {
        ServerSessionConfiguration(hostname: "relay.test", requireTLS: true, requireAuth: true, authAvailable: true)
    }

    func testHappyPathQueuesExactBody() {
        var h = SessionHarness(mx)
        h.send("EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
        h.send("Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\nQUIT\r\n")
        XCTAssertEqual(h.codes, [220, 250, 250, 250, 354, 250, 221])
        XCTAssertEqual(h.stored.count, 1)
        XCTAssertEqual(String(decoding: h.stored[0].1, as: UTF8.self), "Subject: hi\r\n\r\n.leading dot\r\nbody\r\n")
        XCTAssertEqual(h.stored[0].0.recipients.map(\.mailbox.description), ["u@example.org"])
        XCTAssertTrue(h.finalReplies[5].hasPrefix("250 2.0.0 Ok: queued as Q1"))
        XCTAssertTrue(h.closed)
    }

    func testEHLOAdvertisesExtensionsButNoAuthBeforeTLS() {
        var h = SessionHarness(submission)
        h.send("EHLO c\r\n")
        let ehlo = h.replies.joined(separator: "\n")
        for ext in ["PIPELINING", "SIZE 36700160", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN", "STARTTLS"] {
            XCTAssertTrue(ehlo.contains(ext), ext)
        }
        XCTAssertFalse(ehlo.contains("AUTH"))
        h.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
        XCTAssertEqual(h.finalReplies.last, "530 5.7.0 Must issue a STARTTLS command first")
        XCTAssertTrue(h.authAttempts.isEmpty, "credentials were examined in plaintext")
        h.send("MAIL FROM:<a@b.test>\r\n")
        XCTAssertEqual(h.finalReplies.last, "530 5.7.0 Must issue a STARTTLS command first")
    }

    func testSubmissionFlowWithSTARTTLSAndAuthPlain() {
        var h = SessionHarness(submission)
        h.send("EHLO c\r\nSTARTTLS\r\n")
        XCTAssertEqual(h.tlsStarted, 1)
        h.send("MAIL FROM:<a@b.test>\r\n")
        XCTAssertEqual(h.finalReplies.last, "503 5.5.1 Error: send HELO/EHLO first", "EHLO state must reset after TLS")
        h.send("EHLO c\r\n")
        XCTAssertTrue(h.replies.contains("250 AUTH PLAIN LOGIN"), "\(h.replies)")
        XCTAssertFalse(h.replies.suffix(8).contains("250-STARTTLS"))
        h.send("MAIL FROM:<a@b.test>\r\n")
        XCTAssertEqual(h.finalReplies.last, "530 5.7.0 Authentication required")
        // "\0alice\0secret"
        h.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
        XCTAssertEqual(h.finalReplies.last, "235 2.7.0 Authentication successful")
        h.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<anyone@far.example>\r\nDATA\r\nhi\r\n.\r\n")
        XCTAssertEqual(h.stored.count, 1)
        XCTAssertEqual(h.stored[0].0.origin.authenticatedUser, "alice")
        XCTAssertEqual(h.stored[0].0.origin.tlsVersion, "TLSv1.3")
    }

    func testAuthLoginAndFailuresCloseAfterLimit() {
        var h = SessionHarness(submission)
        h.send("EHLO c\r\nSTARTTLS\r\n")
        h.send("EHLO c\r\nAUTH LOGIN\r\n")
        XCTAssertEqual(h.finalReplies.last, "334 VXNlcm5hbWU6")
        h.send("YWxpY2U=\r\n")
        XCTAssertEqual(h.finalReplies.last, "334 UGFzc3dvcmQ6")
        h.send("d3Jvbmc=\r\n")  // "wrong"
        XCTAssertEqual(h.finalReplies.last, "535 5.7.8 Authentication credentials invalid")
        h.send("AUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\n")
        XCTAssertTrue(h.closed)
        XCTAssertTrue(h.finalReplies.last!.hasPrefix("421 4.7.0"))
        XCTAssertEqual(h.authAttempts.count, 3)
    }

    func testHostileAuthInput() {
        var h = SessionHarness(submission)
        h.send("EHLO c\r\nSTARTTLS\r\n")
        h.send("EHLO c\r\n")
        h.send("AUTH PLAIN !!!notbase64\r\n")
        XCTAssertEqual(h.finalReplies.last, "501 5.5.2 Cannot decode AUTH parameter")
        h.send("AUTH PLAIN AGFsaWNl\r\n")  // "\0alice", no password
        XCTAssertEqual(h.finalReplies.last, "535 5.7.8 Authentication credentials invalid")
        h.send("AUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\n")  // authzid bob != authcid alice
        XCTAssertEqual(h.finalReplies.last, "535 5.7.8 Authentication credentials invalid")
        h.send("AUTH CRAM-MD5\r\n")
        XCTAssertEqual(h.finalReplies.last, "504 5.5.4 Unrecognized authentication type")
        h.send("AUTH LOGIN\r\n*\r\n")
        XCTAssertEqual(h.finalReplies.last, "501 5.7.0 Authentication aborted")
        XCTAssertTrue(h.authAttempts.isEmpty)
    }

    func testOpenRelayIsRefused() {
        var h = SessionHarness(mx)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\n")
        for rcpt in ["<victim@far.example>", "<u%far.example@example.org>", "<far.example!u@example.org>",
                     "<\"u@far.example\"@example.org>", "<@example.org:u@far.example>", "<u@[192.0.2.1]>",
                     "<u@example.org.far.example>"] {
            h.send("RCPT TO:\(rcpt)\r\n")
            XCTAssertTrue(h.finalReplies.last!.hasPrefix("554 5.7.1"), "\(rcpt): \(h.finalReplies.last!)")
        }
        h.send("RCPT TO:<u@example.org>\r\nRCPT TO:<u@sub.example.org>\r\n")
        XCTAssertEqual(h.finalReplies.suffix(2), ["250 2.1.5 Ok", "554 5.7.1 <u@sub.example.org>: Relay access denied"])
        h.send("DATA\r\nx\r\n.\r\n")
        XCTAssertEqual(h.stored.first?.0.recipients.count, 1)
    }

    func testTrustedNetworkMayRelay() {
        var cfg = mx
        cfg.clientIsTrusted = true
        var h = SessionHarness(cfg)
        h.send("HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.example>\r\n")
        XCTAssertEqual(h.codes.last, 250)
    }

    func testSTARTTLSInjectionIsDiscarded() {
        var h = SessionHarness(mx)
        h.send("EHLO c\r\n")
        let before = h.finalReplies.count
        h.send("STARTTLS\r\nNOOP\r\nMAIL FROM:<evil@x.test>\r\n")
        XCTAssertEqual(h.finalReplies.count, before + 1, "only the 220 for STARTTLS: \(h.finalReplies)")
        XCTAssertEqual(h.finalReplies.last, "220 2.0.0 Ready to start TLS")
        XCTAssertEqual(h.session.discardedAtSTARTTLS, Array("NOOP\r\nMAIL FROM:<evil@x.test>\r\n".utf8).count)
        // Inside TLS the injected command never runs: a NOOP now is the first.
        h.send("NOOP\r\n")
        XCTAssertEqual(h.finalReplies.count, before + 2)
    }

    func testSmugglingVariantsNeverYieldTwoMessages() {
        let smuggled = "MAIL FROM:<evil@x.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nsmuggled\r\n.\r\n"
        for separator in ["\n.\r\n", "\r\n.\n", "\r.\r\n", "\r\n.\r", "\n.\n", "\r\n\r.\r\n", "\n\r\n.\r\n"] {
            var h = SessionHarness(mx)
            h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nfirst" + separator + smuggled + "tail\r\n.\r\n")
            XCTAssertLessThanOrEqual(h.stored.count, 1, "separator \(separator.debugDescription)")
            XCTAssertFalse(h.stored.contains { $0.0.sender.description == "evil@x.test" }, separator.debugDescription)
            XCTAssertTrue(h.stored.isEmpty, "a message with bare CR/LF was accepted: \(separator.debugDescription)")
            XCTAssertTrue(h.closed)
            XCTAssertTrue(h.finalReplies.last!.hasPrefix("554 5.5.2"), h.finalReplies.last!)
        }
    }

    func testOversizeIsRefusedWhileReading() {
        var cfg = mx
        cfg.maxMessageSize = 100
        var h = SessionHarness(cfg)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test> SIZE=101\r\n")
        XCTAssertEqual(h.finalReplies.last, "552 5.3.4 Message size exceeds fixed limit")
        h.send("MAIL FROM:<a@b.test> SIZE=50\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
        h.send(String(repeating: "0123456789\r\n", count: 20) + ".\r\nNOOP\r\n")
        XCTAssertEqual(h.finalReplies.suffix(2), ["552 5.3.4 Error: message size exceeds fixed limit", "250 2.0.0 Ok"])
        XCTAssertTrue(h.stored.isEmpty)
    }

    func testOverlongLines() {
        var h = SessionHarness(mx)
        h.send("NOOP " + String(repeating: "x", count: 600) + "\r\n")
        XCTAssertEqual(h.finalReplies.last, "500 5.5.2 Line too long")
        h.send(String(repeating: "y", count: 5000))
        XCTAssertEqual(h.finalReplies.last, "500 5.5.2 Line too long")
        h.send(String(repeating: "y", count: 5000) + "\r\nNOOP\r\n")
        XCTAssertEqual(h.finalReplies.last, "250 2.0.0 Ok", "resynchronises at the next line")
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n" + String(repeating: "z", count: 1001) + "\r\n.\r\n")
        XCTAssertEqual(h.finalReplies.last, "554 5.6.0 Error: message line longer than 1000 octets (RFC 5321 4.5.3.1.6)")
        XCTAssertTrue(h.stored.isEmpty)
    }

    func testNULAndControlBytesInCommands() {
        var h = SessionHarness(mx)
        h.sendBytes(Array("EHLO c\0evil\r\n".utf8))
        XCTAssertEqual(h.finalReplies.last, "500 5.5.2 Error: invalid characters in command")
        h.sendBytes([0x4d, 0x41, 0x49, 0x4c, 0xff, 0xfe, 13, 10])
        XCTAssertEqual(h.finalReplies.last, "500 5.5.2 Error: invalid characters in command")
    }

    func testCommandsOutOfOrder() {
        var h = SessionHarness(mx)
        h.send("MAIL FROM:<a@b.test>\r\n")
        XCTAssertEqual(h.finalReplies.last, "503 5.5.1 Error: send HELO/EHLO first")
        h.send("EHLO c\r\nRCPT TO:<u@example.org>\r\n")
        XCTAssertEqual(h.finalReplies.last, "503 5.5.1 Error: need MAIL command")
        h.send("DATA\r\n")
        XCTAssertEqual(h.finalReplies.last, "503 5.5.1 Error: need MAIL command")
        h.send("MAIL FROM:<a@b.test>\r\nMAIL FROM:<a@b.test>\r\n")
        XCTAssertEqual(h.finalReplies.last, "503 5.5.1 Error: nested MAIL command")
        h.send("DATA\r\n")
        XCTAssertEqual(h.finalReplies.last, "554 5.5.1 Error: no valid recipients")
        h.send("BDAT 10 LAST\r\nFROB\r\n")
        XCTAssertEqual(h.codes.suffix(2), [502, 500])
    }

    func testBadPathsGetPreciseCodes() {
        var h = SessionHarness(mx)
        h.send("EHLO c\r\nMAIL FROM:a@b.test\r\n")
        XCTAssertEqual(h.finalReplies.last?.prefix(9), "501 5.1.7")
        h.send("MAIL FROM:<a..b@b.test>\r\n")
        XCTAssertEqual(h.finalReplies.last?.prefix(9), "501 5.1.7")
        h.send("MAIL FROM:<>\r\nRCPT TO:<>\r\n")
        XCTAssertEqual(h.finalReplies.last?.prefix(9), "501 5.1.3")
        h.send("RCPT TO:<u@-bad-.example>\r\n")
        XCTAssertEqual(h.finalReplies.last?.prefix(9), "501 5.1.3")
        h.send("RCPT TO:<u@example.org> FOO=bar\r\n")
        XCTAssertEqual(h.finalReplies.last, "555 5.5.4 Unsupported parameter FOO")
        h.send("RCPT TO:<ü@example.org>\r\n")
        XCTAssertEqual(h.finalReplies.last, "553 5.6.7 Non-ASCII recipient address needs SMTPUTF8")
    }

    func testDSNAndUTF8ParametersAreKept() {
        var h = SessionHarness(mx)
        h.send("EHLO c\r\nMAIL FROM:<ü@b.test> SMTPUTF8 BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef\r\n")
        h.send("RCPT TO:<u@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40example.org\r\nDATA\r\nx\r\n.\r\n")
        let env = h.stored.first?.0
        XCTAssertEqual(env?.smtpUTF8, true)
        XCTAssertEqual(env?.bodyType, .eightBitMIME)
        XCTAssertEqual(env?.ret, .headers)
        XCTAssertEqual(env?.envelopeID, "abc+def")
        XCTAssertEqual(env?.recipients.first?.notify, [.success, .failure])
        XCTAssertEqual(env?.recipients.first?.originalRecipient, "rfc822;u@example.org")
    }

    func testStoreFailuresAreTransient() {
        var h = SessionHarness(mx)
        h.storeResult = .failed(reason: "EIO")
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nx\r\n.\r\n")
        XCTAssertEqual(h.finalReplies.last?.prefix(9), "451 4.3.0")
        h.storeResult = .insufficientSpace
        h.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nx\r\n.\r\n")
        XCTAssertEqual(h.finalReplies.last?.prefix(9), "452 4.3.1")
    }

    func testTooManyErrorsCloses() {
        var h = SessionHarness(mx)
        for _ in 0..<10 { h.send("FROB\r\n") }
        XCTAssertTrue(h.closed)
        XCTAssertEqual(h.finalReplies.last, "421 4.7.0 relay.test Error: too many errors")
        h.send("NOOP\r\n")
        XCTAssertEqual(h.finalReplies.last, "421 4.7.0 relay.test Error: too many errors", "nothing after close")
    }

    func testTooManyRecipients() {
        var cfg = mx
        cfg.maxRecipients = 2
        var h = SessionHarness(cfg)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\n" + String(repeating: "RCPT TO:<u@example.org>\r\n", count: 3))
        XCTAssertEqual(h.finalReplies.last, "452 4.5.3 Error: too many recipients")
    }

    func testRequireTLSForSenderDomain() {
        var cfg = mx
        cfg.requireTLSSenderDomains = ["bank.example", ".health.example"]
        var h = SessionHarness(cfg)
        h.send("EHLO c\r\nMAIL FROM:<x@bank.example>\r\n")
        XCTAssertEqual(h.finalReplies.last, "530 5.7.0 Must issue a STARTTLS command first")
        h.send("MAIL FROM:<x@mail.health.example>\r\n")
        XCTAssertEqual(h.finalReplies.last, "530 5.7.0 Must issue a STARTTLS command first")
        h.send("MAIL FROM:<x@mail.bank.example>\r\n")
        XCTAssertEqual(h.finalReplies.last, "250 2.1.0 Ok", "a plain entry matches only itself, as in Postfix")
    }

    /// The same conversation whole and one byte at a time must give
    /// byte-identical replies and the same queued messages.
    func testByteAtATimeMatchesWholeInput() {
        // Each script is a list of client turns; a turn after STARTTLS is
        // only sent once the handshake is done, as a real client would.
        let scripts: [[String]] = [
            ["EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n.x\r\n..\r\nend\r\n.\r\nRSET\r\nQUIT\r\n"],
            ["EHLO c\r\nSTARTTLS\r\n",
             "EHLO again\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@far.example>\r\nDATA\r\nhi\r\n.\r\n"],
            ["HELO c\nMAIL FROM:<a@b.test>\nRCPT TO:<u@example.org>\nDATA\nbad\n.\n"],
            ["EHLO c\r\nAUTH PLAIN\r\n" + String(repeating: "A", count: 3000) + "\r\nNOOP\r\n\0\r\nQUIT\r\n"],
            ["EHLO c\r\nSTARTTLS\r\n", "EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n\r\n.\r\n"],
        ]
        for cfg in [mx, submission] {
            for script in scripts {
                var whole = SessionHarness(cfg)
                var bytewise = SessionHarness(cfg)
                for turn in script {
                    whole.send(turn)
                    bytewise.sendOneByteAtATime(turn)
                }
                XCTAssertEqual(whole.stored.map(\.1), bytewise.stored.map(\.1))
                if !whole.discarded.isEmpty {
                    // The one deliberate difference: what arrives in the same
                    // segment as a refused DATA is dropped whole, while a
                    // byte-wise client is read line by line (see refuseData).
                    continue
                }
                XCTAssertEqual(whole.replies, bytewise.replies, script.debugDescription)
                XCTAssertEqual(whole.stored.map(\.1), bytewise.stored.map(\.1))
                XCTAssertEqual(whole.closed, bytewise.closed)
            }
        }
        var h = SessionHarness(submission)
        for turn in scripts[1] { h.sendOneByteAtATime(turn) }
        XCTAssertEqual(h.stored.count, 1, "the scripted submission really queues")
    }

    func testPipelinedGroupRepliesInOrder() {
        var h = SessionHarness(mx)
        h.send("EHLO c\r\n")
        h.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nRCPT TO:<v@far.example>\r\nRCPT TO:<w@example.org>\r\nDATA\r\n")
        XCTAssertEqual(h.codes.suffix(5), [250, 250, 554, 250, 354])
    }
}

/// ORCPT and ENVID are written into DSN header fields: a value that decodes
/// to anything but printable ASCII (issue 18: CR LF added a line of the
/// client's choosing to the bounce) is refused with 501 5.5.4.
@Suite struct DSNParameterTests {
    static let mx = ServerSessionConfiguration(hostname: "relay.test", relayDomains: ["example.org"])

    @Test(arguments: [
        "rfc822;x+0D+0A+0D+0AInjected-Line:+20yes",  // CR LF
        "rfc822;x+0AInjected-Line:+20yes",            // bare LF
        "rfc822;x+0DInjected-Line:+20yes",            // bare CR
        "rfc822;x+00y@example.org",                   // NUL
        "rfc822;x+09y@example.org",                   // TAB
        "rfc822;x+7Fy@example.org",                   // DEL
        "rfc822;x+C2+85Injected-Line:+20yes",         // NEL, as UTF-8
        "rfc822;+C3+A9@example.org",                  // non-ASCII
        "rfc822\u{e9};u+40example.org",              // addr-type not an atom
        "(rfc822);u+40example.org",
        ";u+40example.org",
    ])
    func hostileORCPTIsRefused(_ value: String) {
        var h = SessionHarness(Self.mx)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org> ORCPT=\(value)\r\n")
        #expect(h.finalReplies.last == "501 5.5.4 Bad ORCPT parameter")
        h.send("DATA\r\nx\r\n.\r\n")
        #expect(h.stored.isEmpty)
    }

    @Test(arguments: [
        "a+0D+0AInjected-Line:+20yes",
        "a+0Ab",
        "a+00b",
        "a+09b",
        "a+C3+A9",
    ])
    func hostileENVIDIsRefused(_ value: String) {
        var h = SessionHarness(Self.mx)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test> ENVID=\(value)\r\n")
        #expect(h.finalReplies.last == "501 5.5.4 Bad ENVID parameter")
    }

    @Test(arguments: [
        ("rfc822;u+40example.org", "rfc822;u@example.org"),
        ("rfc822;+22odd+20user+22@example.org", "rfc822;\"odd user\"@example.org"),
        ("utf-8;u+40example.org", "utf-8;u@example.org"),
    ])
    func printableORCPTIsKept(_ value: String, _ kept: String) {
        var h = SessionHarness(Self.mx)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test> ENVID=id+20with+20space\r\n")
        h.send("RCPT TO:<u@example.org> ORCPT=\(value)\r\nDATA\r\nx\r\n.\r\n")
        #expect(h.stored.first?.0.recipients.first?.originalRecipient == kept)
        #expect(h.stored.first?.0.envelopeID == "id with space")
    }
}
