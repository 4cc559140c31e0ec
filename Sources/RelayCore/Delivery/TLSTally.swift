// The compliance tally behind `relayd report tls`: per UTC day and
// destination domain, how mail left — messages by the outcome of their
// concluding attempt, deliveries by TLS version and verification (or
// plaintext), the policy layer and level that decided (and, for each
// plaintext delivery, which one allowed it), sessions by TLS outcome, and
// the fallbacks (plaintext retries after a failed handshake, hand-overs to
// a fallback relay).
//
// TLSTallyCounts is a plain value with a sealed file form under
// spool/tls-tally/<day>_<domain> (the spool's record helpers). TLSTally
// holds the counters in memory behind one lock the way the TLS-RPT ledger
// does: `record` only adds, never does I/O and cannot fail; the daemon
// flushes every minute and at stop, a failed write is retried at the next
// flush, and `load` reads today's and yesterday's counts back at start so a
// restart adds to them. Each counter family is a small map from a label to
// a count; a label is printable ASCII without spaces.
import Logging
import RelayModel
import RelayQueue
import RelaySMTP
import RelaySync
import RelayTLS

public struct TLSTallyCounts: Equatable, Sendable {
    /// Counter families, in file order.
    public enum Family: String, CaseIterable, Sendable {
        /// Concluded attempts by outcome: delivered, deferred, bounced, dropped, mixed.
        case messages = "message"
        /// Delivered (or partly delivered) messages by transport:
        /// "plaintext" or "<TLS version>/<verified|dane|unverified>".
        case deliveries = "delivery"
        /// Concluded attempts by the deciding "<layer>/<level>".
        case layers = "layer"
        /// Plaintext deliveries by the "<layer>/<level>" that allowed them.
        case plaintextLayers = "plaintext-layer"
        /// Sessions (addresses tried) by TLS outcome: a transport as above
        /// ("plaintext": a transaction went on without TLS),
        /// "starttls-not-offered", "starttls-refused", "tls-failed/<kind>",
        /// "unreachable" (no connection), "no-transaction" (the session
        /// ended before TLS or a transaction: greeting refused, lost).
        case sessions = "session"
        /// "plaintext-retry" (opportunistic after a failed handshake),
        /// "relay" (handed to the domain's fallback relay).
        case fallbacks = "fallback"
    }

    /// Days since 1970-01-01 (UTC).
    public let day: Int
    public let domain: String
    public private(set) var counters: [Family: [String: Int]] = [:]

    public init(day: Int, domain: String) {
        self.day = day
        self.domain = domain
    }

    public subscript(_ family: Family, _ label: String) -> Int { counters[family]?[label] ?? 0 }
    public func labels(_ family: Family) -> [String: Int] { counters[family] ?? [:] }

    public mutating func add(_ family: Family, _ label: String, _ n: Int = 1) {
        guard Self.isLabel(label), n > 0 else { return }
        counters[family, default: [:]][label, default: 0] += n
    }

    public mutating func merge(_ other: TLSTallyCounts) {
        for (family, labels) in other.counters {
            for (label, n) in labels { add(family, label, n) }
        }
    }

    static func isLabel(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 100 && s.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f }
    }

    /// "2026-12-02".
    public static func dayName(_ day: Int) -> String {
        let (y, m, d) = CivilDate.civil(day)
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(y)-\(two(m))-\(two(d))"
    }

    public static func day(named s: String) -> Int? {
        let p = s.split(separator: "-", omittingEmptySubsequences: false)
        guard p.count == 3, p[0].count == 4, p[1].count == 2, p[2].count == 2,
              let y = Int(p[0]), let m = Int(p[1]), let d = Int(p[2]), (1...12).contains(m), (1...31).contains(d) else { return nil }
        return CivilDate.days(year: y, month: m, day: d)
    }

    /// The record's name: "<day>_<domain>".
    public var recordName: String { "\(Self.dayName(day))_\(domain)" }

    //   relayd-tls-tally 1
    //   day 2026-12-02
    //   domain example.com
    //   <family> <label> <count>      (sorted)
    public func encode() -> [UInt8] {
        var s = "relayd-tls-tally 1\nday \(Self.dayName(day))\ndomain \(domain)\n"
        for family in Family.allCases {
            for (label, n) in (counters[family] ?? [:]).sorted(by: { $0.key < $1.key }) { s += "\(family.rawValue) \(label) \(n)\n" }
        }
        return Array(s.utf8)
    }

    /// All or nothing: nil for anything malformed.
    public static func decode(_ data: [UInt8]) -> TLSTallyCounts? {
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 4, lines.first == "relayd-tls-tally 1", lines.last == "",
              lines[1].hasPrefix("day "), let day = day(named: String(lines[1].dropFirst(4))),
              lines[2].hasPrefix("domain "), DomainRecordName.isValid(String(lines[2].dropFirst(7))) else { return nil }
        var c = TLSTallyCounts(day: day, domain: String(lines[2].dropFirst(7)))
        for line in lines.dropFirst(3).dropLast() {
            let w = line.split(separator: " ", omittingEmptySubsequences: false)
            guard w.count == 3, let family = Family(rawValue: String(w[0])), isLabel(String(w[1])),
                  let n = Int(w[2]), n >= 0, c[family, String(w[1])] == 0 else { return nil }
            c.add(family, String(w[1]), n)
        }
        return c
    }
}

