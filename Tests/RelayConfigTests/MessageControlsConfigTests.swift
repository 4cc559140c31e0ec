// [escalation], [forwarding], [smime], honor_tls_required_no and a
// domain's channel: defaults, values, and every bad value named by its key.
import Testing
@testable import RelayModel
@testable import RelayPolicy
@testable import RelayConfig
import RelayTestSupport

private let relays = """
    [[outbound.relay]]
    name = "portal"
    address = "127.0.0.9:25"
    level = "verify"
    """

@Suite struct MessageControlsConfig {
    @Test func offByDefault() throws {
        let c = try configForTests("")
        #expect(!c.escalation.enabled && c.escalation.level == .verify && c.escalation.senders == .authenticated)
        #expect(c.forwarding.aliases.isEmpty && !c.forwarding.tlsOnly && c.forwarding.level == .forced)
        #expect(c.smime.certificateDirectory == nil)
        #expect(c.relay.honorTLSRequiredNo)
    }

    @Test func values() throws {
        let c = try configForTests("""
            [relay]
            domains = ["clinic.example"]
            honor_tls_required_no = false
            [outbound.domains]
            "partner.example" = { level = "verify", channel = "smime" }
            "escrow.example" = { level = "forced", channel = "relay:portal" }
            \(relays)
            [smime]
            certificate_directory = "/etc/relayd/smime"
            [escalation]
            subject_tags = ["[Secure]", "encrypt", "[secure]"]
            header = "X-Relayd-Escalate"
            level = "tls-exclusive"
            senders = "networks"
            networks = ["192.0.2.0/24"]
            channel = "relay:portal"
            [forwarding]
            tls_only = true
            level = "verify"
            [forwarding.aliases]
            "Info@clinic.example" = ["dr.smith@partner.example"]
            "open@clinic.example" = { to = ["x@partner.example"], tls_only = false }
            """)
        #expect(!c.relay.honorTLSRequiredNo)
        #expect(c.outbound.domains["partner.example"]?.smime == true)
        #expect(c.outbound.domains["escrow.example"]?.fallback == "portal")
        #expect(c.escalation.subjectTags == ["[Secure]", "[encrypt]"], "brackets added, duplicates by case dropped")
        #expect(c.escalation.header == "X-Relayd-Escalate" && c.escalation.level == .tlsExclusive)
        #expect(c.escalation.channel == .relay("portal"))
        #expect(c.escalation.permits(authenticatedUser: nil, clientAddress: "192.0.2.5"))
        #expect(!c.escalation.permits(authenticatedUser: nil, clientAddress: "198.51.100.5"))
        #expect(c.escalation.permits(authenticatedUser: "alice", clientAddress: "198.51.100.5"))
        #expect(c.forwarding.level == .verify)
        #expect(c.forwarding.alias(for: Mailbox.parseForwardPath("<info@clinic.example>")!)?.tlsOnly == true)
        #expect(c.forwarding.alias(for: Mailbox.parseForwardPath("<open@clinic.example>")!)?.tlsOnly == false)
    }

    @Test(arguments: [
        ("[escalation]\nsubject_tags = [\"[two words]\"]", "escalation.subject_tags"),
        ("[escalation]\nsubject_tags = [\"[]\"]", "escalation.subject_tags"),
        ("[escalation]\nheader = \"Subject\"", "escalation.header"),
        ("[escalation]\nheader = \"X-Bad:Name\"", "escalation.header"),
        ("[escalation]\nheader = \"X-E\"\nlevel = \"opportunistic\"", "escalation.level"),
        ("[escalation]\nheader = \"X-E\"\nsenders = \"friends\"", "escalation.senders"),
        ("[escalation]\nheader = \"X-E\"\nsenders = \"networks\"", "escalation.networks"),
        ("[escalation]\nheader = \"X-E\"\nchannel = \"relay:nowhere\"", "escalation.channel"),
        ("[escalation]\nheader = \"X-E\"\nchannel = \"smime\"", "escalation.channel"),
        ("[[outbound.relay]]\nname = \"weak\"\naddress = \"127.0.0.9:25\"\nlevel = \"opportunistic\"\n[escalation]\nheader = \"X-E\"\nchannel = \"relay:weak\"", "escalation.channel"),
        ("[escalation]\nheader = \"X-E\"\nchannel = \"pigeon\"", "escalation.channel"),
        ("[escalation]\nlevel = \"verify\"", "escalation"),
        ("[forwarding]\nlevel = \"tls-exclusive\"", "forwarding.level"),
        ("[relay]\ndomains = [\"clinic.example\"]\n[forwarding.aliases]\n\"a@elsewhere.example\" = [\"b@x.example\"]", "forwarding.aliases"),
        ("[relay]\ndomains = [\"clinic.example\"]\n[forwarding.aliases]\n\"a@clinic.example\" = [\"not an address\"]", "forwarding.aliases"),
        ("[relay]\ndomains = [\"clinic.example\"]\n[forwarding.aliases]\n\"a@clinic.example\" = [\"b@clinic.example\"]\n\"b@clinic.example\" = [\"c@x.example\"]", "forwarding.aliases"),
        ("[outbound.domains]\n\"p.example\" = { level = \"verify\", channel = \"smime\" }", "smime"),
        ("[outbound.domains]\n\"p.example\" = { level = \"opportunistic\", channel = \"smime\" }", "outbound.domains"),
        ("[relay]\nhonor_tls_required_no = \"yes\"", "relay.honor_tls_required_no"),
    ])
    func badValuesNameTheirKey(_ lines: String, _ key: String) {
        do {
            _ = try configForTests(lines + "\n" + relays)
            Issue.record("accepted: \(lines)")
        } catch let e as ConfigErrors {
            #expect(e.errors.contains { $0.description.contains(key) }, "\(e)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }
}
