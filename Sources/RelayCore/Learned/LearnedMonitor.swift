// The daily monitoring of learned domains (SPEC: "monitors these domains
// and updates their TLS status daily"): every known domain's MX hosts are
// probed once per `probe_interval`, each domain at its own fixed offset
// (jitter from a hash of its name, ±10 %), so a thousand domains learned
// in one busy hour are not all probed in the same minute a day later; at
// most `probe_concurrency` probes run at once. Each tick also sweeps the
// records (relax, expire).
//
// The probe itself is the caller's (the daemon's is DomainProber: EHLO,
// STARTTLS, handshake, QUIT, no mail), so this file does no I/O and its
// tests drive it with a fake probe and a fake clock.
import RelayModel
import RelaySync

/// What one domain probe found, in the record's terms.
public struct LearnedProbeReport: Sendable {
    public var probe: LearnedRecord.Probe
    /// Each answering MX host and what it offered.
    public var hosts: [(host: String, seen: TLSEvidence)]
    public var mx: [String]
    public var keys: [String]

    public init(probe: LearnedRecord.Probe, hosts: [(host: String, seen: TLSEvidence)], mx: [String], keys: [String]) {
        self.probe = probe
        self.hosts = hosts
        self.mx = mx
        self.keys = keys
    }
}

public enum ProbeSchedule {
    /// The domain's fixed offset from the interval: within ±interval/10.
    public static func jitter(_ domain: String, interval: Int) -> Int {
        let span = interval / 5
        guard span > 0 else { return 0 }
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in domain.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return Int(h % UInt64(span + 1)) - interval / 10
    }

    /// When the record is next due: a day (± jitter) after its last probe,
    /// or after it was created when it was never probed.
    public static func due(_ r: LearnedRecord, interval: Int, jitter: Int) -> Int {
        (r.lastProbe?.at ?? r.created) + interval + jitter
    }
}

/// Runs the probes. State (what runs, what waits) is behind a lock; the
/// probe's completion may arrive on any queue.
public final class LearnedMonitor: Sendable {
    public typealias Probe = @Sendable (_ domain: String, _ completion: @escaping @Sendable (LearnedProbeReport) -> Void) -> Void

    let status: LearnedStatus
    let probe: Probe
    let protected: @Sendable (String) -> Bool
    let jitter: @Sendable (String) -> Int
    let now: @Sendable () -> Int

    private struct State {
        var running: Set<String> = []
        var waiting: [String] = []
    }
    private let state = Locked(State())

    /// `protected(domain)`: DANE or MTA-STS decides it (never relaxed).
    public init(status: LearnedStatus, probe: @escaping Probe, protected: @escaping @Sendable (String) -> Bool,
                jitter: (@Sendable (String) -> Int)? = nil, now: @escaping @Sendable () -> Int) {
        self.status = status
        self.probe = probe
        self.protected = protected
        let interval = status.settings.probeInterval
        self.jitter = jitter ?? { ProbeSchedule.jitter($0, interval: interval) }
        self.now = now
    }

    /// Sweeps the records, then starts the probes that are due.
    public func tick() {
        status.sweep(protected: protected)
        let t = now()
        let interval = status.settings.probeInterval
        let due = status.records.filter { t >= ProbeSchedule.due($0, interval: interval, jitter: jitter($0.domain)) }
            .sorted { ProbeSchedule.due($0, interval: interval, jitter: jitter($0.domain))
                < ProbeSchedule.due($1, interval: interval, jitter: jitter($1.domain)) }
            .map(\.domain)
        state.withLock { s in
            for d in due where !s.running.contains(d) && !s.waiting.contains(d) { s.waiting.append(d) }
        }
        startMore()
    }

    /// `relayd policy reprobe`: probes a known domain ahead of the others
    /// (still within the concurrency limit); its result lands like a daily
    /// probe's. Returns what to tell the operator.
    public func probeNow(_ domain: String) -> String {
        guard status.record(domain) != nil else { return "\(domain): no learned record; nothing to probe" }
        let queued: Bool = state.withLock { s in
            guard !s.running.contains(domain) else { return false }
            s.waiting.removeAll { $0 == domain }
            s.waiting.insert(domain, at: 0)
            return true
        }
        guard queued else { return "\(domain): a probe is already running" }
        startMore()
        return "\(domain): probe started; its result goes to the log and the record (relayd policy explain)"
    }

    /// Domains being probed now, and waiting for a slot.
    public var inProgress: (running: Set<String>, waiting: [String]) { state.withLock { ($0.running, $0.waiting) } }

    private func startMore() {
        let limit = status.settings.probeConcurrency
        let start: [String] = state.withLock { s in
            var out: [String] = []
            while s.running.count < limit, !s.waiting.isEmpty {
                let d = s.waiting.removeFirst()
                s.running.insert(d)
                out.append(d)
            }
            return out
        }
        for domain in start {
            probe(domain) { [self] report in
                // A record forgotten while its probe ran stays forgotten.
                if status.record(domain) != nil {
                    status.observeProbe(domain: domain, probe: report.probe, hosts: report.hosts, mx: report.mx, keys: report.keys)
                }
                state.withLock { _ = $0.running.remove(domain) }
                startMore()
            }
        }
    }
}
