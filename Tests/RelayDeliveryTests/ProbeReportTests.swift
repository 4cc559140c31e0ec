// The probe's two renderings from one fixed report: a verified primary, an
// unreachable backup, a cached enforce MTA-STS policy that lists only the
// primary. Text for people, JSON with stable keys for scripts.
import Foundation
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayPolicy
@testable import RelayTLS
@testable import RelaySTS
@testable import RelayMTASTS
@testable import RelayDelivery
@testable import RelayLearned

@Suite struct ProbeReportTests {
    static let now = 1_800_000_000

    static func report(stsEnabled: Bool = true, live: STSCheck.Finding? = nil) -> ProbeReport {
        var ok = ProbeFindings()
        ok.banner = "mx1.example.test ESMTP"
        ok.ehloKeywords = ["PIPELINING", "STARTTLS"]
        ok.starttlsOffered = true
        ok.tlsEstablished = true
        ok.ehloKeywordsAfterTLS = ["PIPELINING"]
        let tls = TLSSessionInfo(protocolVersion: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", cipherBits: 256,
                                 forwardSecret: true, peerChainLength: 1, verification: .trusted, resumed: false)
        let leaf = PeerCertificate(subject: "CN=mx1.example.test", issuer: "CN=Test CA", der: [1, 2, 3],
                                   dnsNames: ["mx1.example.test", "mail.example.test"], notBefore: now - 86_400,
                                   notAfter: now + 30 * 86_400, publicKeySHA256: String(repeating: "ab", count: 32))
        let primary = HostProbeResult(host: "mx1.example.test", address: IPAddress("192.0.2.1")!, port: 25,
                                      findings: ok, tls: tls, certificates: [leaf])
        var down = ProbeFindings()
        down.failure = ProbeFailure(step: .connect, detail: "connect 192.0.2.2:25: Connection refused")
        let backup = HostProbeResult(host: "mx2.example.test", address: IPAddress("192.0.2.2")!, port: 25, findings: down)
        let hosts = [MXHost(name: "mx1.example.test", preference: 10, addresses: [IPAddress("192.0.2.1")!], implicit: false),
                     MXHost(name: "mx2.example.test", preference: 20, addresses: [IPAddress("192.0.2.2")!], implicit: false)]
        let result = DomainProbeResult(domain: "example.test", mx: .found(hosts), addresses: [primary, backup])
        let policy = try! STSPolicy.parse(Array("version: STSv1\nmode: enforce\nmx: mx1.example.test\nmax_age: 86400\n".utf8)).get()
        let cached = CachedSTSPolicy(domain: "example.test", id: "id1", policy: policy, fetched: now - 60)
        let layer = MTASTSLayer(policies: STSPolicies([cached]), now: { now })
        let decision = PolicyEngine(defaultLevel: .opportunistic, domains: [:], upgrades: stsEnabled ? [layer] : [])
            .decide("example.test")
        return ProbeReport(result: result, decision: decision,
                           mtaSTS: .init(enabled: stsEnabled, cached: stsEnabled ? cached : nil, live: live),
                           relay: nil, now: now)
    }

