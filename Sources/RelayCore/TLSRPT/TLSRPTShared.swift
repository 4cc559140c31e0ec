// TLS-RPT counts shared between relayd instances (issue 17): one report
// per policy domain per day, made from the sessions of every instance and
// sent by the one instance that holds the day's lease.
//
//   push: each instance sends its own counters (the ledger's, per day and
//         policy domain) as rows — one per policy and result: the
//         successes, each failure's particulars, the failures counted
//         without particulars — with absolute values. The backend keeps
//         the larger of what it has and what comes (GREATEST), so a
//         snapshot pushed again after an outage never counts twice.
//   send: TLSRPTSender, given a `TLSRPTSharedSending`, takes the day's
//         lease, lists the day's domains and sums their rows over every
//         instance, and claims each report in the backend before handing
//         it to a destination; a report claimed by another instance (or an
//         earlier holder) is not sent again.
//
// The local ledger stays what it was (the file backend, and the copy the
// pushes are made from). While the backend is down, the snapshots waiting
// to be pushed are kept in the spool (spool/tlsrpt-outbox/<day>_<domain>,
// a TLSRPTCounts record each, so a restart keeps them), bounded by
// `outboxLimit` (beyond it the least recently changed is dropped and
// counted: the ledger still has the counts and pushes them again when the
// domain has another session that day); the first failure and the
// recovery are logged once each.
import Logging
import RelayModel
import RelayQueue
import RelaySync

/// One row of the shared table: a policy, what happened, how many sessions.
public struct TLSRPTCountRow: Hashable, Sendable {
    public enum Kind: Hashable, Sendable {
        case success
        case failure(TLSRPTFailure)
        /// Failures whose particulars were over TLSRPTCounts' bound.
        case undetailed
    }

    public var policy: TLSRPTPolicy
    public var kind: Kind
    public var count: Int

    public init(policy: TLSRPTPolicy, kind: Kind, count: Int) {
        self.policy = policy
        self.kind = kind
        self.count = count
    }

    static let undetailedName = "undetailed-failure"

    /// The `result_type` column: "success", the RFC's result type, or
    /// "undetailed-failure".
    public var resultType: String {
        switch kind {
        case .success: return "success"
        case .failure(let f): return f.resultType.rawValue
        case .undetailed: return Self.undetailedName
        }
    }

    /// The `policy_strings` column: the policy's strings, one per line, each xtext.
    public var policyStrings: String { policy.strings.map(XText.encode).joined(separator: "\n") }

    /// The `receiving_mx_hostname` column (for people reading the table).
    public var receivingMX: String {
        if case .failure(let f) = kind { return f.receivingMXHostname ?? "" }
        return ""
    }

    /// The `detail` column: what else makes the row distinct — the
    /// policy's mx patterns ("mx <xtext>" lines) and a failure's
    /// particulars ("failure <sending-ip> <mx> <receiving-ip> <code> <info>",
    /// each xtext, "-" for none, "=" for empty).
    public var detail: String {
        var lines = policy.mxHosts.map { "mx " + XText.encode($0) }
        if case .failure(let f) = kind {
            lines.append("failure " + [f.sendingMTAIP, f.receivingMXHostname, f.receivingIP, f.failureReasonCode,
                                       f.additionalInformation].map(Self.opt).joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }

    private static func opt(_ s: String?) -> String {
        guard let s else { return "-" }
        return s.isEmpty ? "=" : s == "-" ? "+2D" : XText.encode(s)
    }

    private static func unopt(_ s: Substring) -> String?? {
        if s == "-" { return .some(nil) }
        if s == "=" { return .some("") }
        guard let d = XText.decode(String(s)) else { return nil }
        return .some(d)
    }

    /// A row read back from the table; nil when it does not read (a
    /// result type this relayd does not know, a damaged detail).
    public init?(domain: String, policyType: String, policyStrings: String, resultType: String, detail: String, count: Int) {
        guard let type = TLSRPTPolicyType(rawValue: policyType), count > 0 else { return nil }
        var strings: [String] = []
        if !policyStrings.isEmpty {
            for line in policyStrings.split(separator: "\n", omittingEmptySubsequences: false) {
                guard let s = XText.decode(String(line)) else { return nil }
                strings.append(s)
            }
        }
        var mx: [String] = []
        var failure: [String?]?
        if !detail.isEmpty {
            for line in detail.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix("mx "), failure == nil, let m = XText.decode(String(line.dropFirst(3))) {
                    mx.append(m)
                } else if line.hasPrefix("failure "), failure == nil {
                    let f = line.dropFirst(8).split(separator: " ", omittingEmptySubsequences: false)
                    guard f.count == 5 else { return nil }
                    var values: [String?] = []
                    for v in f {
                        guard let d = Self.unopt(v) else { return nil }
                        values.append(d)
                    }
                    failure = values
                } else {
                    return nil
                }
            }
        }
        let policy = TLSRPTPolicy(type: type, strings: strings, domain: domain, mxHosts: mx)
        switch resultType {
        case "success":
            guard failure == nil else { return nil }
            self.init(policy: policy, kind: .success, count: count)
        case Self.undetailedName:
            guard failure == nil else { return nil }
            self.init(policy: policy, kind: .undetailed, count: count)
        default:
            guard let rt = TLSRPTResultType(rawValue: resultType), let v = failure else { return nil }
            self.init(policy: policy, kind: .failure(TLSRPTFailure(resultType: rt, sendingMTAIP: v[0], receivingMXHostname: v[1],
                                                                   receivingIP: v[2], failureReasonCode: v[3],
                                                                   additionalInformation: v[4])), count: count)
        }
    }
}

extension TLSRPTCounts {
    /// The counters as rows (one per policy and result; none with a zero count).
    public var rows: [TLSRPTCountRow] {
        var out: [TLSRPTCountRow] = []
        for p in policies {
            let c = counts[p]!
            if c.successes > 0 { out.append(TLSRPTCountRow(policy: p, kind: .success, count: c.successes)) }
            for (f, n) in c.failures.sorted(by: { Self.order($0.key) < Self.order($1.key) }) where n > 0 {
                out.append(TLSRPTCountRow(policy: p, kind: .failure(f), count: n))
            }
            if c.undetailedFailures > 0 { out.append(TLSRPTCountRow(policy: p, kind: .undetailed, count: c.undetailedFailures)) }
        }
        return out
    }

