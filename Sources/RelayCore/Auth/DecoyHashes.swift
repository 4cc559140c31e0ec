// What a password for a name that is not in the users file is checked
// against, so that an unknown name costs what a real user with a wrong
// password costs and the time AUTH takes does not tell which names exist.
//
// Built at each (re)load from the file itself: one decoy per cost found
// there (scheme, cost parameters, salt length — CryptSetting.Cost), made by
// hashing a random password with that setting and a fresh salt.
//
// Which decoy an unknown name gets, and why:
// - Not one fixed decoy. A yescrypt decoy (15 ms) in a file of SHA-512-crypt
//   users (1 ms) was the leak this replaces.
// - Not the most common cost. In a file that mixes costs, every user of a
//   rarer cost would then stand out, since no unknown name would ever cost
//   what they do.
// - Not a fresh random pick per attempt. A name probed twice would then vary
//   in cost, which a real user never does.
// - So each name is mapped by a keyed hash to one cost, with the shares the
//   file has: if a quarter of the users are yescrypt, a quarter of all names
//   get the yescrypt decoy. A name's cost is then drawn from the same
//   distribution whether or not the name exists, and is the same on every
//   attempt. With one cost in the file (the advised setup) the match is exact.
//
// The key is random per process and survives reloads. A name is placed by
// where its keyed hash falls in [0, 1) against the cumulative shares, so an
// edit that shifts the shares a little moves only a few unknown names. A
// restart does reshuffle them: someone who times the same names before and
// after a restart of a server whose file mixes costs could see an unknown
// name change cost. Keeping every user on one setting closes that as well.
struct DecoyHashes: Sendable {
    struct Entry: Sendable {
        let decoy: String
        /// The share of users whose cost sorts up to and including this one.
        let upTo: Double
    }

    /// One per cost in the file, in a fixed order.
    let entries: [Entry]

    /// For a file without users: the cost of mkpasswd's default yescrypt.
    static let fallback = "$y$j9T$bV4oezWzHX.qxuiNx9rRC0$tQcWNfGVv1T2MngIR.hK81QycmZpjNZa9V66julTG7D"

    private static let key: (UInt64, UInt64) = {
        var random = SystemRandomNumberGenerator()
        return (random.next(), random.next())
    }()

    init(users: UsersFile) {
        var salts: [CryptSetting.Cost: [String]] = [:]
        for hash in users.hashes.values {
            guard let setting = CryptSetting(hash: hash) else { continue }
            salts[setting.cost, default: []].append(setting.salt)
        }
        var made: [(String, Int)] = []
        for cost in salts.keys.sorted() {
            let templates = salts[cost]!
            if let decoy = Self.makeDecoy(cost, templates: templates) { made.append((decoy, templates.count)) }
        }
        let total = Double(made.reduce(0) { $0 + $1.1 })
        var sum = 0
        entries = made.map { decoy, count in
            sum += count
            return Entry(decoy: decoy, upTo: Double(sum) / total)
        }
    }

    /// The decoy for this name: always the same one for the same name.
    func hash(forUnknown name: String) -> String {
        guard let last = entries.last else { return Self.fallback }
        let position = Self.position(of: name)
        return (entries.first { position < $0.upTo } ?? last).decoy
    }

    /// Where the name's keyed hash falls in [0, 1).
    static func position(of name: String) -> Double {
        var hasher = Hasher()
        hasher.combine(key.0)
        hasher.combine(key.1)
        hasher.combine(name)
        let bits = UInt64(bitPattern: Int64(hasher.finalize()))
        return Double(bits >> 11) / Double(UInt64(1) << 53)
    }

    /// A random password under the cost's setting with a random salt of the
    /// same length. The salt keeps a real one's last character: yescrypt
    /// decodes the salt, and its last character may only carry some bits.
    /// If crypt still refuses, a real salt is used; the decoy is never
    /// compared with anything a client can make match.
    static func makeDecoy(_ cost: CryptSetting.Cost, templates: [String]) -> String? {
        let alphabet = Array("./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        var random = SystemRandomNumberGenerator()
        let password = (0..<24).map { _ in UInt8(alphabet[Int.random(in: 0..<64, using: &random)].asciiValue!) }
        var candidates: [String] = []
        for template in templates.prefix(4) {
            guard let last = template.last else { candidates.append(""); continue }
            let fresh = (0..<template.count - 1).map { _ in alphabet[Int.random(in: 0..<64, using: &random)] }
            candidates.append(String(fresh) + String(last))
        }
        candidates += templates.prefix(4)
        let terminator = cost.prefix.hasPrefix("$2") ? "" : "$"
        for salt in candidates {
            if let decoy = PasswordVerifier.cryptR(password: password, setting: cost.prefix + salt + terminator),
               CryptSetting(hash: decoy)?.cost == cost {
                return decoy
            }
        }
        return nil
    }
}
