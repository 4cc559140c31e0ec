import Foundation
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayPolicy
@testable import RelayTLS
@testable import RelayDNS
@testable import RelayQueue
@testable import RelayConfig
@testable import RelayDelivery
import RelayTestSupport

struct FixedLayer: PolicyUpgradeLayer {
    let layer: PolicyLayer
    let answers: [String: PolicyLevel]
    func verdict(for domain: String) -> LayerVerdict? {
        answers[domain].map { LayerVerdict(layer: layer, level: $0, detail: "\(layer.rawValue) says \($0.rawValue)") }
    }
}

// MARK: SPEC's policy vocabulary, one row per level

/// What becomes of a message when the MX offers no TLS at all.
enum WithoutTLS: Equatable, Sendable, CustomStringConvertible {
    case deliveredInPlaintext
    case deferred(String)
    case dropped
    /// Never expected: here so that a wrong answer prints as what it is.
    case bounced(String)

    var description: String {
        switch self {
        case .deliveredInPlaintext: return "delivered in plaintext"
        case .deferred(let status): return "deferred \(status)"
        case .dropped: return "dropped"
        case .bounced(let status): return "bounced \(status)"
        }
    }
}

/// A row of SPEC's level table: level | TLS | certificate | when TLS cannot be had.
struct PolicyLevelRow: CustomTestStringConvertible, Sendable {
    let level: PolicyLevel
    /// tls-exclusive's strength; nil: the default (verify).
    let strength: DomainPolicy.Strength?
    let tls: TLSRequirement
    let certificateChecked: Bool
    let whenTLSCannotBeHad: WithoutTLS

    init(_ level: PolicyLevel, strength: DomainPolicy.Strength? = nil, tls: TLSRequirement, certificateChecked: Bool,
         whenTLSCannotBeHad: WithoutTLS) {
        self.level = level
        self.strength = strength
        self.tls = tls
        self.certificateChecked = certificateChecked
        self.whenTLSCannotBeHad = whenTLSCannotBeHad
    }

    var policy: DomainPolicy {
        strength.map { DomainPolicy(level: level, exclusiveStrength: $0) } ?? DomainPolicy(level: level)
    }

    var testDescription: String {
        "\(level.rawValue)\(strength.map { " (\($0.rawValue) strength)" } ?? "") | TLS \(tls) | certificate "
            + "\(certificateChecked ? "checked" : "not checked") | without TLS: \(whenTLSCannotBeHad)"
    }
}

@Suite struct PolicyLevelTable {
    static let rows: [PolicyLevelRow] = [
        .init(.none,          tls: .never,         certificateChecked: false, whenTLSCannotBeHad: .deliveredInPlaintext),
        .init(.opportunistic, tls: .opportunistic, certificateChecked: false, whenTLSCannotBeHad: .deliveredInPlaintext),
        .init(.forced,        tls: .required,      certificateChecked: false, whenTLSCannotBeHad: .deferred("4.7.10")),
        .init(.verify,        tls: .required,      certificateChecked: true,  whenTLSCannotBeHad: .deferred("4.7.10")),
        .init(.tlsExclusive,  tls: .required,      certificateChecked: true,  whenTLSCannotBeHad: .dropped),
        .init(.tlsExclusive, strength: .forced,
                              tls: .required,      certificateChecked: false, whenTLSCannotBeHad: .dropped),
    ]

    @Test(arguments: rows)
    func level(_ row: PolicyLevelRow) throws {
        #expect(row.level.tlsRequirement == row.tls)
        #expect(row.policy.requiresVerification == row.certificateChecked)
        // The same through the engine, as an operator entry over the lowest default.
        let decision = PolicyEngine(defaultLevel: .none, domains: ["far.test": row.policy]).decide("far.test")
        #expect(decision.tlsRequirement == row.tls)
        #expect(decision.requiresVerification == row.certificateChecked)
        #expect(try Self.deliverToAnMXWithoutSTARTTLS(decision) == row.whenTLSCannotBeHad)
    }

