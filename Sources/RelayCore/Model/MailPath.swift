// Mail paths by the RFC 5321 §4.1.2 grammar, with RFC 6531 UTF-8 where the
// grammar allows it. Nothing is guessed: a path that does not parse is
// refused (501 5.1.7 / 501 5.1.3), never "repaired", because a repaired
// address is how relays get tricked into relaying.
public struct Mailbox: Hashable, Sendable, CustomStringConvertible {
    /// As written (a quoted local part keeps its quotes).
    public let localPart: String
    /// Domain or address literal, lower-cased (domains are case-insensitive;
    /// local parts are not, RFC 5321 §2.4).
    public let domain: String
    /// True when either part holds non-ASCII (needs SMTPUTF8).
    public let needsSMTPUTF8: Bool

    public var description: String { "\(localPart)@\(domain)" }

    public var isAddressLiteral: Bool { domain.hasPrefix("[") }

    /// Local parts that carry routing of their own (percent hack, bang
    /// path, a quoted '@'): harmless to a correct parser, but Postfix
    /// refuses them for relay domains (allow_untrusted_routing=no) and so do we.
    public var localPartHasRouting: Bool {
        localPart.contains("%") || localPart.contains("!") || localPart.contains("@")
    }

    /// "<local@domain>" with an optional source route, which RFC 5321
    /// §4.1.1.3 says to accept and ignore.
    public static func parseForwardPath(_ text: String) -> Mailbox? {
        let s = Array(text.unicodeScalars)
        guard s.count >= 2, s.first == "<", s.last == ">", s.count <= 256 + 2 else { return nil }
        var body = Array(s[1..<(s.count - 1)])
        if body.first == "@" {
            // A-d-l ":" — validate each at-domain, then drop the route.
            guard let colon = body.firstIndex(of: ":") else { return nil }
            let route = String(String.UnicodeScalarView(body[0..<colon]))
            for hop in route.split(separator: ",", omittingEmptySubsequences: false) {
                guard hop.first == "@", isDomain(String(hop.dropFirst()), utf8: false) else { return nil }
            }
            body = Array(body[(colon + 1)...])
        }
        return parseMailbox(body)
    }

    static func parseMailbox(_ s: [Unicode.Scalar]) -> Mailbox? {
        // The local part ends at the last '@' outside a quoted string.
        var at: Int?
        var inQuote = false
        var i = 0
        while i < s.count {
            let c = s[i]
            if inQuote {
                if c == "\\" { i += 2; continue }
                if c == "\"" { inQuote = false }
            } else if c == "\"" {
                guard i == 0 else { return nil }  // quotes only around the whole local part
                inQuote = true
            } else if c == "@" {
                at = i
                break
            }
            i += 1
        }
        guard !inQuote, let at, at > 0 else { return nil }
        let local = Array(s[0..<at])
        let domainScalars = Array(s[(at + 1)...])
        guard isLocalPart(local) else { return nil }
        let domain = String(String.UnicodeScalarView(domainScalars))
        let localText = String(String.UnicodeScalarView(local))
        guard localText.utf8.count <= 64 || local.contains(where: { !$0.isASCII }) && localText.utf8.count <= 255 else { return nil }
        let utf8 = local.contains(where: { !$0.isASCII }) || domainScalars.contains(where: { !$0.isASCII })
        if domain.hasPrefix("[") {
            guard AddressLiteral.isValid(domain) else { return nil }
        } else {
            guard isDomain(domain, utf8: true) else { return nil }
        }
        return Mailbox(localPart: localText, domain: domain.lowercased(), needsSMTPUTF8: utf8)
    }

    static func isLocalPart(_ s: [Unicode.Scalar]) -> Bool {
        guard !s.isEmpty else { return false }
        if s.first == "\"" {
            guard s.count >= 2, s.last == "\"" else { return false }
            var i = 1
            while i < s.count - 1 {
                let c = s[i]
                if c == "\\" {
                    guard i + 1 < s.count - 1, (32...126).contains(s[i + 1].value) else { return false }
                    i += 2
                    continue
                }
                // qtextSMTP: %d32-33 / %d35-91 / %d93-126, plus UTF-8.
                let v = c.value
                guard v == 32 || v == 33 || (35...91).contains(v) || (93...126).contains(v) || v >= 0x80 else { return false }
                i += 1
            }
            return true
        }
        // Dot-string: atoms separated by single dots.
        var previousDot = true
        for c in s {
            if c == "." {
                if previousDot { return false }
                previousDot = true
            } else {
                guard isAtext(c) else { return false }
                previousDot = false
            }
        }
        return !previousDot
    }

    package static func isAtext(_ c: Unicode.Scalar) -> Bool {
        if c.value >= 0x80 { return c.value != 0x85 && !(0x2028...0x2029).contains(c.value) }
        if ASCII.isAlnum(UInt8(c.value)) { return true }
        return "!#$%&'*+-/=?^_`{|}~".unicodeScalars.contains(c)
    }

    /// Domain = sub-domain *("." sub-domain), each an LDH label (or a
    /// U-label when UTF-8 is allowed). No trailing dot in SMTP.
    static func isDomain(_ d: String, utf8: Bool) -> Bool {
        guard !d.isEmpty, d.utf8.count <= 255 else { return false }
        for label in d.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.utf8.count <= 63, label.first != "-", label.last != "-" else { return false }
            for c in label.unicodeScalars {
                if c.isASCII {
                    guard ASCII.isAlnum(UInt8(c.value)) || c == "-" else { return false }
                } else {
                    guard utf8, c.properties.isAlphabetic || c.properties.numericType != nil
                            || c.properties.generalCategory == .nonspacingMark
                            || c.properties.generalCategory == .spacingMark else { return false }
                }
            }
        }
        return true
    }
}

/// MAIL FROM's path: a mailbox or the null path "<>" (bounces, RFC 5321 §4.5.5).
public enum ReversePath: Hashable, Sendable, CustomStringConvertible {
    case null
    case mailbox(Mailbox)

    public static func parse(_ text: String) -> ReversePath? {
        if text == "<>" { return .null }
        return Mailbox.parseForwardPath(text).map { .mailbox($0) }
    }

    public var mailbox: Mailbox? { if case .mailbox(let m) = self { return m } else { return nil } }
    public var description: String { mailbox?.description ?? "" }
}

/// "[192.0.2.1]", "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3). General address
/// literals (tag:content) are refused: relayd cannot route them.
public enum AddressLiteral {
    public static func isValid(_ s: String) -> Bool {
        guard s.hasPrefix("["), s.hasSuffix("]"), s.count > 2 else { return false }
        let inner = String(s.dropFirst().dropLast())
        if inner.uppercased().hasPrefix("IPV6:") {
            if case .v6? = IPAddress(String(inner.dropFirst(5))) { return true }
            return false
        }
        // Dotted quad only: inet_pton would also take what SMTP forbids? It
        // does not (no shorthand), so it is exact here.
        if case .v4? = IPAddress(inner) { return true }
        return false
    }
}

/// Character classes of the SMTP grammar (RFC 5321 §4.1.2 Let-dig).
package enum ASCII {
    package static func isAlnum(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
    }
}
