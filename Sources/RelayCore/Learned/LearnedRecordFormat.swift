// The file form of a learned record: one "key fields…" line per fact,
// free text xtext-encoded (RFC 3461) so a line never holds a space or a
// newline it did not mean, sealed by the spool's check line (SpoolRecords).
// Reading is all or nothing, like the MTA-STS cache: an unknown key, a
// number out of range, a repeated single field or a host past the bound
// makes the whole record malformed, and the store sets it aside. The record
// decides mail's TLS, so a half-read one must never count.
//
//   relayd-learned 1
//   domain example.com
//   created 1764633600
//   evidence tls 1764633600 1764640000 12 1      level first last count days
//   host mx1.example.com tls 1764633600 1764640000 12 1
//   attempt 1764640000 tls mx1.example.com ok
//   below 1764640100 2                           since sessions
//   probe 1764640000 tls mx1.example.com 1 1 0 TLSv1.3 detail
//   probes-below 1764640000 3                    since count
//   mx mx1.example.com mx2.example.com
//   key <64 hex>
//   pin forced 1767225600 1764640000 by reason   (until "-" for none)
//   relaxed 1764640000 1                         at count
import RelayModel
import RelayPolicy

public enum LearnedRecordError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformed(String)
    case badDomain(String)

    public var description: String {
        switch self {
        case .malformed(let what): return "malformed learned record (\(what))"
        case .badDomain(let d): return "not a domain name: \(d)"
        }
    }
}

public enum LearnedRecordFormat {
    static let magic = "relayd-learned 1"
    /// A record bigger than this is not one relayd wrote.
    static let maxBytes = 64 * 1024

    /// Record names are domain names used as file names (DomainRecordName).
    public static func isDomain(_ d: String) -> Bool { DomainRecordName.isValid(d) }

    /// 64 lower-case hex digits (a SHA-256).
    public static func isKey(_ k: String) -> Bool {
        k.utf8.count == 64 && k.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    /// A host name field: printable ASCII without spaces, bounded.
    static func isHost(_ h: Substring) -> Bool {
        !h.isEmpty && h.utf8.count <= 255 && h.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f }
    }

    /// Free text as one field: xtext, and "+" (never valid xtext on its
    /// own) for the empty string, so no field is ever empty.
    static func text(_ s: String) -> String { s.isEmpty ? "+" : XText.encode(s) }

    public static func encode(_ r: LearnedRecord) -> [UInt8] {
        func ev(_ e: LevelEvidence) -> String { "\(e.firstSeen) \(e.lastSeen) \(e.count) \(e.days)" }
        var lines = [magic, "domain \(r.domain)", "created \(r.created)"]
        for level in TLSEvidence.allCases { if let e = r.evidence[level] { lines.append("evidence \(level) \(ev(e))") } }
        for host in r.hosts.keys.sorted() {
            for level in TLSEvidence.allCases { if let e = r.hosts[host]![level] { lines.append("host \(host) \(level) \(ev(e))") } }
        }
        if let a = r.lastAttempt { lines.append("attempt \(a.at) \(a.seen) \(a.host) \(text(a.reason))") }
        if let b = r.below { lines.append("below \(b.since) \(b.sessions)") }
        if let p = r.lastProbe {
            let offered = p.starttlsOffered.map { $0 ? "1" : "0" } ?? "-"
            lines.append("probe \(p.at) \(p.seen) \(p.host.isEmpty ? "-" : p.host) \(offered) \(p.handshake ? 1 : 0) \(p.verified ? 1 : 0) "
                         + "\(text(p.version)) \(text(p.detail))")
        }
        if let s = r.probesBelowSince { lines.append("probes-below \(s) \(r.probesBelow)") }
        if !r.mx.isEmpty { lines.append("mx " + r.mx.joined(separator: " ")) }
        for k in r.keys { lines.append("key \(k)") }
        if let p = r.pin {
            lines.append("pin \(p.level.rawValue) \(p.until.map(String.init) ?? "-") \(p.at) \(text(p.by)) \(text(p.reason))")
        }
        if let at = r.relaxedAt { lines.append("relaxed \(at) \(r.relaxations)") }
        return Array((lines.joined(separator: "\n") + "\n").utf8)
    }

