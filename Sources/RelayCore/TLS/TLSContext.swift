// TLSContext owns one SSL_CTX: the long-lived half of TLS (certificates,
// trust store, protocol floor, cipher policy). It is immutable after init and
// shared by every connection of one role; a reload builds a new one.
//
// This folder (RelayCore/TLS) is the only importer of COpenSSL. It may import
// Foundation-free stdlib and Logging, nothing else from RelayCore.
import COpenSSL

/// The kind of a certificate's key, as OpenSSL files it: a server context
/// holds at most one chain of each kind.
public enum TLSKeyType: String, Sendable, Equatable {
    case rsa = "RSA", rsaPSS = "RSA-PSS", ecdsa = "ECDSA", ed25519 = "Ed25519", ed448 = "Ed448", other = "unknown-type"

    init(kind: Int32) {
        switch kind {
        case 1: self = .rsa
        case 2: self = .rsaPSS
        case 3: self = .ecdsa
        case 4: self = .ed25519
        case 5: self = .ed448
        default: self = .other
        }
    }
}

/// One server certificate chain (PEM, leaf first) and its private key.
public struct TLSCertificateChain: Sendable, Equatable {
    public var chainFile: String
    public var keyFile: String
    /// The key type this chain must have (the ECDSA chain of a dual setup
    /// must be ECDSA); nil accepts any.
    public var requiredKeyType: TLSKeyType?

    public init(chainFile: String, keyFile: String, requiredKeyType: TLSKeyType? = nil) {
        self.chainFile = chainFile
        self.keyFile = keyFile
        self.requiredKeyType = requiredKeyType
    }
}

public struct TLSContextConfiguration: Sendable {
    public enum Role: Sendable { case server, client }

    public var role: Role
    /// PEM file with the leaf certificate followed by its intermediates.
    public var certificateChainFile: String?
    public var privateKeyFile: String?
    /// Server side: further chains, each of another key type than the first
    /// and than each other (dual certificates: an RSA chain above, an ECDSA
    /// one here). OpenSSL picks one per handshake from what the client's
    /// signature algorithms (and, in TLS 1.2, its cipher suites) allow;
    /// ECDSA first when the client can take both.
    public var additionalCertificates: [TLSCertificateChain]
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
    /// The signature algorithms offered (OpenSSL list syntax); nil keeps
    /// OpenSSL's default. Deliberately not public either: it lets a unit
    /// test play a client that can verify only ECDSA, or only RSA.
    var signatureAlgorithms: String?

    public init(role: Role,
                certificateChainFile: String? = nil,
                privateKeyFile: String? = nil,
                additionalCertificates: [TLSCertificateChain] = [],
                caBundleFile: String? = nil,
                minimumVersion: TLSProtocolVersion = .tls1_2,
                maximumVersion: TLSProtocolVersion? = nil,
                ciphers: TLSCipherPolicy = TLSCipherPolicy(),
                securityLevel: Int32 = 2) {
        self.role = role
        self.certificateChainFile = certificateChainFile
        self.privateKeyFile = privateKeyFile
        self.additionalCertificates = additionalCertificates
        self.caBundleFile = caBundleFile
        self.minimumVersion = minimumVersion
        self.maximumVersion = maximumVersion
        self.ciphers = ciphers
        self.securityLevel = securityLevel
    }
}

public struct TLSSetupError: Error, Equatable, CustomStringConvertible {
    public let message: String
    /// Which certificate chain failed, when one did: 0 the first
    /// (certificateChainFile), 1... the additional ones in order.
    public let chain: Int?
    public var description: String { message }

    public init(message: String, chain: Int? = nil) {
        self.message = message
        self.chain = chain
    }
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

    private func fail(_ what: String, chain: Int? = nil) -> TLSSetupError {
        let why = OpenSSLErrorQueue.describe(OpenSSLErrorQueue.drain())
        return TLSSetupError(message: why.isEmpty ? what : "\(what): \(why)", chain: chain)
    }

    /// Loads each chain and its key, in order. OpenSSL keeps one chain per
    /// key type and silently replaces a chain with a later one of the same
    /// type, and SSL_CTX_use_PrivateKey files a key under its own type, not
    /// the certificate's: so each key is checked against the chain just
    /// loaded before it is handed over, and a second chain of a type
    /// already loaded is refused, each with a message naming the files.
    private func loadCertificates() throws {
        let cfg = configuration
        var chains: [TLSCertificateChain] = []
        if let chain = cfg.certificateChainFile {
            guard let key = cfg.privateKeyFile else {
                throw TLSSetupError(message: "certificate chain \(chain) has no private key", chain: 0)
            }
            chains.append(TLSCertificateChain(chainFile: chain, keyFile: key))
        } else if let key = cfg.privateKeyFile {
            throw TLSSetupError(message: "private key \(key) has no certificate chain", chain: 0)
        } else if cfg.role == .server {
            throw TLSSetupError(message: "a server TLS context needs a certificate and key")
        }
        if !cfg.additionalCertificates.isEmpty, cfg.certificateChainFile == nil {
            throw TLSSetupError(message: "additional certificate chains need a first one", chain: 1)
        }
        chains += cfg.additionalCertificates
        var loaded: [(type: TLSKeyType, file: String)] = []
        for (index, chain) in chains.enumerated() {
            guard SSL_CTX_use_certificate_chain_file(pointer, chain.chainFile) == 1 else {
                throw fail("cannot load certificate chain \(chain.chainFile)", chain: index)
            }
            let type = TLSKeyType(kind: relayd_ssl_ctx_current_cert_kind(pointer))
            if let required = chain.requiredKeyType, type != required {
                throw TLSSetupError(message: "certificate chain \(chain.chainFile) has an \(type.rawValue) key; "
                                    + "this chain must be \(required.rawValue)", chain: index)
            }
            if let twin = loaded.first(where: { $0.type == type }) {
                throw TLSSetupError(message: "certificate chains \(twin.file) and \(chain.chainFile) both have "
                                    + "\(type.rawValue) keys; the second would replace the first (dual certificates "
                                    + "are one RSA and one ECDSA chain)", chain: index)
            }
            loaded.append((type, chain.chainFile))
            OpenSSLErrorQueue.clear()
            guard let key = relayd_read_private_key_file(chain.keyFile) else {
                throw fail("cannot load private key \(chain.keyFile)", chain: index)
            }
            defer { EVP_PKEY_free(key) }
            guard X509_check_private_key(SSL_CTX_get0_certificate(pointer), key) == 1 else {
                OpenSSLErrorQueue.clear()
                let keyType = TLSKeyType(kind: relayd_pkey_kind(key))
                let why = keyType == type
                    ? "another \(type.rawValue) key than the certificate's"
                    : "an \(keyType.rawValue) key, the certificate has an \(type.rawValue) one"
                throw TLSSetupError(message: "key mismatch: private key \(chain.keyFile) does not belong to certificate "
                                    + "chain \(chain.chainFile) (\(why))", chain: index)
            }
            guard SSL_CTX_use_PrivateKey(pointer, key) == 1, SSL_CTX_check_private_key(pointer) == 1 else {
                throw fail("private key \(chain.keyFile) does not match certificate chain \(chain.chainFile)", chain: index)
            }
        }
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

        try loadCertificates()
        if let algorithms = cfg.signatureAlgorithms {
            guard relayd_ssl_ctx_set1_sigalgs_list(pointer, algorithms) == 1 else {
                throw fail("invalid signature algorithms '\(algorithms)'")
            }
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
