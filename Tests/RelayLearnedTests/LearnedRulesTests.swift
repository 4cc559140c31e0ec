// The learned-status rules on a fake clock: the first TLS session, a
// downgrade, verified only after two days, relaxing after the window (not
// when pinned, not under DANE or MTA-STS, not with too few probes),
// expiry, pins, forget, and a store that fails.
import Logging
import RelayModel
import RelayPolicy
import RelayQueue
import RelaySync
import RelayTestSupport
import Testing
@testable import RelayLearned

/// A clock the test moves.
final class FakeClock: Sendable {
    private let t: Locked<Int>
    init(_ start: Int = 1_764_633_600) { t = Locked(start) }  // 2025-12-02 00:00 UTC
    var now: Int { t.withLock { $0 } }
    func advance(_ seconds: Int) { t.withLock { $0 += seconds } }
    var function: @Sendable () -> Int { { [self] in now } }
}

/// The store in memory; `failing` makes every write throw.
final class MemoryLearnedStore: LearnedStore {
    struct Failure: Error {}
    let records = Locked<[String: LearnedRecord]>([:])
    let auditLines = Locked<[String]>([])
    let failing = Locked(false)
    func get(_ domain: String) throws -> LearnedRecord? { records.withLock { $0[domain] } }
    func put(_ record: LearnedRecord) throws {
        if failing.withLock({ $0 }) { throw Failure() }
        records.withLock { $0[record.domain] = record }
    }
    func list() throws -> [String] { records.withLock { $0.keys.sorted() } }
    func delete(_ domain: String) throws -> Bool {
        if failing.withLock({ $0 }) { throw Failure() }
        return records.withLock { $0.removeValue(forKey: domain) != nil }
    }
    func audit(_ line: String) throws { auditLines.withLock { $0.append(line) } }
}

let day = 86_400

struct LearnedFixture {
    let clock = FakeClock()
    let store = MemoryLearnedStore()
    let logs = LogLines()
    let status: LearnedStatus
    var settings: LearnedSettings

    init(_ configure: (inout LearnedSettings) -> Void = { _ in }) {
        var s = LearnedSettings()
        configure(&s)
        settings = s
        status = LearnedStatus(store: store, settings: s, logger: logs.logger, now: clock.function)
    }

    func engine(default level: PolicyLevel = .opportunistic, domains: [String: DomainPolicy] = [:],
                others: [any PolicyUpgradeLayer] = []) -> PolicyEngine {
        PolicyEngine(defaultLevel: level, domains: domains, upgrades: others + [LearnedLayer(status: status)])
    }

    func session(_ seen: TLSEvidence, domain: String = "partner.example", host: String = "mx1.partner.example",
                 key: String? = nil) {
        status.observeSession(domain: domain, host: host, seen: seen, reason: "\(seen)", key: key)
    }

    func probe(_ seen: TLSEvidence, domain: String = "partner.example", answered: Bool = true) {
        let p = LearnedRecord.Probe(at: clock.now, seen: seen, host: "mx1.partner.example",
                                    starttlsOffered: answered ? seen > .plaintext : nil, handshake: seen > .plaintext,
                                    verified: seen == .verified, version: seen > .plaintext ? "TLSv1.3" : "", detail: "probe")
        status.observeProbe(domain: domain, probe: p, hosts: answered ? [("mx1.partner.example", seen)] : [],
                            mx: ["mx1.partner.example"], keys: [])
    }
}

/// A layer that always answers, standing for DANE or MTA-STS.
struct FixedLayer: PolicyUpgradeLayer {
    let layer: PolicyLayer
    let level: PolicyLevel
    func verdict(for domain: String) -> LayerVerdict? { LayerVerdict(layer: layer, level: level, detail: "fixed") }
}

@Suite struct LearnedRulesTests {
    @Test func nothingIsLearnedFromPlaintextAlone() throws {
        let f = LearnedFixture()
        f.session(.plaintext)
        #expect(f.status.record("partner.example") == nil)
        #expect(try f.store.list().isEmpty)
        #expect(f.engine().decide("partner.example").layer == .defaultLevel)
    }

    @Test func oneTLSSessionMakesOpportunisticForced() throws {
        let f = LearnedFixture()
        f.session(.tls)
        let d = f.engine().decide("partner.example")
        #expect(d.level == .forced)
        #expect(d.layer == .learned)
        #expect(!d.requiresVerification)
        #expect(d.reason.contains("learned tls"))
        // Written at once: a crash right after must not forget it.
        #expect(try f.store.get("partner.example")?.learned == .tls)
        #expect(f.logs.count("learned TLS status raised") == 1)
    }

