// The TLS-RPT counters as the daemon holds them: per UTC day and policy
// domain, in memory behind one lock, written under the spool by `flush`.
//
// `record` is what delivery calls, once per MX session: it takes the lock,
// adds one to a counter and returns. It never touches the disk, never
// waits for anything but that lock, and cannot fail, so a report's
// bookkeeping can neither slow nor stop a delivery. The daemon calls
// `flush` every minute and at stop; a crash loses at most the sessions of
// the last minute (a report is a statistic, not a record of mail), and a
// write that fails is logged and retried at the next flush.
//
// At start `load` reads the last two days back from the spool, so a
// restart adds to the counts on disk rather than replacing them. Memory is
// bounded: only days that can still gain sessions stay in memory (today
// and yesterday, for sessions that began just before midnight), each with
// at most `maxDomainsPerDay` domains (more are counted as dropped and
// logged), each domain bounded by TLSRPTCounts' own limits.
import Logging
import RelayModel
import RelayQueue
import RelaySync

public final class TLSRPTLedger: Sendable {
    struct Key: Hashable, Sendable {
        let day: TLSRPTDay
        let domain: String
    }

    struct State: Sendable {
        var table: [Key: TLSRPTCounts] = [:]
        var dirty: Set<Key> = []
        /// Changed since TLSRPTSync last took them (shared state only).
        var shareDirty: Set<Key> = []
        var domainsPerDay: [TLSRPTDay: Int] = [:]
        var dropped = 0
    }

    public let store: TLSRPTStore
    let logger: Logger
    let now: @Sendable () -> Int
    public let maxDomainsPerDay: Int
    private let state = Locked(State())
    /// Serialises writes to the store; counts them. (Not Locked<Void>:
    /// ThreadSanitizer takes the zero-sized value's inout access for one
    /// of the lock's own field and reports a race that is not there.)
    private let writeLock = Locked<Int>(0)

    public init(store: TLSRPTStore, logger: Logger, now: @escaping @Sendable () -> Int, maxDomainsPerDay: Int = 10_000) {
        self.store = store
        self.logger = logger
        self.now = now
        self.maxDomainsPerDay = maxDomainsPerDay
    }

    /// Counts one session. Cheap, never blocks on I/O, never fails.
    public func record(_ event: TLSRPTEvent) {
        let domain = event.policy.domain
        let day = TLSRPTDay(containing: now())
        let key = Key(day: day, domain: domain)
        state.withLock { s in
            if s.table[key] == nil {
                guard DomainRecordName.isValid(domain), s.domainsPerDay[day, default: 0] < maxDomainsPerDay else {
                    s.dropped += 1
                    return
                }
                s.table[key] = TLSRPTCounts(day: day, domain: domain)
                s.domainsPerDay[day, default: 0] += 1
            }
            s.table[key]!.add(event)
            s.dirty.insert(key)
            s.shareDirty.insert(key)
        }
    }

    /// Reads today's and yesterday's counts from the spool into memory
    /// (at start, before the first `record`). A damaged record was set
    /// aside by the store and is started afresh.
    public func load() {
        let today = TLSRPTDay(containing: now())
        for day in [today.previous, today] {
            for domain in store.domains(day: day) {
                guard let c = readLogged(day: day, domain: domain) else { continue }
                state.withLock { s in
                    let key = Key(day: day, domain: domain)
                    if s.table[key] == nil { s.domainsPerDay[day, default: 0] += 1 }
                    s.table[key] = c
                    // Pushed again at start: harmless (absolute values),
                    // and it covers a push the last run did not make.
                    s.shareDirty.insert(key)
                }
            }
        }
    }

    /// Writes every changed counter, then lets go of days that can no
    /// longer change.
    public func flush() {
        writeLock.withLock { flushes in
            flushes += 1
            let (pending, dropped) = state.withLock { s -> ([TLSRPTCounts], Int) in
                let p = s.dirty.compactMap { s.table[$0] }
                s.dirty.removeAll()
                let d = s.dropped
                s.dropped = 0
                return (p, d)
            }
            for counts in pending {
                do { try store.put(counts) } catch {
                    state.withLock { _ = $0.dirty.insert(Key(day: counts.day, domain: counts.domain)) }
                    logger.error("TLS-RPT: cannot write counters; kept in memory, retried at the next flush",
                                 metadata: ["day": "\(counts.day)", "domain": "\(counts.domain)", "error": "\(error)"])
                }
            }
            if dropped > 0 {
                logger.warning("TLS-RPT: sessions not counted (domain limit per day reached, or not a domain name)",
                               metadata: ["sessions": "\(dropped)", "limit": "\(maxDomainsPerDay)"])
            }
            let oldest = TLSRPTDay(containing: now()).previous
            state.withLock { s in
                for key in s.table.keys where key.day < oldest && !s.dirty.contains(key) { s.table[key] = nil }
                for day in s.domainsPerDay.keys where day < oldest && !s.dirty.contains(where: { $0.day == day }) {
                    s.domainsPerDay[day] = nil
                }
            }
        }
    }

    /// The counters changed since the last call, for TLSRPTSync to push
    /// (absolute values: this instance's whole count for the day).
    public func takeShareChanges() -> [TLSRPTCounts] {
        state.withLock { s in
            let changed = s.shareDirty.compactMap { s.table[$0] }
            s.shareDirty.removeAll()
            return changed.sorted { ($0.day, $0.domain) < ($1.day, $1.domain) }
        }
    }

    public var hasUnwritten: Bool { state.withLock { !$0.dirty.isEmpty } }

    /// The counts for a day and domain: memory when held there, else the spool.
    public func counts(day: TLSRPTDay, domain: String) -> TLSRPTCounts? {
        if let c = state.withLock({ $0.table[Key(day: day, domain: domain)] }) { return c }
        return readLogged(day: day, domain: domain)
    }

    /// The domains with sessions on `day`, in memory or on disk.
    public func domains(day: TLSRPTDay) -> [String] {
        let held = state.withLock { s in s.table.keys.filter { $0.day == day }.map(\.domain) }
        return Set(held + store.domains(day: day)).sorted()
    }

    private func readLogged(day: TLSRPTDay, domain: String) -> TLSRPTCounts? {
        do { return try store.get(day: day, domain: domain) } catch {
            logger.error("TLS-RPT: cannot read counters", metadata: ["day": "\(day)", "domain": "\(domain)", "error": "\(error)"])
            return nil
        }
    }
}
