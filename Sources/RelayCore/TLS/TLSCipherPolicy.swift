// The cipher policy that SPEC.md makes non-negotiable: whatever the operator
// writes, relayd appends exclusions for anonymous, null, export, RC4, DES,
// 3DES, MD5 and every suite under 128 bits, and checks the negotiated
// cipher's strength again after each handshake. The operator can narrow the
// list, never widen it past this floor.
public struct TLSCipherPolicy: Equatable, Sendable {
    /// The operator's TLS <= 1.2 cipher list, before the mandatory exclusions.
    public var cipherList: String
    /// The TLS 1.3 cipher suites (all of which are at least 128-bit).
    public var cipherSuites: String

    public static let defaultCipherList = "HIGH"
    public static let defaultCipherSuites = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"

    /// Appended to every cipher list relayd hands to OpenSSL.
    public static let mandatoryExclusions = "!aNULL:!eNULL:!EXPORT:!LOW:!RC4:!DES:!3DES:!MD5:!PSK:!SRP:!SEED:!IDEA"

    /// Weakest symmetric key size relayd will ever use.
    public static let minimumCipherBits = 128

    public init(cipherList: String = TLSCipherPolicy.defaultCipherList,
                cipherSuites: String = TLSCipherPolicy.defaultCipherSuites) {
        self.cipherList = cipherList
        self.cipherSuites = cipherSuites
    }

    /// The string given to SSL_CTX_set_cipher_list.
    public var effectiveCipherList: String {
        let base = cipherList.isEmpty ? TLSCipherPolicy.defaultCipherList : cipherList
        return base + ":" + TLSCipherPolicy.mandatoryExclusions
    }
}