    @Test func aDowngradeIsCountedAndNeverLowersTheLevel() throws {
        let f = LearnedFixture()
        f.session(.tls)
        f.clock.advance(60)
        f.session(.plaintext)
        f.clock.advance(60)
        f.session(.plaintext)
        let r = try #require(f.status.record("partner.example"))
        #expect(r.learned == .tls)
        #expect(r.below == .init(since: f.clock.now - 60, sessions: 2))
        #expect(r.lastAttempt?.seen == .plaintext)
        #expect(r.evidence[.plaintext]?.count == 2)
        #expect(f.engine().decide("partner.example").level == .forced)
        // The first session below was written at once.
        #expect(try f.store.get("partner.example")?.below != nil)
        f.session(.tls)
        #expect(f.status.record("partner.example")?.below == nil)
    }

    @Test func verifiedIsLearnedOnlyOnASecondDay() {
        let f = LearnedFixture()
        for _ in 0..<50 {
            f.session(.verified)
            f.clock.advance(600)
        }
        // 50 sessions, 8 hours, one UTC day: still only "TLS at least".
        #expect(f.engine().decide("partner.example").level == .forced)
        f.clock.advance(day)
        f.session(.verified)
        let d = f.engine().decide("partner.example")
        #expect(d.level == .verify)
        #expect(d.requiresVerification)
        #expect(d.layer == .learned)
    }

    @Test func unverifiedSessionsOnManyDaysStayTLS() {
        let f = LearnedFixture()
        for _ in 0..<5 {
            f.session(.tls)
            f.clock.advance(day)
        }
        #expect(f.engine().decide("partner.example").level == .forced)
    }

    @Test func learnedNeverLowersTheDefaultNorOverridesHigherLayers() {
        let f = LearnedFixture()
        f.session(.tls)
        // A verify default stays verify (learned forced is below it).
        let d = f.engine(default: .verify).decide("partner.example")
        #expect(d.level == .verify)
        #expect(d.layer == .defaultLevel)
        // The operator's entry may lower.
        let o = f.engine(domains: ["partner.example": DomainPolicy(level: .none)]).decide("partner.example")
        #expect(o.level == .none)
        #expect(o.layer == .operatorEntry)
        // MTA-STS answers first.
        let s = f.engine(others: [FixedLayer(layer: .mtaSTS, level: .verify)]).decide("partner.example")
        #expect(s.layer == .mtaSTS)
    }

    // MARK: relaxing

    func relaxable(_ f: LearnedFixture) {
        f.session(.tls)
        for _ in 0..<15 {
            f.clock.advance(day)
            f.probe(.plaintext)
        }
    }

