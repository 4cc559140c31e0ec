import Testing
@testable import RelayModel
@testable import RelaySMTP
import RelayTestSupport

/// RFC 8689 on the receiving side: REQUIRETLS is offered only on a TLS
/// session, and the MAIL parameter is taken only there, once, and is kept
/// with the message.
@Suite struct RequireTLSServerTests {
    let mx = SessionListener.mx.configuration

    @Test func notOfferedInPlaintextOfferedAfterSTARTTLS() {
        var h = SessionHarness(mx)
        h.send("EHLO c\r\n")
        #expect(!h.replies.contains { $0.contains("REQUIRETLS") })
        h.send("STARTTLS\r\n")
        h.send("EHLO c\r\n")
        #expect(h.replies.suffix(10).contains { $0.hasSuffix("REQUIRETLS") }, "\(h.replies)")
    }

    @Test func parameterOnTLSSessionIsStoredWithTheMessage() {
        var h = SessionHarness(mx)
        h.send("EHLO c\r\nSTARTTLS\r\n")
        h.send("EHLO c\r\nMAIL FROM:<a@b.test> REQUIRETLS\r\nRCPT TO:<u@example.org>\r\nDATA\r\nx\r\n.\r\n")
        #expect(h.stored.count == 1)
        #expect(h.stored.first?.0.requireTLS == true)
        h.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\ny\r\n.\r\n")
        #expect(h.stored.count == 2)
        #expect(h.stored.last?.0.requireTLS == false, "the flag belongs to one transaction")
    }

    @Test(arguments: [
        ("MAIL FROM:<a@b.test> REQUIRETLS\r\n", "530 5.7.10 REQUIRETLS needs a TLS session: issue STARTTLS first", false),
        ("MAIL FROM:<a@b.test> REQUIRETLS=YES\r\n", "555 5.5.4 Unsupported parameter REQUIRETLS", true),
        ("MAIL FROM:<a@b.test> REQUIRETLS REQUIRETLS\r\n", "501 5.5.4 REQUIRETLS given twice", true),
    ])
    func refusedForms(command: String, reply: String, afterTLS: Bool) {
        var h = SessionHarness(mx)
        h.send(afterTLS ? "EHLO c\r\nSTARTTLS\r\n" : "EHLO c\r\n")
        if afterTLS { h.send("EHLO c\r\n") }
        h.send(command)
        #expect(h.finalReplies.last == reply)
        h.send("RCPT TO:<u@example.org>\r\n")
        #expect(h.finalReplies.last == "503 5.5.1 Error: need MAIL command", "a refused MAIL starts no transaction")
    }
}
