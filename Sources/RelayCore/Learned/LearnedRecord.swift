// Learned TLS status (SPEC "Learned status"): what relayd has seen of one
// recipient domain's TLS, and the rules that turn it into a level. The
// record is a plain value and every rule is a mutating method given the
// time, so the rules run in unit tests on a fake clock; LearnedStatus
// holds the records, persists them and answers the policy engine.
//
// What is learned, in three steps (plaintext < tls < verified):
//   - one session over TLS (a delivery or a probe) makes the domain "TLS at
//     least": the learned layer answers `forced`, so `opportunistic` no
//     longer falls back to plaintext when STARTTLS disappears;
//   - verified TLS (chain and MX name) is learned only once it was seen on
//     two different UTC days: the layer then answers `verify`;
//   - an operator pin fixes the answer (any of opportunistic, forced,
//     verify) until it is removed or its date passes.
// chasquid keeps a similar per-domain level but never re-checks or relaxes
// it; here a record whose every probe for `relaxAfter` (at least three
// probes) found less than the learned level relaxes to what the probes
// found, and a record not confirmed for `expireAfter` is removed. Neither
// happens to a pinned record, and relaxing never happens where DANE or
// MTA-STS decides (the caller says so: `protected`).
//
// The layer only ever raises: PolicyEngine ignores an automatic answer
// below the default, and the operator's entry, DANE and MTA-STS come first.
import RelayModel
import RelayPolicy

/// What one session (or probe) showed of a domain's TLS.
public enum TLSEvidence: Int, Comparable, CaseIterable, Sendable, CustomStringConvertible {
    /// No usable TLS: STARTTLS missing or refused, or the handshake failed.
    case plaintext = 0
    /// A TLS session whose chain or name did not verify.
    case tls = 1
    /// TLS with a chain to the trust store and the MX host name.
    case verified = 2

    public static func < (a: TLSEvidence, b: TLSEvidence) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .plaintext: return "plaintext"
        case .tls: return "tls"
        case .verified: return "verified"
        }
    }

    public init?(name: String) {
        guard let e = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = e
    }

    /// The level the learned layer answers for this much learned TLS.
    public var policyLevel: PolicyLevel? {
        switch self {
        case .plaintext: return nil
        case .tls: return .forced
        case .verified: return .verify
        }
    }
}

/// Seconds since the epoch → UTC day number.
@inline(__always) func utcDay(_ t: Int) -> Int { t >= 0 ? t / 86_400 : (t - 86_399) / 86_400 }

/// When a level was seen: first, last, how often, on how many UTC days.
public struct LevelEvidence: Equatable, Sendable {
    public var firstSeen: Int
    public var lastSeen: Int
    public var count: Int
    public var days: Int

    public init(firstSeen: Int, lastSeen: Int, count: Int, days: Int) {
        self.firstSeen = firstSeen
        self.lastSeen = lastSeen
        self.count = count
        self.days = days
    }

    init(at t: Int) { self.init(firstSeen: t, lastSeen: t, count: 1, days: 1) }

    /// The merge of two views of the same level (shared state): the
    /// earliest first, the latest last, the larger count and days. Never
    /// less than either side; the same whichever order it is taken in.
    public func merged(with o: LevelEvidence) -> LevelEvidence {
        LevelEvidence(firstSeen: min(firstSeen, o.firstSeen), lastSeen: max(lastSeen, o.lastSeen),
                      count: max(count, o.count), days: max(days, o.days))
    }

    /// One more observation. A day counts once; a clock stepped back adds
    /// no day (days only grow with lastSeen's day).
    mutating func add(at t: Int) {
        if utcDay(t) > utcDay(lastSeen) { days += 1 }
        count += 1
        lastSeen = max(lastSeen, t)
        firstSeen = min(firstSeen, t)
    }
}

public typealias EvidenceByLevel = [TLSEvidence: LevelEvidence]

public struct LearnedRecord: Equatable, Sendable {
    public struct Attempt: Equatable, Sendable {
        public var at: Int
        public var seen: TLSEvidence
        public var host: String
        public var reason: String
    }

    /// Sessions below the learned level in a row, since when.
    public struct Below: Equatable, Sendable {
        public var since: Int
        public var sessions: Int
    }

    /// The last probe: what the first MX address that answered offered.
    public struct Probe: Equatable, Sendable {
        public var at: Int
        public var seen: TLSEvidence
        public var host: String
        /// nil: no MX address answered (nothing was learned from it).
        public var starttlsOffered: Bool?
        public var handshake: Bool
        public var verified: Bool
        public var version: String
        public var detail: String

