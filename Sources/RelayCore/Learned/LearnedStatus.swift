// The learned records as the daemon holds them: every record loaded at
// start, updated as deliveries and probes report, read synchronously by
// the policy layer (no I/O on the decision path), written through the
// store.
//
// When a record is written: at once when something that decides mail
// changes (a level first seen, a new UTC day of evidence, the learned
// level, the start of a run of sessions below it, a probe, a pin, a
// relaxation), so a crash never forgets that a domain does TLS; counters
// and last-seen times alone are marked dirty and written by `flush`, which
// the daemon calls every minute and at stop. A write that fails is logged
// and retried at the next flush; the record in memory keeps deciding, so a
// failing disk never turns a learned domain back into a plaintext one.
//
// Writes go through one lock that reads the current record at write time,
// so two queues reporting on one domain can never leave the older copy on
// disk.
import Logging
import RelayModel
import RelayPolicy
import RelayQueue
import RelaySync

public final class LearnedStatus: Sendable {
    let store: any LearnedStore
    public let settings: LearnedSettings
    let logger: Logger
    let now: @Sendable () -> Int
    private let table = Locked<[String: LearnedRecord]>([:])
    private let dirty = Locked<Set<String>>([])
    /// Serialises writes to the store; counts them. (Not Locked<Void>:
    /// ThreadSanitizer takes the zero-sized value's inout access for one
    /// of the lock's own field and reports a race that is not there.)
    private let writeLock = Locked<Int>(0)
    /// For the metrics to come (issue 15) and the tests: how often records
    /// relaxed and expired, and how many sessions were deferred as
    /// suspected downgrades.
    public let counters = Locked<Counters>(Counters())
    private let sessionObserver = Locked<(@Sendable (String, TLSEvidence, Int) -> Void)?>(nil)
    /// Told of every operator change made here (LearnedActionSync shares
    /// them): the change and when it was made.
    private let changeObserver = Locked<(@Sendable (LearnedChange, Int) -> Void)?>(nil)
    /// Per domain, the latest forget (here or on another instance): shared
    /// evidence last seen before it is not taken back in by `mergeShared`,
    /// so another instance's older evidence cannot undo the forget.
    private let forgotten = Locked<[String: Int]>([:])

    public struct Counters: Equatable, Sendable {
        public var relaxed = 0
        public var expired = 0
        public var downgradesDeferred = 0
        public var writeFailures = 0
    }

    public init(store: any LearnedStore, settings: LearnedSettings, logger: Logger, now: @escaping @Sendable () -> Int) {
        self.store = store
        self.settings = settings
        self.logger = logger
        self.now = now
    }

    /// Loads every stored record (at start). Unreadable ones were set aside
    /// by the store, which reported them.
    public func load() {
        let names: [String]
        do { names = try store.list() } catch {
            logger.error("learned TLS status: cannot list records", metadata: ["error": "\(error)"])
            return
        }
        var loaded: [String: LearnedRecord] = [:]
        for d in names {
            do { if let r = try store.get(d) { loaded[d] = r } } catch {
                logger.error("learned TLS status: cannot read record", metadata: ["domain": "\(d)", "error": "\(error)"])
            }
        }
        table.withLock { $0 = loaded }
    }

    public func record(_ domain: String) -> LearnedRecord? { table.withLock { $0[domain] } }

    public var domains: [String] { table.withLock { $0.keys.sorted() } }

    public var records: [LearnedRecord] { table.withLock { $0.values.sorted { $0.domain < $1.domain } } }

    /// Takes the domain's record from the store into memory (after a
    /// `relayd policy` change made without a daemon, or to resync).
    public func reload(_ domain: String) -> String {
        do {
            let r = try store.get(domain)
            table.withLock { $0[domain] = r }
            return r == nil ? "\(domain): no learned record" : "\(domain): learned record reloaded"
        } catch {
            return "error: \(error)"
        }
    }

    // MARK: observations

