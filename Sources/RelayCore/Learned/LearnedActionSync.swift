// The operator's pins, unpins and forgets shared between relayd instances
// (issue 17): a change typed on one instance is appended to the shared
// action log (learned_actions: who, when, where, why, the pin's level),
// and every other instance pulls the actions after its cursor and applies
// them to its own LearnedStatus, auditing each with the instance it came
// from. LearnedSync's sibling, in its style: the daemon drives `tick`.
//
//   append: each change made here goes to an outbox first. While the
//           backend answers, the outbox is memory only and empties within
//           a tick; once it fails, every queued action is also written to
//           the spool (spool/shared-actions-outbox/, one sealed record
//           each) so a restart replays it. Actions are appended in the
//           order they were made. An append is idempotent on the backend
//           (same instance, domain, action, by and time: stored once), so
//           a replay after a lost answer never doubles an action. The
//           outbox is bounded by `outboxLimit`; beyond it the oldest
//           action is dropped from it and said so (the change still holds
//           here and is in the local audit log; only the others miss it).
//   pull:   actions after the cursor, oldest first. Those this instance
//           made are skipped (they were applied when typed). The cursor
//           (the highest id seen) and the ids seen in the last `overlap`
//           ids are kept in spool/shared-state/actions-cursor, so a
//           restart neither re-applies nor misses an action. Each pull
//           starts `overlap` ids back: an id is taken when an INSERT
//           starts and shows when it commits, so a smaller id may show
//           after a larger one was read.
//
// A forget, wherever it was made, also tells LearnedStatus (evidence last
// seen before it is not merged back in from the shared table) and
// LearnedSync (this instance's own evidence before it is not pushed
// again); the PostgreSQL backend deletes the evidence rows last seen
// before it, and its evidence pull leaves out rows last seen before the
// domain's latest forget.
import Logging
import RelayModel
import RelayQueue
import RelaySync

/// One operator change as shared: made by `change`'s `by` at `at` (Unix
/// seconds) on `instance`; `id` is the backend's (0 until appended).
public struct SharedAction: Equatable, Sendable {
    public var id: Int64
    public var change: LearnedChange
    public var at: Int
    public var instance: String

    public init(id: Int64 = 0, change: LearnedChange, at: Int, instance: String) {
        self.id = id
        self.change = change
        self.at = at
        self.instance = instance
    }
}

public struct SharedActionPull: Equatable, Sendable {
    public var actions: [SharedAction]
    public var cursor: Int64

    public init(actions: [SharedAction], cursor: Int64) {
        self.actions = actions
        self.cursor = cursor
    }
}

public protocol SharedActionBackend: Sendable {
    /// Appends the actions, in order, as this instance's (idempotent).
    func append(_ actions: [SharedAction], completion: @escaping @Sendable (Result<Void, any Error>) -> Void)
    /// Actions with an id above `after`, oldest first (at most a batch).
    func actions(after: Int64, completion: @escaping @Sendable (Result<SharedActionPull, any Error>) -> Void)
}

public final class LearnedActionSync: Sendable {
    static let folder = "shared-actions-outbox"
    static let stateFolder = "shared-state"
    static let cursorRecord = "actions-cursor"
    static let overlap: Int64 = 100
    let status: LearnedStatus
    let evidence: LearnedSync?
    let backend: any SharedActionBackend
    let instance: String
    let spool: Spool?
    let logger: Logger
    let outboxLimit: Int

    struct State {
        /// Not yet appended, oldest first, each with its outbox record name.
        var pending: [(name: String, action: SharedAction)] = []
        var serial = 0
        var appending = false
        var pulling = false
        var cursor: Int64 = 0
        var seen: Set<Int64> = []
        var reachable = true
        var counters = Counters()
    }

    public struct Counters: Equatable, Sendable {
        public var appended = 0
        public var applied = 0
        public var failures = 0
        public var dropped = 0
    }

    private let state = Locked(State())

