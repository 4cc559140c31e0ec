// DeliveryAttempt without sockets or DNS: each test feeds the machine the
// answers a resolver and ClientRun would give and checks what it asks for
// next — hop order, the address limit, the plaintext retry that only
// opportunistic gets, the fallback relay, tls-exclusive's drop, the stop on
// the remote's verdict, and the loop check.
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayPolicy
@testable import RelayLog
@testable import RelayTLS
@testable import RelayDNS
@testable import RelayIO
@testable import RelayQueue
@testable import RelayConfig
@testable import RelayDelivery
import RelayTestSupport

private let tlsFailure = ClientFailure.tls(TLSFailure(kind: .protocolError, detail: "alert"))
private let untrusted = ClientFailure.tls(TLSFailure(kind: .certificateUntrusted, detail: "self-signed"))
private let refused = ClientFailure.connectFailed("connection refused")

private func config(_ outbound: String = "", domains: String = "", relays: String = "",
                    listener: String = "127.0.0.1:2525") throws -> Config {
    try configForTests("""
    [outbound]
    mx_port = 2500
    \(outbound)
    [[outbound.relay]]
    name = "portal"
    address = "127.0.0.50:465"
    implicit_tls = true
    level = "verify"
    \(relays)
    [outbound.domains]
    \(domains)
    """, listener: listener)
}

/// The machine for `domain` under `config`, with a loop check that knows
/// only `selfAddresses` (port 2500).
private func machine(_ config: Config, _ domain: String = "far.test", indexes: [Int] = [0],
                     credentials: [String: Credentials] = [:], selfAddresses: Set<String> = []) -> DeliveryAttempt {
    let decision = OutboundSettings.engine(config).decide(domain)
    let plan = DeliveryAttempt.Plan(domain: domain, decision: decision, indexes: indexes, config: config, credentials: credentials)
    return DeliveryAttempt(plan: plan) { hop in
        selfAddresses.contains("\(hop.address)") && hop.port == 2500 ? HostPort("127.0.0.1:2500", defaultPort: nil) : nil
    }
}

private func mx(_ name: String, _ preference: Int, _ addresses: String...) -> MXHost {
    MXHost(name: name, preference: preference, addresses: addresses.map { IPAddress($0)! }, implicit: false)
}

private func failed(_ f: ClientFailure) -> DeliveryAttempt.Event {
    .ran(ClientRunResult(outcome: .failed(f), tls: nil, tlsFailure: nil))
}

private func accepted(_ indexes: [Int] = [0]) -> DeliveryAttempt.Event {
    var replies: [Int: Reply] = [:]
    for i in indexes { replies[i] = Reply(250, "2.0.0", "ok") }
    return .ran(ClientRunResult(outcome: .completed(replies), tls: nil, tlsFailure: nil))
}

/// The actions, spelled for comparison.
private func spell(_ actions: [DeliveryAttempt.Action]) -> [String] {
    actions.map { a in
        switch a {
        case .resolveMX(let d): return "resolve-mx \(d)"
        case .resolveHost(let h): return "resolve-host \(h)"
        case .resolveTLSA(let hosts): return "resolve-tlsa \(hosts.map(\.name).joined(separator: ","))"
        case .daneUnavailable(let host, _): return "dane-unavailable \(host)"
        case .run(let hop, let tls):
            return "run \(hop.address):\(hop.port) \(hop.level.rawValue) \(tls)\(hop.requiresVerification ? " verified" : "")"
                + (hop.danePolicy != nil ? " dane" : "")
        case .log(let outcome, let hop, _, _): return "log \(outcome.name) \(outcome.status ?? "") \(hop.address)"
        case .handingToFallback(let relay, _): return "fallback \(relay)"
        case .skippingLessPreferred(let hop, _): return "skip-from \(hop.address)"
        case .notInSTSPolicy(let host, _): return "not-in-policy \(host)"
        case .loopsBack(_, _, let f): return "loops-back \(f.status)"
        case .conclude(let results, _, _, _, let logged):
            let each = results.keys.sorted().map { i -> String in
                switch results[i]! {
                case .delivered: return "delivered"
                case .dropped: return "dropped"
                case .failed(let f): return "\(f.isPermanent ? "bounce" : "defer") \(f.status)"
                }
            }
            return "conclude \(each.joined(separator: ","))\(logged ? "" : " unlogged")"
        }
    }
}