/// One delivery attempt's contribution, in the tally's words; made by
/// DomainDelivery from what its `delivery attempt` line knows.
public struct TLSTallyEvent: Equatable, Sendable {
    public var domain: String
    /// The session's TLS outcome, when an address was tried.
    public var session: String?
    /// The attempt's conclusion, on its concluding line: outcome name.
    public var outcome: String?
    /// For a delivered or mixed conclusion: the transport it went by.
    public var delivery: String?
    /// "<layer>/<level>" that decided.
    public var layer: String
    /// "plaintext-retry" or "relay".
    public var fallback: String?

    public init(domain: String, session: String? = nil, outcome: String? = nil, delivery: String? = nil, layer: String,
                fallback: String? = nil) {
        self.domain = domain
        self.session = session
        self.outcome = outcome
        self.delivery = delivery
        self.layer = layer
        self.fallback = fallback
    }

    /// A session's TLS outcome in the tally's words; nil when no session.
    public static func sessionLabel(_ run: ClientRunResult?) -> String? {
        guard let run else { return nil }
        if let tls = run.tls { return transport(tls) }
        if let f = run.tlsFailure { return "tls-failed/\(f.kind.rawValue)" }
        func plaintextIf(_ stage: ClientSession.Stage) -> String {
            [.mail, .rcpt, .data, .body, .done, .rset].contains(stage) ? "plaintext" : "no-transaction"
        }
        switch run.outcome {
        case .completed: return "plaintext"
        case .failed(.tlsNotOffered): return "starttls-not-offered"
        case .failed(.tlsRefused): return "starttls-refused"
        case .failed(.tls(let f)): return "tls-failed/\(f.kind.rawValue)"
        case .failed(.connectFailed), .failed(.keptConnectionLost): return "unreachable"
        case .failed(.rejected(_, let stage)), .failed(.connectionLost(let stage)), .failed(.timeout(let stage)):
            return plaintextIf(stage)
        case .failed(.greeting), .failed(.authRejected), .failed(.protocolError), .failed(.needsSMTPUTF8), .failed(.messageTooBig),
             .failed(.requireTLSNotOffered):
            return "no-transaction"
        }
    }

    /// "TLSv1.3/verified", "TLSv1.2/dane", "TLSv1.3/unverified".
    public static func transport(_ tls: TLSSessionInfo) -> String {
        let how: String
        if tls.daneMatch != nil { how = "dane" } else if case .trusted = tls.verification { how = "verified" } else { how = "unverified" }
        return "\(tls.protocolVersion)/\(how)"
    }
}

extension TLSTallyCounts {
    public mutating func add(_ e: TLSTallyEvent) {
        if let s = e.session { add(.sessions, s) }
        if let f = e.fallback { add(.fallbacks, f) }
        if let o = e.outcome {
            add(.messages, o)
            add(.layers, e.layer)
            if let d = e.delivery {
                add(.deliveries, d)
                if d == "plaintext" { add(.plaintextLayers, e.layer) }
            }
        }
    }
}

/// The durable tally: counters in memory, flushed to spool/tls-tally/.
/// Sendable: its one mutable part is behind a lock.
public final class TLSTally: Sendable {
    public static let folder = "tls-tally"

    struct State: Sendable {
        var table: [String: TLSTallyCounts] = [:]
        var dirty: Set<String> = []
        var domainsPerDay: [Int: Int] = [:]
        var dropped = 0
    }

    let spool: Spool
    let logger: Logger
    let now: @Sendable () -> Int
    public let maxDomainsPerDay: Int
    /// The daemon sets a damaged record aside (and starts it afresh);
    /// `relayd report tls` only reads, and reports it.
    let setsAsideDamaged: Bool
    private let state = Locked(State())
    /// Serialises flushes (an Int, not Void: see TLSRPTLedger).
    private let writeLock = Locked<Int>(0)

