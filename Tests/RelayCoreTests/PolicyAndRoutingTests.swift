import Foundation
import XCTest
@testable import RelayCore

struct FixedLayer: PolicyUpgradeLayer {
    let layer: PolicyLayer
    let answers: [String: PolicyLevel]
    func verdict(for domain: String) -> LayerVerdict? {
        answers[domain].map { LayerVerdict(layer: layer, level: $0, detail: "\(layer.rawValue) says \($0.rawValue)") }
    }
}

final class PolicyEngineTests: XCTestCase {
    func testOperatorEntryWinsAndMayLower() {
        let engine = PolicyEngine(defaultLevel: .opportunistic,
                                  domains: ["bank.example": DomainPolicy(level: .verify),
                                            ".partner.example": DomainPolicy(level: .forced, fallback: "portal"),
                                            "broken-sts.example": DomainPolicy(level: .opportunistic)],
                                  upgrades: [FixedLayer(layer: .mtaSTS, answers: ["broken-sts.example": .verify, "sts.example": .verify])])
        let bank = engine.decide("Bank.Example.")
        XCTAssertEqual(bank.level, .verify)
        XCTAssertTrue(bank.requiresVerification)
        XCTAssertEqual(bank.layer, .operatorEntry)
        let sub = engine.decide("mail.partner.example")
        XCTAssertEqual(sub.level, .forced)
        XCTAssertFalse(sub.requiresVerification)
        XCTAssertEqual(sub.fallback, "portal")
        XCTAssertEqual(engine.decide("partner.example").layer, .defaultLevel, "a .parent entry covers subdomains only")
        let lowered = engine.decide("broken-sts.example")
        XCTAssertEqual(lowered.level, .opportunistic, "the escape hatch lowers MTA-STS")
        XCTAssertEqual(lowered.layer, .operatorEntry)
        XCTAssertEqual(lowered.verdicts.map(\.layer), [.operatorEntry, .mtaSTS, .defaultLevel])
        let sts = engine.decide("sts.example")
        XCTAssertEqual(sts.level, .verify)
        XCTAssertEqual(sts.layer, .mtaSTS)
    }

    func testUpgradesNeverLowerTheDefaultAndKeepPrecedence() {
        let engine = PolicyEngine(defaultLevel: .forced, domains: [:],
                                  upgrades: [FixedLayer(layer: .learned, answers: ["a.example": .opportunistic, "b.example": .forced]),
                                             FixedLayer(layer: .dane, answers: ["b.example": .verify])])
        XCTAssertEqual(engine.upgrades.map(\.layer), [.dane, .learned], "sorted into SPEC order")
        let a = engine.decide("a.example")
        XCTAssertEqual(a.level, .forced)
        XCTAssertEqual(a.layer, .defaultLevel, "learned 'opportunistic' cannot lower forced")
        let b = engine.decide("b.example")
        XCTAssertEqual(b.level, .verify)
        XCTAssertEqual(b.layer, .dane)
    }

    func testLevelsMapToClientTLSRequirements() {
        XCTAssertEqual(PolicyLevel.none.tlsRequirement, .never)
        XCTAssertEqual(PolicyLevel.opportunistic.tlsRequirement, .opportunistic)
        for l in [PolicyLevel.forced, .verify, .tlsExclusive] { XCTAssertEqual(l.tlsRequirement, .required) }
        XCTAssertTrue(DomainPolicy(level: .tlsExclusive).requiresVerification)
        XCTAssertFalse(DomainPolicy(level: .tlsExclusive, exclusiveStrength: .forced).requiresVerification)
        XCTAssertFalse(DomainPolicy(level: .forced).requiresVerification)
    }
}

/// Answers DNS queries from a table: name/type → response or error.
final class FakeResolver: DNSResolving, @unchecked Sendable {
    var answers: [String: Result<(DNSRCode, [DNSRecordData]), DNSError>] = [:]
    private let lock = NSLock()
    private(set) var asked: [String] = []

    func set(_ name: String, _ type: DNSType, _ data: [DNSRecordData]) {
        answers["\(name)/\(type.rawValue)"] = .success((.noError, data))
    }

    func setRcode(_ name: String, _ type: DNSType, _ rcode: DNSRCode) {
        answers["\(name)/\(type.rawValue)"] = .success((rcode, []))
    }

    func fail(_ name: String, _ type: DNSType, _ error: DNSError) { answers["\(name)/\(type.rawValue)"] = .failure(error) }

