import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayPolicy
@testable import RelayLog
@testable import RelayTLS
@testable import RelayDNS
@testable import RelayAuth
@testable import RelayIO
@testable import RelayQueue
@testable import RelayConfig
@testable import RelayDelivery
@testable import RelayCore
import RelayTestSupport

/// Issue 18, item 4: no value from a peer may end a header line relayd
/// writes and start one of its own — not in a DSN, not in Received. The
/// SMTP parsers refuse such values; these tests feed the writers hostile
/// values directly (as a queue file from before those checks could).

/// Lines as a lenient reader might see them: CR, LF, VT, FF, NEL and the
/// Unicode separators all break (Python's str.splitlines does this).
func lenientLines(_ s: String) -> [Substring] {
    s.split(omittingEmptySubsequences: false) { c in
        c.unicodeScalars.contains { [0x0a, 0x0b, 0x0c, 0x0d, 0x85, 0x2028, 0x2029].contains($0.value) }
    }
}

/// Every CR is followed by LF and every LF preceded by CR.
func onlyCRLF(_ bytes: [UInt8]) -> Bool {
    for (i, b) in bytes.enumerated() {
        if b == 13 && (i + 1 == bytes.count || bytes[i + 1] != 10) { return false }
        if b == 10 && (i == 0 || bytes[i - 1] != 13) { return false }
    }
    return true
}

@Suite struct HeaderInjectionTests {
    static let hostile = [
        "550 no\r\nInjected-Line: yes",
        "550 no\r\n\r\nInjected-Line: yes",
        "550 no\nInjected-Line: yes",
        "550 no\rInjected-Line: yes",
        "550 no\u{85}Injected-Line: yes",
        "550 no\u{2028}Injected-Line: yes",
        "550 no\u{0B}Injected-Line: yes\u{0}\u{7F}\t",
    ]

    // MARK: XText

    @Test(arguments: [
        ("abc", "abc"), ("a+20b", "a b"), ("+7E", "~"),
        ("a+0D+0Ab", nil), ("a+0A", nil), ("a+09", nil), ("a+00", nil), ("a+7F", nil), ("+C3+A9", nil), ("+80", nil),
    ] as [(String, String?)])
    func decodePrintableKeepsOnlyPrintableASCII(_ xtext: String, _ decoded: String?) {
        #expect(XText.decodePrintable(xtext) == decoded)
    }

    // MARK: DSN