    /// A delivery session to one of the domain's MX hosts used or tried TLS.
    /// A domain with no record gets one only once TLS is seen (a plaintext
    /// world costs no writes).
    public func observeSession(domain: String, host: String, seen: TLSEvidence, reason: String, key: String?) {
        let t = now()
        let outcome: (changed: Bool, before: TLSEvidence?, after: TLSEvidence?)? = table.withLock { table in
            var created = false
            if table[domain] == nil {
                guard seen > .plaintext else { return nil }
                table[domain] = LearnedRecord(domain: domain, created: t)
                created = true
            }
            let before = table[domain]!.learned
            let changed = table[domain]!.observeSession(host: host, seen: seen, reason: reason, key: key, at: t)
            return (changed || created, before, table[domain]!.learned)
        }
        if let observe = sessionObserver.withLock({ $0 }) { observe(domain, seen, t) }
        guard let outcome else { return }
        if outcome.before != outcome.after, let after = outcome.after {
            logger.info("learned TLS status raised", metadata: [
                "domain": "\(domain)", "mx": "\(host)", "from": "\(outcome.before.map(\.description) ?? "nothing")",
                "to": "\(after)", "answers": "\(after.policyLevel?.rawValue ?? "-")"])
        }
        if outcome.changed { persist(domain) } else { dirty.withLock { _ = $0.insert(domain) } }
    }

    /// Evidence other relayd instances gathered (LearnedSync's pull),
    /// merged into the local record: each level's first/last seen, count
    /// and days only grow, so the learned level never goes down by it.
    /// Evidence last seen before the record relaxed is left out (the
    /// relaxation was this domain's own judgement). A domain without a
    /// record gets one only for TLS evidence. True when the record changed
    /// (it is then written through at once).
    @discardableResult
    public func mergeShared(domain: String, evidence: EvidenceByLevel) -> Bool {
        guard LearnedRecordFormat.isDomain(domain) else { return false }
        let t = now()
        let forgottenAt = forgotten.withLock { $0[domain] } ?? Int.min
        let outcome: (TLSEvidence?, TLSEvidence?)? = table.withLock { table in
            let barrier = max(table[domain]?.relaxedAt ?? Int.min, forgottenAt)
            let fresh = evidence.filter { $0.value.lastSeen > barrier && $0.value.count >= 1 }
            if table[domain] == nil {
                guard fresh.keys.contains(where: { $0 > .plaintext }) else { return nil }
                table[domain] = LearnedRecord(domain: domain, created: t)
            }
            let before = table[domain]!.learned
            var r = table[domain]!
            for (level, e) in fresh {
                r.evidence[level] = r.evidence[level].map { $0.merged(with: e) } ?? e
            }
            guard r != table[domain]! else { return nil }
            table[domain] = r
            return (before, r.learned)
        }
        guard let outcome else { return false }
        if outcome.0 != outcome.1, let after = outcome.1 {
            logger.info("learned TLS status raised by another instance", metadata: [
                "domain": "\(domain)", "from": "\(outcome.0.map(\.description) ?? "nothing")", "to": "\(after)",
                "answers": "\(after.policyLevel?.rawValue ?? "-")"])
        }
        persist(domain)
        return true
    }

    /// Told of every session observed (LearnedSync shares them); set once,
    /// before deliveries start.
    public func setSessionObserver(_ observer: @escaping @Sendable (String, TLSEvidence, Int) -> Void) {
        sessionObserver.withLock { $0 = observer }
    }

    /// Told of every operator change carried out here (not of those
    /// applied from another instance); set once, before requests are taken.
    public func setChangeObserver(_ observer: @escaping @Sendable (LearnedChange, Int) -> Void) {
        changeObserver.withLock { $0 = observer }
    }

    /// When the domain was last forgotten (here or elsewhere), if it was.
    public func forgottenAt(_ domain: String) -> Int? { forgotten.withLock { $0[domain] } }

    /// Marks the domain forgotten at `at` without touching its record (a
    /// forget still waiting in the shared-actions outbox, at start).
    public func noteForgotten(_ domain: String, at: Int) {
        forgotten.withLock { $0[domain] = max($0[domain] ?? Int.min, at) }
    }

    /// A session deferred because the learned level could not be had.
    public func countDowngradeDeferred() { counters.withLock { $0.downgradesDeferred += 1 } }

    /// A probe's findings for a known domain.
    public func observeProbe(domain: String, probe: LearnedRecord.Probe, hosts: [(host: String, seen: TLSEvidence)],
                             mx: [String], keys: [String]) {
        let change: (TLSEvidence?, TLSEvidence?)? = table.withLock { table in
            guard table[domain] != nil else { return nil }
            let before = table[domain]!.lastProbe
            table[domain]!.observeProbe(probe, hosts: hosts, mx: mx, keys: keys)
            return (before.flatMap { $0.answered ? $0.seen : nil }, probe.answered ? probe.seen : nil)
        }
        guard let change else { return }
        var fields: Logger.Metadata = ["domain": "\(domain)", "mx": "\(probe.host)", "seen": "\(probe.answered ? probe.seen.description : "no answer")",
                                       "detail": "\(probe.detail)"]
        if let before = change.0, let after = change.1, before != after {
            fields["previous"] = "\(before)"
            logger.notice("probe: TLS level changed", metadata: fields)
        } else {
            logger.info("probe", metadata: fields)
        }
        persist(domain)
    }

