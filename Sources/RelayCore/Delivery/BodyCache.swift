// The message bodies the queue runner holds in memory, within a byte budget
// (`[queue] memory_budget`). The inbound side hands each fresh message over
// as it wrote it; keeping it saves reading the file back, which matters for
// many small messages. A kept body stays charged from the hand-over until
// its delivery ends, so the budget bounds what is waiting and what is being
// sent from memory together. Anything not kept is read from the spool, and
// big bodies are streamed from there in chunks.
//
// A body larger than a sixteenth of the budget is never kept: reading it
// back costs little next to sending it, and a few of them would otherwise
// crowd out the thousands of small messages the budget is for.
import RelayQueue
struct BodyCache {
    private(set) var budget: Int
    /// Bytes charged: kept bodies, waiting or being delivered.
    private(set) var used = 0
    private var waiting: [String: QueuedMessage] = [:]
    private var charged: [String: Int] = [:]

    init(budget: Int) { self.budget = budget }

    /// Applies to bodies offered from now on (a reload may change it).
    mutating func setBudget(_ bytes: Int) { budget = bytes }

    var largestKept: Int { budget / 16 }

    /// Keeps `message` if it fits; false if it must be read from disk.
    @discardableResult
    mutating func offer(_ message: QueuedMessage) -> Bool {
        let size = message.body.count
        guard charged[message.id] == nil, size <= largestKept, used + size <= budget else { return false }
        waiting[message.id] = message
        charged[message.id] = size
        used += size
        return true
    }

    /// The kept message with this id, if any; still waiting and charged.
    func peek(_ id: String) -> QueuedMessage? { waiting[id] }

    /// Its delivery starts: no longer waiting, still charged until release.
    mutating func startDelivery(_ id: String) { waiting.removeValue(forKey: id) }

    /// Forgets the message and frees its bytes (nothing if none were charged).
    mutating func release(_ id: String) {
        waiting.removeValue(forKey: id)
        if let size = charged.removeValue(forKey: id) { used -= size }
    }

    /// Forgets every waiting message (their files are read when needed);
    /// bodies being delivered stay charged until their release.
    mutating func dropWaiting() {
        for id in waiting.keys { release(id) }
    }

    var waitingCount: Int { waiting.count }
}
