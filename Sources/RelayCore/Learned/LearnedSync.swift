// Learned TLS status shared between relayd instances (issue 17): what one
// instance learns, the others decide with. The local store stays the copy
// every decision reads (no query on the SMTP or delivery path); this class
// moves evidence between it and a shared backend (PostgreSQL in
// production, a fake in tests), on a timer the daemon drives with `tick`.
//
//   push: each instance sends only what it saw itself — per domain and
//         level, first and last seen, how often, on how many UTC days —
//         so the shared table says which instance saw what, and when. A
//         push is idempotent (the backend keeps the larger of each field),
//         so sending a snapshot again after an outage is always safe.
//   pull: rows changed since the last cursor, as the backend's merge over
//         every instance (earliest first, latest last, the largest counts),
//         merged into the local record by `LearnedStatus.mergeShared`,
//         which only ever raises what a record knows: the rule that a
//         learned domain is never downgraded holds on the local copy
//         whatever the backend says or fails to say. Evidence older than a
//         record's relaxation is not taken back in.
//
// When the backend is down or slow: decisions go on from the local copy;
// the snapshots waiting to be pushed are kept in the spool
// (spool/shared-outbox/<domain>, one sealed record each, so a restart
// keeps them), bounded by `outboxLimit` domains (beyond it the least
// recently changed snapshot is dropped, and said so: the local copy still
// has the evidence, only the other instances miss it until the domain is
// seen again); the first failure and the recovery are logged once each
// ("shared state unreachable" / "shared state reachable again; replayed
// N"). One push and one pull at a time; a tick while one is in flight does
// nothing.
import Logging
import RelayModel
import RelayQueue
import RelaySync

/// One instance's own evidence for one domain, as pushed.
public struct SharedEvidence: Equatable, Sendable {
    public var domain: String
    public var evidence: EvidenceByLevel

    public init(domain: String, evidence: EvidenceByLevel) {
        self.domain = domain
        self.evidence = evidence
    }
}

/// What a pull brings: per domain, the evidence merged over every
/// instance, and where to continue.
public struct SharedEvidencePull: Equatable, Sendable {
    public var merged: [SharedEvidence]
    public var cursor: Int64

    public init(merged: [SharedEvidence], cursor: Int64) {
        self.merged = merged
        self.cursor = cursor
    }
}

public protocol SharedLearnedBackend: Sendable {
    /// Stores these snapshots as this instance's evidence (idempotent).
    func push(_ snapshots: [SharedEvidence], completion: @escaping @Sendable (Result<Void, any Error>) -> Void)
    /// Domains whose shared evidence changed after `cursor` (another
    /// instance's push, or this one's), merged over every instance.
    func pull(since cursor: Int64, completion: @escaping @Sendable (Result<SharedEvidencePull, any Error>) -> Void)
}

public final class LearnedSync: Sendable {
    static let folder = "shared-outbox"
    let status: LearnedStatus
    let backend: any SharedLearnedBackend
    let spool: Spool?
    let logger: Logger
    let outboxLimit: Int

    struct State {
        /// This instance's own evidence per domain (since start, plus what
        /// the outbox held).
        var own: [String: EvidenceByLevel] = [:]
        /// Snapshots not yet pushed, with when each last changed.
        var pending: [String: Int] = [:]
        var changes = 0
        var pushing = false
        var pulling = false
        var cursor: Int64 = 0
        var reachable = true
        var counters = Counters()
    }

    public struct Counters: Equatable, Sendable {
        public var pushed = 0
        public var merged = 0
        public var failures = 0
        public var dropped = 0
    }

    private let state = Locked(State())

    public init(status: LearnedStatus, backend: any SharedLearnedBackend, spool: Spool?, logger: Logger, outboxLimit: Int = 100_000) {
        self.status = status
        self.backend = backend
        self.spool = spool
        self.logger = logger
        self.outboxLimit = max(1, outboxLimit)
    }