    @Test func textNamesEveryFinding() {
        let text = Self.report(live: .noRecord("noRecord")).text()
        let expected = [
            "  10    mx1.example.test  192.0.2.1",
            "192.0.2.1 port 25 (mx1.example.test)",
            "  STARTTLS     offered",
            "  TLS          TLSv1.3, TLS_AES_256_GCM_SHA384, 256 bits, forward secrecy yes",
            "  verification trusted (chain and name mx1.example.test verified)",
            "    names    mx1.example.test, mail.example.test",
            "(30 days left)",
            "  FAILED at    connect: connect 192.0.2.2:25: Connection refused",
            "  cached   id id1, mode enforce, mx mx1.example.test",
            "  live     no policy published (noRecord)",
            "  mx1.example.test: matches the policy",
            "  mx2.example.test: NOT in the policy",
            "DANE: not checked: [dns] dnssec is off",
            "Decision now: verify (verified) decided by mta-sts",
            "  → deliver over verified TLS",
            "  none           deliver in plaintext",
            "  forced         deliver over TLS (certificate not checked)",
            "  tls-exclusive  deliver over verified TLS",
            "Fit for verify (exit 0)",
        ]
        for line in expected { #expect(text.contains(line), "missing: \(line)\n\(text)") }
    }

    @Test func disabledMTASTSIsSaidInOneLine() {
        let text = Self.report(stsEnabled: false).text()
        #expect(text.contains("MTA-STS: disabled ([mta_sts] enabled = false)"))
        #expect(text.contains("Decision now: opportunistic decided by default"))
        #expect(text.contains("  → deliver over TLS (certificate not checked)"))
    }

    @Test func jsonHasStableKeysAndTheSameFindings() throws {
        let json = Self.report(live: .policy(id: "id2", try STSPolicy.parse(Array(
            "version: STSv1\nmode: testing\nmx: *.example.test\nmax_age: 600\n".utf8)).get())).json()
        #expect(json == Self.report(live: .policy(id: "id2", try STSPolicy.parse(Array(
            "version: STSv1\nmode: testing\nmx: *.example.test\nmax_age: 600\n".utf8)).get())).json(), "stable output")
        let root = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(Set(root.keys) == ["domain", "probed_at", "mx", "addresses", "not_probed", "mta_sts", "dane", "dane_note",
                                   "learned", "decision", "levels", "fit_for", "exit_code"])
        #expect(root["dane"] is NSNull)
        #expect(root["fit_for"] as? String == "verify")
        #expect(root["exit_code"] as? Int == 0)
        let levels = try #require(root["levels"] as? [String: String])
        #expect(levels == ["none": "plaintext", "opportunistic": "tls", "forced": "tls", "verify": "verified-tls",
                           "tls-exclusive": "verified-tls"])
        let addresses = try #require(root["addresses"] as? [[String: Any]])
        #expect(addresses.count == 2)
        let tls = try #require(addresses[0]["tls"] as? [String: Any])
        #expect(tls["version"] as? String == "TLSv1.3")
        #expect((tls["verification"] as? [String: Any])?["result"] as? String == "trusted")
        let cert = try #require((addresses[0]["certificates"] as? [[String: Any]])?.first)
        #expect(cert["dns_names"] as? [String] == ["mx1.example.test", "mail.example.test"])
        #expect(cert["not_after"] as? Int == Self.now + 30 * 86_400)
        #expect((addresses[1]["failure"] as? [String: Any])?["step"] as? String == "connect")
        #expect(addresses[1]["starttls_offered"] is NSNull)
        let sts = try #require(root["mta_sts"] as? [String: Any])
        #expect((sts["live"] as? [String: Any])?["mode"] as? String == "testing")
        let mx = try #require((root["mx"] as? [String: Any])?["hosts"] as? [[String: Any]])
        #expect(mx.map { $0["mta_sts_match"] as? Bool } == [true, true], "the live policy's wildcard matches both")
        #expect((root["decision"] as? [String: Any])?["outcome"] as? String == "verified-tls")
    }

    @Test func enforcePolicyListingNoProbedHostDefers() {
        var r = Self.report()
        let only = DomainProbeResult(domain: "example.test", mx: r.result.mx, addresses: [r.result.addresses[1]])
        r = ProbeReport(result: only, decision: r.decision, mtaSTS: r.mtaSTS, relay: nil, now: Self.now)
        #expect(r.decisionOutcome == .deferred)
        #expect(r.fitness == .unknown)
        #expect(r.text().contains("Could not tell (exit 1)"))
    }

    @Test func theLearnedRecordIsShownWithWhyItDoesNotDecide() throws {
        var record = LearnedRecord(domain: "example.test", created: Self.now - 3 * 86_400)
        record.observeSession(host: "mx1.example.test", seen: .verified, reason: "verified TLS", key: nil, at: Self.now - 2 * 86_400)
        record.observeSession(host: "mx1.example.test", seen: .verified, reason: "verified TLS", key: nil, at: Self.now - 600)
        let base = Self.report()
        let report = ProbeReport(result: base.result, decision: base.decision, mtaSTS: base.mtaSTS, relay: nil, now: Self.now,
                                 learned: record)
        let text = report.text()
        #expect(text.contains("Learned TLS status: does not decide: mta-sts comes first"), "\(text)")
        #expect(text.contains("  learned     verified (answers verify)"))
        #expect(text.contains("  relax       never while DANE or MTA-STS decides"))
        let root = try #require(try JSONSerialization.jsonObject(with: Data(report.json().utf8)) as? [String: Any])
        let learned = try #require(root["learned"] as? [String: Any])
        #expect(learned["decides"] as? Bool == false)
        let r = try #require(learned["record"] as? [String: Any])
        #expect(r["learned"] as? String == "verified" && r["answer"] as? String == "verify")
        // Without a record the section says so.
        #expect(Self.report().text().contains("Learned TLS status: no record"))
    }

    @Test func daneFindingsPerHost() throws {
        let base = Self.report()
        let key = [UInt8](repeating: 0xab, count: 32)
        let record = TLSARecord(usage: 3, selector: 1, matchingType: 1, data: key)
        var states: [String: DANEHostState] = ["mx1.example.test": .usable(DANEPolicy(baseDomain: "mx1.example.test", records: [record])),
                                               "mx2.example.test": .failed("TLSA lookup for _25._tcp.mx2.example.test: SERVFAIL")]
        var result = DomainProbeResult(domain: base.result.domain, mx: base.result.mx, addresses: base.result.addresses, dane: states)
        var report = ProbeReport(result: result, decision: base.decision, mtaSTS: base.mtaSTS, relay: nil, now: Self.now)
        var text = report.text()
        #expect(text.contains("mx1.example.test: addresses secure; TLSA at _25._tcp.mx1.example.test: DANE authentication required"), "\(text)")
        #expect(text.contains("192.0.2.1: no match"))
        #expect(text.contains("192.0.2.1: DANE FAILED: no record authenticated the server; delivery defers"))
        #expect(text.contains("mx2.example.test: addresses secure; TLSA lookup for _25._tcp.mx2.example.test: SERVFAIL: delivery does not contact this host (4.7.5)"))
        let root = try #require(try JSONSerialization.jsonObject(with: Data(report.json().utf8)) as? [String: Any])
        let dane = try #require(root["dane"] as? [String: Any])
        let hosts = try #require(dane["hosts"] as? [[String: Any]])
        #expect(hosts.map { $0["state"] as? String } == ["verified", "bogus"])
        #expect(root["dane_note"] as? String == "checked")

        states["mx1.example.test"] = .unusable([TLSARecord(usage: 1, selector: 1, matchingType: 1, data: key)])
        states["mx2.example.test"] = .insecure
        result.dane = states
        report = ProbeReport(result: result, decision: base.decision, mtaSTS: base.mtaSTS, relay: nil, now: Self.now)
        text = report.text()
        #expect(text.contains("none usable for SMTP: TLS required, not authenticated"))
        #expect(text.contains("unusable (PKIX usage 1 is not for SMTP)"))
        #expect(text.contains("mx2.example.test: address records not signed (insecure): no TLSA lookup, no DANE"))
        #expect(Self.report().text().contains("DANE: not checked: [dns] dnssec is off"))
    }
}

