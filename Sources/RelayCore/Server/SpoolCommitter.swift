// Group commit for inbound mail (Postfix's cleanup does one fsync per
// message; with many concurrent sessions most of that is the directory
// fsync). Stores arriving while a batch is being made durable wait and go
// out together in the next batch: every message still gets its own file
// and file fsync, the incoming/ directory is fsynced once per batch, and
// each client hears 250 only after its own message is durable.
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
    private let queue = DispatchQueue(label: "relayd.spool")
    /// Stores waiting for the next batch, and whether a drain is running.
    private let waiting = Locked<(pending: [(QueuedMessage, Completion)], draining: Bool)>(([], false))

    init(spool: Spool, logger: Logger, metrics: RelayMetrics? = nil) {
        self.spool = spool
        self.logger = logger
        self.metrics = metrics
    }

    func submit(_ message: QueuedMessage, completion: @escaping Completion) {
        let start = waiting.withLock { w in
            w.pending.append((message, completion))
            defer { w.draining = true }
            return !w.draining
        }
        if start { queue.async { self.drain() } }
    }

    private func drain() {
        while true {
            let batch = waiting.withLock { w in
                defer { w.pending = [] }
                if w.pending.isEmpty { w.draining = false }
                return w.pending
            }
            if batch.isEmpty { return }
            let started = RelayMetrics.monotonicSeconds()
            let results = spool.store(batch: batch.map(\.0))
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
