import Testing
@testable import RelayModel
@testable import RelaySMTP
import RelayTestSupport

/// RFC 8689 on the sending side: a REQUIRETLS message says so on MAIL, and
/// goes only to a server that offers REQUIRETLS on its TLS session — never
/// a byte of the envelope otherwise.
@Suite struct RequireTLSClientTests {
    func config(requireTLS: Bool) -> ClientSessionConfiguration {
        var env = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<s@example.test>")!),
                           origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<a@far.example>")!)]
        env.requireTLS = requireTLS
        return ClientSessionConfiguration(heloName: "relay.test", tls: .required, envelope: env, bodySize: 10)
    }

    static let ehloPlain = "250-mx.far.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n"

    func afterTLS(_ h: inout ClientHarness, ehlo: String) {
        h.server("220 mx.far.example ESMTP\r\n")
        h.server(Self.ehloPlain)
        h.server("220 2.0.0 go ahead\r\n")
        h.apply(h.session.tlsEstablished())
        h.server(ehlo)
    }

    @Test func offeredAfterTLSTheMailCommandCarriesIt() {
        var h = ClientHarness(config(requireTLS: true))
        afterTLS(&h, ehlo: "250-mx.far.example\r\n250-PIPELINING\r\n250 REQUIRETLS\r\n")
        #expect(h.commands.contains("MAIL FROM:<s@example.test> REQUIRETLS"), "\(h.commands)")
    }

    @Test func notOfferedTheSessionEndsBeforeMail() {
        var h = ClientHarness(config(requireTLS: true))
        afterTLS(&h, ehlo: "250-mx.far.example\r\n250 PIPELINING\r\n")
        #expect(!h.commands.contains { $0.hasPrefix("MAIL") })
        #expect(h.commands.last == "QUIT")
        #expect(h.outcome == .failed(.requireTLSNotOffered))
    }

    @Test func offeredOnlyInPlaintextDoesNotCount() {
        // A server that lists REQUIRETLS before STARTTLS (where RFC 8689
        // forbids it) and not after: what counts is the TLS session's EHLO.
        var h = ClientHarness(config(requireTLS: true))
        h.server("220 mx.far.example ESMTP\r\n")
        h.server("250-mx.far.example\r\n250-REQUIRETLS\r\n250 STARTTLS\r\n")
        h.server("220 2.0.0 go ahead\r\n")
        h.apply(h.session.tlsEstablished())
        h.server("250 mx.far.example\r\n")
        #expect(h.outcome == .failed(.requireTLSNotOffered))
    }

    @Test func anUnflaggedMessageNeverSendsIt() {
        var h = ClientHarness(config(requireTLS: false))
        afterTLS(&h, ehlo: "250-mx.far.example\r\n250 REQUIRETLS\r\n")
        #expect(h.commands.contains("MAIL FROM:<s@example.test>"), "\(h.commands)")
    }
}