    func bounce(orcpt: String?, envid: String?, diagnostic: String, status: String = "5.1.1") throws -> String {
        var env = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<s@example.test>")!),
                           origin: Envelope.Origin(clientAddress: "192.0.2.1"))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u@far.example>")!, originalRecipient: orcpt)]
        env.envelopeID = envid
        let m = QueuedMessage(id: QueueID.make(microseconds: 5, random: 5), arrival: 0, envelope: env,
                              body: Array("Subject: s\r\n\r\nbody\r\n".utf8))
        let dsn = try #require(DSN.bounce(for: m, failures: [DSN.Failure(recipientIndex: 0, status: status, diagnostic: diagnostic,
                                                                         remoteMTA: "mx.far.example\r\nInjected-Line: yes")],
                                          hostname: "relay.test", id: QueueID.make(microseconds: 6, random: 6), now: 60))
        #expect(onlyCRLF(dsn.body))
        return String(decoding: dsn.body, as: UTF8.self)
    }

    @Test(arguments: hostile)
    func dsnEscapesEveryControlCharacterFromOutside(_ value: String) throws {
        let text = try bounce(orcpt: "rfc822;x\(value)", envid: "e\(value)", diagnostic: value)
        #expect(!lenientLines(text).contains { $0.hasPrefix("Injected") }, "\(text)")
        // C0 controls: CR LF, and the one TAB relayd folds Content-Type with.
        #expect(!text.unicodeScalars.contains { $0.value < 0x20 && $0 != "\r" && $0 != "\n" && $0 != "\t" })
        #expect(text.unicodeScalars.filter { $0 == "\t" }.count == 1)
        #expect(!text.unicodeScalars.contains { $0.value == 0x7f || (0x80...0x9f).contains($0.value) || $0.value == 0x2028 })
    }

    @Test func dsnShowsEscapedValuesAndRefusesABadStatus() throws {
        let text = try bounce(orcpt: "rfc822;x\r\n\r\nInjected-Line: yes", envid: nil,
                              diagnostic: "550 5.1.1 no such user\u{85}Injected-Line: yes", status: "5.\u{663}.1")
        #expect(text.contains("\r\nOriginal-Recipient: rfc822;x\\x{D}\\x{A}\\x{D}\\x{A}Injected-Line: yes\r\n"))
        #expect(text.contains("\r\nDiagnostic-Code: x-relayd; 550 5.1.1 no such user\\x{85}Injected-Line: yes\r\n"))
        #expect(text.contains("\r\nRemote-MTA: dns; mx.far.example\\x{D}\\x{A}Injected-Line: yes\r\n"))
        #expect(text.contains("\r\nStatus: 5.0.0\r\n"))
    }

    @Test func dsnFieldsStayUnderTheLineLimit() throws {
        let text = try bounce(orcpt: "rfc822;" + String(repeating: "\r\n", count: 400), envid: nil,
                              diagnostic: String(repeating: "\u{85}", count: 1000))
        // RFC 5322 §2.1.1: 998 octets a line, even with every character escaped.
        #expect(text.split(separator: "\r\n").allSatisfy { $0.utf8.count <= 998 })
    }

    // MARK: Received

    @Test(arguments: hostile)
    func receivedHeaderIsOneFieldWhateverTheOrigin(_ value: String) {
        var env = Envelope(sender: .null, origin: Envelope.Origin(
            clientAddress: "192.0.2.1\(value)", heloName: "client.test\(value)", esmtp: true,
            authenticatedUser: "bob)\(value) (", tlsVersion: "TLSv1.3\(value)", tlsCipher: "X)\(value)", tlsBits: 256))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u@example.org>")!)]
        let h = ReceivedHeader.make(envelope: env, queueID: "Q", hostname: "relay.test", includeUser: true, unixTime: 0)
        #expect(onlyCRLF(Array(h.utf8)))
        let lines = lenientLines(h)
        #expect(lines.first?.hasPrefix("Received: from unknown (unknown)") == true, "\(h)")
        #expect(lines.last == "", "ends with CRLF")
        #expect(lines.dropFirst().dropLast().allSatisfy { $0.hasPrefix("\t") }, "\(h)")
        #expect(h.contains("(authenticated as bob\\)550 no?"), "\(h)")
    }

    @Test func receivedHeaderKeepsValidValues() {
        var env = Envelope(sender: .null, origin: Envelope.Origin(
            clientAddress: "2001:db8::5", heloName: "[192.0.2.7]", esmtp: true,
            authenticatedUser: "alice", tlsVersion: "TLSv1.3", tlsCipher: "TLS_AES_256_GCM_SHA384", tlsBits: 256))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<\"odd (user)\"@example.org>")!)]
        let h = ReceivedHeader.make(envelope: env, queueID: "Q", hostname: "relay.test", includeUser: true, unixTime: 0)
        #expect(h.hasPrefix("Received: from [192.0.2.7] ([IPv6:2001:db8::5])\r\n"))
        #expect(h.contains("(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits))"))
        #expect(h.contains("(authenticated as alice)"))
        #expect(h.contains("for <\"odd (user)\"@example.org>"))
    }

    // MARK: a remote server's reply

    @Test func replyParserTakesOnlyASCIIDigitsForAnEnhancedCode() throws {
        var p = ReplyParser()
        let reply = try #require(try p.feed(Array("550 5.\u{663}.1 no such user\r\n".utf8)).first)
        #expect(reply.enhanced == nil)
        var q = ReplyParser()
        #expect(throws: ReplyParser.Failure.self) { try q.feed(Array("550 no\rInjected-Line: yes\r\n".utf8)) }
    }
}