    public init(status: LearnedStatus, evidence: LearnedSync?, backend: any SharedActionBackend, instance: String,
                spool: Spool?, logger: Logger, outboxLimit: Int = 10_000) {
        self.status = status
        self.evidence = evidence
        self.backend = backend
        self.instance = instance
        self.spool = spool
        self.logger = logger
        self.outboxLimit = max(1, outboxLimit)
    }

    public var counters: Counters { state.withLock { $0.counters } }
    public var pending: [SharedAction] { state.withLock { $0.pending.map(\.action) } }
    public var cursor: Int64 { state.withLock { $0.cursor } }

    /// At start: the cursor, and the actions an earlier run could not
    /// append (a forget among them marks its domain forgotten again).
    public func load() {
        guard let spool else { return }
        if let data = try? spool.readRecord(Self.stateFolder, Self.cursorRecord) {
            let words = String(decoding: data, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" })
            if words.count >= 2, words[0] == "actions-cursor", let c = Int64(words[1]) {
                state.withLock { s in
                    s.cursor = c
                    s.seen = Set(words.dropFirst(2).compactMap { Int64($0) })
                }
            }
        }
        var loaded: [(String, SharedAction)] = []
        for name in spool.recordNames(Self.folder) {
            guard let content = try? spool.readRecord(Self.folder, name), let action = Self.decode(content) else {
                logger.warning("shared state: unreadable action outbox record set aside", metadata: ["record": "\(name)"])
                _ = try? spool.setRecordAside(Self.folder, name, now: status.now())
                continue
            }
            loaded.append((name, action))
        }
        for (_, a) in loaded {
            if case .forget(let d, _) = a.change { status.noteForgotten(d, at: a.at) }
        }
        state.withLock { s in
            s.pending = loaded.map { (name: $0.0, action: $0.1) } + s.pending
            s.serial = max(s.serial, loaded.compactMap { Int($0.0.split(separator: "-").last ?? "") }.max() ?? 0)
            if !loaded.isEmpty { s.reachable = false }
        }
        if !loaded.isEmpty { logger.info("shared state: action outbox loaded", metadata: ["actions": "\(loaded.count)"]) }
    }

    /// An operator change made here (LearnedStatus's change observer):
    /// queued for the next append.
    public func record(_ change: LearnedChange, at: Int) {
        if case .reprobe = change { return }
        if case .forget(let d, _) = change { evidence?.forgotten(d, at: at) }
        let action = SharedAction(change: change, at: at, instance: instance)
        let (name, droppedName, down) = state.withLock { s -> (String, String?, Bool) in
            s.serial += 1
            // Sorted by name = in the order made.
            let name = "\(String(repeating: "0", count: max(0, 12 - String(at).count)))\(at)-\(s.serial)"
            s.pending.append((name: name, action: action))
            var dropped: String?
            if s.pending.count > outboxLimit {
                dropped = s.pending.removeFirst().name
                s.counters.dropped += 1
            }
            return (name, dropped, !s.reachable)
        }
        if let droppedName {
            logger.warning("shared state: action outbox full; the oldest queued action dropped (it holds here and is in the local audit log; other instances miss it)",
                           metadata: ["record": "\(droppedName)", "limit": "\(outboxLimit)"])
            _ = try? spool?.removeRecord(Self.folder, droppedName)
        }
        if down { persist(name, action) }
    }

    /// At stop: what was not appended goes to the outbox.
    public func persistPending() {
        for (name, action) in state.withLock({ $0.pending }) { persist(name, action) }
    }

    /// The timer: append what is pending, then pull and apply what others did.
    public func tick() {
        let batch: [(name: String, action: SharedAction)]? = state.withLock { s in
            guard !s.appending, !s.pending.isEmpty else { return nil }
            s.appending = true
            return Array(s.pending.prefix(100))
        }
        if let batch {
            backend.append(batch.map(\.action)) { [self] result in appended(result, names: batch.map(\.name)) }
        }
        let cursor: Int64? = state.withLock { s in
            guard !s.pulling else { return nil }
            s.pulling = true
            return s.cursor
        }
        if let cursor {
            backend.actions(after: max(0, cursor - Self.overlap)) { [self] result in pulled(result) }
        }
    }

    private func appended(_ result: Result<Void, any Error>, names: [String]) {
        switch result {
        case .success:
            let wasDown = state.withLock { s -> Bool in
                s.appending = false
                let done = Set(names)
                s.pending.removeAll { done.contains($0.name) }
                s.counters.appended += names.count
                defer { s.reachable = true }
                return !s.reachable
            }
            for name in names { _ = try? spool?.removeRecord(Self.folder, name) }
            if wasDown { logger.notice("shared state reachable again; replayed the queued operator actions", metadata: ["actions": "\(names.count)"]) }
        case .failure(let error):
            let (first, queued) = state.withLock { s -> (Bool, [(name: String, action: SharedAction)]) in
                s.appending = false
                s.counters.failures += 1
                let first = s.reachable
                s.reachable = false
                return (first, first ? s.pending : [])
            }
            if first {
                logger.warning("shared state unreachable; operator actions queued", metadata: ["error": "\(error)", "queued": "\(queued.count)"])
                for (name, action) in queued { persist(name, action) }
            }
        }
    }

    private func pulled(_ result: Result<SharedActionPull, any Error>) {
        guard case .success(let pull) = result else {
            state.withLock { $0.pulling = false }
            return
        }
        var applied = 0
        var moved = false
        for action in pull.actions.sorted(by: { $0.id < $1.id }) {
            let fresh = state.withLock { s -> Bool in
                guard !s.seen.contains(action.id) else { return false }
                s.seen.insert(action.id)
                s.cursor = max(s.cursor, action.id)
                return true
            }
            guard fresh else { continue }
            moved = true
            guard action.instance != instance else { continue }
            if case .reprobe = action.change { continue }
            if case .forget(let d, _) = action.change { evidence?.forgotten(d, at: action.at) }
            let result = status.applyShared(action.change, at: action.at, from: action.instance)
            logger.info("shared state: operator action from another instance applied", metadata: [
                "instance": "\(action.instance)", "action": "\(action.change)", "result": "\(result)"])
            applied += 1
        }
        let record: [UInt8]? = state.withLock { s in
            s.pulling = false
            s.cursor = max(s.cursor, pull.cursor)
            s.counters.applied += applied
            s.seen = s.seen.filter { $0 > s.cursor - Self.overlap }
            guard moved else { return nil }
            return Array(("actions-cursor \(s.cursor) " + s.seen.sorted().map(String.init).joined(separator: " ") + "\n").utf8)
        }
        if let record, let spool {
            do { try spool.writeRecord(Self.stateFolder, Self.cursorRecord, record) } catch {
                logger.error("shared state: cannot write the actions cursor", metadata: ["error": "\(error)"])
            }
        }
    }

    private func persist(_ name: String, _ action: SharedAction) {
        guard let spool else { return }
        do { try spool.writeRecord(Self.folder, name, Self.encode(action)) } catch {
            logger.error("shared state: cannot write the action outbox; the change holds here",
                         metadata: ["action": "\(action.change)", "error": "\(error)"])
        }
    }

    // MARK: the outbox record: "shared-action 1", "at T", "instance I"
    // (xtext), "change C" (LearnedChange's one-line form, xtext inside).

    static func encode(_ a: SharedAction) -> [UInt8] {
        Array("shared-action 1\nat \(a.at)\ninstance \(XText.encode(a.instance))\nchange \(a.change)\n".utf8)
    }

    static func decode(_ data: [UInt8]) -> SharedAction? {
        guard data.allSatisfy({ ($0 >= 0x20 && $0 < 0x7f) || $0 == 10 }), data.last == 10 else { return nil }
        let lines = String(decoding: data.dropLast(), as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count == 4, lines[0] == "shared-action 1", lines[1].hasPrefix("at "), let at = Int(lines[1].dropFirst(3)),
              lines[2].hasPrefix("instance "), let instance = XText.decode(String(lines[2].dropFirst(9))),
              lines[3].hasPrefix("change "), let change = LearnedChange.decode(line: String(lines[3].dropFirst(7))) else { return nil }
        return SharedAction(change: change, at: at, instance: instance)
    }
}