@Suite struct DeliveryAttemptOrder {
    @Test func mxHostsInResolverOrderIPv4FirstEachFailureMovesOn() throws {
        var m = machine(try config())
        #expect(spell(m.handle(.start)) == ["resolve-mx far.test"])
        let hosts = [mx("mx1.far.test", 10, "::2", "127.0.0.11"), mx("mx2.far.test", 20, "127.0.0.12")]
        #expect(spell(m.handle(.resolved(.hosts(hosts)))) == ["run 127.0.0.11:2500 opportunistic opportunistic"])
        #expect(spell(m.handle(failed(refused))) == ["log next-address 4.4.1 127.0.0.11", "run ::2:2500 opportunistic opportunistic"])
        #expect(spell(m.handle(failed(refused))) == ["log next-address 4.4.1 ::2", "run 127.0.0.12:2500 opportunistic opportunistic"])
        #expect(spell(m.handle(failed(.timeout(stage: .greeting)))) == ["conclude defer 4.4.2"])
        #expect(spell(m.handle(accepted())) == [], "nothing after the end")
    }

    @Test func theAddressLimitCutsTheList() throws {
        var m = machine(try config("max_addresses_per_attempt = 2"))
        _ = m.handle(.start)
        let first = m.handle(.resolved(.hosts([mx("a.far.test", 10, "127.0.0.11", "127.0.0.12"), mx("b.far.test", 20, "127.0.0.13")])))
        #expect(spell(first) == ["run 127.0.0.11:2500 opportunistic opportunistic"])
        #expect(spell(m.handle(failed(refused))).last == "run 127.0.0.12:2500 opportunistic opportunistic")
        #expect(spell(m.handle(failed(refused))) == ["conclude defer 4.4.1"], "the third address is past the limit")
    }

    @Test func noAddressesDefers() throws {
        var m = machine(try config())
        _ = m.handle(.start)
        #expect(spell(m.handle(.resolved(.hosts([])))) == ["conclude defer 4.4.4"])
    }

    @Test func aDNSFailureConcludesAtOnce() throws {
        var m = machine(try config())
        _ = m.handle(.start)
        let f = DeliveryFailure(.transient, status: "4.4.3", reason: "SERVFAIL")
        #expect(spell(m.handle(.resolved(.failed(f)))) == ["conclude defer 4.4.3"])
    }

    @Test func theRemoteVerdictStopsWithoutTryingTheNextAddress() throws {
        var m = machine(try config())
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([mx("a.far.test", 10, "127.0.0.11"), mx("b.far.test", 20, "127.0.0.12")])))
        let verdict = m.handle(failed(.rejected(Reply(550, "5.7.1", "no thanks"), stage: .mail)))
        #expect(spell(verdict) == ["conclude bounce 5.7.1"])
    }

    @Test func perRecipientRepliesBecomePerRecipientResults() throws {
        var m = machine(try config(), indexes: [0, 1, 2])
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([mx("a.far.test", 10, "127.0.0.11")])))
        let replies: [Int: Reply] = [0: Reply(250, "2.1.5", "ok"), 1: Reply(550, "5.1.1", "no such user")]
        let end = m.handle(.ran(ClientRunResult(outcome: .completed(replies), tls: nil, tlsFailure: nil)))
        #expect(spell(end) == ["conclude delivered,bounce 5.1.1,defer 4.4.2"])
    }

    @Test func aRelayHostIsResolvedForItsAddressesAndKeepsItsPort() throws {
        var m = machine(try config("smarthost = \"hub\"", relays: """
            [[outbound.relay]]
            name = "hub"
            address = "hub.example.test:587"
            level = "forced"
            """))
        #expect(spell(m.handle(.start)) == ["resolve-host hub.example.test"])
        let end = m.handle(.resolved(.hosts([mx("hub.example.test", 0, "127.0.0.60", "127.0.0.61")])))
        #expect(spell(end) == ["run 127.0.0.60:587 forced required"])
        #expect(spell(m.handle(failed(refused))).last == "run 127.0.0.61:587 forced required")
    }

    @Test func aRelayWithoutItsPasswordDefersWithoutConnecting() throws {
        var m = machine(try config("smarthost = \"hub\"", relays: """
            [[outbound.relay]]
            name = "hub"
            address = "127.0.0.60:587"
            username = "relayd"
            password_file = "\(Fixtures.path("mx.pem"))"
            """))
        #expect(spell(m.handle(.start)) == ["conclude defer 4.3.5"])
    }
}

/// What a TLS failure at every address means at each level.
struct TLSFailureCase: CustomTestStringConvertible, Sendable {
    let level: String
    let failure: ClientFailure
    let expected: [String]
    var testDescription: String { "\(level): \(failure)" }
}

