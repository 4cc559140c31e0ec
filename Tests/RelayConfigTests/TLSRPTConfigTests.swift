// [tlsrpt]: off by default; enabling it needs an organization and a
// submitter; each key checked, a bad value named with its key.
import Testing
@testable import RelayModel
@testable import RelayConfig
import RelayTestSupport

@Suite struct TLSRPTConfig {
    @Test func offByDefault() throws {
        let c = try configForTests("")
        #expect(!c.tlsrpt.enabled)
        #expect(c.tlsrpt.from == nil)
    }

    @Test func values() throws {
        let c = try configForTests("""
            [tlsrpt]
            enabled = true
            organization = "Example Relay Org"
            submitter = "Relay.Example"
            from = "tlsrpt@relay.example"
            """)
        #expect(c.tlsrpt.enabled)
        #expect(c.tlsrpt.organization == "Example Relay Org")
        #expect(c.tlsrpt.submitter == "relay.example")
        #expect(c.tlsrpt.contact == "mailto:postmaster@relay.example", "the default contact")
        #expect(c.tlsrpt.from?.description == "tlsrpt@relay.example")
        let d = try configForTests("[tlsrpt]\nenabled = true\norganization = \"O\"\nsubmitter = \"relay.example\"\ncontact = \"https://relay.example/tls\"")
        #expect(d.tlsrpt.contact == "https://relay.example/tls")
    }

    @Test(arguments: [
        ("enabled = true\nsubmitter = \"relay.example\"", "tlsrpt.organization"),
        ("enabled = true\norganization = \"O\"", "tlsrpt.submitter"),
        ("submitter = \"not a domain\"", "tlsrpt.submitter"),
        ("submitter = \"localhost\"", "tlsrpt.submitter"),
        ("organization = \"\"", "tlsrpt.organization"),
        ("organization = \"line\\r\\nX-Evil: 1\"", "tlsrpt.organization"),
        ("contact = \"caf\u{e9}\"", "tlsrpt.contact"),
        ("from = \"no at sign\"", "tlsrpt.from"),
        ("enabled = \"yes\"", "tlsrpt.enabled"),
        ("submiter = \"relay.example\"", "tlsrpt.submiter"),
    ])
    func badValuesNameTheirKey(_ lines: String, _ key: String) {
        do {
            _ = try configForTests("[tlsrpt]\n\(lines)")
            Issue.record("accepted: \(lines)")
        } catch let e as ConfigErrors {
            #expect(e.errors.contains { $0.description.contains(key) }, "\(e)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func aChangeNeedsARestart() throws {
        let a = try configForTests("")
        let b = try configForTests("[tlsrpt]\nenabled = true\norganization = \"O\"\nsubmitter = \"relay.example\"")
        #expect(b.changesNeedingRestart(from: a).contains("tlsrpt"))
        #expect(!a.changesNeedingRestart(from: a).contains("tlsrpt"))
    }
}