    /// The daily housekeeping: relaxes records whose probes have found less
    /// than their level for the whole window, and removes expired ones.
    /// `protected(domain)`: DANE or MTA-STS decides that domain (no relaxing).
    public func sweep(protected: (String) -> Bool) {
        let t = now()
        for domain in domains {
            let protectedNow = protected(domain)
            let result: (LearnedRecord.Relaxation?, Bool, LearnedRecord?)? = table.withLock { table in
                guard var r = table[domain] else { return nil }
                if r.isExpired(at: t, settings: settings) {
                    table[domain] = nil
                    return (nil, true, r)
                }
                let relaxation = r.relaxIfDue(at: t, settings: settings, protected: protectedNow)
                if relaxation != nil { table[domain] = r }
                return (relaxation, false, r)
            }
            guard let (relaxation, expired, record) = result else { continue }
            if expired {
                counters.withLock { $0.expired += 1 }
                logger.info("learned TLS record expired", metadata: [
                    "domain": "\(domain)", "last_confirmed": "\(LearnedClock.utc(record!.lastConfirmed))"])
                do { try store.delete(domain) } catch {
                    logger.error("learned TLS status: cannot delete expired record", metadata: ["domain": "\(domain)", "error": "\(error)"])
                }
            } else if let relaxation {
                counters.withLock { $0.relaxed += 1 }
                logger.notice("learned TLS status relaxed", metadata: [
                    "domain": "\(domain)", "from": "\(relaxation.from)", "to": "\(relaxation.to)",
                    "probes": "\(relaxation.probes)", "below_since": "\(LearnedClock.utc(relaxation.since))"])
                persist(domain)
            }
        }
    }

    // MARK: operator changes

    /// Carries out `relayd policy pin|unpin|forget`; returns what to tell
    /// the operator. Each change is logged and appended to the audit log.
    public func apply(_ change: LearnedChange) -> String {
        let t = now()
        let result = apply(change, at: t, from: nil)
        if !result.hasPrefix("error:"), let observe = changeObserver.withLock({ $0 }) { observe(change, t) }
        return result
    }

    /// A pin, unpin or forget another instance made (LearnedActionSync's
    /// pull): carried out as given, at the time it was made, and audited
    /// with the instance it came from. A pin or unpin older than the pin
    /// this record holds is superseded and left out; a forget removes the
    /// evidence last seen before it (what was seen after it stays).
    public func applyShared(_ change: LearnedChange, at: Int, from instance: String) -> String {
        apply(change, at: at, from: instance)
    }