    @Test func relaxesAfterTheWindowOfProbesWithoutTLS() throws {
        let f = LearnedFixture()
        f.session(.tls)
        for i in 0..<14 {
            f.clock.advance(day)
            f.probe(.plaintext)
            f.status.sweep(protected: { _ in false })
            // The window runs from the first probe below: 13 days is not 14.
            if i < 13 { #expect(f.status.record("partner.example")?.learned == .tls, "day \(i + 1)") }
        }
        f.clock.advance(day)
        f.status.sweep(protected: { _ in false })
        let r = try #require(f.status.record("partner.example"))
        #expect(r.learned == nil)
        #expect(r.relaxations == 1)
        #expect(f.engine().decide("partner.example").layer == .defaultLevel)
        #expect(f.status.counters.withLock { $0.relaxed } == 1)
        #expect(f.logs.count("learned TLS status relaxed") == 1)
        #expect(try f.store.get("partner.example")?.learned == nil)
        // And it learns again from the next TLS session.
        f.session(.tls)
        #expect(f.engine().decide("partner.example").level == .forced)
    }

    @Test func aProbeThatFindsTLSRestartsTheWindow() {
        let f = LearnedFixture()
        f.session(.tls)
        for d in 0..<20 {
            f.clock.advance(day)
            f.probe(d == 10 ? .tls : .plaintext)
            f.status.sweep(protected: { _ in false })
        }
        // Only 9 days of failing probes since the one that found TLS.
        #expect(f.status.record("partner.example")?.learned == .tls)
    }

    @Test func aDeliveryOverTLSRestartsTheWindow() {
        let f = LearnedFixture()
        f.session(.tls)
        for d in 0..<20 {
            f.clock.advance(day)
            f.probe(.plaintext)
            if d == 10 { f.session(.tls) }
            f.status.sweep(protected: { _ in false })
        }
        #expect(f.status.record("partner.example")?.learned == .tls)
    }

    @Test func tooFewProbesDoNotRelax() {
        let f = LearnedFixture()
        f.session(.tls)
        f.clock.advance(day)
        f.probe(.plaintext)
        f.clock.advance(20 * day)  // relayd was down
        f.probe(.plaintext)
        f.status.sweep(protected: { _ in false })
        #expect(f.status.record("partner.example")?.learned == .tls)
    }

    @Test func probesThatReachNoHostTeachNothing() {
        let f = LearnedFixture()
        f.session(.tls)
        for _ in 0..<20 {
            f.clock.advance(day)
            f.probe(.plaintext, answered: false)
            f.status.sweep(protected: { _ in false })
        }
        #expect(f.status.record("partner.example")?.learned == .tls)
    }

    @Test func aPinnedRecordNeverRelaxes() {
        let f = LearnedFixture()
        #expect(f.status.apply(.pin(domain: "partner.example", level: "forced", until: nil, reason: "contract", by: "ops")).contains("pinned"))
        relaxable(f)
        f.status.sweep(protected: { _ in false })
        #expect(f.status.record("partner.example")?.learned == .tls)
    }

    @Test func aDomainUnderDANEOrMTASTSNeverRelaxes() {
        let f = LearnedFixture()
        relaxable(f)
        f.status.sweep(protected: { $0 == "partner.example" })
        #expect(f.status.record("partner.example")?.learned == .tls)
        f.status.sweep(protected: { _ in false })
        #expect(f.status.record("partner.example")?.learned == nil)
    }

    @Test func verifiedRelaxesToWhatProbesFind() {
        let f = LearnedFixture()
        f.session(.verified)
        f.clock.advance(day)
        f.session(.verified)
        #expect(f.status.record("partner.example")?.learned == .verified)
        for _ in 0..<15 {
            f.clock.advance(day)
            f.probe(.tls)  // the certificate no longer verifies
        }
        f.status.sweep(protected: { _ in false })
        #expect(f.status.record("partner.example")?.learned == .tls)
        #expect(f.engine().decide("partner.example").level == .forced)
    }

    // MARK: expiry

    @Test func unconfirmedRecordsExpire() throws {
        let f = LearnedFixture()
        f.session(.tls)
        f.clock.advance(179 * day)
        f.status.sweep(protected: { _ in false })
        #expect(f.status.record("partner.example") != nil)
        f.clock.advance(day)
        // Expired records stop deciding at once, before the sweep.
        #expect(f.engine().decide("partner.example").layer == .defaultLevel)
        f.status.sweep(protected: { _ in false })
        #expect(f.status.record("partner.example") == nil)
        #expect(try f.store.get("partner.example") == nil)
        #expect(f.status.counters.withLock { $0.expired } == 1)
    }

    @Test func plaintextSessionsDoNotConfirm() {
        let f = LearnedFixture()
        f.session(.tls)
        f.clock.advance(100 * day)
        f.session(.plaintext)
        f.clock.advance(80 * day)
        f.status.sweep(protected: { _ in false })
        #expect(f.status.record("partner.example") == nil)
    }

    @Test func pinnedRecordsDoNotExpire() {
        let f = LearnedFixture()
        f.session(.tls)
        _ = f.status.apply(.pin(domain: "partner.example", level: "verify", until: nil, reason: "", by: "ops"))
        f.clock.advance(400 * day)
        f.status.sweep(protected: { _ in false })
        #expect(f.status.record("partner.example") != nil)
    }

    // MARK: operator

    @Test func pinAndUnpin() throws {
        let f = LearnedFixture()
        let until = f.clock.now + 10 * day
        let said = f.status.apply(.pin(domain: "bank.example", level: "verify", until: until, reason: "contract §4", by: "alice"))
        #expect(said.contains("pinned to verify until"))
        var d = f.engine().decide("bank.example")
        #expect(d.level == .verify)
        #expect(d.layer == .learned)
        #expect(d.reason.contains("pinned to verify by alice"))
        #expect(d.reason.contains("contract §4"))
        #expect(try f.store.get("bank.example")?.pin?.by == "alice")
        #expect(f.store.auditLines.withLock { $0.count } == 1)
        // The pin ends on its date.
        f.clock.advance(10 * day)
        d = f.engine().decide("bank.example")
        #expect(d.layer == .defaultLevel)
        _ = f.status.apply(.pin(domain: "bank.example", level: "forced", until: nil, reason: "", by: "alice"))
        #expect(f.engine().decide("bank.example").level == .forced)
        #expect(f.status.apply(.unpin(domain: "bank.example", by: "bob")).contains("unpinned"))
        // A record that only held the pin is gone.
        #expect(f.status.record("bank.example") == nil)
        #expect(try f.store.get("bank.example") == nil)
        #expect(f.status.apply(.unpin(domain: "bank.example", by: "bob")).contains("not pinned"))
        #expect(f.store.auditLines.withLock { $0.count } == 3)
        #expect(f.store.auditLines.withLock { $0.last! }.contains("bob"))
    }

    @Test func aPinBelowTheLearnedLevelHoldsItDown() {
        let f = LearnedFixture()
        f.session(.tls)
        _ = f.status.apply(.pin(domain: "partner.example", level: "opportunistic", until: nil, reason: "mixed MX fleet", by: "ops"))
        let d = f.engine().decide("partner.example")
        #expect(d.level == .opportunistic)
    }

    @Test(arguments: ["tls-exclusive", "bogus", ""])
    func pinRefusesLevelsItMayNotName(level: String) {
        let f = LearnedFixture()
        #expect(f.status.apply(.pin(domain: "bank.example", level: level, until: nil, reason: "", by: "ops")).hasPrefix("error:"))
        #expect(f.status.record("bank.example") == nil)
    }

    @Test func pinRefusesAPastDate() {
        let f = LearnedFixture()
        #expect(f.status.apply(.pin(domain: "bank.example", level: "forced", until: f.clock.now - 1, reason: "", by: "ops")).hasPrefix("error:"))
    }

    @Test func forgetResetsButKeepsAnActivePin() throws {
        let f = LearnedFixture()
        f.session(.tls)
        #expect(f.status.apply(.forget(domain: "partner.example", by: "carol")) == "partner.example: learned record forgotten")
        #expect(f.engine().decide("partner.example").layer == .defaultLevel)
        #expect(try f.store.get("partner.example") == nil)
        #expect(f.store.auditLines.withLock { $0.last! }.contains("carol"))
        f.session(.tls)
        _ = f.status.apply(.pin(domain: "partner.example", level: "forced", until: nil, reason: "", by: "ops"))
        #expect(f.status.apply(.forget(domain: "partner.example", by: "carol")).contains("the pin to forced stays"))
        #expect(f.status.record("partner.example")?.evidence.isEmpty == true)
        #expect(f.engine().decide("partner.example").level == .forced)
        #expect(f.status.apply(.forget(domain: "unknown.example", by: "carol")).contains("no learned record"))
    }

    // MARK: the store

    @Test func aFailingStoreNeverLosesWhatWasLearnedInMemory() throws {
        let f = LearnedFixture()
        f.store.failing.withLock { $0 = true }
        f.session(.tls)
        #expect(f.engine().decide("partner.example").level == .forced)
        #expect(f.status.hasUnwritten)
        #expect(f.logs.count("cannot write record") == 1)
        #expect(f.status.counters.withLock { $0.writeFailures } == 1)
        f.store.failing.withLock { $0 = false }
        f.status.flush()
        #expect(!f.status.hasUnwritten)
        #expect(try f.store.get("partner.example")?.learned == .tls)
    }

    @Test func countersAloneAreWrittenAtTheFlush() throws {
        let f = LearnedFixture()
        f.session(.tls)
        f.clock.advance(60)
        f.session(.tls)
        #expect(try f.store.get("partner.example")?.evidence[.tls]?.count == 1)
        #expect(f.status.hasUnwritten)
        f.status.flush()
        #expect(try f.store.get("partner.example")?.evidence[.tls]?.count == 2)
    }

    @Test func aRelaxedDomainSeenInPlaintextIsNotRewrittenPerMessage() throws {
        let f = LearnedFixture()
        relaxable(f)
        f.status.sweep(protected: { _ in false })
        #expect(f.status.record("partner.example")?.learned == nil)
        f.status.flush()
        f.session(.plaintext)
        f.clock.advance(60)
        f.session(.plaintext)
        #expect(f.status.hasUnwritten, "same-day plaintext sessions wait for the flush")
    }

    @Test func loadsWhatTheStoreHolds() throws {
        let f = LearnedFixture()
        f.session(.tls)
        let again = LearnedStatus(store: f.store, settings: f.settings, logger: f.logs.logger, now: f.clock.function)
        again.load()
        #expect(again.record("partner.example")?.learned == .tls)
    }

    @Test func keysAreBoundedAndDeduplicated() {
        let f = LearnedFixture()
        let hex = Array("0123456789abcdef")
        let keys = (0..<12).map { i in String(repeating: "a", count: 62) + String(hex[i / 16]) + String(hex[i % 16]) }
        for k in keys + [keys[11]] { f.session(.tls, key: k) }
        f.session(.tls, key: "not-a-key")
        let r = f.status.record("partner.example")!
        #expect(r.keys.count == LearnedRecord.maxKeys)
        #expect(r.keys.last == keys[11])
        #expect(!r.keys.contains("not-a-key"))
    }
}