    public static func decode(_ content: [UInt8]) throws -> LearnedRecord {
        func fail(_ what: String) -> LearnedRecordError { .malformed(what) }
        guard content.count <= maxBytes, content.last == 10 else { throw fail("size or ending") }
        // Printable ASCII and LF only (free text is xtext): no NUL, no CR,
        // and lines split on bytes — a Swift String would join "\r\n" into
        // one Character and hide a line.
        guard content.allSatisfy({ ($0 >= 0x20 && $0 < 0x7f) || $0 == 10 }) else { throw fail("encoding") }
        var lines = content.split(separator: 10, omittingEmptySubsequences: false).map { Substring(String(decoding: $0, as: UTF8.self)) }
        lines.removeLast()  // after the final newline
        guard lines.count >= 3, lines[0] == magic else { throw fail("magic") }
        func fields(_ line: Substring, _ key: String, _ n: Int) throws -> [Substring] {
            let f = line.split(separator: " ", omittingEmptySubsequences: false)
            guard f.count == n + 1, f[0] == key, f.allSatisfy({ !$0.isEmpty }) else { throw fail(key) }
            return Array(f.dropFirst())
        }
        func number(_ s: Substring, _ what: String) throws -> Int {
            guard s.utf8.count <= 12, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(s) else { throw fail(what) }
            return n
        }
        func xtext(_ s: Substring, _ what: String) throws -> String {
            if s == "+" { return "" }
            guard let t = XText.decode(String(s)), t.utf8.count <= LearnedRecord.maxText * 4 else { throw fail(what) }
            return t
        }
        func evidence(_ f: ArraySlice<Substring>, _ what: String) throws -> LevelEvidence {
            let v = try f.map { try number($0, what) }
            let e = LevelEvidence(firstSeen: v[0], lastSeen: v[1], count: v[2], days: v[3])
            guard e.firstSeen <= e.lastSeen, e.count >= 1, e.days >= 1, e.days <= e.count else { throw fail(what) }
            return e
        }
        func level(_ s: Substring) throws -> TLSEvidence {
            guard let l = TLSEvidence(name: String(s)) else { throw fail("level") }
            return l
        }

        let domain = String(try fields(lines[1], "domain", 1)[0])
        guard isDomain(domain) else { throw fail("domain") }
        var r = LearnedRecord(domain: domain, created: try number(try fields(lines[2], "created", 1)[0], "created"))
        var seen: Set<String> = []
        for line in lines.dropFirst(3) {
            let key = String(line.prefix { $0 != " " })
            switch key {
            case "evidence":
                let f = try fields(line, key, 5)
                let l = try level(f[0])
                guard r.evidence[l] == nil else { throw fail("evidence repeated") }
                r.evidence[l] = try evidence(f[1...], key)
            case "host":
                let f = try fields(line, key, 6)
                guard isHost(f[0]) else { throw fail("host") }
                let l = try level(f[1])
                let h = String(f[0])
                guard r.hosts[h]?[l] == nil, r.hosts[h] != nil || r.hosts.count < LearnedRecord.maxHosts else { throw fail("host repeated") }
                r.hosts[h, default: [:]][l] = try evidence(f[2...], key)
            case "key":
                let f = try fields(line, key, 1)
                guard isKey(String(f[0])), !r.keys.contains(String(f[0])), r.keys.count < LearnedRecord.maxKeys else { throw fail("key") }
                r.keys.append(String(f[0]))
            default:
                guard seen.insert(key).inserted else { throw fail("\(key) repeated") }
                try single(key, line, &r)
            }
        }
        return r

        func single(_ key: String, _ line: Substring, _ r: inout LearnedRecord) throws {
            switch key {
            case "attempt":
                let f = try fields(line, key, 4)
                guard isHost(f[2]) else { throw fail("attempt host") }
                r.lastAttempt = .init(at: try number(f[0], key), seen: try level(f[1]), host: String(f[2]), reason: try xtext(f[3], key))
            case "below":
                let f = try fields(line, key, 2)
                r.below = .init(since: try number(f[0], key), sessions: try number(f[1], key))
                guard r.below!.sessions >= 1 else { throw fail(key) }
            case "probe":
                let f = try fields(line, key, 8)
                let offered: Bool?
                switch f[3] {
                case "1": offered = true
                case "0": offered = false
                case "-": offered = nil
                default: throw fail("probe starttls")
                }
                func flag(_ s: Substring) throws -> Bool {
                    guard s == "0" || s == "1" else { throw fail("probe flag") }
                    return s == "1"
                }
                guard f[2] == "-" || isHost(f[2]) else { throw fail("probe host") }
                r.lastProbe = .init(at: try number(f[0], key), seen: try level(f[1]), host: f[2] == "-" ? "" : String(f[2]),
                                    starttlsOffered: offered, handshake: try flag(f[4]), verified: try flag(f[5]),
                                    version: try xtext(f[6], key), detail: try xtext(f[7], key))
            case "probes-below":
                let f = try fields(line, key, 2)
                r.probesBelowSince = try number(f[0], key)
                r.probesBelow = try number(f[1], key)
            case "mx":
                let f = line.split(separator: " ", omittingEmptySubsequences: false).dropFirst()
                guard !f.isEmpty, f.count <= LearnedRecord.maxHosts, f.allSatisfy(isHost) else { throw fail(key) }
                r.mx = f.map(String.init)
            case "pin":
                let f = try fields(line, key, 5)
                guard let l = PolicyLevel(configName: String(f[0])), LearnedRecord.Pin.levels.contains(l) else { throw fail("pin level") }
                r.pin = .init(level: l, until: f[1] == "-" ? nil : try number(f[1], key), reason: try xtext(f[4], key),
                              by: try xtext(f[3], key), at: try number(f[2], key))
            case "relaxed":
                let f = try fields(line, key, 2)
                r.relaxedAt = try number(f[0], key)
                r.relaxations = try number(f[1], key)
            default:
                throw fail("unknown key '\(key.prefix(32))'")
            }
        }
    }
}
