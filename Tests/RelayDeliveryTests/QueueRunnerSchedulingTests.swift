// The queue runner's scheduling with a fake clock and a fake delivery: no
// timer, no sockets. Fresh mail goes before a due deferred backlog, the
// global and per-domain limits hold, the retry schedule is followed (last
// delay repeating) and nothing is tried before it is due, and the queue
// lifetime turns a transient failure into a bounce.
import Dispatch
import Foundation
import Logging
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

/// A clock the test moves by hand.
final class FakeClock: @unchecked Sendable {
    private let lock = NSLock()
    private var t: Int
    init(_ start: Int) { t = start }
    var now: Int { lock.lock(); defer { lock.unlock() }; return t }
    func advance(_ seconds: Int) { lock.lock(); t += seconds; lock.unlock() }
}

/// Records each delivery the runner starts and answers when told to.
final class FakeDeliveries: @unchecked Sendable {
    struct Call {
        let id: String
        let domain: String
        let indexes: [Int]
        let arrival: Int
        let report: (DomainDeliveryReport) -> Void
    }
    private let lock = NSLock()
    private var calls: [Call] = []
    private var open: [Call] = []

    func record(_ env: DeliveryEnvironment, _ m: SpooledMessage, _ domain: String, _ indexes: [Int],
                _ report: @escaping (DomainDeliveryReport) -> Void) {
        let c = Call(id: m.id, domain: domain, indexes: indexes, arrival: m.arrival, report: report)
        lock.lock(); calls.append(c); open.append(c); lock.unlock()
    }

    var started: [String] { lock.lock(); defer { lock.unlock() }; return calls.map(\.id) }
    var inProgress: [String] { lock.lock(); defer { lock.unlock() }; return open.map(\.id) }

    /// Answers the oldest open delivery of `id`: every recipient `result`.
    func answer(_ id: String, _ result: RecipientResult, lifetimeExceeded: Bool = false) {
        lock.lock()
        guard let i = open.firstIndex(where: { $0.id == id }) else { lock.unlock(); Issue.record("\(id) not in delivery"); return }
        let c = open.remove(at: i)
        lock.unlock()
        var results: [Int: RecipientResult] = [:]
        for i in c.indexes { results[i] = result }
        let decision = PolicyEngine(defaultLevel: .opportunistic, domains: [:]).decide(c.domain)
        c.report(DomainDeliveryReport(decision: decision, results: results, lifetimeExceeded: lifetimeExceeded))
    }
}

private let ok = RecipientResult.delivered(Reply(250, "2.0.0", "ok"))
private let later = RecipientResult.failed(DeliveryFailure(.transient, status: "4.4.1", reason: "connection refused", cause: .unreachable))

@Suite(.serialized) struct QueueRunnerScheduling {
    let t: TemporarySpool
    let clock = FakeClock(1_800_000_000)
    let deliveries = FakeDeliveries()

    init() throws { t = try TemporarySpool() }

    func runner(_ queue: String = "", outbound: String = "") throws -> QueueRunner {
        let config = try configForTests("""
            [queue]
            \(queue)
            [outbound]
            \(outbound)
            """, spool: t.dir)
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let env = try OutboundSettings.environment(config: config, resolver: FakeResolver(), logger: logger)
        let clock = clock, deliveries = deliveries
        return QueueRunner(spool: t.spool, environment: env, logger: logger, now: { clock.now }, jitter: { _ in 0 },
                           deliver: deliveries.record)
    }

