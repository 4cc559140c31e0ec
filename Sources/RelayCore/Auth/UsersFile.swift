// The SMTP AUTH users file: "name:crypt-hash" per line, '#' comments, as
// written by `mkpasswd -m yescrypt` or `openssl passwd -6`. Only hash
// schemes that are still considered strong are accepted: yescrypt ($y$),
// SHA-512-crypt ($6$) and bcrypt ($2b$/$2y$); DES, MD5 and SHA-256-crypt
// lines are refused at load so a weak hash cannot sit there unnoticed, and
// so are hashes whose fields are missing.
//
// Auth/ may import CCrypt (the only importer) and Model.
public struct UsersFile: Sendable {
    public struct Problem: Equatable, Sendable, CustomStringConvertible {
        public let line: Int
        public let message: String
        public var description: String { "line \(line): \(message)" }
    }

    public let hashes: [String: String]

    static let acceptedPrefixes = ["$y$", "$6$", "$2b$", "$2y$"]

    /// Parses the text; returns the users and every problem found.
    public static func parse(_ text: String) -> (UsersFile, [Problem]) {
        var hashes: [String: String] = [:]
        var problems: [Problem] = []
        var number = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            var line = Substring(raw)
            if line.last == "\r" { line = line.dropLast() }
            let trimmed = String(line).trimmingSpaces
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            guard let colon = trimmed.firstIndex(of: ":") else {
                problems.append(Problem(line: number, message: "expected user:hash"))
                continue
            }
            let user = String(trimmed[..<colon])
            var hash = String(trimmed[trimmed.index(after: colon)...])
            // Tolerate /etc/shadow-style trailing fields.
            if let extra = hash.firstIndex(of: ":") { hash = String(hash[..<extra]) }
            guard !user.isEmpty, user.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7f }) else {
                problems.append(Problem(line: number, message: "invalid user name"))
                continue
            }
            guard acceptedPrefixes.contains(where: { hash.hasPrefix($0) }) else {
                problems.append(Problem(line: number, message: "user \(user): unsupported or weak hash scheme (use yescrypt or SHA-512-crypt)"))
                continue
            }
            // A line crypt cannot use would fail in no time, and so tell
            // timing probes that this name exists.
            guard CryptSetting(hash: hash) != nil else {
                problems.append(Problem(line: number, message: "user \(user): malformed hash"))
                continue
            }
            if hashes.updateValue(hash, forKey: user) != nil {
                problems.append(Problem(line: number, message: "user \(user) listed twice"))
            }
        }
        return (UsersFile(hashes: hashes), problems)
    }
}