@Suite struct DeliveryAttemptTLSRules {
    static let cases: [TLSFailureCase] = [
        // opportunistic: the same address again without TLS, and only that.
        .init(level: "opportunistic", failure: tlsFailure, expected: [
            "log tls-failed-retrying-plaintext 4.7.5 127.0.0.11", "run 127.0.0.11:2500 none never"]),
        // forced and verify: never plaintext; the next address.
        .init(level: "forced", failure: tlsFailure, expected: ["log next-address 4.7.5 127.0.0.11", "run 127.0.0.12:2500 forced required"]),
        .init(level: "forced", failure: .tlsNotOffered, expected: ["log next-address 4.7.10 127.0.0.11", "run 127.0.0.12:2500 forced required"]),
        .init(level: "verify", failure: untrusted, expected: ["log next-address 4.7.15 127.0.0.11", "run 127.0.0.12:2500 verify required verified"]),
        .init(level: "tls-exclusive", failure: .tlsNotOffered, expected: ["log next-address 4.7.10 127.0.0.11", "run 127.0.0.12:2500 tls-exclusive required verified"]),
    ]

    @Test(arguments: cases)
    func firstAddressFailsOnTLS(_ c: TLSFailureCase) throws {
        var m = machine(try config(domains: "\"far.test\" = \"\(c.level)\""))
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([mx("a.far.test", 10, "127.0.0.11"), mx("b.far.test", 20, "127.0.0.12")])))
        #expect(spell(m.handle(failed(c.failure))) == c.expected)
    }

    static let conclusions: [TLSFailureCase] = [
        .init(level: "forced", failure: tlsFailure, expected: ["conclude defer 4.7.5"]),
        .init(level: "verify", failure: untrusted, expected: ["conclude defer 4.7.15"]),
        // tls-exclusive: TLS could not be had anywhere; no delivery, no bounce.
        .init(level: "tls-exclusive", failure: .tlsNotOffered, expected: ["conclude dropped"]),
        .init(level: "tls-exclusive", failure: untrusted, expected: ["conclude dropped"]),
        // A network failure is not a TLS verdict: kept and retried.
        .init(level: "tls-exclusive", failure: refused, expected: ["conclude defer 4.4.1"]),
    ]

    @Test(arguments: conclusions)
    func everyAddressFailsTheSameWay(_ c: TLSFailureCase) throws {
        var m = machine(try config(domains: "\"far.test\" = \"\(c.level)\""))
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([mx("a.far.test", 10, "127.0.0.11"), mx("b.far.test", 20, "127.0.0.12")])))
        _ = m.handle(failed(c.failure))
        #expect(spell(m.handle(failed(c.failure))) == c.expected)
    }

    @Test func tlsExclusiveDoesNotDropWhenOneAddressWasUnreachable() throws {
        var m = machine(try config(domains: "\"far.test\" = \"tls-exclusive\""))
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([mx("a.far.test", 10, "127.0.0.11"), mx("b.far.test", 20, "127.0.0.12")])))
        _ = m.handle(failed(.tlsNotOffered))
        #expect(spell(m.handle(failed(refused))) == ["conclude defer 4.7.10"],
                "the unreachable address might have had TLS: keep the message")
    }

    @Test func thePlaintextRetryFailingMovesToTheNextAddressWithTLS() throws {
        var m = machine(try config())
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([mx("a.far.test", 10, "127.0.0.11"), mx("b.far.test", 20, "127.0.0.12")])))
        _ = m.handle(failed(tlsFailure))
        #expect(spell(m.handle(failed(refused))) == ["log next-address 4.4.1 127.0.0.11", "run 127.0.0.12:2500 opportunistic opportunistic"])
        #expect(spell(m.handle(accepted())) == ["conclude delivered"])
    }

    @Test func anImplicitTLSRelayIsNotRetriedInPlaintext() throws {
        var m = machine(try config("smarthost = \"tls465\"", relays: """
            [[outbound.relay]]
            name = "tls465"
            address = "127.0.0.60:465"
            implicit_tls = true
            level = "opportunistic"
            """))
        #expect(spell(m.handle(.start)) == ["run 127.0.0.60:465 opportunistic opportunistic"])
        #expect(spell(m.handle(failed(tlsFailure))) == ["conclude defer 4.7.5"])
    }

    @Test func aRelayNeverWeakensTheDestinationLevel() throws {
        var m = machine(try config("smarthost = \"plain\"", domains: "\"far.test\" = \"verify\"", relays: """
            [[outbound.relay]]
            name = "plain"
            address = "127.0.0.60:25"
            level = "none"
            """))
        #expect(spell(m.handle(.start)) == ["run 127.0.0.60:25 verify required verified"])
    }
}

@Suite struct DeliveryAttemptFallback {
    let domains = "\"far.test\" = { level = \"forced\", fallback = \"portal\" }"

