// `relayd policy explain` for a domain in each state: no policy cached,
// enforce, testing, expired, MTA-STS disabled, an operator entry over a
// cached policy, and a domain routed to a relay. Text for people, JSON for
// scripts (parsed back here, so it stays valid JSON).
import Foundation
import Testing
@testable import RelayMTASTS
import RelayModel
@testable import RelayPolicy
@testable import RelaySTS
import RelayTestSupport

private let now = 1_800_003_600

private func record(_ mode: String, fetched: Int = 1_800_000_000, lastResult: String = "ok") throws -> CachedSTSPolicy {
    let text = "version: STSv1\nmode: \(mode)\nmx: mx.example.test\nmx: *.example.test\nmax_age: 86400\n"
    guard case .success(let p) = STSPolicy.parse(Array(text.utf8)) else { throw STSCacheError.malformed("test policy") }
    var r = CachedSTSPolicy(domain: "example.test", id: "2026a", policy: p, fetched: fetched)
    r.lastAttempt = now - 60
    r.lastResult = lastResult
    return r
}

private func decide(_ cached: CachedSTSPolicy?, operatorLevel: PolicyLevel? = nil, enabled: Bool = true) -> PolicyDecision {
    let upgrades: [any PolicyUpgradeLayer] = enabled ? [MTASTSLayer(policies: STSPolicies(cached.map { [$0] } ?? []), now: { now })] : []
    let domains = operatorLevel.map { ["example.test": DomainPolicy(level: $0)] } ?? [:]
    return PolicyEngine(defaultLevel: .opportunistic, domains: domains, upgrades: upgrades).decide("example.test")
}

private func parsed(_ json: String) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
}

@Suite struct PolicyExplanationStates {
    @Test func nothingCached() throws {
        let text = PolicyExplanation.text(decide(nil), cached: nil, enabled: true, relay: nil, now: now)
        #expect(text.hasPrefix("example.test: opportunistic decided by default"))
        #expect(text.contains("MTA-STS: no cached policy"))
        let j = try parsed(PolicyExplanation.json(decide(nil), cached: nil, enabled: true, relay: nil, now: now))
        #expect(j["mta_sts"] is NSNull)
        #expect(j["layer"] as? String == "default")
    }

    @Test func enforce() throws {
        let r = try record("enforce")
        let d = decide(r)
        let text = PolicyExplanation.text(d, cached: r, enabled: true, relay: nil, now: now)
        #expect(text.hasPrefix("example.test: verify (verified) decided by mta-sts: MTA-STS enforce, policy id 2026a"))
        #expect(text.contains("  mta-sts   verify"))
        #expect(text.contains("  mode        enforce"))
        #expect(text.contains("  mx          mx.example.test, *.example.test"))
        #expect(text.contains("  fetched     2027-01-15 08:00:00 UTC (3600 s ago)"))
        #expect(text.contains("in 82800 s"))
        #expect(text.contains("last fetch") && text.contains(": ok"))
        let j = try parsed(PolicyExplanation.json(d, cached: r, enabled: true, relay: nil, now: now))
        let sts = try #require(j["mta_sts"] as? [String: Any])
        #expect(sts["mode"] as? String == "enforce")
        #expect(sts["id"] as? String == "2026a")
        #expect(sts["expired"] as? Bool == false)
        #expect(sts["age_seconds"] as? Int == 3600)
        #expect(j["requires_verification"] as? Bool == true)
    }

    @Test func testingRaisesNothingButIsShown() throws {
        let r = try record("testing")
        let d = decide(r)
        let text = PolicyExplanation.text(d, cached: r, enabled: true, relay: nil, now: now)
        #expect(text.hasPrefix("example.test: opportunistic decided by default"))
        #expect(text.contains("  mta-sts   -              MTA-STS testing, policy id 2026a"))
        #expect(text.contains("  mode        testing"))
    }

    @Test func expiredIsNotApplied() throws {
        let r = try record("enforce", fetched: now - 90_000, lastResult: "timeout")
        let d = decide(r)
        #expect(d.layer == .defaultLevel)
        let text = PolicyExplanation.text(d, cached: r, enabled: true, relay: nil, now: now)
        #expect(text.contains("expired, not applied"))
        #expect(text.contains(": timeout"))
        let j = try parsed(PolicyExplanation.json(d, cached: r, enabled: true, relay: nil, now: now))
        #expect((j["mta_sts"] as? [String: Any])?["expired"] as? Bool == true)
    }

    @Test func disabled() throws {
        let r = try record("enforce")
        let text = PolicyExplanation.text(decide(r, enabled: false), cached: r, enabled: false, relay: nil, now: now)
        #expect(text.contains("MTA-STS: disabled"))
        #expect(!text.contains("mta-sts   verify"))
    }

    @Test func theOperatorEntryWins() throws {
        let r = try record("enforce")
        let d = decide(r, operatorLevel: .opportunistic)
        let text = PolicyExplanation.text(d, cached: r, enabled: true, relay: nil, now: now)
        #expect(text.hasPrefix("example.test: opportunistic decided by operator"))
        #expect(text.contains("  mta-sts   verify"), "the layer's answer is still shown")
    }

    @Test func aRelayRouteSaysMTASTSDoesNotApply() throws {
        let text = PolicyExplanation.text(decide(nil), cached: nil, enabled: true, relay: "hub", now: now)
        #expect(text.contains("route: relay hub (MTA-STS does not apply to a relay, only to MX hosts)"))
        let j = try parsed(PolicyExplanation.json(decide(nil), cached: nil, enabled: true, relay: "hub", now: now))
        #expect(j["relay"] as? String == "hub")
    }
}
