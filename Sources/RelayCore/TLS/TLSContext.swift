// TLSContext owns one SSL_CTX: the long-lived half of TLS (certificates,
// trust store, protocol floor, cipher policy). It is immutable after init and
// shared by every connection of one role; a reload builds a new one.
//
// This folder (RelayCore/TLS) is the only importer of COpenSSL. It may import
// Foundation-free stdlib and Logging, nothing else from RelayCore.
import COpenSSL

public struct TLSContextConfiguration: Sendable {
    public enum Role: Sendable { case server, client }

    public var role: Role
    /// PEM file with the leaf certificate followed by its intermediates.
    public var certificateChainFile: String?
    public var privateKeyFile: String?
    /// PEM bundle of trust anchors; nil uses OpenSSL's default paths.
    public var caBundleFile: String?
    public var minimumVersion: TLSProtocolVersion
    /// Normally nil (no ceiling). Tests use it to play old peers.
    public var maximumVersion: TLSProtocolVersion?
    public var ciphers: TLSCipherPolicy
    /// OpenSSL security level; 2 refuses RSA/DH keys under 2048 bits and
    /// SHA-1 signatures. Tests lower it to play deliberately weak peers.
    public var securityLevel: Int32
    /// Server side: refuse every key exchange without forward secrecy (see
    /// TLSCipherPolicy). Always true in relayd, and deliberately not public:
    /// it exists so a unit test can play a receiver that offers static RSA
    /// alone, the way maximumVersion plays old peers.
    var forwardSecrecyRequired = true

    public init(role: Role,
                certificateChainFile: String? = nil,
                privateKeyFile: String? = nil,
                caBundleFile: String? = nil,
                minimumVersion: TLSProtocolVersion = .tls1_2,
                maximumVersion: TLSProtocolVersion? = nil,
                ciphers: TLSCipherPolicy = TLSCipherPolicy(),
                securityLevel: Int32 = 2) {
        self.role = role
        self.certificateChainFile = certificateChainFile
        self.privateKeyFile = privateKeyFile
        self.caBundleFile = caBundleFile
        self.minimumVersion = minimumVersion
        self.maximumVersion = maximumVersion
        self.ciphers = ciphers
        self.securityLevel = securityLevel
    }
}

public struct TLSSetupError: Error, Equatable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Unchecked Sendable, because the compiler cannot see into the SSL_CTX:
/// it is configured completely in init and never changed afterwards, and
/// OpenSSL documents a configured SSL_CTX as safe to share between threads
/// that each make their own SSL from it (its session cache locks itself).
/// Every connection on every queue uses one context; that is the point.
public final class TLSContext: @unchecked Sendable {
    /// The SSL_CTX*. Never escapes this module; freed once in deinit.
    let pointer: OpaquePointer
    public let configuration: TLSContextConfiguration

    public init(_ configuration: TLSContextConfiguration) throws {
        OpenSSLErrorQueue.clear()
        let method = configuration.role == .server ? TLS_server_method() : TLS_client_method()
        guard let ctx = SSL_CTX_new(method) else {
            throw TLSSetupError(message: "SSL_CTX_new failed: \(OpenSSLErrorQueue.describe(OpenSSLErrorQueue.drain()))")
        }
        self.pointer = ctx
        self.configuration = configuration
        // From here on a throw runs deinit, which frees ctx.
        try configure()
    }

    deinit { SSL_CTX_free(pointer) }

    private func fail(_ what: String) -> TLSSetupError {
        let why = OpenSSLErrorQueue.describe(OpenSSLErrorQueue.drain())
        return TLSSetupError(message: why.isEmpty ? what : "\(what): \(why)")
    }

