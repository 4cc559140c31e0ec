// DeliveryAttempt for a REQUIRETLS message (RFC 8689 §4.2.1): an MX host
// not found securely (no DNSSEC, not in an MTA-STS policy) is never
// contacted; the others are tried with a verified certificate; when every
// address refuses for REQUIRETLS reasons the message is returned with
// 5.7.30, but an address that was merely down keeps it waiting.
import Testing
@testable import RelayConfig
@testable import RelayDelivery
@testable import RelayModel
@testable import RelayPolicy
@testable import RelaySMTP
@testable import RelaySTS
@testable import RelayMTASTS
import RelayTestSupport

private func machine(level: String = "opportunistic", tlsExclusive: Bool = false) throws -> DeliveryAttempt {
    let config = try configForTests("""
        [outbound]
        mx_port = 2500
        default_level = "\(tlsExclusive ? "tls-exclusive" : level)"
        """)
    let engine = PolicyEngine(defaultPolicy: config.outbound.defaultPolicy, domains: config.outbound.domains)
    var plan = DeliveryAttempt.Plan(domain: "far.test", decision: engine.decide("far.test"), indexes: [0], config: config, credentials: [:])
    plan.requireTLS = true
    return DeliveryAttempt(plan: plan) { _ in nil }
}

private func host(_ name: String, _ preference: Int, _ ip: String, secure: Bool, mxSecure: Bool? = nil) -> MXHost {
    var h = MXHost(name: name, preference: preference, addresses: [IPAddress(ip)!], implicit: false)
    h.secure = secure
    h.mxSecure = mxSecure ?? secure
    return h
}

private func words(_ actions: [DeliveryAttempt.Action]) -> [String] {
    actions.compactMap { a in
        switch a {
        case .run(let hop, let tls): return "run \(hop.host) \(hop.level.rawValue)\(hop.requiresVerification ? " verified" : "") \(tls)"
        case .log(let o, let hop, _, _): return "log \(o.name) \(hop.host)"
        case .conclude(let r, _, _, _, _):
            switch r[0] {
            case .failed(let f)?: return "conclude \(f.status) \(f.isPermanent ? "permanent" : "transient")"
            case .dropped?: return "conclude dropped"
            default: return "conclude \(String(describing: r[0]))"
            }
        default: return nil
        }
    }
}

private func ran(_ f: ClientFailure) -> DeliveryAttempt.Event {
    .ran(ClientRunResult(outcome: .failed(f), tls: nil, tlsFailure: nil))
}

private func stsMachine(mode: String) throws -> DeliveryAttempt {
    let config = try configForTests("[outbound]\nmx_port = 2500")
    let text = "version: STSv1\nmode: \(mode)\nmx: mx1.far.test\nmax_age: 86400\n"
    guard case .success(let policy) = STSPolicy.parse(Array(text.utf8)) else { fatalError("test policy does not parse") }
    let record = CachedSTSPolicy(domain: "far.test", id: "sts1", policy: policy, fetched: 1_800_000_000)
    let layer = MTASTSLayer(policies: STSPolicies([record]), now: { 1_800_000_100 })
    let engine = PolicyEngine(defaultPolicy: config.outbound.defaultPolicy, domains: config.outbound.domains, upgrades: [layer])
    var plan = DeliveryAttempt.Plan(domain: "far.test", decision: engine.decide("far.test"), indexes: [0], config: config, credentials: [:])
    plan.requireTLS = true
    return DeliveryAttempt(plan: plan) { _ in nil }
}

@Suite struct DeliveryAttemptRequireTLSTests {
    /// RFC 8689 §4.2.1: an MX host listed by the domain's MTA-STS policy was
    /// found securely even without DNSSEC; one the policy does not list
    /// was not (under testing it would otherwise be tried).
    @Test(arguments: ["enforce", "testing"])
    func mtaSTSListedHostCountsAsFoundSecurely(mode: String) throws {
        var m = try stsMachine(mode: mode)
        _ = m.handle(.start)
        let hosts = [host("mx0.far.test", 5, "127.0.0.10", secure: false), host("mx1.far.test", 10, "127.0.0.11", secure: false)]
        #expect(words(m.handle(.resolved(.hosts(hosts)))) == ["run mx1.far.test verify verified required"])
        #expect(words(m.handle(ran(.requireTLSNotOffered))) == ["conclude 5.7.30 permanent"])
    }

