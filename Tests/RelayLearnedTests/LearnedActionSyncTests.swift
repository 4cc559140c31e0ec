// Pins, unpins and forgets shared between instances, with a fake action
// log (append-only, ids in order) next to the fake evidence table: a
// change on one instance reaches the other, audited with where it came
// from; a forget is not undone by older evidence from another instance;
// the outbox keeps actions through an outage and a restart, in order.
import Logging
import RelayModel
import RelayPolicy
import RelayQueue
import RelaySync
import RelayTestSupport
import Testing
@testable import RelayLearned

final class FakeActionBackend: SharedActionBackend {
    struct Down: Error {}
    let instance: String
    let log: Locked<[SharedAction]>
    let down = Locked(false)

    init(instance: String, sharing other: FakeActionBackend? = nil) {
        self.instance = instance
        log = other?.log ?? Locked([])
    }

    func append(_ actions: [SharedAction], completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        if down.withLock({ $0 }) { return completion(.failure(Down())) }
        log.withLock { log in
            for a in actions where !log.contains(where: { $0.change == a.change && $0.at == a.at && $0.instance == instance }) {
                log.append(SharedAction(id: Int64(log.count + 1), change: a.change, at: a.at, instance: instance))
            }
        }
        completion(.success(()))
    }

    func actions(after: Int64, completion: @escaping @Sendable (Result<SharedActionPull, any Error>) -> Void) {
        if down.withLock({ $0 }) { return completion(.failure(Down())) }
        let found = log.withLock { $0.filter { $0.id > after } }
        completion(.success(SharedActionPull(actions: found, cursor: found.map(\.id).max() ?? after)))
    }
}

struct ActionInstance {
    let name: String
    let fixture: LearnedFixture
    let evidence: FakeSharedBackend
    let backend: FakeActionBackend
    let sync: LearnedSync
    let actions: LearnedActionSync

    init(_ name: String, sharing other: ActionInstance? = nil, spool: Spool? = nil, outboxLimit: Int = 100) {
        self.name = name
        fixture = LearnedFixture()
        evidence = FakeSharedBackend(instance: name, sharing: other?.evidence)
        backend = FakeActionBackend(instance: name, sharing: other?.backend)
        sync = LearnedSync(status: fixture.status, backend: evidence, spool: spool, logger: fixture.logs.logger)
        actions = LearnedActionSync(status: fixture.status, evidence: sync, backend: backend, instance: name, spool: spool,
                                    logger: fixture.logs.logger, outboxLimit: outboxLimit)
        let (sync, actions) = (self.sync, self.actions)
        fixture.status.setSessionObserver { d, seen, t in sync.observe(domain: d, seen: seen, at: t) }
        fixture.status.setChangeObserver { change, t in actions.record(change, at: t) }
    }

    func tick() {
        sync.tick()
        actions.tick()
    }
}

@Suite struct LearnedActionSyncTests {
    @Test func aPinOnOneInstanceIsAppliedOnTheOtherAndAudited() {
        let a = ActionInstance("a")
        let b = ActionInstance("b", sharing: a)
        let result = a.fixture.status.apply(.pin(domain: "partner.example", level: "verify", until: nil, reason: "contract", by: "alice"))
        #expect(result.hasPrefix("partner.example: pinned to verify"))
        a.tick()
        #expect(a.backend.log.withLock { $0.count } == 1)
        b.tick()
        let pin = b.fixture.status.record("partner.example")?.pin
        #expect(pin?.level == .verify && pin?.by == "alice" && pin?.reason == "contract")
        #expect(b.fixture.engine().decide("partner.example").level == .verify)
        let audit = b.fixture.store.auditLines.withLock { $0 }
        #expect(audit.count == 1 && audit[0].contains("(from instance a, made "), "\(audit)")
        #expect(b.actions.counters.applied == 1)
        // a does not apply its own action again; b's next pull applies nothing new.
        a.tick()
        b.tick()
        #expect(a.fixture.store.auditLines.withLock { $0.count } == 1)
        #expect(b.fixture.store.auditLines.withLock { $0.count } == 1)
        // The unpin travels the same way.
        a.fixture.clock.advance(10)
        _ = a.fixture.status.apply(.unpin(domain: "partner.example", by: "bob"))
        a.tick()
        b.tick()
        #expect(b.fixture.status.record("partner.example")?.pin == nil)
    }

