// DeliveryAttempt under an MTA-STS policy (RFC 8461 §4.1, §5): enforce
// contacts only the MX hosts the policy lists — an unlisted host is never
// tried, even when it would hold a certificate valid for a listed one —
// and requires a verified chain and MX host name; testing contacts every
// host as the other layers decide and says what enforce would have done;
// the operator's entry keeps precedence.
import Testing
@testable import RelayConfig
@testable import RelayDelivery
@testable import RelayModel
@testable import RelayMTASTS
@testable import RelayPolicy
@testable import RelaySMTP
@testable import RelaySTS
import RelayTestSupport

private func stsPolicy(_ mode: String, mx: [String]) -> STSPolicy {
    let text = "version: STSv1\nmode: \(mode)\n" + mx.map { "mx: \($0)\n" }.joined() + "max_age: 86400\n"
    guard case .success(let p) = STSPolicy.parse(Array(text.utf8)) else { fatalError("test policy does not parse") }
    return p
}

private func machine(mode: String, mx: [String], operatorEntry: String? = nil, defaultLevel: String = #""opportunistic""#) throws -> DeliveryAttempt {
    let config = try configForTests("""
        [outbound]
        mx_port = 2500
        default_level = \(defaultLevel)
        [outbound.domains]
        \(operatorEntry.map { "\"far.test\" = \"\($0)\"" } ?? "")
        """)
    let record = CachedSTSPolicy(domain: "far.test", id: "sts1", policy: stsPolicy(mode, mx: mx), fetched: 1_800_000_000)
    let layer = MTASTSLayer(policies: STSPolicies([record]), now: { 1_800_000_100 })
    let engine = PolicyEngine(defaultPolicy: config.outbound.defaultPolicy, domains: config.outbound.domains, upgrades: [layer])
    let plan = DeliveryAttempt.Plan(domain: "far.test", decision: engine.decide("far.test"), indexes: [0], config: config, credentials: [:])
    return DeliveryAttempt(plan: plan) { _ in nil }
}

private func host(_ name: String, _ preference: Int, _ ip: String) -> MXHost {
    MXHost(name: name, preference: preference, addresses: [IPAddress(ip)!], implicit: false)
}

private func words(_ actions: [DeliveryAttempt.Action]) -> [String] {
    actions.map { a in
        switch a {
        case .notInSTSPolicy(let h, let d): return "not-in-policy \(h) \(d.policy.mode.rawValue)"
        case .run(let hop, _): return "run \(hop.host) \(hop.level.rawValue)\(hop.requiresVerification ? " verified" : "")"
        case .log(let o, let hop, _, _): return "log \(o.name) \(hop.host)"
        case .conclude(let r, _, _, _, _):
            if case .failed(let f) = r[0] { return "conclude \(f.status)" }
            return "conclude \(r[0].map { "\($0)" } ?? "")"
        default: return "\(a)"
        }
    }
}

private let refused = DeliveryAttempt.Event.ran(ClientRunResult(outcome: .failed(.connectFailed("refused")), tls: nil, tlsFailure: nil))

@Suite struct DeliveryAttemptUnderMTASTS {
    /// In preference order, as MXResolver hands them over: the unlisted
    /// host is the better-preferred one.
    let hosts = [host("evil.far.test", 5, "127.0.0.66"), host("mx.far.test", 10, "127.0.0.11")]

    @Test func enforceContactsOnlyListedHostsWithVerification() throws {
        var m = try machine(mode: "enforce", mx: ["mx.far.test"])
        #expect(m.plan.decision.layer == .mtaSTS)
        _ = m.handle(.start)
        let first = m.handle(.resolved(.hosts(hosts)))
        #expect(words(first) == ["not-in-policy evil.far.test enforce", "run mx.far.test verify verified"],
                "the better-preferred unlisted host is skipped, whatever certificate it holds")
        #expect(words(m.handle(refused)) == ["conclude 4.4.1"], "and never tried after the listed one fails")
    }

    @Test func enforceWithNoListedMXDefersWithoutConnecting() throws {
        var m = try machine(mode: "enforce", mx: ["other.far.test"])
        _ = m.handle(.start)
        let end = words(m.handle(.resolved(.hosts(hosts))))
        #expect(end.last == "conclude 4.7.5")
        #expect(!end.contains { $0.hasPrefix("run") })
    }

    @Test func aWildcardCoversOneLabel() throws {
        var m = try machine(mode: "enforce", mx: ["*.far.test"])
        _ = m.handle(.start)
        let first = m.handle(.resolved(.hosts([host("a.b.far.test", 5, "127.0.0.12"), host("mx.far.test", 10, "127.0.0.11")])))
        #expect(words(first) == ["not-in-policy a.b.far.test enforce", "run mx.far.test verify verified"])
    }

    @Test func testingContactsEveryHostAsTheOthersDecide() throws {
        var m = try machine(mode: "testing", mx: ["mx.far.test"])
        #expect(m.plan.decision.layer == .defaultLevel)
        #expect(m.plan.decision.testingSTS?.id == "sts1")
        _ = m.handle(.start)
        let first = m.handle(.resolved(.hosts(hosts)))
        #expect(words(first) == ["not-in-policy evil.far.test testing", "run evil.far.test opportunistic"])
    }

    @Test func theOperatorEntryKeepsPrecedence() throws {
        var m = try machine(mode: "enforce", mx: ["mx.far.test"], operatorEntry: "opportunistic")
        #expect(m.plan.decision.layer == .operatorEntry)
        #expect(m.plan.decision.enforcedSTS == nil)
        _ = m.handle(.start)
        #expect(words(m.handle(.resolved(.hosts(hosts)))) == ["run evil.far.test opportunistic"])
    }
}

@Suite struct TestingModeReport {
    let policy = stsPolicy("testing", mx: ["mx.far.test"])

    @Test func whatEnforceWouldHaveRefused() {
        #expect(DomainDelivery.enforceWouldFail(policy, host: "evil.far.test", tls: nil) == "validation-failure")
        #expect(DomainDelivery.enforceWouldFail(policy, host: "mx.far.test", tls: nil) == "starttls-not-supported")
    }
}

@Suite struct MTASTSUnderAStrongerDefault {
    @Test func aTLSExclusiveDefaultKeepsThePolicysMXBindingAndVerification() throws {
        // tls-exclusive at forced strength: stronger than the policy's
        // verify, so the default decides; the policy still binds the MX
        // hosts and still needs the chain and name verified.
        var m = try machine(mode: "enforce", mx: ["mx.far.test"],
                            defaultLevel: #"{ level = "tls-exclusive", strength = "forced" }"#)
        #expect(m.plan.decision.layer == .defaultLevel)
        #expect(m.plan.decision.enforcedSTS?.id == "sts1")
        #expect(m.plan.decision.requiresVerification)
        _ = m.handle(.start)
        let first = m.handle(.resolved(.hosts([MXHost(name: "evil.far.test", preference: 5, addresses: [IPAddress("127.0.0.66")!], implicit: false),
                                               MXHost(name: "mx.far.test", preference: 10, addresses: [IPAddress("127.0.0.11")!], implicit: false)])))
        guard case .run(let hop, _) = first.last else { Issue.record("no run: \(first)"); return }
        #expect(hop.host == "mx.far.test" && hop.level == .tlsExclusive && hop.requiresVerification)
    }
}