    @Test func insecureHostsAreNeverContactedAndTheMessageIsReturned() throws {
        var m = try machine()
        _ = m.handle(.start)
        let end = words(m.handle(.resolved(.hosts([host("mx1.far.test", 10, "127.0.0.11", secure: false)]))))
        #expect(end == ["conclude 5.7.30 permanent"])
    }

    /// RFC 8689 §4.2.1 needs the MX lookup itself protected: a host whose
    /// own records validate, named by an MX answer that did not, could be
    /// an attacker's host in the attacker's signed zone.
    @Test func aSecureHostNamedByAnInsecureMXAnswerIsNeverContacted() throws {
        var m = try machine()
        _ = m.handle(.start)
        let end = words(m.handle(.resolved(.hosts([host("mx.attacker.test", 10, "127.0.0.66", secure: true, mxSecure: false)]))))
        #expect(end == ["conclude 5.7.30 permanent"])
    }

    @Test func secureHostIsTriedWithVerificationThenNextThen5730() throws {
        var m = try machine()
        _ = m.handle(.start)
        let hosts = [host("mx1.far.test", 10, "127.0.0.11", secure: true), host("mx2.far.test", 20, "127.0.0.12", secure: true)]
        #expect(words(m.handle(.resolved(.hosts(hosts)))) == ["run mx1.far.test verify verified required"],
                "opportunistic by the domain, verified for REQUIRETLS")
        #expect(words(m.handle(ran(.requireTLSNotOffered))) == ["log next-address mx1.far.test", "run mx2.far.test verify verified required"])
        #expect(words(m.handle(ran(.requireTLSNotOffered))) == ["conclude 5.7.30 permanent"])
    }

    @Test func aHostThatWasDownKeepsTheMessageWaiting() throws {
        var m = try machine()
        _ = m.handle(.start)
        let hosts = [host("mx1.far.test", 10, "127.0.0.11", secure: true), host("mx2.far.test", 20, "127.0.0.12", secure: true)]
        _ = m.handle(.resolved(.hosts(hosts)))
        _ = m.handle(ran(.connectFailed("refused")))
        #expect(words(m.handle(ran(.requireTLSNotOffered))).last == "conclude 4.4.1 transient",
                "mx1 may offer REQUIRETLS once it is back")
    }

    /// A TLS failure under REQUIRETLS is never retried in plaintext; when
    /// every address failed on TLS, the message is returned with 5.7.30
    /// rather than left to wait for days.
    @Test(arguments: [ClientFailure.tls(TLSFailure(kind: .certificateUntrusted, detail: "self-signed")), .tlsNotOffered,
                      .tlsRefused(Reply(454, "4.7.0", "not now"))])
    func tlsFailuresAreReturnedWith5730NeverPlaintext(failure: ClientFailure) throws {
        var m = try machine()
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([host("mx1.far.test", 10, "127.0.0.11", secure: true)])))
        let end = words(m.handle(ran(failure)))
        #expect(end == ["conclude 5.7.30 permanent"])
    }

    /// Whatever failed — REQUIRETLS not offered, STARTTLS missing, a bad
    /// certificate — tls-exclusive never drops a REQUIRETLS message.
    @Test(arguments: [ClientFailure.requireTLSNotOffered, .tlsNotOffered,
                      .tls(TLSFailure(kind: .hostnameMismatch, detail: "x"))])
    func tlsExclusiveReturnsRatherThanDrops(failure: ClientFailure) throws {
        var m = try machine(tlsExclusive: true)
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([host("mx1.far.test", 10, "127.0.0.11", secure: true)])))
        #expect(words(m.handle(ran(failure))) == ["conclude 5.7.30 permanent"],
                "the sender asked for REQUIRETLS and hears that it could not be had")
    }
}
