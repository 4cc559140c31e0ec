// The TLS-RPT policy record (RFC 8460 §3): the TXT record at
// `_smtp._tls.<domain>` that says where a domain wants its daily reports.
//
//   v=TLSRPTv1; rua=mailto:tlsrpt@example.com,https://reports.example.com/v1
//
// How the RFC is read here:
// - A TXT record made of several strings is one record: the strings are
//   joined with nothing between them (as for MTA-STS, RFC 8461 §3.1).
// - Of all TXT records at the name, those that do not begin with the
//   version field are someone else's and are discarded; exactly one must
//   remain, else the domain does not ask for reports (§3).
// - Fields are separated by ";" with optional spaces or tabs around it; a
//   trailing ";" is allowed. The version must be the first field.
// - `rua` is required, once. Its value is a comma-separated list of URIs
//   (a URI carries a literal "," or ";" percent-encoded). Only `mailto:`
//   and `https:` are ways relayd can deliver; other schemes are ignored.
//   A record whose rua names no usable URI asks for nothing we can do.
// - Unknown fields with a well-formed name and value are ignored (§3:
//   "superset of this specification"); a malformed field makes the
//   record invalid, never partly read.
// - Anything outside printable ASCII, or a record over 4096 octets, is
//   invalid: a record is an operator's one-liner, not a payload.
//
// Pure: no DNS, no I/O. The caller looks the TXT records up.
import RelayModel

public struct TLSRPTRecord: Equatable, Sendable {
    /// Where to send a report, in the record's order.
    public enum Destination: Equatable, Sendable, CustomStringConvertible {
        /// `mailto:` with its address (a `?` query, if any, dropped).
        case mailto(Mailbox)
        /// `https://host[:port]/path` (the path is "/" when none was given).
        case https(host: String, port: UInt16, path: String)

        public var description: String {
            switch self {
            case .mailto(let m): return "mailto:\(m)"
            case .https(let host, let port, let path): return "https://\(host)\(port == 443 ? "" : ":\(port)")\(path)"
            }
        }
    }

    public var destinations: [Destination]
    /// URIs in rua that relayd cannot use (another scheme, or malformed),
    /// as written, for the log.
    public var ignored: [String]

    public static let maxLength = 4096
    static let version = "v=TLSRPTv1"

    /// The record that counts among the TXT records at `_smtp._tls.<domain>`
    /// (each given as its strings); nil when there is none, or more than one,
    /// or the one is invalid or names no usable URI.
    public static func select(_ records: [[String]]) -> TLSRPTRecord? {
        let joined = records.map { $0.joined() }
        let ours = joined.filter(isTLSRPT)
        guard ours.count == 1 else { return nil }
        return parse(ours[0])
    }

    /// Whether a record claims to be a TLS-RPT record: it begins with the
    /// version field, followed by the end, a delimiter or space.
    static func isTLSRPT(_ record: String) -> Bool {
        let b = Array(record.utf8), v = Array(version.utf8)
        guard b.count >= v.count, Array(b[..<v.count]) == v else { return false }
        guard b.count > v.count else { return true }
        return b[v.count] == UInt8(ascii: ";") || b[v.count] == 0x20 || b[v.count] == 0x09
    }

    /// One record's text; nil when it is not a valid TLS-RPT record with at
    /// least one mailto or https destination.
    public static func parse(_ text: String) -> TLSRPTRecord? {
        let bytes = Array(text.utf8)
        guard bytes.count <= maxLength, bytes.allSatisfy({ ($0 >= 0x20 && $0 < 0x7f) || $0 == 0x09 }) else { return nil }
        var fields = text.split(separator: ";", omittingEmptySubsequences: false).map { trimWSP($0) }
        // One trailing delimiter is allowed.
        if fields.count > 1, fields.last!.isEmpty { fields.removeLast() }
        guard fields.first.map(String.init) == version, fields.count >= 2 else { return nil }
        var rua: Substring?
        for field in fields.dropFirst() {
            guard let eq = field.firstIndex(of: "=") else { return nil }
            let name = field[..<eq], value = field[field.index(after: eq)...]
            if name == "rua" {
                guard rua == nil, !value.isEmpty else { return nil }
                rua = value
            } else {
                guard isExtensionName(name), isExtensionValue(value) else { return nil }
            }
        }
        guard let rua else { return nil }
        var record = TLSRPTRecord(destinations: [], ignored: [])
        for raw in rua.split(separator: ",", omittingEmptySubsequences: false) {
            let uri = trimWSP(raw)
            guard !uri.isEmpty, uri.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else { return nil }
            if let d = destination(String(uri)) {
                if !record.destinations.contains(d) { record.destinations.append(d) }
            } else {
                record.ignored.append(String(uri))
            }
        }
        return record.destinations.isEmpty ? nil : record
    }

    /// A usable URI, or nil (another scheme, or one of ours malformed).
    static func destination(_ uri: String) -> Destination? {
        let lower = uri.lowercased()
        if lower.hasPrefix("mailto:") {
            var address = String(uri.dropFirst(7))
            if let q = address.firstIndex(of: "?") { address = String(address[..<q]) }
            guard let decoded = percentDecode(address), let m = Mailbox.parseForwardPath("<\(decoded)>") else { return nil }
            return .mailto(m)
        }
        if lower.hasPrefix("https://") {
            let rest = uri.dropFirst(8)
            let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
            let authority = rest[..<authorityEnd]
            var path = String(rest[authorityEnd...])
            if let hash = path.firstIndex(of: "#") { path = String(path[..<hash]) }
            if path.isEmpty || path.hasPrefix("?") { path = "/" + path }
            guard !authority.contains("@") else { return nil }
            var host = String(authority), port: UInt16 = 443
            if let colon = authority.lastIndex(of: ":") {
                guard let p = UInt16(authority[authority.index(after: colon)...]), p > 0 else { return nil }
                host = String(authority[..<colon]); port = p
            }
            host = host.lowercased()
            if host.hasSuffix(".") { host.removeLast() }
            guard DomainName.isValidHostname(host) else { return nil }
            return .https(host: host, port: port, path: path)
        }
        return nil
    }

    static func trimWSP(_ s: Substring) -> Substring {
        var s = s
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return s
    }

    /// (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
    static func isExtensionName(_ s: Substring) -> Bool {
        let b = Array(s.utf8)
        guard let first = b.first, b.count <= 32, isAlnum(first) else { return false }
        return b.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }
    }

    /// 1*(%x21-3A / %x3C / %x3E-7E): visible ASCII but "=" and ";".
    static func isExtensionValue(_ s: Substring) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { $0 >= 0x21 && $0 <= 0x7e && $0 != UInt8(ascii: "=") && $0 != UInt8(ascii: ";") }
    }

    static func isAlnum(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)
    }

    /// %HH decoding; nil on a broken escape or a result that is not
    /// printable ASCII.
    static func percentDecode(_ s: String) -> String? {
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "%") {
                guard i + 2 < b.count, let h = hexValue(b[i + 1]), let l = hexValue(b[i + 2]) else { return nil }
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(b[i]); i += 1
            }
        }
        guard out.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else { return nil }
        return String(decoding: out, as: UTF8.self)
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }
}