    @Test func tlsFailingEverywhereHandsToTheFallbackAtItsOwnLevel() throws {
        var m = machine(try config(domains: domains))
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([mx("a.far.test", 10, "127.0.0.11")])))
        let next = m.handle(failed(.tlsNotOffered))
        #expect(spell(next) == ["log fallback 4.7.10 127.0.0.11", "fallback portal", "run 127.0.0.50:465 verify required verified"])
        guard case .run(let hop, _) = next.last else { Issue.record("no run"); return }
        #expect(hop.implicitTLS && hop.via == "fallback portal")
        #expect(spell(m.handle(accepted())) == ["conclude delivered"])
    }

    /// A decision the message raised (a TLS-only forwarded copy's floor, an
    /// escalation) travels to the fallback relay: a relay configured at
    /// `none` still gets the copy with TLS required.
    @Test func theMessagesFloorTravelsToTheFallbackRelay() throws {
        let c = try config(domains: "\"far.test\" = { level = \"forced\", fallback = \"legacy\" }",
                           relays: "[[outbound.relay]]\nname = \"legacy\"\naddress = \"127.0.0.51:25\"\nlevel = \"none\"")
        let engine = OutboundSettings.engine(c)
        var e = Envelope(sender: .null, origin: Envelope.Origin(clientAddress: "192.0.2.1"))
        e.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u@far.test>")!, tlsFloor: .verify)]
        let policy = MessagePolicy.decide(domain: "far.test", envelope: e, indexes: [0], engine: engine, config: c)
        #expect(policy.decision.layer == .message && policy.decision.fallback == "legacy")
        var m = DeliveryAttempt(plan: DeliveryAttempt.Plan(domain: "far.test", decision: policy.decision, indexes: [0], config: c,
                                                           credentials: [:])) { _ in nil }
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([mx("a.far.test", 10, "127.0.0.11")])))
        #expect(spell(m.handle(failed(.tlsNotOffered))) == ["log fallback 4.7.10 127.0.0.11", "fallback legacy",
                                                             "run 127.0.0.51:25 verify required verified"])
        // Without the message's floor, the same relay keeps its own level.
        var plain = machine(c)
        _ = plain.handle(.start)
        _ = plain.handle(.resolved(.hosts([mx("a.far.test", 10, "127.0.0.11")])))
        #expect(spell(plain.handle(failed(.tlsNotOffered))).last == "run 127.0.0.51:25 none never")
    }

    @Test func anUnreachableDestinationDoesNotUseTheFallback() throws {
        var m = machine(try config(domains: domains))
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([mx("a.far.test", 10, "127.0.0.11")])))
        #expect(spell(m.handle(failed(refused))) == ["conclude defer 4.4.1"])
    }

    @Test func theFallbackFailingConcludesWithItsOwnFailureAndNoPlaintext() throws {
        var m = machine(try config(domains: domains))
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([mx("a.far.test", 10, "127.0.0.11")])))
        _ = m.handle(failed(.tlsNotOffered))
        #expect(spell(m.handle(failed(untrusted))) == ["conclude defer 4.7.15"])
    }

    @Test func aFallbackThatIsRelaydItselfBouncesAsALoop() throws {
        var m = machine(try config(domains: domains, relays: ""), selfAddresses: [])
        // The portal at 127.0.0.50:465 is made to be this relay.
        m = DeliveryAttempt(plan: m.plan) { hop in hop.port == 465 ? HostPort("127.0.0.50:465", defaultPort: nil) : nil }
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([mx("a.far.test", 10, "127.0.0.11")])))
        #expect(spell(m.handle(failed(.tlsNotOffered))) == ["log fallback 4.7.10 127.0.0.11", "fallback portal",
                                                             "loops-back 5.4.6", "conclude bounce 5.4.6 unlogged"])
    }
}

@Suite struct DeliveryAttemptLoops {
    @Test func anMXListIsCutAboveRelaydItself() throws {
        var m = machine(try config(), selfAddresses: ["127.0.0.12"])
        _ = m.handle(.start)
        let hosts = [mx("a.far.test", 10, "127.0.0.11"), mx("self.far.test", 20, "127.0.0.12"), mx("c.far.test", 30, "127.0.0.13")]
        #expect(spell(m.handle(.resolved(.hosts(hosts)))) == ["skip-from 127.0.0.12", "run 127.0.0.11:2500 opportunistic opportunistic"])
        #expect(spell(m.handle(failed(refused))) == ["conclude defer 4.4.1"], "no host at or below relayd's preference")
    }

    @Test func relaydAsTheBestMXBouncesWithoutAttempting() throws {
        var m = machine(try config(), selfAddresses: ["127.0.0.11"])
        _ = m.handle(.start)
        let hosts = [mx("self.far.test", 10, "127.0.0.11"), mx("b.far.test", 20, "127.0.0.12")]
        #expect(spell(m.handle(.resolved(.hosts(hosts)))) == ["loops-back 5.4.6", "conclude bounce 5.4.6 unlogged"])
    }
}