    /// Stores a message for user@`domain`, in incoming/ or (with `due`) in
    /// deferred/ with that next-attempt time.
    @discardableResult
    func store(_ n: Int, to domains: [String] = ["far.test"], due: Int? = nil) throws -> String {
        let id = QueueID.make(microseconds: UInt64(n), random: UInt32(n))
        var envelope = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<s@sender.test>")!),
                                origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        envelope.recipients = domains.map { Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<user@\($0)>")!) }
        try t.spool.store(QueuedMessage(id: id, arrival: clock.now, envelope: envelope, body: Array("Subject: \(n)\r\n\r\nx\r\n".utf8)))
        if let due {
            var state = DeliveryState(recipientCount: domains.count)
            state.attempts = 1
            state.nextAttempt = due
            try t.spool.writeState(id, state)
            try t.spool.move(id, from: .incoming, to: .deferred)
        }
        return id
    }

    @Test func freshMailGoesBeforeADueDeferredBacklog() throws {
        let old1 = try store(1, due: 0)
        let old2 = try store(2, due: 0)
        let new1 = try store(3)
        let new2 = try store(4)
        let r = try runner(outbound: "max_concurrent_deliveries = 1")
        defer { r.stop() }
        r.scanWithoutTimer()
        #expect(deliveries.started == [new1])
        deliveries.answer(new1, ok)
        r.settle()
        #expect(deliveries.started == [new1, new2], "the next fresh message, not the due backlog")
        // Mail that arrives while the backlog waits still goes first.
        let new3 = try store(5)
        r.wake(queued: new3)
        deliveries.answer(new2, ok)
        r.settle()
        #expect(deliveries.started == [new1, new2, new3])
        deliveries.answer(new3, ok)
        r.settle()
        #expect(Set(deliveries.started.suffix(1)).isSubset(of: [old1, old2]), "then the backlog")
        #expect(deliveries.inProgress.count == 1)
    }

    @Test func theGlobalLimitHoldsAndAFreedSlotIsRefilled() throws {
        let ids = try (1...5).map { try store($0, to: ["d\($0).test"]) }
        let r = try runner(outbound: "max_concurrent_deliveries = 2")
        defer { r.stop() }
        r.scanWithoutTimer()
        #expect(deliveries.inProgress == Array(ids[0..<2]))
        deliveries.answer(ids[1], ok)
        r.settle()
        #expect(deliveries.inProgress == [ids[0], ids[2]])
        #expect(t.spool.list(.incoming).count == 2)
    }

    @Test func aBusyDomainWaitsWithoutBlockingOthers() throws {
        let a = try store(1, to: ["busy.test"])
        let b = try store(2, to: ["busy.test"])
        let c = try store(3, to: ["other.test"])
        let r = try runner(outbound: "max_concurrent_deliveries = 10\nmax_concurrent_per_domain = 1")
        defer { r.stop() }
        r.scanWithoutTimer()
        #expect(deliveries.inProgress == [a, c], "b waits for busy.test; other.test is not held up")
        deliveries.answer(a, ok)
        r.settle()
        #expect(deliveries.inProgress == [c, b])
    }

    @Test func theRetryScheduleIsFollowedAndItsLastDelayRepeats() throws {
        let id = try store(1)
        let r = try runner("retry_schedule = [\"1m\", \"5m\"]\nmax_lifetime = \"1d\"")
        defer { r.stop() }
        r.scanWithoutTimer()
        var expectedDue = clock.now
        for (attempt, delay) in [(1, 60), (2, 300), (3, 300), (4, 300)] {
            #expect(deliveries.started.count == attempt)
            deliveries.answer(id, later)
            r.settle()
            expectedDue = clock.now + delay
            let state = try #require(try t.spool.readState(id))
            #expect(state.attempts == attempt)
            #expect(state.nextAttempt == expectedDue, "attempt \(attempt): due after \(delay)s")
            #expect(t.spool.list(.deferred) == [id])
            clock.advance(delay - 1)
            r.runTimerWork()
            #expect(deliveries.started.count == attempt, "not a second early")
            clock.advance(1)
            r.runTimerWork()
        }
        #expect(deliveries.started.count == 5)
    }

    @Test func pastTheLifetimeATransientFailureBounces() throws {
        let id = try store(1)
        let r = try runner("retry_schedule = [\"1h\"]\nmax_lifetime = \"2h\"")
        defer { r.stop() }
        r.scanWithoutTimer()
        deliveries.answer(id, later)
        r.settle()
        clock.advance(3600)
        r.runTimerWork()
        deliveries.answer(id, later)
        r.settle()
        #expect(t.spool.list(.deferred) == [id], "one hour in: still within the lifetime")
        clock.advance(3600)
        r.runTimerWork()
        #expect(deliveries.started == [id, id, id])
        deliveries.answer(id, later, lifetimeExceeded: true)
        r.settle()
        #expect(t.spool.list(.deferred).isEmpty && t.spool.list(.incoming).isEmpty)
        // The DSN for the sender is queued as fresh mail and goes out at once.
        #expect(deliveries.started.count == 4)
        let bounce = try #require(deliveries.started.last)
        #expect(bounce != id)
        #expect(t.spool.list(.active) == [bounce], "the original is gone; its bounce is in delivery")
        let dsn = try t.spool.read(.active, bounce)
        #expect(dsn.envelope.sender == .null)
        #expect(String(decoding: dsn.body, as: UTF8.self).contains("5.4.1"))
    }

    @Test func aDeliveredMessageLeavesTheSpoolAndIsNotTriedAgain() throws {
        let id = try store(1, to: ["a.test", "b.test"])
        let r = try runner()
        defer { r.stop() }
        r.scanWithoutTimer()
        #expect(Set(deliveries.inProgress) == [id], "one delivery per domain, both at once")
        #expect(deliveries.started.count == 2)
        deliveries.answer(id, ok)
        r.settle()
        #expect(t.spool.list(.active) == [id], "one domain still in delivery")
        deliveries.answer(id, later)
        r.settle()
        let state = try #require(try t.spool.readState(id))
        #expect(state.pendingIndexes.count == 1, "only the failed domain is retried")
        clock.advance(3600)
        r.runTimerWork()
        #expect(deliveries.started.count == 3)
        deliveries.answer(id, ok)
        r.settle()
        #expect(t.spool.list(.deferred).isEmpty && t.spool.list(.active).isEmpty && t.spool.list(.incoming).isEmpty)
    }
}