    func query(_ name: String, _ type: DNSType, completion: @escaping @Sendable (Result<DNSResponse, DNSError>) -> Void) {
        lock.lock(); asked.append("\(name)/\(type)"); lock.unlock()
        let key = "\(name)/\(type.rawValue)"
        switch answers[key] ?? .success((.noError, [])) {
        case .failure(let e): completion(.failure(e))
        case .success(let (rcode, data)):
            let records = data.map { DNSRecord(name: name, type: type.rawValue, ttl: 60, data: $0) }
            completion(.success(DNSResponse(id: 1, rcode: rcode, authenticated: false, truncated: false,
                                            questionName: name, questionType: type.rawValue, answers: records)))
        }
    }
}

final class MXResolverTests: XCTestCase {
    func resolve(_ fake: FakeResolver, _ domain: String) -> MXResolution {
        let done = expectation(description: "mx")
        final class Box: @unchecked Sendable { var r: MXResolution? }
        let box = Box()
        MXResolver(resolver: fake, shuffle: { $0 }).resolve(domain) { box.r = $0; done.fulfill() }
        wait(for: [done], timeout: 5)
        return box.r!
    }

    func testPreferenceOrderAndAddresses() {
        let f = FakeResolver()
        f.set("example.test", .mx, [.mx(preference: 20, exchange: "backup.example.test"), .mx(preference: 10, exchange: "mx.example.test")])
        f.set("mx.example.test", .a, [.a(IPAddress("127.0.0.10")!)])
        f.set("backup.example.test", .a, [.a(IPAddress("127.0.0.11")!)])
        f.set("backup.example.test", .aaaa, [.aaaa(IPAddress("::1")!)])
        guard case .hosts(let hosts) = resolve(f, "Example.Test") else { return XCTFail() }
        XCTAssertEqual(hosts.map(\.name), ["mx.example.test", "backup.example.test"])
        XCTAssertEqual(hosts[1].addresses.map(\.description), ["127.0.0.11", "::1"])
    }

    func testEqualPreferencesAreShuffled() {
        let f = FakeResolver()
        f.set("eq.test", .mx, (0..<6).map { DNSRecordData.mx(preference: 10, exchange: "mx\($0).eq.test") })
        for i in 0..<6 { f.set("mx\(i).eq.test", .a, [.a(IPAddress("127.0.1.\(i)")!)]) }
        var orders = Set<[String]>()
        for _ in 0..<20 {
            let done = expectation(description: "mx")
            final class Box: @unchecked Sendable { var r: MXResolution? }
            let box = Box()
            MXResolver(resolver: f).resolve("eq.test") { box.r = $0; done.fulfill() }
            wait(for: [done], timeout: 5)
            if case .hosts(let h) = box.r { orders.insert(h.map(\.name)) }
        }
        XCTAssertGreaterThan(orders.count, 1)
    }

    func testAliasWhoseTargetIsNotChasedIsFollowed() {
        let f = FakeResolver()
        f.set("alias.test", .mx, [.cname("real.test")])
        f.set("real.test", .mx, [.mx(preference: 10, exchange: "mx.real.test")])
        f.set("mx.real.test", .a, [.a(IPAddress("127.0.0.40")!)])
        guard case .hosts(let h) = resolve(f, "alias.test") else { return XCTFail() }
        XCTAssertEqual(h.map(\.name), ["mx.real.test"])
        f.set("loop1.test", .mx, [.cname("loop2.test")])
        f.set("loop2.test", .mx, [.cname("loop1.test")])
        guard case .failed(let failure) = resolve(f, "loop1.test") else { return XCTFail("CNAME loop") }
        XCTAssertEqual(failure.kind, .transient)
    }

    func testNullMXBouncesAtOnce() {
        let f = FakeResolver()
        f.set("nullmx.test", .mx, [.mx(preference: 0, exchange: "")])
        guard case .failed(let failure) = resolve(f, "nullmx.test") else { return XCTFail() }
        XCTAssertEqual(failure.kind, .permanent)
        XCTAssertEqual(failure.status, "5.1.10")
    }

    func testImplicitMXAndNonexistentDomain() {
        let f = FakeResolver()
        f.set("bare.test", .a, [.a(IPAddress("127.0.0.9")!)])
        guard case .hosts(let h) = resolve(f, "bare.test") else { return XCTFail() }
        XCTAssertEqual(h.first?.name, "bare.test")
        XCTAssertTrue(h.first?.implicit ?? false)
        f.setRcode("nx.test", .mx, .nxDomain)
        guard case .failed(let nx) = resolve(f, "nx.test") else { return XCTFail() }
        XCTAssertEqual(nx.kind, .permanent)
        XCTAssertEqual(resolve(f, "nothing.test"), .failed(DeliveryFailure(.permanent, status: "5.1.2", reason: "nothing.test has no MX and no address records")))
    }

