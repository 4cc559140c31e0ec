// The MTA-STS policy file (RFC 8461 §3.2) and the MX match of §4.1.
//
//   sts-policy-record      = sts-policy-field *WSP
//                            *(sts-policy-term sts-policy-field *WSP) [sts-policy-term]
//   sts-policy-term        = LF / CRLF
//   sts-policy-field-delim = ":" *WSP
//   version: %s"STSv1"   mode: %s"testing" / %s"enforce" / %s"none"
//   max_age: 1*10(DIGIT) mx: ["*."] Domain      (Domain as RFC 5321)
//   sts-policy-extension   = sts-policy-ext-name ":" *WSP sts-policy-ext-value
//   sts-policy-ext-value   = sts-policy-vchar [*(%x20 / sts-policy-vchar) sts-policy-vchar]
//   sts-policy-vchar       = %x21-7E / UTF8-2 / UTF8-3 / UTF8-4
//
// The rule that matters most: a policy is valid whole or not at all. An
// invalid mx line, or any other invalid field, makes the policy invalid —
// never a policy with that line left out, which would turn "only these MX
// hosts" into "these minus one" or, with every mx dropped, into nothing.
//
// Strict where the RFC is:
//  - Field names are case-sensitive (%s): "Mode: enforce" is an unknown
//    field, so that policy has no mode and is invalid. Values too:
//    "STSv1", "enforce", "testing", "none" exactly.
//  - A field is name ":" *WSP value *WSP, nothing else: a line without ":",
//    a name outside the extension-name grammar (which includes a space
//    before the colon), leading whitespace on a line (the IETF removed it
//    from the grammar because RFC 5322 would read it as a folded
//    continuation and a naive parser as a new field), a control character
//    inside a value (HTAB included; only SP may sit between words), an
//    empty value, or bytes that are not UTF-8 → .malformed.
//  - Line ends are LF or CRLF (the ABNF, and erratum 6253 for the prose). A
//    CR not followed by LF is refused: parsers that disagree about where a
//    line ends disagree about which mx lines exist.
//  - mx is ["*."] Domain: LDH labels of 1–63 octets that neither start nor
//    end with "-", at most 253 octets, A-labels only (§3.2: the Punycode
//    A-label, not the U-label); the wildcard only as the whole left-most
//    label. "*.", "*", "*.*.x", "a.*.x" and "*x.com" are invalid.
//  - max_age is digits only (no sign, no unit, no spaces), at most
//    31557600. Erratum 7282 (reported) would shorten the ABNF's 1*10DIGIT
//    to 1*8; the value bound decides either way, and the 10 digits of the
//    published ABNF are accepted, so "0000086400" is 86400.
//  - version, mode and max_age are required; mx at least once unless the
//    mode is "none". Checked in that order, after the lines; a bad mx is
//    reported after the required fields, .noMX last.
//
// Tolerant where the RFC says so, or where nothing can be misread:
//  - Unknown fields are ignored (§3.2), if they are well-formed.
//  - A repeated field other than mx: the first wins, the later ones are
//    ignored (§3.2 "all entries except for the first SHALL be ignored") as
//    long as their lines are well-formed.
//  - Trailing whitespace after a value (the ABNF's *WSP), none or any
//    WSP after the colon, and no line end after the last line.
//  - Empty and whitespace-only lines are skipped. The ABNF has no room for
//    them, but they carry nothing a parser could read two ways, and a
//    trailing blank line is a common editor artefact.
//  - An mx pattern's case is folded and one trailing dot dropped ("the
//    same absolute name"): accepting them cannot widen what matches, and
//    refusing would leave the domain with no policy at all.
//  - The ABNF's odd `0*(sts-policy-mx *WSP sts-policy-term)` alternative is
//    read as what the prose says: each mx on its own line, like any field.
//
// The body is capped at 64 KiB (.tooLarge), checked before anything else.
import RelayModel

public struct STSPolicy: Equatable, Sendable {
    public enum Mode: String, Sendable { case enforce, testing, none }
    public let mode: Mode
    public let maxAge: Int
    /// Patterns as written, lower-cased, no trailing dot; in policy order.
    public let mx: [String]

    public static let maxBodySize = 64 * 1024
    public static let maxMaxAge = 31_557_600