    /// One delivery attempt whose only MX host offers no STARTTLS: the
    /// DeliveryAttempt machine picks the hop, ClientSession talks to the
    /// scripted MX, and the machine concludes from what the session ended with.
    static func deliverToAnMXWithoutSTARTTLS(_ decision: PolicyDecision) throws -> WithoutTLS? {
        let config = try ConfigLoader.parse("""
            [server]
            hostname = "relay.example.test"
            spool_dir = "/nonexistent/spool"
            [[listener]]
            address = "127.0.0.1:2525"
            kind = "smtp"
            [tls]
            certificate = "\(Fixtures.path("mx.pem"))"
            key = "\(Fixtures.path("mx.key"))"
            """, file: "/nonexistent/relayd.conf")
        let plan = DeliveryAttempt.Plan(domain: "far.test", decision: decision, indexes: [0], config: config, credentials: [:])
        var attempt = DeliveryAttempt(plan: plan) { _ in nil }
        _ = attempt.handle(.start)
        let mx = MXHost(name: "mx.far.test", preference: 10, addresses: [IPAddress("192.0.2.25")!], implicit: false)
        guard case .run(let hop, let tls)? = attempt.handle(.resolved(.hosts([mx]))).first else {
            Issue.record("the attempt did not try the MX")
            return nil
        }
        #expect(hop.level == decision.level)
        #expect(hop.requiresVerification == decision.requiresVerification)

        var env = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<s@example.test>")!),
                           origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u@far.test>")!)]
        var h = ClientHarness(ClientSessionConfiguration(heloName: "relay.example.test", tls: tls, envelope: env, bodySize: 3))
        h.server("220 mx.far.test ESMTP\r\n250-mx.far.test\r\n250 PIPELINING\r\n")
        if h.outcome == nil { h.server("250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n250 2.0.0 queued\r\n") }
        let outcome = try #require(h.outcome, "the session did not end: \(h.commands)")
        #expect(!h.session.usedTLS)

        let end = attempt.handle(.ran(ClientRunResult(outcome: outcome, tls: nil, tlsFailure: nil)))
        guard case .conclude(let results, _, _, _, _)? = end.last, let result = results[0] else {
            Issue.record("no conclusion: \(end)")
            return nil
        }
        switch result {
        case .delivered:
            #expect(h.commands.contains { $0.hasPrefix("MAIL FROM:") } && h.bodySent == 1, "\(h.commands)")
            return .deliveredInPlaintext
        case .dropped:
            return .dropped
        case .failed(let f):
            #expect(!h.commands.contains { $0.hasPrefix("MAIL") }, "mail was offered in plaintext: \(h.commands)")
            return f.isPermanent ? .bounced(f.status) : .deferred(f.status)
        }
    }
}

// MARK: SPEC's precedence of layers

/// One domain under one configuration: what each layer answers and who wins.
/// A layer without an answer (nil) is not configured at all.
struct PrecedenceRow: CustomTestStringConvertible, Sendable {
    let domain: String
    let entry: (key: String, policy: DomainPolicy)?
    let dane: PolicyLevel?
    let mtaSTS: PolicyLevel?
    let learned: PolicyLevel?
    let defaultLevel: PolicyLevel
    let level: PolicyLevel
    let layer: PolicyLayer
    let verified: Bool
    let fallback: String?
    let why: String

    init(_ domain: String, entry: (key: String, policy: DomainPolicy)? = nil, dane: PolicyLevel? = nil,
         mtaSTS: PolicyLevel? = nil, learned: PolicyLevel? = nil, default defaultLevel: PolicyLevel,
         wins level: PolicyLevel, by layer: PolicyLayer, verified: Bool, fallback: String? = nil, _ why: String) {
        self.domain = domain
        self.entry = entry
        self.dane = dane
        self.mtaSTS = mtaSTS
        self.learned = learned
        self.defaultLevel = defaultLevel
        self.level = level
        self.layer = layer
        self.verified = verified
        self.fallback = fallback
        self.why = why
    }

    /// Handed to the engine in reverse SPEC order: it must sort them itself.
    var upgrades: [FixedLayer] {
        let answered: [(PolicyLayer, PolicyLevel?)] = [(.learned, learned), (.mtaSTS, mtaSTS), (.dane, dane)]
        return answered.compactMap { layer, level in
            level.map { FixedLayer(layer: layer, answers: [DNSName.normalize(domain): $0]) }
        }
    }

    var testDescription: String {
        func say(_ l: PolicyLevel?) -> String { l?.rawValue ?? "–" }
        let op = entry.map { "\($0.key)=\($0.policy.level.rawValue)" } ?? "–"
        return "\(domain): operator \(op), DANE \(say(dane)), MTA-STS \(say(mtaSTS)), learned \(say(learned)), "
            + "default \(defaultLevel.rawValue) → \(level.rawValue) by \(layer.rawValue) (\(why))"
    }
}