    @Test func aTimedPinKeepsItsEnd() {
        let a = ActionInstance("a")
        let b = ActionInstance("b", sharing: a)
        let until = a.fixture.clock.now + 3600
        _ = a.fixture.status.apply(.pin(domain: "partner.example", level: "forced", until: until, reason: "", by: "alice"))
        a.tick()
        b.tick()
        #expect(b.fixture.status.record("partner.example")?.pin?.until == until)
    }

    @Test func anOlderPinDoesNotOverrideANewerOne() {
        let a = ActionInstance("a")
        let b = ActionInstance("b", sharing: a)
        _ = a.fixture.status.apply(.pin(domain: "partner.example", level: "forced", until: nil, reason: "", by: "alice"))
        b.fixture.clock.advance(60)
        _ = b.fixture.status.apply(.pin(domain: "partner.example", level: "verify", until: nil, reason: "", by: "bob"))
        a.tick()
        b.tick()
        #expect(b.fixture.status.record("partner.example")?.pin?.level == .verify, "b's own pin is newer")
    }

    /// The case the forget exists for: b forgets; a still holds the older
    /// evidence in the shared table (or pushes it late); the next pull must
    /// not bring it back. Evidence seen after the forget does count.
    @Test func aForgetIsNotUndoneByOlderEvidenceFromAnotherInstance() {
        let a = ActionInstance("a")
        let b = ActionInstance("b", sharing: a)
        a.fixture.session(.verified)
        a.fixture.clock.advance(day)
        b.fixture.clock.advance(day)
        a.fixture.session(.verified)
        a.tick()
        b.tick()
        #expect(b.fixture.engine().decide("partner.example").level == .verify)
        a.fixture.clock.advance(60)
        b.fixture.clock.advance(60)
        let forgetAt = b.fixture.clock.now
        #expect(b.fixture.status.apply(.forget(domain: "partner.example", by: "carol")) == "partner.example: learned record forgotten")
        #expect(b.fixture.status.record("partner.example") == nil)
        // a's older evidence changes again in the table (a re-push): b pulls it.
        a.evidence.seq.withLock { $0.0 += 1; $0.1["partner.example"] = $0.0 }
        b.tick()
        #expect(b.fixture.status.record("partner.example") == nil, "older evidence from a does not bring it back")
        #expect(b.fixture.engine().decide("partner.example").level == .opportunistic)
        // a applies b's forget: its record goes, and it does not push the old evidence again.
        a.tick()
        #expect(a.fixture.status.record("partner.example") == nil)
        #expect(a.fixture.store.auditLines.withLock { $0.last?.contains("(from instance b") } == true)
        #expect(a.sync.pendingDomains.isEmpty)
        // A restart of b (a new LearnedStatus over the same store): a
        // pending forget in the outbox marks the domain again; here the
        // forget was appended, so the backend's filter does that job.
        #expect(b.fixture.status.forgottenAt("partner.example") == forgetAt)
        // Evidence seen after the forget counts again.
        a.fixture.clock.advance(60)
        a.fixture.session(.tls)
        a.tick()
        b.tick()
        #expect(b.fixture.status.record("partner.example")?.evidence.keys.sorted() == [.tls])
        #expect(b.fixture.engine().decide("partner.example").level == .forced)
    }

    @Test func aForgetFromElsewhereKeepsWhatWasSeenHereAfterIt() {
        let a = ActionInstance("a")
        let b = ActionInstance("b", sharing: a)
        b.fixture.session(.tls)
        let at = b.fixture.clock.now
        b.fixture.clock.advance(30)
        b.fixture.session(.verified)
        // a forgets at `at`, before b's verified session, after its tls one.
        a.actions.record(.forget(domain: "partner.example", by: "dave"), at: at)
        a.tick()
        b.tick()
        #expect(b.fixture.status.record("partner.example")?.evidence.keys.sorted() == [.verified])
    }

