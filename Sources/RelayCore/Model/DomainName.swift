// Syntax of DNS host names as RFC 1035/1123 (LDH labels) allow them in
// SMTP (RFC 5321 §4.1.2 "Domain"). A-labels only: U-labels arrive through
// SMTPUTF8 and are converted before they reach here.
public enum DomainName {
    public static func isValidHostname(_ name: String) -> Bool {
        var n = Substring(name)
        if n.hasSuffix(".") { n = n.dropLast() }
        guard !n.isEmpty, n.utf8.count <= 253 else { return false }
        for label in n.split(separator: ".", omittingEmptySubsequences: false) {
            guard (1...63).contains(label.utf8.count),
                  label.utf8.first != UInt8(ascii: "-"), label.utf8.last != UInt8(ascii: "-"),
                  label.utf8.allSatisfy({ isLDH($0) }) else { return false }
        }
        return true
    }

    static func isLDH(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b == 0x2d
    }
}

public enum DNSName {
    /// The keys a per-domain table is searched with, most specific first:
    /// the name itself, then ".parent" entries from the closest parent out
    /// ("a.b.c" → "a.b.c", ".b.c", ".c"). One rule for relay domains,
    /// TLS-required senders, policy entries and the transport table: a
    /// plain entry matches only itself, a dotted one its subdomains.
    public static func lookupKeys(_ name: String) -> [String] {
        var keys = [name]
        var rest = Substring(name)
        while let dot = rest.firstIndex(of: ".") {
            keys.append(String(rest[dot...]))
            rest = rest[rest.index(after: dot)...]
        }
        return keys
    }

    /// Lower-case, no trailing dot: the form DNSMessage.parse returns.
    public static func normalize(_ name: String) -> String {
        var n = name.lowercased()
        if n.hasSuffix(".") { n.removeLast() }
        return n
    }
}

/// Names of records kept per domain (an MTA-STS policy, a learned TLS
/// record): lower-case LDH labels (and '_'), dots between them, at least
/// two labels, nothing else — no '/', no "..", so a name is always a safe
/// file name.
public enum DomainRecordName {
    public static func isValid(_ domain: String) -> Bool {
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        guard !domain.isEmpty, domain.utf8.count <= 253, labels.count >= 2 else { return false }
        return labels.allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63 && label.utf8.allSatisfy {
                ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x5f
            }
        }
    }
}
