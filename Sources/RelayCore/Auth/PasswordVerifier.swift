// Checks a password against a crypt(3) hash with libxcrypt's crypt_r. The
// work is deliberately slow (that is the point of yescrypt), so callers
// run it off the connection queues. A user that does not exist still costs
// one hash computation, so timing does not reveal which names exist.
import CCrypt

public enum PasswordVerifier {
    /// A valid yescrypt hash of a random password, used for unknown users.
    static let decoy = "$y$j9T$bV4oezWzHX.qxuiNx9rRC0$tQcWNfGVv1T2MngIR.hK81QycmZpjNZa9V66julTG7D"

    public static func verify(password: [UInt8], hash: String?) -> Bool {
        let setting = hash ?? decoy
        guard let computed = cryptR(password: password, setting: setting) else { return false }
        return hash != nil && constantTimeEqual(Array(computed.utf8), Array(setting.utf8))
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
