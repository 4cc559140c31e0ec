// RelaySTS: the pure parsers of MTA-STS (RFC 8461) — the `_mta-sts` TXT
// record (STSRecord) and the policy file (STSPolicy), with the MX pattern
// match of §4.1. No I/O, no clock, no Foundation: bytes in, values out; the
// DNS lookup, the HTTPS fetch, the cache and the policy layer live
// elsewhere and call these. Imports only RelayModel (host name syntax).
//
// This file holds the byte classes both grammars share (RFC 5234 core
// rules). They sit in a namespace so that the fuzz build, which compiles
// these sources into one module with SMTP and Model, cannot collide with
// helpers of the same name there.
enum STSSyntax {
    static let semicolon = UInt8(ascii: ";")
    static let colon = UInt8(ascii: ":")
    static let equals = UInt8(ascii: "=")
    static let dot = UInt8(ascii: ".")
    static let cr: UInt8 = 13
    static let lf: UInt8 = 10

    /// WSP = SP / HTAB
    static func isWSP(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }

    static func isAlpha(_ b: UInt8) -> Bool { (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) }

    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

    static func isAlnum(_ b: UInt8) -> Bool { isAlpha(b) || isDigit(b) }

    /// sts-ext-name and sts-policy-ext-name, the same rule in both grammars:
    /// (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
    static func isExtensionName<C: Collection>(_ name: C) -> Bool where C.Element == UInt8 {
        guard let first = name.first, isAlnum(first), name.count <= 32 else { return false }
        return name.dropFirst().allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") || $0 == dot }
    }

    /// ASCII-only lower-casing: String.lowercased() maps some non-ASCII
    /// letters to ASCII ones (KELVIN SIGN → "k"), which must never make a
    /// host name match a pattern.
    static func asciiLowercased(_ s: String) -> String {
        String(decoding: s.utf8.map { $0 >= 0x41 && $0 <= 0x5a ? $0 + 0x20 : $0 }, as: UTF8.self)
    }

    /// Whether the bytes are well-formed UTF-8 (RFC 3629: no overlong forms,
    /// no surrogates, nothing above U+10FFFF). Decoding repairs anything
    /// else with U+FFFD, so the round trip differs exactly when the input
    /// was not UTF-8. (String(validating:) needs a newer macOS than the
    /// package's floor.)
    static func isUTF8(_ bytes: [UInt8]) -> Bool {
        if bytes.allSatisfy({ $0 < 0x80 }) { return true }
        return Array(String(decoding: bytes, as: UTF8.self).utf8) == bytes
    }
}
