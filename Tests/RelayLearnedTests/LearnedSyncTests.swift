// Learned TLS status shared between instances, with a fake backend that
// answers when the test says and a fake clock: what is pushed (only this
// instance's own sessions), what a pull does to the local record (only
// raises; relaxed evidence stays out), the outbox while the backend is
// down (kept in the spool, bounded, replayed once, logged once each way).
import Logging
import RelayModel
import RelayPolicy
import RelayQueue
import RelaySync
import RelayTestSupport
import Testing
@testable import RelayLearned

/// A backend held in memory like the shared table: rows per (domain,
/// instance), merged on pull. `down` makes every call fail.
final class FakeSharedBackend: SharedLearnedBackend {
    struct Down: Error {}
    let instance: String
    let table: Locked<[String: [String: EvidenceByLevel]]>   // domain → instance → evidence
    let seq: Locked<(Int64, [String: Int64])>                   // counter, domain → last change
    let down = Locked(false)
    let pushes = Locked<[[SharedEvidence]]>([])

    init(instance: String, sharing other: FakeSharedBackend? = nil) {
        self.instance = instance
        table = other?.table ?? Locked([:])
        seq = other?.seq ?? Locked((0, [:]))
    }

    func push(_ snapshots: [SharedEvidence], completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        if down.withLock({ $0 }) { return completion(.failure(Down())) }
        pushes.withLock { $0.append(snapshots) }
        for s in snapshots {
            table.withLock { t in
                var mine = t[s.domain]?[instance] ?? [:]
                for (level, e) in s.evidence { mine[level] = mine[level].map { $0.merged(with: e) } ?? e }
                t[s.domain, default: [:]][instance] = mine
            }
            seq.withLock { $0.0 += 1; $0.1[s.domain] = $0.0 }
        }
        completion(.success(()))
    }

    func pull(since cursor: Int64, completion: @escaping @Sendable (Result<SharedEvidencePull, any Error>) -> Void) {
        if down.withLock({ $0 }) { return completion(.failure(Down())) }
        let (now, changed) = seq.withLock { ($0.0, $0.1.filter { $0.value > cursor }.map(\.key).sorted()) }
        let merged = table.withLock { t in
            changed.map { d in
                var all: EvidenceByLevel = [:]
                for e in (t[d] ?? [:]).values {
                    for (level, v) in e { all[level] = all[level].map { $0.merged(with: v) } ?? v }
                }
                return SharedEvidence(domain: d, evidence: all)
            }
        }
        completion(.success(SharedEvidencePull(merged: merged, cursor: now)))
    }
}

struct Instance {
    let fixture: LearnedFixture
    let backend: FakeSharedBackend
    let sync: LearnedSync

    init(_ name: String, sharing other: Instance? = nil, spool: Spool? = nil, outboxLimit: Int = 100) {
        fixture = LearnedFixture()
        backend = FakeSharedBackend(instance: name, sharing: other?.backend)
        sync = LearnedSync(status: fixture.status, backend: backend, spool: spool, logger: fixture.logs.logger, outboxLimit: outboxLimit)
        let sync = self.sync
        fixture.status.setSessionObserver { d, seen, t in sync.observe(domain: d, seen: seen, at: t) }
    }
}

@Suite struct LearnedSyncTests {
    @Test func whatOneInstanceLearnsTheOtherDecidesWith() {
        let a = Instance("a")
        let b = Instance("b", sharing: a)
        a.fixture.session(.tls)
        #expect(a.fixture.engine().decide("partner.example").level == .forced)
        #expect(b.fixture.engine().decide("partner.example").level == .opportunistic, "not yet shared")
        a.sync.tick()
        b.sync.tick()
        let d = b.fixture.engine().decide("partner.example")
        #expect(d.level == .forced && d.layer == .learned)
        #expect(b.fixture.store.records.withLock { $0["partner.example"] } != nil, "written through to the local copy")
        #expect(b.fixture.logs.count("learned TLS status raised by another instance") == 1)
    }

    @Test func onlyTheInstancesOwnSessionsArePushed() {
        let a = Instance("a")
        let b = Instance("b", sharing: a)
        a.fixture.session(.tls)
        a.sync.tick()
        b.sync.tick()   // b now knows a's evidence
        b.sync.tick()
        #expect(b.backend.pushes.withLock { $0.isEmpty }, "b saw nothing itself")
        b.fixture.session(.verified)
        b.sync.tick()
        let pushed = b.backend.pushes.withLock { $0 }
        #expect(pushed.count == 1 && pushed[0].map(\.domain) == ["partner.example"])
        #expect(pushed[0][0].evidence.keys.sorted() == [.verified], "only b's own verified session, not a's tls")
        #expect(a.backend.table.withLock { $0["partner.example"]?.keys.sorted() } == ["a", "b"])
    }

    @Test func plaintextOnlyDomainsAreNotShared() {
        let a = Instance("a")
        a.fixture.session(.plaintext)
        a.sync.tick()
        #expect(a.backend.pushes.withLock { $0.isEmpty })
    }