@Suite struct PolicyPrecedenceTable {
    static let rows: [PrecedenceRow] = [
        .init("Bank.Example.", entry: ("bank.example", DomainPolicy(level: .verify)), default: .opportunistic,
              wins: .verify, by: .operatorEntry, verified: true, "an entry raises; the name is normalised"),
        .init("mail.partner.example", entry: (".partner.example", DomainPolicy(level: .forced, fallback: "portal")),
              default: .opportunistic, wins: .forced, by: .operatorEntry, verified: false, fallback: "portal",
              "a .parent entry covers its subdomains"),
        .init("partner.example", entry: (".partner.example", DomainPolicy(level: .forced, fallback: "portal")),
              default: .opportunistic, wins: .opportunistic, by: .defaultLevel, verified: false,
              "a .parent entry covers subdomains only"),
        .init("broken-sts.example", entry: ("broken-sts.example", DomainPolicy(level: .opportunistic)), mtaSTS: .verify,
              default: .opportunistic, wins: .opportunistic, by: .operatorEntry, verified: false,
              "the escape hatch lowers MTA-STS"),
        .init("broken-dane.example", entry: ("broken-dane.example", DomainPolicy(level: .forced)), dane: .verify,
              default: .opportunistic, wins: .forced, by: .operatorEntry, verified: false,
              "the escape hatch lowers DANE"),
        .init("both.example", dane: .verify, mtaSTS: .verify, learned: .forced, default: .opportunistic,
              wins: .verify, by: .dane, verified: true, "DANE before MTA-STS"),
        .init("sts.example", mtaSTS: .verify, default: .opportunistic,
              wins: .verify, by: .mtaSTS, verified: true, "MTA-STS enforce raises the default"),
        .init("sts-learned.example", mtaSTS: .verify, learned: .forced, default: .opportunistic,
              wins: .verify, by: .mtaSTS, verified: true, "MTA-STS before learned"),
        .init("seen-tls.example", learned: .forced, default: .opportunistic,
              wins: .forced, by: .learned, verified: false, "learned status raises the default"),
        .init("a.example", learned: .opportunistic, default: .forced,
              wins: .forced, by: .defaultLevel, verified: false, "learned 'opportunistic' cannot lower forced"),
        .init("b.example", dane: .verify, learned: .forced, default: .forced,
              wins: .verify, by: .dane, verified: true, "DANE before learned"),
        .init("quiet.example", default: .opportunistic,
              wins: .opportunistic, by: .defaultLevel, verified: false, "no layer answers"),
    ]

    @Test(arguments: rows)
    func precedence(_ row: PrecedenceRow) {
        let engine = PolicyEngine(defaultLevel: row.defaultLevel,
                                  domains: row.entry.map { [$0.key: $0.policy] } ?? [:],
                                  upgrades: row.upgrades)
        let decision = engine.decide(row.domain)
        #expect(decision.level == row.level)
        #expect(decision.layer == row.layer)
        #expect(decision.requiresVerification == row.verified)
        #expect(decision.fallback == row.fallback)
        // `policy explain` lists every configured layer, highest precedence first.
        let configured = Set(row.upgrades.map(\.layer))
        #expect(decision.verdicts.map(\.layer)
                == PolicyLayer.allCases.filter { $0 == .operatorEntry || $0 == .defaultLevel || configured.contains($0) })
    }

    @Test func upgradesAreSortedIntoSPECOrder() {
        let engine = PolicyEngine(defaultLevel: .forced, domains: [:],
                                  upgrades: [FixedLayer(layer: .learned, answers: [:]), FixedLayer(layer: .dane, answers: [:])])
        #expect(engine.upgrades.map(\.layer) == [.dane, .learned], "sorted into SPEC order")
    }
}

@Suite struct MXResolverTests {
    final class Box: @unchecked Sendable { var r: MXResolution? }

    /// Waits for the answer, but no longer than 5 s: a resolver that never
    /// calls back fails the test instead of hanging the run.
    func resolve(_ fake: FakeResolver, _ domain: String, shuffled: Bool = false) throws -> MXResolution {
        let done = DispatchSemaphore(value: 0)
        let box = Box()
        let resolver = shuffled ? MXResolver(resolver: fake) : MXResolver(resolver: fake, shuffle: { $0 })
        resolver.resolve(domain) { box.r = $0; done.signal() }
        try #require(done.wait(timeout: .now() + 5) == .success, "no MX answer for \(domain) within 5 s")
        return try #require(box.r)
    }