    func testServfailTimeoutsAndGarbageAreTransient() {
        let f = FakeResolver()
        f.setRcode("servfail.test", .mx, .servFail)
        f.fail("timeout.test", .mx, .timeout)
        f.fail("garbage.test", .mx, .malformed("x"))
        f.set("mxfail.test", .mx, [.mx(preference: 10, exchange: "mx.mxfail.test")])
        f.fail("mx.mxfail.test", .a, .timeout)
        f.setRcode("mx.mxfail.test", .aaaa, .servFail)
        for d in ["servfail.test", "timeout.test", "garbage.test", "mxfail.test"] {
            guard case .failed(let failure) = resolve(f, d) else { XCTFail(d); continue }
            XCTAssertEqual(failure.kind, .transient, d)
        }
    }
}

final class DSNAndStateTests: XCTestCase {
    func message(sender: ReversePath, notify: [Envelope.Notify]? = nil, ret: Envelope.Return? = nil) -> QueuedMessage {
        var env = Envelope(sender: sender, origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u@far.example>")!, notify: notify,
                                             originalRecipient: "rfc822;u@far.example")]
        env.ret = ret
        return QueuedMessage(id: QueueID.make(microseconds: 5, random: 5), arrival: 0, envelope: env,
                             body: Array("Subject: secret plans\r\n\r\nbody text\r\n".utf8))
    }

    func testBounceCarriesTLSReasonAndHeadersOnly() throws {
        let m = message(sender: .mailbox(Mailbox.parseForwardPath("<s@example.test>")!))
        let dsn = try XCTUnwrap(DSN.bounce(for: m, failures: [DSN.Failure(recipientIndex: 0, status: "5.7.10",
                                                                          diagnostic: "TLS not offered by mx.far.example[127.0.0.5]:25 (policy forced)")],
                                           hostname: "relay.test", id: QueueID.make(microseconds: 6, random: 6), now: 60))
        let text = String(decoding: dsn.body, as: UTF8.self)
        XCTAssertEqual(dsn.envelope.sender, .null)
        XCTAssertEqual(dsn.envelope.recipients.first?.mailbox.description, "s@example.test")
        XCTAssertTrue(text.contains("Content-Type: multipart/report; report-type=delivery-status"))
        XCTAssertTrue(text.contains("Status: 5.7.10"))
        XCTAssertTrue(text.contains("Final-Recipient: rfc822; u@far.example"))
        XCTAssertTrue(text.contains("TLS not offered"))
        XCTAssertTrue(text.contains("Subject: secret plans"))
        XCTAssertFalse(text.contains("body text"), "RET unspecified: headers only")
        let full = DSN.bounce(for: message(sender: .mailbox(Mailbox.parseForwardPath("<s@example.test>")!), ret: .full),
                              failures: [DSN.Failure(recipientIndex: 0, status: "5.0.0", diagnostic: "x")],
                              hostname: "relay.test", id: "X", now: 0)!
        XCTAssertTrue(String(decoding: full.body, as: UTF8.self).contains("body text"))
    }

    func testNoBounceForNullSenderOrNotifyNever() {
        XCTAssertNil(DSN.bounce(for: message(sender: .null), failures: [DSN.Failure(recipientIndex: 0, status: "5.0.0", diagnostic: "x")],
                                hostname: "r", id: "X", now: 0))
        XCTAssertNil(DSN.bounce(for: message(sender: .mailbox(Mailbox.parseForwardPath("<s@e.test>")!), notify: [.never]),
                                failures: [DSN.Failure(recipientIndex: 0, status: "5.0.0", diagnostic: "x")], hostname: "r", id: "X", now: 0))
        XCTAssertNil(DSN.bounce(for: message(sender: .mailbox(Mailbox.parseForwardPath("<s@e.test>")!), notify: [.success]),
                                failures: [DSN.Failure(recipientIndex: 0, status: "5.0.0", diagnostic: "x")], hostname: "r", id: "X", now: 0))
    }

    func testDeliveryStateRoundTripAndCorruption() throws {
        var s = DeliveryState(recipientCount: 3, nextAttempt: 1234)
        s.attempts = 2
        s.recipients[0] = .init(status: .delivered, detail: "250 ok")
        s.recipients[1] = .init(status: .bounced, detail: "TLS failed: hostname-mismatch", enhancedStatus: "5.7.15",
                                tlsDetail: "4.7.15 TLS with mx[1.2.3.4]:25 failed: hostname-mismatch")
        XCTAssertEqual(try DeliveryState.decode(s.encode()), s)
        XCTAssertEqual(s.pendingIndexes, [2])
        let bytes = s.encode()
        for cut in 0..<bytes.count { XCTAssertThrowsError(try DeliveryState.decode(Array(bytes[..<cut]))) }
    }
}