    private func apply(_ change: LearnedChange, at: Int, from origin: String?) -> String {
        let t = now()
        let domain = change.domain
        guard LearnedRecordFormat.isDomain(domain) else { return "error: not a domain name: \(domain)" }
        if origin != nil, case .pin = change, let held = table.withLock({ $0[domain]?.pin }), held.at > at {
            return "\(domain): superseded by the pin made \(LearnedClock.utc(held.at))"
        }
        if origin != nil, case .unpin = change, let held = table.withLock({ $0[domain]?.pin }), held.at > at {
            return "\(domain): superseded by the pin made \(LearnedClock.utc(held.at))"
        }
        let result: String
        switch change {
        case .pin(_, let levelName, let until, let reason, let by):
            guard let level = PolicyLevel(configName: levelName), LearnedRecord.Pin.levels.contains(level) else {
                return "error: a pin's level is one of \(LearnedRecord.Pin.levels.map(\.rawValue).joined(separator: ", "))"
            }
            if let until, until <= t { return "error: --until \(LearnedClock.utc(until)) is already past" }
            table.withLock { table in
                var r = table[domain] ?? LearnedRecord(domain: domain, created: t)
                r.pin = .init(level: level, until: until, reason: LearnedRecord.clip(reason), by: LearnedRecord.clip(by), at: at)
                table[domain] = r
            }
            result = "\(domain): pinned to \(level.rawValue)" + (until.map { " until \(LearnedClock.utc($0))" } ?? " until unpinned")
        case .unpin:
            let had: Bool = table.withLock { table in
                guard table[domain]?.pin != nil else { return false }
                table[domain]!.pin = nil
                if table[domain]!.evidence.isEmpty { table[domain] = nil }
                return true
            }
            guard had else {
                if let origin { audit(t, change, "\(domain): not pinned", origin: origin, at: at) }
                return "\(domain): not pinned"
            }
            result = "\(domain): unpinned; learned status decides again"
        case .reprobe:
            // The monitor's (LearnedMonitor.probeNow), not a record change.
            return "error: a probe is started by the learned monitor, not by the record store"
        case .forget:
            // Evidence last seen before the forget goes (for a forget made
            // here: all of it); an active pin stays.
            forgotten.withLock { $0[domain] = max($0[domain] ?? Int.min, at) }
            let kept: (pin: LearnedRecord.Pin?, newer: Int)? = table.withLock { table in
                guard let r = table[domain] else { return nil }
                let newer = r.evidence.filter { $0.value.lastSeen > at }
                let pin = r.activePin(at: t)
                if pin == nil && newer.isEmpty {
                    table[domain] = nil
                } else {
                    var fresh = LearnedRecord(domain: domain, created: t)
                    fresh.pin = pin
                    fresh.evidence = newer
                    table[domain] = fresh
                }
                return (pin, newer.count)
            }
            switch kept {
            case .none:
                if let origin { audit(t, change, "\(domain): no learned record", origin: origin, at: at) }
                return "\(domain): no learned record"
            case .some(let k):
                var text = k.newer > 0 ? "\(domain): learned evidence before the forget removed; \(k.newer) level(s) seen since stay"
                                       : (k.pin == nil ? "\(domain): learned record forgotten" : "\(domain): learned evidence forgotten")
                if let pin = k.pin { text += "; the pin to \(pin.level.rawValue) stays (use `relayd policy unpin`)" }
                result = text
            }
        }
        var fields: Logger.Metadata = ["domain": "\(domain)", "change": "\(change)", "result": "\(result)"]
        if let origin { fields["instance"] = "\(origin)" }
        logger.notice(origin == nil ? "learned TLS status changed by operator" : "learned TLS status changed by operator on another instance",
                      metadata: fields)
        persist(domain)
        if let warning = audit(t, change, result, origin: origin, at: at) { return result + warning }
        return result
    }

    /// Appends the audit log line; a change from another instance names it
    /// and when it was made there. Returns a warning when it failed.
    @discardableResult
    private func audit(_ t: Int, _ change: LearnedChange, _ result: String, origin: String?, at: Int) -> String? {
        let from = origin.map { " (from instance \(XText.encode($0)), made \(LearnedClock.utc(at)))" } ?? ""
        do {
            try store.audit("\(LearnedClock.utc(t)) \(change) -> \(result)\(from)")
            return nil
        } catch {
            logger.error("learned TLS status: cannot write the audit log", metadata: ["error": "\(error)"])
            return " (warning: the audit log could not be written: \(error))"
        }
    }

    // MARK: persistence

    /// Writes the domain's current record (or removes it when it is gone).
    /// A failure is logged and left for the next flush.
    func persist(_ domain: String) {
        writeLock.withLock { writes in
            writes += 1
            let current = table.withLock { $0[domain] }
            do {
                if let current { try store.put(current) } else { try store.delete(domain) }
                dirty.withLock { _ = $0.remove(domain) }
            } catch {
                dirty.withLock { _ = $0.insert(domain) }
                counters.withLock { $0.writeFailures += 1 }
                logger.error("learned TLS status: cannot write record; kept in memory, retried at the next flush",
                             metadata: ["domain": "\(domain)", "error": "\(error)"])
            }
        }
    }

    /// Writes every record changed since the last write.
    public func flush() {
        for d in dirty.withLock({ $0.sorted() }) { persist(d) }
    }

    public var hasUnwritten: Bool { dirty.withLock { !$0.isEmpty } }
}

/// The learned-status upgrade layer: an active pin, or the learned TLS
/// (forced for "TLS at least", verify for verified on two days). Reads
/// memory only.
public struct LearnedLayer: PolicyUpgradeLayer {
    public let layer = PolicyLayer.learned
    let status: LearnedStatus

    public init(status: LearnedStatus) { self.status = status }

    public func verdict(for domain: String) -> LayerVerdict? {
        guard let r = status.record(domain) else { return nil }
        let (level, detail) = r.answer(at: status.now(), settings: status.settings)
        return LayerVerdict(layer: .learned, level: level, detail: detail)
    }
}