    public var counters: Counters { state.withLock { $0.counters } }
    public var pendingDomains: [String] { state.withLock { $0.pending.keys.sorted() } }
    public var isReachable: Bool { state.withLock { $0.reachable } }

    /// Loads the snapshots an earlier run could not push (at start).
    public func load() {
        guard let spool else { return }
        var loaded: [String: EvidenceByLevel] = [:]
        for name in spool.recordNames(Self.folder) {
            guard let content = try? spool.readRecord(Self.folder, name),
                  let snapshot = Self.decode(content), snapshot.domain == name else {
                logger.warning("shared state: unreadable outbox record set aside", metadata: ["domain": "\(name)"])
                _ = try? spool.setRecordAside(Self.folder, name, now: status.now())
                continue
            }
            loaded[name] = snapshot.evidence
        }
        state.withLock { s in
            for (d, e) in loaded {
                s.own[d] = e
                s.changes += 1
                s.pending[d] = s.changes
            }
            // Snapshots are in the outbox only while the backend was
            // unreachable: until a push succeeds, take it as still so.
            if !loaded.isEmpty { s.reachable = false }
        }
        if !loaded.isEmpty { logger.info("shared state: outbox loaded", metadata: ["domains": "\(loaded.count)"]) }
    }

    /// One session this instance had (LearnedStatus's observer): counted
    /// as this instance's own evidence and queued for the next push. Only
    /// domains that did TLS somewhere are shared, as only they get records.
    public func observe(domain: String, seen: TLSEvidence, at t: Int) {
        let snapshot: SharedEvidence? = state.withLock { s in
            guard seen > .plaintext || s.own[domain] != nil else { return nil }
            var e = s.own[domain] ?? [:]
            if e[seen] == nil { e[seen] = LevelEvidence(at: t) } else { e[seen]!.add(at: t) }
            s.own[domain] = e
            s.changes += 1
            s.pending[domain] = s.changes
            if s.pending.count > outboxLimit, let oldest = s.pending.min(by: { $0.value < $1.value })?.key {
                s.pending[oldest] = nil
                s.counters.dropped += 1
            }
            return SharedEvidence(domain: domain, evidence: e)
        }
        guard let snapshot else { return }
        // Written only while the backend is unreachable: then the outbox is
        // what survives a restart (a healthy push clears it within a tick).
        if !isReachable { persist(snapshot) }
    }

    /// The domain was forgotten at `at` (here or on another instance): this
    /// instance's own evidence last seen before then is dropped, so it is
    /// not pushed again, and its queued snapshot with it.
    public func forgotten(_ domain: String, at: Int) {
        let emptied = state.withLock { s -> Bool in
            guard let e = s.own[domain] else { return false }
            let newer = e.filter { $0.value.lastSeen > at }
            if newer.isEmpty {
                s.own[domain] = nil
                s.pending[domain] = nil
                return true
            }
            s.own[domain] = newer
            return false
        }
        if emptied { _ = try? spool?.removeRecord(Self.folder, domain) }
    }

    /// At stop: what was not pushed yet goes to the outbox, so the next
    /// start pushes it.
    public func persistPending() {
        let pending = state.withLock { s in s.pending.keys.sorted().map { SharedEvidence(domain: $0, evidence: s.own[$0] ?? [:]) } }
        for snapshot in pending { persist(snapshot) }
    }

    /// The timer: push what is pending, then pull what changed.
    public func tick() {
        let batch: [SharedEvidence]? = state.withLock { s in
            guard !s.pushing, !s.pending.isEmpty else { return nil }
            s.pushing = true
            return s.pending.keys.sorted().map { SharedEvidence(domain: $0, evidence: s.own[$0] ?? [:]) }
        }
        if let batch {
            let sent = state.withLock { s in batch.map { ($0.domain, s.pending[$0.domain] ?? 0) } }
            backend.push(batch) { [self] result in pushed(result, sent: sent) }
        }
        let cursor: Int64? = state.withLock { s in
            guard !s.pulling else { return nil }
            s.pulling = true
            return s.cursor
        }
        if let cursor {
            backend.pull(since: cursor) { [self] result in pulled(result) }
        }
    }

