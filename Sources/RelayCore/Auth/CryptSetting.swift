// The parts of a crypt(3) hash that decide how long checking a password
// against it takes: the scheme with its cost parameters, and the salt's
// length (SHA-512-crypt hashes the salt in every round). The salt itself
// and the digest do not change the cost. UsersFile uses this to refuse
// lines that are not hashes at all; DecoyHashes uses it to give unknown
// users the costs the file's real users have.
struct CryptSetting: Hashable, Sendable {
    /// "$y$j9T$", "$6$", "$6$rounds=20000$", "$2b$12$": the scheme and its
    /// cost, up to where the salt starts.
    let prefix: String
    let salt: String

    /// What two hashes must share to cost the same to check.
    struct Cost: Hashable, Comparable, Sendable {
        let prefix: String
        let saltLength: Int

        static func < (a: Cost, b: Cost) -> Bool {
            (a.prefix, a.saltLength) < (b.prefix, b.saltLength)
        }
    }

    var cost: Cost { Cost(prefix: prefix, saltLength: salt.count) }

    /// Splits "$y$params$salt$digest", "$6$[rounds=N$]salt$digest" and
    /// "$2b$NN$<22 salt><31 digest>"; nil for anything else.
    init?(hash: String) {
        let fields = hash.split(separator: "$", omittingEmptySubsequences: false).map(String.init)
        guard fields.count >= 4, fields[0].isEmpty else { return nil }
        switch fields[1] {
        case "y":
            guard fields.count == 5, !fields[2].isEmpty, !fields[3].isEmpty, !fields[4].isEmpty else { return nil }
            prefix = "$y$\(fields[2])$"
            salt = fields[3]
        case "6":
            let hasRounds = fields[2].hasPrefix("rounds=")
            guard fields.count == (hasRounds ? 5 : 4), !fields[fields.count - 1].isEmpty else { return nil }
            if hasRounds {
                guard Int(fields[2].dropFirst("rounds=".count)) != nil else { return nil }
                prefix = "$6$\(fields[2])$"
                salt = fields[3]
            } else {
                prefix = "$6$"
                salt = fields[2]
            }
        case "2b", "2y":
            guard fields.count == 4, fields[2].count == 2, Int(fields[2]) != nil, fields[3].count == 53 else { return nil }
            prefix = "$\(fields[1])$\(fields[2])$"
            salt = String(fields[3].prefix(22))
        default:
            return nil
        }
    }
}