    /// Adds rows (from any number of instances) to these counters.
    public mutating func add(_ row: TLSRPTCountRow) {
        switch row.kind {
        case .success: add(.success(row.policy), count: row.count)
        case .failure(let f): add(.failure(row.policy, f), count: row.count)
        case .undetailed: addUndetailed(row.policy, count: row.count)
        }
    }

    /// The sum of rows for one day and domain.
    public init(day: TLSRPTDay, domain: String, summing rows: [TLSRPTCountRow]) {
        self.init(day: day, domain: domain)
        for r in rows { add(r) }
    }
}

/// The shared store of TLS-RPT counts, reports' leases and claims.
public protocol TLSRPTSharedBackend: Sendable {
    /// Stores these counters as this instance's own (absolute values; the
    /// larger of stored and pushed is kept, so pushing again is harmless).
    func push(_ snapshots: [TLSRPTCounts], completion: @escaping @Sendable (Result<Void, any Error>) -> Void)
    /// Takes or renews the day's sending lease for `seconds`; the holder
    /// afterwards (this instance's name when it holds it).
    func lease(day: TLSRPTDay, seconds: Int, completion: @escaping @Sendable (Result<String, any Error>) -> Void)
    /// The policy domains any instance counted sessions for on `day`.
    func domains(day: TLSRPTDay, completion: @escaping @Sendable (Result<[String], any Error>) -> Void)
    /// The day's counters for a domain, summed over every instance.
    func counts(day: TLSRPTDay, domain: String, completion: @escaping @Sendable (Result<TLSRPTCounts, any Error>) -> Void)
    /// Claims the day's report for a domain before it is sent: the
    /// instance that has it (this one when the claim is new or its own).
    func claim(day: TLSRPTDay, domain: String, reportID: String,
               completion: @escaping @Sendable (Result<String, any Error>) -> Void)
}

/// What TLSRPTSender needs to send from the shared counts.
public struct TLSRPTSharedSending: Sendable {
    public let backend: any TLSRPTSharedBackend
    public let instance: String
    public let sync: TLSRPTSync
    /// How long a lease lasts without renewal (the holder renews it every tick).
    public let leaseSeconds: Int

    public init(backend: any TLSRPTSharedBackend, instance: String, sync: TLSRPTSync, leaseSeconds: Int = 600) {
        self.backend = backend
        self.instance = instance
        self.sync = sync
        self.leaseSeconds = leaseSeconds
    }
}

/// Pushes the ledger's counters to the shared backend, through the outbox.
public final class TLSRPTSync: Sendable {
    static let folder = "tlsrpt-outbox"
    let ledger: TLSRPTLedger
    let backend: any TLSRPTSharedBackend
    let spool: Spool?
    let logger: Logger
    let outboxLimit: Int

    struct State {
        var own: [String: TLSRPTCounts] = [:]
        var pending: [String: Int] = [:]
        var changes = 0
        var pushing = false
        var reachable = true
        var counters = Counters()
    }

    public struct Counters: Equatable, Sendable {
        public var pushed = 0
        public var failures = 0
        public var dropped = 0
    }

    private let state = Locked(State())

    public init(ledger: TLSRPTLedger, backend: any TLSRPTSharedBackend, spool: Spool?, logger: Logger, outboxLimit: Int = 100_000) {
        self.ledger = ledger
        self.backend = backend
        self.spool = spool
        self.logger = logger
        self.outboxLimit = max(1, outboxLimit)
    }