    @Test func preferenceOrderAndAddresses() throws {
        let f = FakeResolver()
        f.set("example.test", .mx, [.mx(preference: 20, exchange: "backup.example.test"), .mx(preference: 10, exchange: "mx.example.test")])
        f.set("mx.example.test", .a, [.a(IPAddress("127.0.0.10")!)])
        f.set("backup.example.test", .a, [.a(IPAddress("127.0.0.11")!)])
        f.set("backup.example.test", .aaaa, [.aaaa(IPAddress("::1")!)])
        let answer = try resolve(f, "Example.Test")
        guard case .hosts(let hosts) = answer else {
            Issue.record("\(answer)")
            return
        }
        #expect(hosts.map(\.name) == ["mx.example.test", "backup.example.test"])
        #expect(hosts[1].addresses.map(\.description) == ["127.0.0.11", "::1"])
    }

    @Test func equalPreferencesAreShuffled() throws {
        let f = FakeResolver()
        f.set("eq.test", .mx, (0..<6).map { DNSRecordData.mx(preference: 10, exchange: "mx\($0).eq.test") })
        for i in 0..<6 { f.set("mx\(i).eq.test", .a, [.a(IPAddress("127.0.1.\(i)")!)]) }
        var orders = Set<[String]>()
        for _ in 0..<20 {
            if case .hosts(let h) = try resolve(f, "eq.test", shuffled: true) { orders.insert(h.map(\.name)) }
        }
        #expect(orders.count > 1)
    }

    @Test func aliasWhoseTargetIsNotChasedIsFollowed() throws {
        let f = FakeResolver()
        f.set("alias.test", .mx, [.cname("real.test")])
        f.set("real.test", .mx, [.mx(preference: 10, exchange: "mx.real.test")])
        f.set("mx.real.test", .a, [.a(IPAddress("127.0.0.40")!)])
        let alias = try resolve(f, "alias.test")
        guard case .hosts(let h) = alias else {
            Issue.record("\(alias)")
            return
        }
        #expect(h.map(\.name) == ["mx.real.test"])
        f.set("loop1.test", .mx, [.cname("loop2.test")])
        f.set("loop2.test", .mx, [.cname("loop1.test")])
        let loop = try resolve(f, "loop1.test")
        guard case .failed(let failure) = loop else {
            Issue.record("CNAME loop: \(loop)")
            return
        }
        #expect(failure.kind == .transient)
    }

    @Test func nullMXBouncesAtOnce() throws {
        let f = FakeResolver()
        f.set("nullmx.test", .mx, [.mx(preference: 0, exchange: "")])
        let answer = try resolve(f, "nullmx.test")
        guard case .failed(let failure) = answer else {
            Issue.record("\(answer)")
            return
        }
        #expect(failure.kind == .permanent)
        #expect(failure.status == "5.1.10")
    }

    @Test func implicitMXAndNonexistentDomain() throws {
        let f = FakeResolver()
        f.set("bare.test", .a, [.a(IPAddress("127.0.0.9")!)])
        let bare = try resolve(f, "bare.test")
        guard case .hosts(let h) = bare else {
            Issue.record("\(bare)")
            return
        }
        #expect(h.first?.name == "bare.test")
        #expect(h.first?.implicit == true)
        f.setRcode("nx.test", .mx, .nxDomain)
        let nxAnswer = try resolve(f, "nx.test")
        guard case .failed(let nx) = nxAnswer else {
            Issue.record("\(nxAnswer)")
            return
        }
        #expect(nx.kind == .permanent)
        #expect(try resolve(f, "nothing.test")
                == .failed(DeliveryFailure(.permanent, status: "5.1.2", reason: "nothing.test has no MX and no address records")))
    }

    @Test func servfailTimeoutsAndGarbageAreTransient() throws {
        let f = FakeResolver()
        f.setRcode("servfail.test", .mx, .servFail)
        f.fail("timeout.test", .mx, .timeout)
        f.fail("garbage.test", .mx, .malformed("x"))
        f.set("mxfail.test", .mx, [.mx(preference: 10, exchange: "mx.mxfail.test")])
        f.fail("mx.mxfail.test", .a, .timeout)
        f.setRcode("mx.mxfail.test", .aaaa, .servFail)
        for d in ["servfail.test", "timeout.test", "garbage.test", "mxfail.test"] {
            guard case .failed(let failure) = try resolve(f, d) else {
                Issue.record("\(d)")
                continue
            }
            #expect(failure.kind == .transient, "\(d)")
        }
    }
}

