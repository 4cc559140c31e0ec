// Which TLS-only forwarding targets relayd warns about: from the learned
// record (TLS never seen, plaintext seen, or a probe without STARTTLS; a
// pin is the operator's call) and from a probe's findings.
import Testing
@testable import RelayConfig
@testable import RelayDelivery
@testable import RelayLearned
@testable import RelayModel
import RelayTestSupport

@Suite struct ForwardingCheckTests {
    @Test func onlyTLSOnlyEntriesAreTargets() throws {
        let c = try configForTests("""
            [relay]
            domains = ["clinic.example"]
            [forwarding]
            tls_only = true
            [forwarding.aliases]
            "info@clinic.example" = ["a@partner.example", "b@Partner.Example", "c@other.example"]
            "desk@clinic.example" = ["d@partner.example"]
            "open@clinic.example" = { to = ["e@plain.example"], tls_only = false }
            """)
        let t = ForwardingCheck.targets(c.forwarding)
        #expect(t.map(\.domain) == ["other.example", "partner.example"])
        #expect(t[1].aliases == ["desk@clinic.example", "info@clinic.example"])
    }

    @Test func learnedRecordWarnsOnlyWhenTLSWasNeverSeen() {
        #expect(ForwardingCheck.learnedWarning(nil, now: 100) == nil)
        var r = LearnedRecord(domain: "partner.example", created: 1)
        r.evidence[.plaintext] = LevelEvidence(firstSeen: 1, lastSeen: 50, count: 3, days: 1)
        #expect(ForwardingCheck.learnedWarning(r, now: 100) == "learned: 3 sessions without TLS, none with")
        r.lastProbe = LearnedRecord.Probe(at: 60, seen: .plaintext, host: "mx.partner.example", starttlsOffered: false,
                                          handshake: false, verified: false, version: "", detail: "")
        #expect(ForwardingCheck.learnedWarning(r, now: 100) == "learned: the last probe found no STARTTLS at mx.partner.example")
        var pinned = r
        pinned.pin = LearnedRecord.Pin(level: .forced, until: nil, reason: "contract", by: "ops", at: 70)
        #expect(ForwardingCheck.learnedWarning(pinned, now: 100) == nil)
        r.evidence[.tls] = LevelEvidence(firstSeen: 80, lastSeen: 90, count: 1, days: 1)
        #expect(ForwardingCheck.learnedWarning(r, now: 100) == nil, "TLS seen once: the domain does TLS")
    }
}