    @Test func aPullNeverLowersTheLocalRecord() {
        let a = Instance("a")
        let b = Instance("b", sharing: a)
        b.fixture.session(.verified)
        b.fixture.clock.advance(day)
        b.fixture.session(.verified)
        #expect(b.fixture.engine().decide("partner.example").level == .verify)
        a.fixture.session(.plaintext)   // a has no record: plaintext is not shared
        a.fixture.session(.tls)
        a.sync.tick()
        b.sync.tick()
        #expect(b.fixture.engine().decide("partner.example").level == .verify, "a's weaker evidence does not lower b")
        let r = b.fixture.status.record("partner.example")!
        #expect(r.evidence[.verified]?.days == 2 && r.evidence[.tls] != nil)
    }

    @Test func evidenceOlderThanARelaxationStaysOut() {
        let b = Instance("b")
        var r = LearnedRecord(domain: "partner.example", created: 1)
        r.relaxedAt = b.fixture.clock.now
        b.fixture.store.records.withLock { $0["partner.example"] = r }
        b.fixture.status.load()
        let old = LevelEvidence(firstSeen: 10, lastSeen: b.fixture.clock.now - 60, count: 5, days: 2)
        #expect(!b.fixture.status.mergeShared(domain: "partner.example", evidence: [.tls: old]))
        #expect(b.fixture.engine().decide("partner.example").level == .opportunistic)
        let newer = LevelEvidence(firstSeen: 10, lastSeen: b.fixture.clock.now + 60, count: 6, days: 2)
        #expect(b.fixture.status.mergeShared(domain: "partner.example", evidence: [.tls: newer]))
        #expect(b.fixture.engine().decide("partner.example").level == .forced)
    }

    @Test func hostileSharedDomainsAreIgnored() {
        let b = Instance("b")
        let e = LevelEvidence(firstSeen: 1, lastSeen: 2, count: 1, days: 1)
        for bad in ["", "a/../b", "x y.example", String(repeating: "a", count: 300) + ".example", "dom\u{0}ain.example"] {
            #expect(!b.fixture.status.mergeShared(domain: bad, evidence: [.tls: e]))
        }
        #expect(b.fixture.status.domains.isEmpty)
    }

    @Test func whileDownWritesQueueInTheSpoolAndReplayOnce() throws {
        let tmp = try TemporarySpool()
        let a = Instance("a", spool: tmp.spool)
        a.backend.down.withLock { $0 = true }
        a.fixture.session(.tls)
        a.sync.tick()
        #expect(!a.sync.isReachable)
        #expect(a.fixture.logs.count("shared state unreachable") == 1)
        a.fixture.session(.tls, domain: "other.example")
        a.sync.tick()
        a.sync.tick()
        #expect(a.fixture.logs.count("shared state unreachable") == 1, "the outage is logged once")
        #expect(tmp.spool.recordNames("shared-outbox") == ["other.example", "partner.example"])
        #expect(a.fixture.engine().decide("partner.example").level == .forced, "decisions go on from the local copy")

        // A restart while still down: the outbox is read back.
        let again = LearnedSync(status: a.fixture.status, backend: a.backend, spool: tmp.spool, logger: a.fixture.logs.logger)
        again.load()
        #expect(again.pendingDomains == ["other.example", "partner.example"])

        a.backend.down.withLock { $0 = false }
        again.tick()
        #expect(again.isReachable && again.pendingDomains.isEmpty)
        #expect(a.fixture.logs.count("shared state reachable again; replayed the queued writes") == 1)
        #expect(tmp.spool.recordNames("shared-outbox").isEmpty)
        #expect(a.backend.table.withLock { $0.keys.sorted() } == ["other.example", "partner.example"])
    }

    @Test func theOutboxIsBounded() {
        let a = Instance("a", outboxLimit: 2)
        a.backend.down.withLock { $0 = true }
        for d in ["one.example", "two.example", "three.example"] { a.fixture.session(.tls, domain: d) }
        #expect(a.sync.pendingDomains.count == 2 && a.sync.counters.dropped == 1)
        #expect(!a.sync.pendingDomains.contains("one.example"), "the least recently changed goes first")
    }

    @Test(arguments: [
        "shared-evidence 1\ndomain partner.example\nlevel tls 5 4 1 1\n",     // first after last
        "shared-evidence 1\ndomain partner.example\nlevel tls 1 2 1 2\n",     // more days than sessions
        "shared-evidence 1\ndomain ../etc\nlevel tls 1 2 1 1\n",
        "shared-evidence 2\ndomain partner.example\n",
        "shared-evidence 1\ndomain partner.example\nlevel tls 1 2 1 1\nlevel tls 1 2 1 1\n",
        "shared-evidence 1\ndomain partner.example\nlevel tls 1 2 1 1",          // no final newline
    ])
    func hostileOutboxRecordsAreRefused(text: String) {
        #expect(LearnedSync.decode(Array(text.utf8)) == nil)
    }

    @Test func outboxRecordRoundTrips() {
        let s = SharedEvidence(domain: "partner.example", evidence: [
            .tls: LevelEvidence(firstSeen: 1, lastSeen: 90_000, count: 3, days: 2),
            .verified: LevelEvidence(firstSeen: 5, lastSeen: 6, count: 2, days: 1)])
        #expect(LearnedSync.decode(LearnedSync.encode(s)) == s)
    }
}
