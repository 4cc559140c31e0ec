// The cipher policy that SPEC.md makes non-negotiable: whatever the operator
// writes, relayd appends exclusions for anonymous, null, export, RC4, DES,
// 3DES, MD5 and every suite under 128 bits, and checks the negotiated
// cipher's strength again after each handshake. The operator can narrow the
// list, never widen it past this floor.
//
// Forward secrecy differs by side. Inbound it is required: a listener never
// negotiates a key exchange whose session keys a later leak of the server
// key would expose (recorded sessions, AUTH passwords included). Outbound it
// is preferred: any TLS still beats plaintext at `opportunistic`, and a
// receiver that offers only static RSA stays reachable at every level, so
// those suites are moved to the end of the list rather than removed, and the
// delivery log records `fs=no`.
import COpenSSL

public struct TLSCipherPolicy: Equatable, Sendable {
    /// The operator's TLS <= 1.2 cipher list, before the mandatory exclusions.
    public var cipherList: String
    /// The TLS 1.3 cipher suites (all of which are at least 128-bit).
    public var cipherSuites: String

    public static let defaultCipherList = "HIGH"
    public static let defaultCipherSuites = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"

    /// Appended to every cipher list relayd hands to OpenSSL.
    public static let mandatoryExclusions = "!aNULL:!eNULL:!EXPORT:!LOW:!RC4:!DES:!3DES:!MD5:!PSK:!SRP:!SEED:!IDEA"

    /// Appended to the inbound listeners' list as well: every TLS <= 1.2 key
    /// exchange that is not ephemeral — static RSA, and the PSK kinds keyed
    /// by a long-term secret alone (already gone with !PSK; named so that
    /// this rule stands on its own). What is left is ECDHE and DHE; OpenSSL
    /// 3 has no static (EC)DH suites, and TLS 1.3 suites are always
    /// ephemeral.
    public static let forwardSecrecyExclusions = "!kRSA:!kPSK:!kRSAPSK"

    /// Inserted into the outbound list before the exclusions: `+` moves the
    /// static-RSA suites the operator's list contains to its end, so a
    /// receiver that honours the client's order picks an ephemeral key
    /// exchange whenever it has one. It reorders; it never adds a suite.
    public static let outboundPreference = "+kRSA"

    /// Weakest symmetric key size relayd will ever use.
    public static let minimumCipherBits = 128

    public init(cipherList: String = TLSCipherPolicy.defaultCipherList,
                cipherSuites: String = TLSCipherPolicy.defaultCipherSuites) {
        self.cipherList = cipherList
        self.cipherSuites = cipherSuites
    }

    /// The string given to SSL_CTX_set_cipher_list for one side.
    public func effectiveCipherList(for role: TLSContextConfiguration.Role) -> String {
        let base = cipherList.isEmpty ? TLSCipherPolicy.defaultCipherList : cipherList
        switch role {
        case .server:
            return base + ":" + TLSCipherPolicy.mandatoryExclusions + ":" + TLSCipherPolicy.forwardSecrecyExclusions
        case .client:
            return base + ":" + TLSCipherPolicy.outboundPreference + ":" + TLSCipherPolicy.mandatoryExclusions
        }
    }

    /// Whether a negotiated suite's key exchange is ephemeral. TLS 1.3
    /// suites report "any": their key exchange is always (EC)DHE, because
    /// relayd never sets SSL_OP_ALLOW_NO_DHE_KEX (which would permit PSK-only
    /// resumption).
    static func isForwardSecret(_ cipher: OpaquePointer) -> Bool {
        switch SSL_CIPHER_get_kx_nid(cipher) {
        case NID_kx_ecdhe, NID_kx_dhe, NID_kx_ecdhe_psk, NID_kx_dhe_psk, NID_kx_any: return true
        default: return false  // rsa, psk, rsa_psk, srp, gost
        }
    }
}