        public init(at: Int, seen: TLSEvidence, host: String, starttlsOffered: Bool?, handshake: Bool, verified: Bool,
                    version: String, detail: String) {
            self.at = at
            self.seen = seen
            self.host = host
            self.starttlsOffered = starttlsOffered
            self.handshake = handshake
            self.verified = verified
            self.version = version
            self.detail = detail
        }

        /// Whether the probe reached a host at all.
        public var answered: Bool { starttlsOffered != nil }
    }

    /// The operator's fixed answer for the domain.
    public struct Pin: Equatable, Sendable {
        public var level: PolicyLevel
        /// nil: until unpinned.
        public var until: Int?
        public var reason: String
        public var by: String
        public var at: Int

        public init(level: PolicyLevel, until: Int?, reason: String, by: String, at: Int) {
            self.level = level
            self.until = until
            self.reason = reason
            self.by = by
            self.at = at
        }

        public func isActive(at now: Int) -> Bool { until.map { now < $0 } ?? true }

        /// Levels a pin may name: tls-exclusive drops mail, which only the
        /// operator's own [outbound.domains] entry may decide.
        public static let levels: [PolicyLevel] = [.none, .opportunistic, .forced, .verify]
    }

    public let domain: String
    public var created: Int
    /// Every session and probe, by the level it showed.
    public var evidence: EvidenceByLevel = [:]
    /// The same per MX host.
    public var hosts: [String: EvidenceByLevel] = [:]
    public var lastAttempt: Attempt?
    public var below: Below?
    public var lastProbe: Probe?
    /// The first probe of the current run of probes that found less than
    /// the learned level, and how many there were.
    public var probesBelowSince: Int?
    public var probesBelow = 0
    /// The MX host names last seen, in preference order.
    public var mx: [String] = []
    /// SHA-256 of the leaf certificates' public keys, most recent last.
    public var keys: [String] = []
    public var pin: Pin?
    /// When the record last relaxed, and how often it has.
    public var relaxedAt: Int?
    public var relaxations = 0

    public static let maxHosts = 32
    public static let maxKeys = 8
    public static let maxText = 512

    public init(domain: String, created: Int) {
        self.domain = domain
        self.created = created
    }

    // MARK: what the record says

    /// The TLS learned: verified after two days of verified sessions, tls
    /// after any session with TLS, else nothing.
    public var learned: TLSEvidence? {
        if let v = evidence[.verified], v.days >= 2 { return .verified }
        if evidence[.tls] != nil || evidence[.verified] != nil { return .tls }
        return nil
    }

    /// The last time TLS was seen, the operator acted, or the record relaxed.
    public var lastConfirmed: Int {
        [evidence[.tls]?.lastSeen, evidence[.verified]?.lastSeen, relaxedAt, pin?.at, created].compactMap { $0 }.max()!
    }

    public func activePin(at now: Int) -> Pin? { pin.flatMap { $0.isActive(at: now) ? $0 : nil } }

    /// The level the learned layer answers now, and why; nil level: it
    /// has nothing to raise.
    public func answer(at now: Int, settings: LearnedSettings) -> (level: PolicyLevel?, detail: String) {
        if let p = activePin(at: now) {
            let until = p.until.map { " until \(LearnedClock.utc($0))" } ?? ""
            return (p.level, "pinned to \(p.level.rawValue) by \(p.by)\(until)\(p.reason.isEmpty ? "" : ": \(p.reason)")")
        }
        if isExpired(at: now, settings: settings) { return (nil, "expired: no TLS confirmed since \(LearnedClock.utc(lastConfirmed))") }
        guard let learned else { return (nil, "no TLS seen\(relaxedAt.map { " since relaxing at \(LearnedClock.utc($0))" } ?? "")") }
        return (learned.policyLevel, summary(of: learned))
    }

    /// "verified TLS seen 12 times on 3 days since …" for the log and explain.
    public func summary(of level: TLSEvidence) -> String {
        let seen = level == .verified ? evidence[.verified] : merged(evidence[.tls], evidence[.verified])
        guard let e = seen else { return "\(level) not seen" }
        return "learned \(level): \(level == .verified ? "verified " : "")TLS seen \(e.count) time\(e.count == 1 ? "" : "s") on \(e.days) day\(e.days == 1 ? "" : "s")"
            + " since \(LearnedClock.utc(e.firstSeen)), last \(LearnedClock.utc(e.lastSeen))"
    }

