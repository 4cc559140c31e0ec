// The shared tls-exclusive drop audit's outbox, with a fake backend: each
// drop is in the spool until appended, survives a restart, is appended
// once, and a full outbox keeps what waits and says so once.
import Logging
import RelayQueue
import RelaySync
import RelayTestSupport
import Testing
@testable import RelayDelivery

final class FakeDropBackend: SharedDropBackend {
    struct Down: Error {}
    let rows = Locked<[SharedDrop]>([])
    let down = Locked(false)

    func append(_ drops: [SharedDrop], completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        if down.withLock({ $0 }) { return completion(.failure(Down())) }
        rows.withLock { rows in for d in drops where !rows.contains(d) { rows.append(d) } }
        completion(.success(()))
    }
}

@Suite struct SharedDropAuditTests {
    func drop(_ n: Int, reason: String = "no STARTTLS") -> SharedDrop {
        SharedDrop(at: 1_700_000_000 + n, queueID: "Q\(n)", domain: "plain.example", reason: reason)
    }

    @Test func dropsWaitInTheSpoolThroughAnOutageAndARestart() throws {
        let tmp = try TemporarySpool()
        let logs = LogLines()
        let backend = FakeDropBackend()
        let audit = SharedDropAudit(backend: backend, spool: tmp.spool, logger: logs.logger)
        audit.record(drop(1))
        #expect(tmp.spool.recordNames("shared-drops-outbox").count == 1, "persisted when it happens")
        audit.tick()
        #expect(backend.rows.withLock { $0 } == [drop(1)] && tmp.spool.recordNames("shared-drops-outbox").isEmpty)

        backend.down.withLock { $0 = true }
        audit.record(drop(2))
        audit.record(drop(3))
        audit.tick()
        audit.tick()
        #expect(logs.count("shared state unreachable; tls-exclusive drops queued") == 1)
        // A restart: the outbox is read back, in order, and replayed once.
        let again = SharedDropAudit(backend: backend, spool: tmp.spool, logger: logs.logger)
        again.load(now: 1)
        #expect(again.pending == [drop(2), drop(3)])
        backend.down.withLock { $0 = false }
        again.tick()
        again.tick()
        #expect(backend.rows.withLock { $0 } == [drop(1), drop(2), drop(3)])
        #expect(tmp.spool.recordNames("shared-drops-outbox").isEmpty)
        #expect(logs.count("replayed the queued tls-exclusive drops") == 1)
    }

    @Test func aFullOutboxKeepsWhatWaitsAndSaysSoOnce() {
        let logs = LogLines()
        let backend = FakeDropBackend()
        backend.down.withLock { $0 = true }
        let audit = SharedDropAudit(backend: backend, spool: nil, logger: logs.logger, outboxLimit: 2)
        for n in 1...4 { audit.record(drop(n)) }
        #expect(audit.pending == [drop(1), drop(2)])
        #expect(audit.counters.notShared == 2)
        #expect(logs.count("drop outbox full") == 1)
    }

    @Test(arguments: ["", "O'Brien \"x\"; --", "é\u{301} 🏳️‍🌈 \u{202E}rtl \u{0}", String(repeating: "why ", count: 3000)])
    func hostileValuesRoundTripThroughTheOutboxRecord(text: String) {
        let d = SharedDrop(at: 5, queueID: text, domain: "xn--bcher-kva.example", reason: text)
        #expect(SharedDropAudit.decode(SharedDropAudit.encode(d)) == d)
    }
}
