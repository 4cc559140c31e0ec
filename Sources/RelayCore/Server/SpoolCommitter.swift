// Group commit for inbound mail (Postfix's cleanup does one fsync per
// message; with many concurrent sessions most of that is the directory
// fsync). Stores arriving while a batch is being made durable wait and go
// out together in the next batch: every message still gets its own file
// and file fsync, the incoming/ directory is fsynced once per batch, and
// each client hears 250 only after its own message is durable.
import RelayQueue
import RelaySMTP
import Dispatch
import Foundation
import Logging

final class SpoolCommitter: @unchecked Sendable {
    typealias Completion = @Sendable (StoreResult) -> Void

    let spool: Spool
    let logger: Logger
    private let queue = DispatchQueue(label: "relayd.spool")
    private let lock = NSLock()
    private var pending: [(QueuedMessage, Completion)] = []
    private var draining = false

    init(spool: Spool, logger: Logger) {
        self.spool = spool
        self.logger = logger
    }

    func submit(_ message: QueuedMessage, completion: @escaping Completion) {
        lock.lock()
        pending.append((message, completion))
        let start = !draining
        draining = true
        lock.unlock()
        if start { queue.async { self.drain() } }
    }

    private func drain() {
        while true {
            lock.lock()
            let batch = pending
            pending = []
            if batch.isEmpty {
                draining = false
                lock.unlock()
                return
            }
            lock.unlock()
            let results = spool.store(batch: batch.map(\.0))
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