@Suite struct DSNAndStateTests {
    func message(sender: ReversePath, notify: [Envelope.Notify]? = nil, ret: Envelope.Return? = nil) -> QueuedMessage {
        var env = Envelope(sender: sender, origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u@far.example>")!, notify: notify,
                                             originalRecipient: "rfc822;u@far.example")]
        env.ret = ret
        return QueuedMessage(id: QueueID.make(microseconds: 5, random: 5), arrival: 0, envelope: env,
                             body: Array("Subject: secret plans\r\n\r\nbody text\r\n".utf8))
    }

    @Test func bounceCarriesTLSReasonAndHeadersOnly() throws {
        let m = message(sender: .mailbox(Mailbox.parseForwardPath("<s@example.test>")!))
        let dsn = try #require(DSN.bounce(for: m, failures: [DSN.Failure(recipientIndex: 0, status: "5.7.10",
                                                                         diagnostic: "TLS not offered by mx.far.example[127.0.0.5]:25 (policy forced)")],
                                          hostname: "relay.test", id: QueueID.make(microseconds: 6, random: 6), now: 60))
        let text = String(decoding: dsn.body, as: UTF8.self)
        #expect(dsn.envelope.sender == .null)
        #expect(dsn.envelope.recipients.first?.mailbox.description == "s@example.test")
        #expect(text.contains("Content-Type: multipart/report; report-type=delivery-status"))
        #expect(text.contains("Status: 5.7.10"))
        #expect(text.contains("Final-Recipient: rfc822; u@far.example"))
        #expect(text.contains("TLS not offered"))
        #expect(text.contains("Subject: secret plans"))
        #expect(!text.contains("body text"), "RET unspecified: headers only")
        let full = DSN.bounce(for: message(sender: .mailbox(Mailbox.parseForwardPath("<s@example.test>")!), ret: .full),
                              failures: [DSN.Failure(recipientIndex: 0, status: "5.0.0", diagnostic: "x")],
                              hostname: "relay.test", id: "X", now: 0)!
        #expect(String(decoding: full.body, as: UTF8.self).contains("body text"))
    }

    /// A message that demanded TLS of its own (REQUIRETLS, an escalation,
    /// a TLS-only forwarded copy) comes back with its headers only, even
    /// with RET=FULL, and the bounce carries no REQUIRETLS.
    @Test(arguments: ["requiretls", "escalated", "floor"])
    func aMessageThatDemandedTLSIsReturnedWithHeadersOnly(control: String) throws {
        var m = message(sender: .mailbox(Mailbox.parseForwardPath("<s@example.test>")!), ret: .full)
        switch control {
        case "requiretls": m.envelope.requireTLS = true
        case "escalated": m.envelope.escalation = .init(level: .verify, source: .subjectTag)
        default: m.envelope.recipients[0].tlsFloor = .forced
        }
        let dsn = try #require(DSN.bounce(for: m, failures: [DSN.Failure(recipientIndex: 0, status: "5.7.30", diagnostic: "x")],
                                          hostname: "relay.test", id: "X", now: 0))
        let text = String(decoding: dsn.body, as: UTF8.self)
        #expect(text.contains("Content-Type: text/rfc822-headers") && text.contains("Subject: secret plans"))
        #expect(!text.contains("body text"))
        #expect(!dsn.envelope.requireTLS && dsn.envelope.escalation == nil)
    }

    @Test func noBounceForNullSenderOrNotifyNever() {
        #expect(DSN.bounce(for: message(sender: .null), failures: [DSN.Failure(recipientIndex: 0, status: "5.0.0", diagnostic: "x")],
                           hostname: "r", id: "X", now: 0) == nil)
        #expect(DSN.bounce(for: message(sender: .mailbox(Mailbox.parseForwardPath("<s@e.test>")!), notify: [.never]),
                           failures: [DSN.Failure(recipientIndex: 0, status: "5.0.0", diagnostic: "x")], hostname: "r", id: "X", now: 0) == nil)
        #expect(DSN.bounce(for: message(sender: .mailbox(Mailbox.parseForwardPath("<s@e.test>")!), notify: [.success]),
                           failures: [DSN.Failure(recipientIndex: 0, status: "5.0.0", diagnostic: "x")], hostname: "r", id: "X", now: 0) == nil)
    }

    @Test func deliveryStateRoundTripAndCorruption() throws {
        var s = DeliveryState(recipientCount: 3, nextAttempt: 1234)
        s.attempts = 2
        s.recipients[0] = .init(status: .delivered, detail: "250 ok")
        s.recipients[1] = .init(status: .bounced, detail: "TLS failed: hostname-mismatch", enhancedStatus: "5.7.15",
                                tlsDetail: "4.7.15 TLS with mx[1.2.3.4]:25 failed: hostname-mismatch")
        #expect(try DeliveryState.decode(s.encode()) == s)
        #expect(s.pendingIndexes == [2])
        let bytes = s.encode()
        for cut in 0..<bytes.count { #expect(throws: (any Error).self) { try DeliveryState.decode(Array(bytes[..<cut])) } }
    }
}