    private func merged(_ a: LevelEvidence?, _ b: LevelEvidence?) -> LevelEvidence? {
        guard let a else { return b }
        guard let b else { return a }
        // Days may overlap between the two levels: the larger is a floor.
        return LevelEvidence(firstSeen: min(a.firstSeen, b.firstSeen), lastSeen: max(a.lastSeen, b.lastSeen),
                             count: a.count + b.count, days: max(a.days, b.days))
    }

    public func isExpired(at now: Int, settings: LearnedSettings) -> Bool {
        activePin(at: now) == nil && now - lastConfirmed >= settings.expireAfter
    }

    // MARK: rules

    /// A delivery session's TLS. Returns whether the record changed in a way
    /// worth writing at once (anything but counters and times).
    @discardableResult
    public mutating func observeSession(host: String, seen: TLSEvidence, reason: String, key: String?, at now: Int) -> Bool {
        let before = (learned, below == nil, hosts.count, keys, evidence.keys.count, dayOf(seen))
        record(seen, host: host, at: now)
        lastAttempt = Attempt(at: now, seen: seen, host: Self.clip(host), reason: Self.clip(reason))
        if let learned, seen < learned {
            below = Below(since: below?.since ?? now, sessions: (below?.sessions ?? 0) + 1)
        } else {
            below = nil
            if seen > .plaintext, let learned, seen >= learned { probesBelowSince = nil; probesBelow = 0 }
        }
        if let key { remember(key) }
        return before != (learned, below == nil, hosts.count, keys, evidence.keys.count, dayOf(seen))
    }

    /// A probe's findings: each answering host's level, and the domain's
    /// (the first MX address that answered, as a delivery would go).
    public mutating func observeProbe(_ probe: Probe, hosts seenHosts: [(host: String, seen: TLSEvidence)],
                                      mx: [String], keys newKeys: [String]) {
        for h in seenHosts { record(h.seen, host: h.host, at: probe.at) }
        lastProbe = probe
        if !mx.isEmpty { self.mx = Array(mx.prefix(Self.maxHosts).map { Self.clip($0) }) }
        for k in newKeys { remember(k) }
        guard probe.answered, let learned else { return }
        if probe.seen >= learned {
            probesBelowSince = nil
            probesBelow = 0
        } else {
            probesBelowSince = probesBelowSince ?? probe.at
            probesBelow += 1
        }
    }

    public struct Relaxation: Equatable, Sendable {
        public let from: TLSEvidence
        public let to: TLSEvidence
        public let since: Int
        public let probes: Int
    }

    /// Relaxes the record when every probe for the window found less than
    /// the learned level: evidence above what the probes found is dropped.
    /// Never while pinned, never when `protected` (DANE or MTA-STS decide).
    public mutating func relaxIfDue(at now: Int, settings: LearnedSettings, protected: Bool) -> Relaxation? {
        guard activePin(at: now) == nil, !protected, let learned, let since = probesBelowSince,
              let probe = lastProbe, probe.answered, probe.seen < learned,
              now - since >= settings.relaxAfter, probesBelow >= LearnedSettings.minimumProbesToRelax else { return nil }
        let r = Relaxation(from: learned, to: probe.seen, since: since, probes: probesBelow)
        for level in TLSEvidence.allCases where level > probe.seen {
            evidence[level] = nil
            for h in hosts.keys { hosts[h]![level] = nil }
        }
        probesBelowSince = nil
        probesBelow = 0
        below = nil
        relaxedAt = now
        relaxations += 1
        return r
    }

    // MARK: helpers

    private func dayOf(_ seen: TLSEvidence) -> Int? { evidence[seen].map { $0.days } }

    private mutating func record(_ seen: TLSEvidence, host: String, at now: Int) {
        if evidence[seen] == nil { evidence[seen] = LevelEvidence(at: now) } else { evidence[seen]!.add(at: now) }
        let h = Self.clip(host)
        guard hosts[h] != nil || hosts.count < Self.maxHosts else { return }
        if hosts[h]?[seen] == nil { hosts[h, default: [:]][seen] = LevelEvidence(at: now) } else { hosts[h]![seen]!.add(at: now) }
    }

    private mutating func remember(_ key: String) {
        guard LearnedRecordFormat.isKey(key) else { return }
        keys.removeAll { $0 == key }
        keys.append(key)
        if keys.count > Self.maxKeys { keys.removeFirst(keys.count - Self.maxKeys) }
    }

    static func clip(_ s: String) -> String {
        s.utf8.count <= maxText ? s : String(decoding: Array(s.utf8.prefix(maxText)), as: UTF8.self)
    }
}
