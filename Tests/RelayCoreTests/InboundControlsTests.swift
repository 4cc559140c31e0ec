// The per-message controls as a message is accepted: the alias table, who
// may escalate and what it leaves in the message, TLS-Required: No.
import Testing
@testable import RelayConfig
@testable import RelayCore
@testable import RelayModel
import RelayTestSupport

private let sections = """
    [relay]
    domains = ["clinic.example"]
    client_networks = ["10.0.0.0/8"]
    [escalation]
    subject_tags = ["[secure]", "encrypt"]
    header = "X-Relayd-Escalate"
    senders = "networks"
    networks = ["192.0.2.0/24"]
    [forwarding]
    tls_only = true
    [forwarding.aliases]
    "info@clinic.example" = ["dr.smith@partner.example", "archive@clinic.example"]
    "open@clinic.example" = { to = ["x@partner.example"], tls_only = false }
    """

private func envelope(_ rcpts: [String], user: String? = nil, client: String = "198.51.100.7") -> Envelope {
    var e = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<nurse@clinic.example>")!),
                     origin: Envelope.Origin(clientAddress: client, authenticatedUser: user))
    e.recipients = rcpts.map { Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<\($0)>")!) }
    return e
}

private func body(_ headers: String) -> [UInt8] { Array((headers + "\r\nbody line\r\n").utf8) }

@Suite struct InboundControlsTests {
    @Test func aliasExpandsToItsTargetsKeepingTheSenderAndNamingTheAlias() throws {
        let config = try configForTests(sections)
        let r = InboundControls.apply(envelope: envelope(["info@clinic.example", "u@else.example"]), body: body("Subject: hi\r\n"),
                                      config: config)
        #expect(r.envelope.sender.description == "nurse@clinic.example", "no SRS: the original sender stays")
        #expect(r.envelope.recipients.map(\.mailbox.description) == ["dr.smith@partner.example", "archive@clinic.example", "u@else.example"])
        #expect(r.envelope.recipients[0].originalRecipient == "rfc822;info@clinic.example")
        #expect(r.envelope.recipients[0].forwardedFrom?.description == "info@clinic.example")
        #expect(r.envelope.recipients.prefix(2).allSatisfy { $0.tlsFloor == .forced })
        #expect(r.envelope.recipients[2].tlsFloor == nil && r.envelope.recipients[2].forwardedFrom == nil)
        let open = InboundControls.apply(envelope: envelope(["open@clinic.example"]), body: body(""), config: config)
        #expect(open.envelope.recipients.map(\.tlsFloor) == [nil], "tls_only = false on the entry")
    }

    @Test func aTargetAlsoNamedDirectlyIsOneCopyAtTheStrongerFloor() throws {
        let r = InboundControls.apply(envelope: envelope(["dr.smith@partner.example", "info@clinic.example"]), body: body(""),
                                      config: try configForTests(sections))
        #expect(r.envelope.recipients.map(\.mailbox.description) == ["dr.smith@partner.example", "archive@clinic.example"])
        #expect(r.envelope.recipients[0].tlsFloor == .forced)
    }

    @Test(arguments: [
        // (user, client address, escalated?)
        (String?.some("alice"), "198.51.100.7", true),
        (nil, "192.0.2.44", true),
        (nil, "198.51.100.7", false),
        (nil, "10.1.1.1", false),   // a relay client network is not an escalation network
    ])
    func whoMayEscalate(user: String?, client: String, escalated: Bool) throws {
        let original = body("Subject: [secure] Lab results\r\n")
        let r = InboundControls.apply(envelope: envelope(["u@far.example"], user: user, client: client), body: original,
                                      config: try configForTests(sections))
        #expect((r.envelope.escalation != nil) == escalated)
        if escalated {
            #expect(r.envelope.escalation == .init(level: .verify, source: .subjectTag))
            #expect(String(decoding: r.body, as: UTF8.self) == "Subject: Lab results\r\n\r\nbody line\r\n")
        } else {
            #expect(r.body == original, "a sender who may not escalate gets the message through unchanged")
            #expect(r.notes.contains { if case .escalationRefused = $0 { return true }; return false })
        }
    }

    @Test(arguments: [
        ("X-Relayd-Escalate: verify\r\n", PolicyLevel.verify),
        ("X-Relayd-Escalate: tls-exclusive\r\n", .tlsExclusive),
        ("X-Relayd-Escalate: forced\r\n", .forced),
        ("X-Relayd-Escalate: yes\r\n", .verify),
        ("x-relayd-escalate: none\r\n", .verify),   // no weaker than configured, whatever it says
        ("X-Relayd-Escalate: forced\r\nSubject: [ENCRYPT] x\r\n", .verify),
    ])
    func headerNamesTheLevelAndIsRemoved(headers: String, level: PolicyLevel) throws {
        let r = InboundControls.apply(envelope: envelope(["u@far.example"], user: "alice"), body: body(headers + "From: a@b\r\n"),
                                      config: try configForTests(sections))
        #expect(r.envelope.escalation?.level == level)
        #expect(!String(decoding: r.body, as: UTF8.self).lowercased().contains("x-relayd-escalate"))
        #expect(String(decoding: r.body, as: UTF8.self).contains("From: a@b\r\n\r\nbody line\r\n"))
    }

    @Test func encodedSubjectTagEscalatesAndIsTakenOut() throws {
        // "[secure] Lab résultats"
        let r = InboundControls.apply(envelope: envelope(["u@far.example"], user: "alice"),
                                      body: body("Subject: =?UTF-8?B?W3NlY3VyZV0gTGFiIHLDqXN1bHRhdHM=?=\r\n"),
                                      config: try configForTests(sections))
        #expect(r.envelope.escalation?.source == .subjectTag)
        let subject = String(decoding: r.body, as: UTF8.self).split(separator: "\r\n").first.map(String.init) ?? ""
        #expect(!subject.contains("W3NlY3VyZV0"), "the tag is gone from the encoded subject: \(subject)")
        #expect(subject.hasPrefix("Subject: =?UTF-8?B?"))
    }

    @Test func tlsRequiredNoIsNotedForEveryone() throws {
        let r = InboundControls.apply(envelope: envelope(["u@far.example"]), body: body("TLS-Required: No\r\n"),
                                      config: try configForTests(sections))
        #expect(r.envelope.tlsRequiredNo)
        #expect(String(decoding: r.body, as: UTF8.self).hasPrefix("TLS-Required: No\r\n"), "the header travels on (RFC 8689 §5)")
    }

    @Test func withoutControlsConfiguredNothingChanges() throws {
        let original = body("Subject: [secure] x\r\nX-Relayd-Escalate: verify\r\n")
        let r = InboundControls.apply(envelope: envelope(["info@clinic.example"], user: "alice"), body: original,
                                      config: try configForTests(""))
        #expect(r.body == original && r.envelope.escalation == nil && r.envelope.recipients.count == 1)
    }
}
