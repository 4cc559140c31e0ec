// Checks a password against a crypt(3) hash with libxcrypt's crypt_r. The
// work is deliberately slow (that is the point of yescrypt), so callers
// run it off the connection queues. Every answer takes one hash
// computation of the kind a real user's would: an unknown name is checked
// against a decoy of a cost the users file has (DecoyHashes explains which),
// and the comparison and the code path are the same for both, so timing
// does not reveal which names exist.
import CCrypt

public struct PasswordVerifier: Sendable {
    public let users: UsersFile
    let decoys: DecoyHashes

    /// Hashes one random password per cost in the file: call once per load.
    public init(users: UsersFile) {
        self.users = users
        self.decoys = DecoyHashes(users: users)
    }

    public func verify(username: String, password: [UInt8]) -> Bool {
        // crypt would silently truncate at a NUL. Refused before the name is
        // looked at, so the refusal says nothing about the name.
        guard !password.contains(0) else { return false }
        let stored = users.hashes[username]
        let decoy = decoys.hash(forUnknown: username)
        var expected = stored ?? decoy
        var usable = stored != nil
        var computed = Self.cryptR(password: password, setting: expected)
        if computed == nil && stored != nil {
            // A stored hash crypt refuses fails in no time; spend what an
            // unknown name would, so this user does not stand out either.
            usable = false
            expected = decoy
            computed = Self.cryptR(password: password, setting: decoy)
        }
        let equal = Self.constantTimeEqual(Array((computed ?? "").utf8), Array(expected.utf8))
        return usable && equal
    }

    /// One password against one hash, with no decoy for anything.
    static func verify(password: [UInt8], hash: String) -> Bool {
        guard let computed = cryptR(password: password, setting: hash) else { return false }
        return constantTimeEqual(Array(computed.utf8), Array(hash.utf8))
    }

    static func cryptR(password: [UInt8], setting: String) -> String? {
        // NUL-terminated copy; a password with an embedded NUL is refused
        // (crypt would silently truncate it).
        guard !password.contains(0) else { return nil }
        let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        defer {
            // Wipe: crypt_data holds key material.
            UnsafeMutableRawPointer(data).initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<crypt_data>.size)
            data.deallocate()
        }
        UnsafeMutableRawPointer(data).initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<crypt_data>.size)
        var key = password.map { CChar(bitPattern: $0) } + [0]
        defer { for i in key.indices { key[i] = 0 } }
        guard let out = crypt_r(key, setting, data) else { return nil }
        let result = String(cString: out)
        // libxcrypt signals failure with a string starting with '*'.
        return result.hasPrefix("*") ? nil : result
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in a.indices { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}