    @Test func actionsWaitInTheOutboxThroughAnOutageAndARestartInOrder() throws {
        let tmp = try TemporarySpool()
        let a = ActionInstance("a", spool: tmp.spool)
        let b = ActionInstance("b", sharing: a)
        a.backend.down.withLock { $0 = true }
        _ = a.fixture.status.apply(.pin(domain: "partner.example", level: "forced", until: nil, reason: "r", by: "alice"))
        a.tick()
        #expect(a.fixture.logs.count("shared state unreachable; operator actions queued") == 1)
        a.fixture.clock.advance(5)
        _ = a.fixture.status.apply(.forget(domain: "other.example", by: "alice"))
        _ = a.fixture.status.apply(.unpin(domain: "partner.example", by: "alice"))
        #expect(tmp.spool.recordNames("shared-actions-outbox").count == 3)
        // Restart while down: the outbox is read back, in order; the pending
        // forget marks its domain forgotten again.
        let fresh = LearnedFixture()
        let again = LearnedActionSync(status: fresh.status, evidence: nil, backend: a.backend, instance: "a", spool: tmp.spool,
                                      logger: fresh.logs.logger)
        again.load()
        #expect(again.pending.map { "\($0.change)".split(separator: " ")[0] } == ["pin", "forget", "unpin"])
        #expect(fresh.status.forgottenAt("other.example") != nil)
        a.backend.down.withLock { $0 = false }
        again.tick()
        #expect(again.pending.isEmpty && tmp.spool.recordNames("shared-actions-outbox").isEmpty)
        #expect(fresh.logs.count("shared state reachable again; replayed the queued operator actions") == 1)
        b.tick()
        #expect(b.fixture.status.record("partner.example") == nil, "pin then unpin, applied in order")
        #expect(b.actions.counters.applied == 3)
    }

    @Test func theActionOutboxIsBounded() {
        let a = ActionInstance("a", outboxLimit: 2)
        a.backend.down.withLock { $0 = true }
        for d in ["one.example", "two.example", "three.example"] { _ = a.fixture.status.apply(.forget(domain: d, by: "x")) }
        #expect(a.actions.pending.map(\.change.domain) == ["two.example", "three.example"])
        #expect(a.actions.counters.dropped == 1)
        #expect(a.fixture.logs.count("action outbox full") == 1)
    }

    @Test func theCursorSurvivesARestart() throws {
        let tmp = try TemporarySpool()
        let a = ActionInstance("a")
        let b = ActionInstance("b", sharing: a, spool: tmp.spool)
        _ = a.fixture.status.apply(.pin(domain: "partner.example", level: "forced", until: nil, reason: "", by: "alice"))
        a.tick()
        b.tick()
        #expect(b.fixture.store.auditLines.withLock { $0.count } == 1)
        let again = LearnedActionSync(status: b.fixture.status, evidence: nil, backend: b.backend, instance: "b", spool: tmp.spool,
                                      logger: b.fixture.logs.logger)
        again.load()
        #expect(again.cursor == 1)
        again.tick()
        #expect(b.fixture.store.auditLines.withLock { $0.count } == 1, "not applied twice")
    }

    @Test(arguments: ["alice \"the op\" O'Brien", "é\u{301} 🏳️‍🌈 \u{202E}rtl \u{0}nul", String(repeating: "why? ", count: 2000)])
    func hostileValuesRoundTripThroughTheOutboxRecord(text: String) {
        let a = SharedAction(change: .pin(domain: "partner.example", level: "verify", until: 99, reason: text, by: text), at: 42,
                             instance: "inst'\"ance")
        #expect(LearnedActionSync.decode(LearnedActionSync.encode(a)) == a)
    }
}