    private func configure() throws {
        let cfg = configuration
        relayd_ssl_ctx_harden(pointer)
        SSL_CTX_set_security_level(pointer, cfg.securityLevel)

        guard relayd_ssl_ctx_set_min_proto_version(pointer, cfg.minimumVersion.openSSLValue) == 1 else {
            throw fail("cannot set protocol floor \(cfg.minimumVersion.name)")
        }
        if let max = cfg.maximumVersion {
            guard relayd_ssl_ctx_set_max_proto_version(pointer, max.openSSLValue) == 1 else {
                throw fail("cannot set protocol ceiling \(max.name)")
            }
        }
        let listRole = cfg.role == .server && !cfg.forwardSecrecyRequired ? .client : cfg.role
        guard SSL_CTX_set_cipher_list(pointer, cfg.ciphers.effectiveCipherList(for: listRole)) == 1 else {
            let removed = listRole == .server
                ? "under 128 bits or without forward secrecy (static RSA), which inbound TLS never uses"
                : "under 128 bits"
            throw fail("cipher list '\(cfg.ciphers.cipherList)' leaves no usable TLS 1.2 cipher once relayd removes those \(removed)")
        }
        if !cfg.ciphers.cipherSuites.isEmpty {
            guard SSL_CTX_set_ciphersuites(pointer, cfg.ciphers.cipherSuites) == 1 else {
                throw fail("invalid TLS 1.3 cipher suites '\(cfg.ciphers.cipherSuites)'")
            }
        }

        if let chain = cfg.certificateChainFile {
            guard SSL_CTX_use_certificate_chain_file(pointer, chain) == 1 else {
                throw fail("cannot load certificate chain \(chain)")
            }
        }
        if let key = cfg.privateKeyFile {
            guard SSL_CTX_use_PrivateKey_file(pointer, key, SSL_FILETYPE_PEM) == 1 else {
                throw fail("cannot load private key \(key)")
            }
            guard SSL_CTX_check_private_key(pointer) == 1 else {
                throw fail("private key \(key) does not match certificate")
            }
        }
        if cfg.role == .server, cfg.certificateChainFile == nil {
            throw TLSSetupError(message: "a server TLS context needs a certificate and key")
        }

        if let ca = cfg.caBundleFile {
            guard SSL_CTX_load_verify_locations(pointer, ca, nil) == 1 else {
                throw fail("cannot load CA bundle \(ca)")
            }
        } else if cfg.role == .client {
            guard SSL_CTX_set_default_verify_paths(pointer) == 1 else {
                throw fail("cannot load the system trust store")
            }
        }

        if cfg.role == .server {
            _ = relayd_ssl_ctx_set_session_cache_server(pointer)
            // Session id context is required for resumption with a server cache.
            let sid: [UInt8] = Array("relayd".utf8)
            _ = SSL_CTX_set_session_id_context(pointer, sid, UInt32(sid.count))
        }
        // Verification is decided per connection (TLSConnection); the
        // context default records the result without aborting.
        SSL_CTX_set_verify(pointer, SSL_VERIFY_NONE, nil)
        // DANE (RFC 7672) is switched on per connection (SSL_dane_enable,
        // TLSConnection.Options.dane); the context only has to allow it.
        // Once, here, before any SSL is made from the context.
        if configuration.role == .client, SSL_CTX_dane_enable(pointer) <= 0 {
            throw TLSSetupError(message: "SSL_CTX_dane_enable failed: \(OpenSSLErrorQueue.describe(OpenSSLErrorQueue.drain()))")
        }
        OpenSSLErrorQueue.clear()
    }
}

extension TLSContext {
    /// Every suite this context may negotiate, in preference order, with
    /// whether its key exchange is forward-secret: what the cipher policy
    /// came to after OpenSSL applied it.
    var negotiableCiphers: [(name: String, forwardSecret: Bool)] {
        let stack = SSL_CTX_get_ciphers(pointer)
        return (0..<relayd_sk_ssl_cipher_num(stack)).compactMap { i in
            relayd_sk_ssl_cipher_value(stack, i).map {
                (String(cString: SSL_CIPHER_get_name($0)), TLSCipherPolicy.isForwardSecret($0))
            }
        }
    }
}

/// Versions of the linked libraries, for `relayd version` and start-up logs.
public enum TLSLibrary {
    public static var runtimeVersion: String { String(cString: OpenSSL_version(Int32(OPENSSL_VERSION))) }
    public static var headerVersion: String { OPENSSL_VERSION_TEXT }
    public static var runtimeMajor: UInt { UInt(OPENSSL_version_major()) }
}