    public init(spool: Spool, logger: Logger, now: @escaping @Sendable () -> Int, maxDomainsPerDay: Int = 10_000,
                setsAsideDamaged: Bool = true) {
        self.spool = spool
        self.logger = logger
        self.now = now
        self.maxDomainsPerDay = maxDomainsPerDay
        self.setsAsideDamaged = setsAsideDamaged
    }

    static func today(_ t: Int) -> Int { t >= 0 ? t / 86400 : (t - 86399) / 86400 }

    /// Counts one event. Cheap, never blocks on I/O, never fails.
    public func record(_ event: TLSTallyEvent) {
        let day = Self.today(now())
        var fresh = TLSTallyCounts(day: day, domain: event.domain)
        let key = fresh.recordName
        state.withLock { s in
            if s.table[key] == nil {
                guard DomainRecordName.isValid(event.domain), s.domainsPerDay[day, default: 0] < maxDomainsPerDay else {
                    s.dropped += 1
                    return
                }
                fresh.add(event)
                s.table[key] = fresh
                s.domainsPerDay[day, default: 0] += 1
            } else {
                s.table[key]!.add(event)
            }
            s.dirty.insert(key)
        }
    }

    /// Today's and yesterday's counts back into memory (at start).
    public func load() {
        let today = Self.today(now())
        for c in read(days: (today - 1)...today) {
            state.withLock { s in
                if s.table[c.recordName] == nil { s.domainsPerDay[c.day, default: 0] += 1 }
                s.table[c.recordName] = c
            }
        }
    }

    /// Writes every changed counter, then lets go of days that can no
    /// longer change.
    public func flush() {
        writeLock.withLock { flushes in
            flushes += 1
            let (pending, dropped) = state.withLock { s -> ([TLSTallyCounts], Int) in
                let p = s.dirty.compactMap { s.table[$0] }
                s.dirty.removeAll()
                defer { s.dropped = 0 }
                return (p, s.dropped)
            }
            for c in pending {
                do { try spool.writeRecord(Self.folder, c.recordName, c.encode()) } catch {
                    state.withLock { _ = $0.dirty.insert(c.recordName) }
                    logger.error("TLS tally: cannot write counters; kept in memory, retried at the next flush",
                                 metadata: ["day": "\(TLSTallyCounts.dayName(c.day))", "domain": "\(c.domain)", "error": "\(error)"])
                }
            }
            if dropped > 0 {
                logger.warning("TLS tally: attempts not counted (domain limit per day reached, or not a domain name)",
                               metadata: ["attempts": "\(dropped)", "limit": "\(maxDomainsPerDay)"])
            }
            let oldest = Self.today(now()) - 1
            state.withLock { s in
                for (key, c) in s.table where c.day < oldest && !s.dirty.contains(key) { s.table[key] = nil }
                for day in s.domainsPerDay.keys where day < oldest { s.domainsPerDay[day] = nil }
            }
        }
    }

    public var hasUnwritten: Bool { state.withLock { !$0.dirty.isEmpty } }

    /// The counts of these days: the spool's, with what memory holds in
    /// their place (newer). A damaged record is set aside and logged.
    public func counts(days: ClosedRange<Int>) -> [TLSTallyCounts] {
        var byName: [String: TLSTallyCounts] = [:]
        for c in read(days: days) { byName[c.recordName] = c }
        for c in state.withLock({ s in s.table.values.filter { days.contains($0.day) } }) { byName[c.recordName] = c }
        return byName.values.sorted { ($0.day, $0.domain) < ($1.day, $1.domain) }
    }

    /// The records of these days on disk (what `relayd report tls` reads).
    public func read(days: ClosedRange<Int>) -> [TLSTallyCounts] {
        var out: [TLSTallyCounts] = []
        for name in spool.recordNames(Self.folder) {
            guard let sep = name.firstIndex(of: "_"), let day = TLSTallyCounts.day(named: String(name[..<sep])),
                  days.contains(day) else { continue }
            do {
                guard let data = try spool.readRecord(Self.folder, name) else { continue }
                guard let c = TLSTallyCounts.decode(data), c.recordName == name else { throw SpoolRecordError.damaged }
                out.append(c)
            } catch {
                if setsAsideDamaged {
                    logger.error("TLS tally: damaged record set aside", metadata: ["record": "\(name)", "error": "\(error)"])
                    _ = try? spool.setRecordAside(Self.folder, name, now: now())
                } else {
                    logger.error("TLS tally: damaged record not counted", metadata: ["record": "\(name)", "error": "\(error)"])
                }
            }
        }
        return out
    }
}