    private func pushed(_ result: Result<Void, any Error>, sent: [(String, Int)]) {
        switch result {
        case .success:
            let (replayed, wasDown) = state.withLock { s -> (Int, Bool) in
                s.pushing = false
                var done = 0
                for (d, version) in sent where s.pending[d] == version {
                    s.pending[d] = nil
                    done += 1
                }
                s.counters.pushed += done
                let wasDown = !s.reachable
                s.reachable = true
                return (done, wasDown)
            }
            for (d, _) in sent { _ = try? spool?.removeRecord(Self.folder, d) }
            if wasDown { logger.notice("shared state reachable again; replayed the queued writes", metadata: ["domains": "\(replayed)"]) }
        case .failure(let error):
            let (first, pending) = state.withLock { s -> (Bool, [SharedEvidence]) in
                s.pushing = false
                s.counters.failures += 1
                let first = s.reachable
                s.reachable = false
                return (first, first ? s.pending.keys.map { SharedEvidence(domain: $0, evidence: s.own[$0] ?? [:]) } : [])
            }
            if first {
                logger.warning("shared state unreachable; deciding from the local copy, writes queued",
                               metadata: ["error": "\(error)", "queued": "\(pending.count)"])
                for snapshot in pending { persist(snapshot) }
            }
        }
    }

    private func pulled(_ result: Result<SharedEvidencePull, any Error>) {
        guard case .success(let pull) = result else {
            state.withLock { $0.pulling = false }
            return
        }
        var merged = 0
        for shared in pull.merged where status.mergeShared(domain: shared.domain, evidence: shared.evidence) { merged += 1 }
        state.withLock { s in
            s.pulling = false
            s.cursor = max(s.cursor, pull.cursor)
            s.counters.merged += merged
        }
    }

    private func persist(_ snapshot: SharedEvidence) {
        guard let spool else { return }
        do { try spool.writeRecord(Self.folder, snapshot.domain, Self.encode(snapshot)) } catch {
            logger.error("shared state: cannot write the outbox; the local copy keeps the evidence",
                         metadata: ["domain": "\(snapshot.domain)", "error": "\(error)"])
        }
    }

    // MARK: the outbox record: "shared-evidence 1", "domain D", then one
    // "level L first last count days" line per level.

    static func encode(_ s: SharedEvidence) -> [UInt8] {
        var out = "shared-evidence 1\ndomain \(s.domain)\n"
        for level in TLSEvidence.allCases {
            guard let e = s.evidence[level] else { continue }
            out += "level \(level) \(e.firstSeen) \(e.lastSeen) \(e.count) \(e.days)\n"
        }
        return Array(out.utf8)
    }

    static func decode(_ data: [UInt8]) -> SharedEvidence? {
        guard data.allSatisfy({ ($0 >= 0x20 && $0 < 0x7f) || $0 == 10 }), data.last == 10 else { return nil }
        let lines = String(decoding: data.dropLast(), as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 2, lines[0] == "shared-evidence 1", lines[1].hasPrefix("domain ") else { return nil }
        let domain = String(lines[1].dropFirst(7))
        guard LearnedRecordFormat.isDomain(domain) else { return nil }
        var evidence: EvidenceByLevel = [:]
        for line in lines.dropFirst(2) {
            let f = line.split(separator: " ", omittingEmptySubsequences: false)
            guard f.count == 6, f[0] == "level", let level = TLSEvidence(name: String(f[1])), evidence[level] == nil,
                  let first = Int(f[2]), let last = Int(f[3]), let count = Int(f[4]), let days = Int(f[5]),
                  first <= last, count >= 1, days >= 1, days <= count else { return nil }
            evidence[level] = LevelEvidence(firstSeen: first, lastSeen: last, count: count, days: days)
        }
        return SharedEvidence(domain: domain, evidence: evidence)
    }
}
