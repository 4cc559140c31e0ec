// SASL pieces of SMTP AUTH (RFC 4954) for the PLAIN (RFC 4616) and LOGIN
// mechanisms: strict base64 and the PLAIN message layout. Credentials
// never leave this file as anything but the Credentials value, which has
// no description that prints the password.
public struct Credentials: Equatable, Sendable, CustomStringConvertible {
    public let username: String
    public let password: [UInt8]
    public init(username: String, password: [UInt8]) {
        self.username = username
        self.password = password
    }
    public var description: String { "Credentials(\(username), <redacted>)" }
}

public enum SASL {
    public enum Mechanism: String, CaseIterable, Sendable { case plain = "PLAIN", login = "LOGIN" }

    /// RFC 4648 base64, no whitespace, correct padding; anything else nil.
    public static func decodeBase64(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 4 * 3)
        var i = 0
        while i < chars.count {
            var values = [UInt8](repeating: 0, count: 4)
            var padding = 0
            for j in 0..<4 {
                let c = chars[i + j]
                if c == UInt8(ascii: "=") {
                    // Padding only at the very end, at most two.
                    guard i + 4 == chars.count, j >= 2 else { return nil }
                    padding += 1
                    continue
                }
                guard padding == 0, let v = value(c) else { return nil }
                values[j] = v
            }
            let n = (UInt32(values[0]) << 18) | (UInt32(values[1]) << 12) | (UInt32(values[2]) << 6) | UInt32(values[3])
            out.append(UInt8(truncatingIfNeeded: n >> 16))
            if padding < 2 { out.append(UInt8(truncatingIfNeeded: n >> 8)) }
            if padding < 1 { out.append(UInt8(truncatingIfNeeded: n)) }
            i += 4
        }
        return out
    }

    public static func encodeBase64(_ bytes: [UInt8]) -> String {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            let b0 = UInt32(bytes[i])
            let b1 = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0
            let b2 = i + 2 < bytes.count ? UInt32(bytes[i + 2]) : 0
            let n = (b0 << 16) | (b1 << 8) | b2
            out.append(table[Int(n >> 18) & 63])
            out.append(table[Int(n >> 12) & 63])
            out.append(i + 1 < bytes.count ? table[Int(n >> 6) & 63] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? table[Int(n) & 63] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The value of one base64 character (RFC 4648 §4 alphabet); nil for
    /// anything else. Shared with EncodedWords' "B" encoding.
    static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return c - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return c - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): return 62
        case UInt8(ascii: "/"): return 63
        default: return nil
        }
    }

    /// PLAIN: [authzid] NUL authcid NUL passwd. An authzid different from
    /// the authcid (acting as someone else) is refused.
    public static func parsePlain(_ message: [UInt8]) -> Credentials? {
        let parts = message.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3,
              let authzid = String(validating: parts[0], as: UTF8.self),
              let authcid = String(validating: parts[1], as: UTF8.self),
              !authcid.isEmpty, !parts[2].isEmpty, parts[2].count <= 1024, authcid.utf8.count <= 255,
              authzid.isEmpty || authzid == authcid,
              !authcid.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f || $0 == ":" })
        else { return nil }
        return Credentials(username: authcid, password: Array(parts[2]))
    }

    /// LOGIN's username, checked as PLAIN's authcid is.
    public static func parseLoginUsername(_ bytes: [UInt8]) -> String? {
        guard let s = String(validating: bytes, as: UTF8.self), !s.isEmpty, s.utf8.count <= 255,
              !s.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f || $0 == ":" }) else { return nil }
        return s
    }
}