    public var counters: Counters { state.withLock { $0.counters } }
    public var pendingKeys: [String] { state.withLock { $0.pending.keys.sorted() } }
    public var isReachable: Bool { state.withLock { $0.reachable } }

    static func key(_ c: TLSRPTCounts) -> String { "\(c.day)_\(c.domain)" }

    /// Loads the snapshots an earlier run could not push (at start).
    public func load() {
        guard let spool else { return }
        var loaded: [TLSRPTCounts] = []
        for name in spool.recordNames(Self.folder) {
            guard let content = try? spool.readRecord(Self.folder, name), let c = TLSRPTCounts.decode(content),
                  Self.key(c) == name else {
                logger.warning("shared state: unreadable TLS-RPT outbox record set aside", metadata: ["name": "\(name)"])
                _ = try? spool.setRecordAside(Self.folder, name, now: ledger.now())
                continue
            }
            loaded.append(c)
        }
        let n = loaded.count
        state.withLock { s in
            for c in loaded { take(c, into: &s) }
            if n > 0 { s.reachable = false }
        }
        if n > 0 { logger.info("shared state: TLS-RPT outbox loaded", metadata: ["reports": "\(n)"]) }
    }

    private func take(_ c: TLSRPTCounts, into s: inout State) {
        let key = Self.key(c)
        // The ledger's counters only grow; an outbox record from before a
        // restart may be ahead of a ledger that lost its last minute.
        if let old = s.own[key], old.sessionTotal > c.sessionTotal { return }
        s.own[key] = c
        s.changes += 1
        s.pending[key] = s.changes
        if s.pending.count > outboxLimit, let oldest = s.pending.min(by: { $0.value < $1.value })?.key {
            s.pending[oldest] = nil
            s.own[oldest] = nil
            s.counters.dropped += 1
        }
    }

    /// Takes what the ledger counted since the last call.
    func collect() {
        let changed = ledger.takeShareChanges()
        guard !changed.isEmpty else { return }
        let down = state.withLock { s in
            for c in changed { take(c, into: &s) }
            return !s.reachable
        }
        if down { for c in changed { persist(c) } }
    }

    /// The timer: pushes what changed.
    public func tick() { push(force: false) { _ in } }

    /// Pushes everything pending now (before a report is made), whether or
    /// not a push is under way; `done` says whether the backend took it.
    public func flush(_ done: @escaping @Sendable (Result<Void, any Error>) -> Void) { push(force: true, done) }

    private func push(force: Bool, _ done: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        collect()
        let batch: [TLSRPTCounts]? = state.withLock { s in
            guard force || !s.pushing else { return nil }
            guard !s.pending.isEmpty else { return [] }
            s.pushing = true
            return s.pending.keys.sorted().compactMap { s.own[$0] }
        }
        guard let batch else { return done(.success(())) }
        if batch.isEmpty { return done(.success(())) }
        let sent = state.withLock { s in batch.map { (Self.key($0), s.pending[Self.key($0)] ?? 0) } }
        backend.push(batch) { [self] result in
            pushed(result, sent: sent)
            done(result)
        }
    }

    private func pushed(_ result: Result<Void, any Error>, sent: [(String, Int)]) {
        switch result {
        case .success:
            let (replayed, wasDown) = state.withLock { s -> (Int, Bool) in
                s.pushing = false
                var done = 0
                for (k, version) in sent where s.pending[k] == version {
                    s.pending[k] = nil
                    done += 1
                }
                s.counters.pushed += done
                let wasDown = !s.reachable
                s.reachable = true
                return (done, wasDown)
            }
            for (k, _) in sent { _ = try? spool?.removeRecord(Self.folder, k) }
            if wasDown {
                logger.notice("shared state reachable again; replayed the queued TLS-RPT counts", metadata: ["reports": "\(replayed)"])
            }
        case .failure(let error):
            let (first, pending) = state.withLock { s -> (Bool, [TLSRPTCounts]) in
                s.pushing = false
                s.counters.failures += 1
                let first = s.reachable
                s.reachable = false
                return (first, first ? s.pending.keys.compactMap { s.own[$0] } : [])
            }
            if first {
                logger.warning("shared state unreachable; TLS-RPT counts queued", metadata: ["error": "\(error)",
                                                                                           "queued": "\(pending.count)"])
                for c in pending { persist(c) }
            }
        }
    }

    private func persist(_ c: TLSRPTCounts) {
        guard let spool else { return }
        do { try spool.writeRecord(Self.folder, Self.key(c), c.encode()) } catch {
            logger.error("shared state: cannot write the TLS-RPT outbox; the ledger keeps the counts",
                         metadata: ["day": "\(c.day)", "domain": "\(c.domain)", "error": "\(error)"])
        }
    }
}
