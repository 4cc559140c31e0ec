// The tls-exclusive drop audit shared between relayd instances (issue 17):
// each drop, already logged here ("audit: message dropped by tls-exclusive
// policy", which is always written whatever happens below), is also
// appended to the shared table (tls_exclusive_drops: instance, queue id,
// domain, reason, time) so `relayd report drops` lists every instance's.
//
// Append-only, through an outbox: each drop is written to the spool
// (spool/shared-drops-outbox/, one sealed record each) when it happens,
// and removed once the backend has it, so neither an outage nor a restart
// loses one; `tick` (the daemon's shared-state timer) appends what waits,
// oldest first, a batch at a time. An append is idempotent on the backend
// (same instance, queue id, domain, time and reason: stored once), so a
// replay after a lost answer never doubles a drop.
//
// When the outbox is full (`outboxLimit` drops waiting, the database down
// for long): the new drop is not queued for sharing — what waits is kept,
// as the older evidence — and that is counted and logged (once per time it
// fills up). The local log line was written all the same, so the drop is
// never unaudited; only the shared table misses it.
import Logging
import RelayModel
import RelayQueue
import RelaySync

public struct SharedDrop: Equatable, Sendable {
    public var at: Int
    public var queueID: String
    public var domain: String
    public var reason: String

    public init(at: Int, queueID: String, domain: String, reason: String) {
        self.at = at
        self.queueID = queueID
        self.domain = domain
        self.reason = reason
    }
}

public protocol SharedDropBackend: Sendable {
    /// Appends the drops as this instance's (idempotent).
    func append(_ drops: [SharedDrop], completion: @escaping @Sendable (Result<Void, any Error>) -> Void)
}

public final class SharedDropAudit: Sendable {
    static let folder = "shared-drops-outbox"
    let backend: any SharedDropBackend
    let spool: Spool?
    let logger: Logger
    let outboxLimit: Int

    struct State {
        var pending: [(name: String, drop: SharedDrop)] = []
        var serial = 0
        var appending = false
        var reachable = true
        var full = false
        var counters = Counters()
    }

    public struct Counters: Equatable, Sendable {
        public var appended = 0
        public var failures = 0
        /// Drops not shared because the outbox was full (logged locally).
        public var notShared = 0
    }

    private let state = Locked(State())

    public init(backend: any SharedDropBackend, spool: Spool?, logger: Logger, outboxLimit: Int = 10_000) {
        self.backend = backend
        self.spool = spool
        self.logger = logger
        self.outboxLimit = max(1, outboxLimit)
    }

    public var counters: Counters { state.withLock { $0.counters } }
    public var pending: [SharedDrop] { state.withLock { $0.pending.map(\.drop) } }

    /// At start: the drops an earlier run could not append.
    public func load(now: Int) {
        guard let spool else { return }
        var loaded: [(name: String, drop: SharedDrop)] = []
        for name in spool.recordNames(Self.folder) {
            guard let content = try? spool.readRecord(Self.folder, name), let drop = Self.decode(content) else {
                logger.warning("shared state: unreadable drop outbox record set aside", metadata: ["record": "\(name)"])
                _ = try? spool.setRecordAside(Self.folder, name, now: now)
                continue
            }
            loaded.append((name, drop))
        }
        state.withLock { s in
            s.pending = loaded + s.pending
            // Drops wait in the outbox only while the backend failed: until
            // an append succeeds, take it as still so (the replay is logged).
            if !loaded.isEmpty { s.reachable = false }
            s.serial = max(s.serial, loaded.compactMap { Int($0.name.split(separator: "-").last ?? "") }.max() ?? 0)
        }
        if !loaded.isEmpty { logger.info("shared state: drop outbox loaded", metadata: ["drops": "\(loaded.count)"]) }
    }

    /// A tls-exclusive drop (the local audit line is already written).
    public func record(_ drop: SharedDrop) {
        let name: String? = state.withLock { s in
            guard s.pending.count < outboxLimit else {
                s.counters.notShared += 1
                return nil
            }
            s.full = false
            s.serial += 1
            let name = "\(String(repeating: "0", count: max(0, 12 - String(drop.at).count)))\(drop.at)-\(s.serial)"
            s.pending.append((name: name, drop: drop))
            return name
        }
        guard let name else {
            let first = state.withLock { s -> Bool in defer { s.full = true }; return !s.full }
            if first {
                logger.error("shared state: drop outbox full; this tls-exclusive drop is in the local log only, not in the shared table",
                             metadata: ["id": "\(drop.queueID)", "domain": "\(drop.domain)", "limit": "\(outboxLimit)"])
            }
            return
        }
        guard let spool else { return }
        do { try spool.writeRecord(Self.folder, name, Self.encode(drop)) } catch {
            logger.error("shared state: cannot write the drop outbox; kept in memory until appended",
                         metadata: ["id": "\(drop.queueID)", "error": "\(error)"])
        }
    }

    /// The timer: append what waits.
    public func tick() {
        let batch: [(name: String, drop: SharedDrop)]? = state.withLock { s in
            guard !s.appending, !s.pending.isEmpty else { return nil }
            s.appending = true
            return Array(s.pending.prefix(100))
        }
        guard let batch else { return }
        backend.append(batch.map(\.drop)) { [self] result in
            let names = batch.map(\.name)
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
                if wasDown { logger.notice("shared state reachable again; replayed the queued tls-exclusive drops", metadata: ["drops": "\(names.count)"]) }
            case .failure(let error):
                let first = state.withLock { s -> Bool in
                    s.appending = false
                    s.counters.failures += 1
                    defer { s.reachable = false }
                    return s.reachable
                }
                if first {
                    logger.warning("shared state unreachable; tls-exclusive drops queued", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    // MARK: the outbox record: "shared-drop 1", then at, queue, domain and
    // reason lines (the text fields in xtext).

    static func encode(_ d: SharedDrop) -> [UInt8] {
        Array("shared-drop 1\nat \(d.at)\nqueue \(XText.encode(d.queueID))\ndomain \(XText.encode(d.domain))\nreason \(XText.encode(d.reason))\n".utf8)
    }

    static func decode(_ data: [UInt8]) -> SharedDrop? {
        guard data.allSatisfy({ ($0 >= 0x20 && $0 < 0x7f) || $0 == 10 }), data.last == 10 else { return nil }
        let lines = String(decoding: data.dropLast(), as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        func field(_ i: Int, _ key: String) -> String? {
            guard lines.count == 5, lines[i].hasPrefix(key + " ") else { return nil }
            let raw = String(lines[i].dropFirst(key.count + 1))
            return key == "at" ? raw : (raw.isEmpty ? "" : XText.decode(raw))
        }
        guard lines.count == 5, lines[0] == "shared-drop 1", let at = field(1, "at").flatMap({ Int($0) }),
              let queue = field(2, "queue"), let domain = field(3, "domain"), let reason = field(4, "reason") else { return nil }
        return SharedDrop(at: at, queueID: queue, domain: domain, reason: reason)
    }
}