    /// Lines end in LF or CRLF; `key: value`; unknown keys ignored; repeated non-mx key: first wins;
    /// version must be STSv1; max_age 0...31557600; outside mode none at least one mx; an invalid mx
    /// pattern or any other invalid field makes the WHOLE policy invalid (never a partial policy).
    public static func parse(_ body: [UInt8]) -> Result<STSPolicy, STSPolicyError> {
        guard body.count <= maxBodySize else { return .failure(.tooLarge) }
        guard STSSyntax.isUTF8(body) else { return .failure(.malformed("not UTF-8")) }

        var version: String?, mode: String?, maxAge: String?
        var patterns: [String] = []
        var badMX: String?
        let lines = body.split(separator: STSSyntax.lf, omittingEmptySubsequences: false)
        for (index, rawLine) in lines.enumerated() {
            let lineNumber = index + 1
            var line = rawLine
            // CRLF: only a CR that an LF follows; the last piece had no LF.
            if index < lines.count - 1, line.last == STSSyntax.cr { line = line.dropLast() }
            if line.contains(STSSyntax.cr) { return .failure(.malformed("line \(lineNumber): CR without LF")) }
            if line.allSatisfy(STSSyntax.isWSP) { continue }
            let name: String, value: String
            switch field(line) {
            case .failure(let why): return .failure(.malformed("line \(lineNumber): \(why)"))
            case .success(let f): (name, value) = f
            }
            switch name {
            case "version": if version == nil { version = value }
            case "mode": if mode == nil { mode = value }
            case "max_age": if maxAge == nil { maxAge = value }
            case "mx":
                if let pattern = mxPattern(value) { patterns.append(pattern) } else if badMX == nil { badMX = value }
            default:
                guard !value.isEmpty else { return .failure(.malformed("line \(lineNumber): empty value")) }
            }
        }

        guard version == "STSv1" else { return .failure(.version) }
        guard let modeName = mode, let parsedMode = Mode(rawValue: modeName) else { return .failure(.mode) }
        guard let ageText = maxAge, let age = parseMaxAge(ageText) else { return .failure(.maxAge) }
        if let badMX { return .failure(.badMX(badMX)) }
        if parsedMode != Mode.none && patterns.isEmpty { return .failure(.noMX) }
        return .success(STSPolicy(mode: parsedMode, maxAge: age, mx: patterns))
    }

    /// Splits one non-blank line (line end removed) into name and value,
    /// the value without the WSP around it. Failure: why the line is not a field.
    private static func field(_ line: ArraySlice<UInt8>) -> Result<(String, String), FieldError> {
        guard let first = line.first, !STSSyntax.isWSP(first) else { return .failure(FieldError("leading whitespace")) }
        guard let colon = line.firstIndex(of: STSSyntax.colon) else { return .failure(FieldError("no ':'")) }
        let name = line[line.startIndex..<colon]
        guard STSSyntax.isExtensionName(name) else { return .failure(FieldError("malformed field name")) }
        var value = line[(colon + 1)...]
        while let f = value.first, STSSyntax.isWSP(f) { value = value.dropFirst() }
        while let l = value.last, STSSyntax.isWSP(l) { value = value.dropLast() }
        // Only SP may stand between the words of a value: no HTAB, NUL, DEL
        // or other control character.
        guard !value.contains(where: { $0 < 0x20 || $0 == 0x7f }) else {
            return .failure(FieldError("control character in the value"))
        }
        return .success((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
    }

    private struct FieldError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    /// The normalized pattern (lower case, no trailing dot), or nil when
    /// `value` is not ["*."] Domain.
    static func mxPattern(_ value: String) -> String? {
        guard value.utf8.allSatisfy({ $0 < 0x80 }) else { return nil }  // A-labels only
        var p = STSSyntax.asciiLowercased(value)
        if p.hasSuffix(".") { p.removeLast() }
        let domain = p.hasPrefix("*.") ? String(p.dropFirst(2)) : p
        // isValidHostname tolerates one trailing dot itself; a second one
        // ("a.example..") must not slip through.
        guard !domain.hasSuffix("."), DomainName.isValidHostname(domain) else { return nil }
        return p
    }

    /// 1*10DIGIT, at most maxMaxAge.
    static func parseMaxAge(_ text: String) -> Int? {
        guard (1...10).contains(text.utf8.count), text.utf8.allSatisfy(STSSyntax.isDigit), let n = Int(text) else { return nil }
        return n <= maxMaxAge ? n : nil
    }

    /// Whether an MX host name matches one of the patterns: exact (case-insensitive, trailing dot
    /// ignored), or `*.example.com` matching exactly one extra left-most label (not two, not the bare domain).
    /// A host that is not a valid LDH host name (U-labels, "_", "*", empty labels) matches nothing.
    public func matches(mxHost: String) -> Bool {
        var host = STSSyntax.asciiLowercased(mxHost)
        if host.hasSuffix(".") { host.removeLast() }
        guard !host.hasSuffix("."), DomainName.isValidHostname(host) else { return false }
        // The host with its left-most label removed, dot kept: ".example.com".
        let parent = host.firstIndex(of: ".").map { host[$0...] }
        for pattern in mx {
            if pattern.hasPrefix("*.") {
                if let parent, parent == pattern.dropFirst() { return true }
            } else if host == pattern {
                return true
            }
        }
        return false
    }

    /// The policy's text form for a cache file, parsable by `parse` (round-trips).
    public var text: String {
        var lines = ["version: STSv1", "mode: \(mode.rawValue)"]
        lines += mx.map { "mx: \($0)" }
        lines.append("max_age: \(maxAge)")
        return lines.joined(separator: "\n") + "\n"
    }
}

public enum STSPolicyError: Error, Equatable, Sendable {
    /// A line that is not a well-formed field, a bare CR, or not UTF-8; the reason is for the log.
    case malformed(String)
    /// No `version: STSv1` (missing, or another value first).
    case version
    /// No `mode` of enforce, testing or none.
    case mode
    /// No `max_age`, or not 0...31557600 in plain digits.
    case maxAge
    /// Mode enforce or testing without any mx.
    case noMX
    /// An mx value that is not ["*."] Domain, as written.
    case badMX(String)
    /// A body over 64 KiB.
    case tooLarge
}
