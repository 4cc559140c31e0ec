// Group commit for inbound mail (Postfix's cleanup does one fsync per
// message; with many concurrent sessions most of that is the directory
// fsync). Stores arriving while a batch is being made durable wait and go
// out together in the next batch: every message still gets its own file
// and file fsync, the incoming/ directory is fsynced once per batch (or the
// batch is synced with one syncfs, `[queue] sync`), and each client hears
// 250 only after its own message is durable.
//
// Several lanes, each with its own batch: with one, a batch's fsyncs ran
// one after another while the next batch waited, so with 10 sessions each
// 250 waited for one and a half batches of serial fsyncs (bench/RESULTS.md:
// 4 of the 4.7 ms a transaction took, and the lane busy all the time).
// Lanes keep several batches' I/O in flight on the device. Four measured
// best on the two-core benchmark machine (2, 3, 4 and 6 interleaved; the
// spread between runs there is as large as the differences, so this is a
// modest choice): each lane costs a directory fsync per batch, so more
// lanes mean smaller batches and more fsyncs per message.
import RelayQueue
import RelayMetrics
import RelaySMTP
import Dispatch
import Logging
import RelaySync

final class SpoolCommitter: Sendable {
    typealias Completion = @Sendable (StoreResult) -> Void

    let spool: Spool
    let logger: Logger
    /// Times each batch (relayd_spool_commit_duration_seconds).
    let metrics: RelayMetrics?
    /// Independent commit lanes, each with its own queue and batch. A store
    /// goes to an idle lane if there is one, else to the lane with the
    /// fewest waiting: while one lane waits for its fsyncs another can
    /// write and sync the next batch, so the device has several requests in
    /// flight instead of one (the fsyncs of a batch are otherwise strictly
    /// one after another, and with few sessions each client's 250 waited
    /// for a whole batch of them).
    private let lanes: [Lane]

    final class Lane: Sendable {
        let queue: DispatchQueue
        /// This lane's own descriptor for syncfs(2) (Spool.SyncHandle: a
        /// writeback error must reach every lane, not the first to ask).
        let sync: Spool.SyncHandle?
        /// Stores waiting for the next batch, and whether a drain is running.
        let waiting = Locked<(pending: [(QueuedMessage, Completion)], draining: Bool)>(([], false))
        /// Batches this lane has committed (tests).
        let batches = Locked(0)
        init(_ index: Int, sync: Spool.SyncHandle?) {
            queue = DispatchQueue(label: "relayd.spool.\(index)")
            self.sync = sync
        }
    }

    /// Batches committed per lane (tests).
    var batchesPerLane: [Int] { lanes.map { $0.batches.withLock { $0 } } }

    static let defaultLanes = 4

    /// The lanes to run: `RELAYD_SPOOL_LANES` (benchmarks only, like
    /// RELAYD_SPOOL_FREE_FILES; 1 to 16) or the default.
    static func lanes(fromEnvironment value: String?) -> Int {
        value.flatMap { Int($0) }.map { min(16, max(1, $0)) } ?? defaultLanes
    }

    init(spool: Spool, logger: Logger, metrics: RelayMetrics? = nil, lanes: Int = SpoolCommitter.defaultLanes) {
        self.spool = spool
        self.logger = logger
        self.metrics = metrics
        // Each lane its own sync handle. If the root cannot be opened that
        // many times, a single lane on the spool's own handle: no two lanes
        // then share a descriptor (the queue runner's own stores of bounces
        // may still share it with that lane, as they did before lanes).
        let handles = (0..<max(1, lanes)).map { _ in try? spool.makeSyncHandle() }
        self.lanes = handles.allSatisfy { $0 != nil }
            ? handles.enumerated().map { Lane($0.offset, sync: $0.element) }
            : [Lane(0, sync: nil)]
    }

    func submit(_ message: QueuedMessage, completion: @escaping Completion) {
        // An idle lane first; else the shortest line. (A lane may go idle
        // between this look and the append below: then it is started.)
        let loads = lanes.map { lane in lane.waiting.withLock { $0.draining ? 1 + $0.pending.count : 0 } }
        let lane = lanes[loads.indices.min { loads[$0] < loads[$1] }!]
        let start = lane.waiting.withLock { w in
            w.pending.append((message, completion))
            defer { w.draining = true }
            return !w.draining
        }
        if start { lane.queue.async { self.drain(lane) } }
    }

    private func drain(_ lane: Lane) {
        while true {
            let batch = lane.waiting.withLock { w in
                defer { w.pending = [] }
                if w.pending.isEmpty { w.draining = false }
                return w.pending
            }
            if batch.isEmpty { return }
            let started = RelayMetrics.monotonicSeconds()
            let results = spool.store(batch: batch.map(\.0), using: lane.sync)
            lane.batches.withLock { $0 += 1 }
            metrics?.spoolCommitted(seconds: RelayMetrics.monotonicSeconds() - started)
            for ((message, completion), result) in zip(batch, results) {
                switch result {
                case .success:
                    completion(.queued(id: message.id))
                case .failure(.insufficientSpace(let available)):
                    logger.error("spool below free-space reserve; refusing mail", metadata: ["available": "\(available)"])
                    completion(.insufficientSpace)
                case .failure(let error):
                    logger.error("spool write failed", metadata: ["id": "\(message.id)", "error": "\(error)"])
                    completion(.failed(reason: "\(error)"))
                }
            }
        }
    }
}
