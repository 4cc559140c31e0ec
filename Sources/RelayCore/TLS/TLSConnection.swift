// TLSConnection runs one TLS session over two memory BIOs, with no socket:
// the caller feeds ciphertext from the network in, steps the handshake, and
// takes ciphertext out to send. The same object then encrypts and decrypts
// application data. Because nothing here does I/O, a complete client/server
// handshake runs inside a unit test, and the transport layer (IO/) decides
// when bytes move.
//
// Ownership: the SSL* is created and freed here; the two BIOs are handed to
// the SSL with SSL_set_bio and freed by SSL_free.
import RelayModel
import COpenSSL

public enum TLSHandshakeStep: Equatable {
    /// Needs more bytes from the peer (send pending output first).
    case incomplete
    case complete
    case failed(TLSFailure)
}

public enum TLSVerification: Equatable, Sendable, CustomStringConvertible {
    /// Chain and (when a name was given) hostname verified.
    case trusted
    /// Verification ran and failed; the session may still be up if the
    /// policy did not require verification.
    case failed(TLSFailure)
    /// Server side: the client presented no certificate.
    case noPeerCertificate

    public var description: String {
        switch self {
        case .trusted: return "trusted"
        case .failed(let f): return "untrusted(\(f.kind.rawValue))"
        case .noPeerCertificate: return "none"
        }
    }
}

public struct PeerCertificate: Equatable, Sendable {
    public let subject: String
    public let issuer: String
    public let der: [UInt8]
    /// subjectAltName dNSName entries, in certificate order.
    public let dnsNames: [String]
    /// Validity bounds, seconds since the epoch (nil if unreadable).
    public let notBefore: Int?
    public let notAfter: Int?
    /// Lower-case hex SHA-256 of the DER SubjectPublicKeyInfo: the form a
    /// DANE TLSA record with selector 1, matching type 1 carries.
    public let publicKeySHA256: String

    public init(subject: String, issuer: String, der: [UInt8], dnsNames: [String] = [], notBefore: Int? = nil,
                notAfter: Int? = nil, publicKeySHA256: String = "") {
        self.subject = subject
        self.issuer = issuer
        self.der = der
        self.dnsNames = dnsNames
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.publicKeySHA256 = publicKeySHA256
    }
}

/// What a completed handshake negotiated; the material of Received headers
/// and delivery log lines.
public struct TLSSessionInfo: Equatable, Sendable {
    public let protocolVersion: String
    public let cipher: String
    public let cipherBits: Int
    /// Whether the key exchange was ephemeral (ECDHE, DHE, any TLS 1.3
    /// suite): a later leak of the server's key cannot decrypt this session.
    public let forwardSecret: Bool
    /// Certificates the peer presented (the client side counts the leaf).
    /// Their names and DER are read only on request, with
    /// `TLSConnection.peerCertificates()`: nothing on the mail path needs them.
    public let peerChainLength: Int
    public let verification: TLSVerification
    public let resumed: Bool
    /// DANE: the TLSA record that authenticated the peer (nil: DANE not in
    /// use, or nothing matched).
    public var daneMatch: TLSARecord? = nil
}

public enum TLSReadResult: Equatable {
    /// Plaintext decrypted from what was fed so far (may be empty).
    case data([UInt8])
    /// The peer sent close_notify; any data before it is included.
    case closed([UInt8])
    case failed(TLSFailure)
}

public final class TLSConnection {
    public struct Options: Sendable {
        /// Client: the SNI name to send.
        public var serverName: String?
        /// Client: the name the certificate must carry. nil checks the chain only.
        public var expectedHostname: String?
        /// Client: abort the handshake unless chain (and name) verify.
        public var requireVerification: Bool
        /// Client: authenticate by DANE (RFC 7672) instead of the trust
        /// store and expectedHostname: the peer must match one of the
        /// records; DANE-EE(3) checks neither names nor dates, DANE-TA(2)
        /// checks the chain to the anchor, the dates and the names. nil:
        /// no DANE.
        public var dane: DANEPolicy?

        public init(serverName: String? = nil, expectedHostname: String? = nil, requireVerification: Bool = false,
                    dane: DANEPolicy? = nil) {
            self.serverName = serverName
            self.expectedHostname = expectedHostname
            self.requireVerification = requireVerification
            self.dane = dane
        }
    }

    private let ssl: OpaquePointer
    private let networkIn: OpaquePointer   // BIO we write received ciphertext into
    private let networkOut: OpaquePointer  // BIO we drain ciphertext to send from
    public let isClient: Bool
    public let context: TLSContext
    public private(set) var sessionInfo: TLSSessionInfo?
    private var handshakeDone = false
    private var failure: TLSFailure?

    public init(context: TLSContext, options: Options = Options()) throws {
        OpenSSLErrorQueue.clear()
        guard let ssl = SSL_new(context.pointer) else {
            throw TLSSetupError(message: "SSL_new failed: \(OpenSSLErrorQueue.describe(OpenSSLErrorQueue.drain()))")
        }
        guard let rbio = BIO_new(BIO_s_mem()), let wbio = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw TLSSetupError(message: "BIO_new failed")
        }
        // A memory BIO that runs dry must say "retry", not "EOF".
        BIO_ctrl(rbio, BIO_C_SET_BUF_MEM_EOF_RETURN, -1, nil)
        BIO_ctrl(wbio, BIO_C_SET_BUF_MEM_EOF_RETURN, -1, nil)
        SSL_set_bio(ssl, rbio, wbio)
        self.ssl = ssl
        self.networkIn = rbio
        self.networkOut = wbio
        self.context = context
        self.isClient = context.configuration.role == .client

        if isClient {
            SSL_set_connect_state(ssl)
            // RFC 6066 §3: SNI carries host names only, never an address.
            if let sni = options.serverName, !sni.isEmpty, IPAddress(sni) == nil {
                guard relayd_ssl_set_tlsext_host_name(ssl, sni) == 1 else {
                    throw TLSSetupError(message: "cannot set SNI name \(sni)")
                }
            }
            if let dane = options.dane {
                try Self.enableDANE(ssl, dane)
            } else if let host = options.expectedHostname {
                if IPAddress(host) != nil {
                    // A relay configured by address is checked against the
                    // certificate's IP subjectAltName.
                    guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1 else {
                        throw TLSSetupError(message: "cannot set expected address \(host)")
                    }
                } else {
                    SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
                    guard SSL_set1_host(ssl, host) == 1 else {
                        throw TLSSetupError(message: "cannot set expected hostname \(host)")
                    }
                }
            }
            SSL_set_verify(ssl, options.requireVerification ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nil)
        } else {
            SSL_set_accept_state(ssl)
        }
    }

    deinit { SSL_free(ssl) }

    /// RFC 7672 through OpenSSL's DANE support: the base domain (which is
    /// also the name DANE-TA chains are checked against), the other
    /// reference names, no partial wildcards, no name checks for DANE-EE,
    /// and each record. Verification then succeeds only when a record
    /// matches; the verify callback stays OpenSSL's own, so nothing can
    /// bypass it. A record OpenSSL refuses is left out; none left is an
    /// error here, as the caller filtered them and expects authentication.
    private static func enableDANE(_ ssl: OpaquePointer, _ dane: DANEPolicy) throws {
        guard SSL_dane_enable(ssl, dane.baseDomain) > 0 else {
            throw TLSSetupError(message: "cannot enable DANE for \(dane.baseDomain): \(OpenSSLErrorQueue.describe(OpenSSLErrorQueue.drain()))")
        }
        _ = SSL_dane_set_flags(ssl, UInt(DANE_FLAG_NO_DANE_EE_NAMECHECKS))
        SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
        for name in dane.extraNames where name != dane.baseDomain {
            guard SSL_add1_host(ssl, name) == 1 else { throw TLSSetupError(message: "cannot add DANE name \(name)") }
        }
        var added = 0
        for r in dane.records {
            let rc = r.data.withUnsafeBufferPointer { SSL_dane_tlsa_add(ssl, r.usage, r.selector, r.matchingType, $0.baseAddress, $0.count) }
            if rc > 0 { added += 1 }
        }
        OpenSSLErrorQueue.clear()
        guard added > 0 else { throw TLSSetupError(message: "no TLSA record of \(dane.baseDomain) is usable by OpenSSL") }
    }

    /// At the end of a DANE handshake: the record that authenticated the
    /// peer, or nil when DANE was not used or nothing matched.
    private func daneMatch() -> TLSARecord? {
        guard SSL_get0_dane_authority(ssl, nil, nil) >= 0 else { return nil }
        var usage: UInt8 = 0, selector: UInt8 = 0, mtype: UInt8 = 0
        var data: UnsafePointer<UInt8>?
        var length = 0
        guard SSL_get0_dane_tlsa(ssl, &usage, &selector, &mtype, &data, &length) >= 0, let data else { return nil }
        return TLSARecord(usage: usage, selector: selector, matchingType: mtype,
                          data: Array(UnsafeBufferPointer(start: data, count: length)))
    }

    // MARK: network side

    /// Ciphertext received from the peer.
    public func receiveFromNetwork(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        var offset = 0
        while offset < bytes.count {
            let n = BIO_write(networkIn, base + offset, Int32(min(bytes.count - offset, Int(Int32.max))))
            if n <= 0 { break } // memory BIOs only fail on allocation failure
            offset += Int(n)
        }
    }

    public func receiveFromNetwork(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { receiveFromNetwork($0) }
    }

    /// Takes every ciphertext byte waiting to be sent to the peer.
    public func takeNetworkBytes() -> [UInt8] {
        let count = relayd_bio_pending(networkOut)
        guard count > 0 else { return [] }
        var out = [UInt8](repeating: 0, count: count)
        // BIO_read takes an Int32: read in pieces, never trap on a count.
        var filled = 0
        while filled < count {
            let n = out.withUnsafeMutableBytes {
                BIO_read(networkOut, $0.baseAddress! + filled, Int32(min(count - filled, Self.maxPiece)))
            }
            if n <= 0 { break }
            filled += Int(n)
        }
        if filled < count { out.removeSubrange(filled...) }
        return out
    }

    /// Largest piece handed to SSL_write or BIO_read at once. Their counts
    /// are Int32; a piece this size also bounds the ciphertext one call
    /// leaves in the memory BIO.
    static let maxPiece = 256 * 1024

    // MARK: handshake

    public var isHandshakeComplete: Bool { handshakeDone }

    /// Advances the handshake as far as the bytes fed so far allow.
    public func handshake() -> TLSHandshakeStep {
        if let failure { return .failed(failure) }
        if handshakeDone { return .complete }
        OpenSSLErrorQueue.clear()
        let rc = SSL_do_handshake(ssl)
        if rc == 1 {
            return finishHandshake()
        }
        let err = SSL_get_error(ssl, rc)
        switch err {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .incomplete
        case SSL_ERROR_ZERO_RETURN:
            return record(TLSFailure(kind: .peerClosed, detail: "peer closed during handshake"))
        default:
            let entries = OpenSSLErrorQueue.drain()
            let verify = Int(relayd_ssl_get_verify_result(ssl))
            return record(TLSFailure.classify(entries: entries, verifyResult: verify, isClient: isClient))
        }
    }

    private func record(_ f: TLSFailure) -> TLSHandshakeStep {
        failure = f
        return .failed(f)
    }

    private func finishHandshake() -> TLSHandshakeStep {
        let version = String(cString: SSL_get_version(ssl))
        let cipherPtr = SSL_get_current_cipher(ssl)
        let cipherName = cipherPtr.map { String(cString: SSL_CIPHER_get_name($0)) } ?? "unknown"
        var bits: Int32 = 0
        if let c = cipherPtr { _ = SSL_CIPHER_get_bits(c, &bits) }

        // Belt and braces: the cipher list already excludes these.
        if Int(bits) < TLSCipherPolicy.minimumCipherBits {
            return record(TLSFailure(kind: .weakCipher, detail: "\(cipherName) has \(bits) bits"))
        }
        if let negotiated = TLSProtocolVersion(openSSLName: version),
           negotiated < context.configuration.minimumVersion {
            return record(TLSFailure(kind: .protocolBelowFloor, detail: "negotiated \(version)"))
        }

        let chainLength = peerChainLength()
        let verification: TLSVerification
        if chainLength == 0 {
            verification = .noPeerCertificate
        } else {
            let code = Int(relayd_ssl_get_verify_result(ssl))
            verification = code == Int(X509_V_OK) ? .trusted : .failed(TLSFailure.fromVerifyResult(code))
        }
        sessionInfo = TLSSessionInfo(protocolVersion: version,
                                     cipher: cipherName,
                                     cipherBits: Int(bits),
                                     forwardSecret: cipherPtr.map(TLSCipherPolicy.isForwardSecret) ?? false,
                                     peerChainLength: chainLength,
                                     verification: verification,
                                     resumed: SSL_session_reused(ssl) == 1,
                                     daneMatch: isClient ? daneMatch() : nil)
        handshakeDone = true
        return .complete
    }

    private func peerChainLength() -> Int {
        if isClient { return Int(relayd_sk_x509_num(SSL_get_peer_cert_chain(ssl))) }
        guard let leaf = SSL_get1_peer_certificate(ssl) else { return 0 }
        X509_free(leaf)
        return 1
    }

    /// The peer's certificates, leaf first, with names and DER: encoded
    /// now, on request, not on every handshake.
    public func peerCertificates() -> [PeerCertificate] {
        guard handshakeDone else { return [] }
        var result: [PeerCertificate] = []
        if isClient {
            // The client-side chain includes the leaf.
            let stack = SSL_get_peer_cert_chain(ssl)
            for i in 0..<relayd_sk_x509_num(stack) {
                if let cert = relayd_sk_x509_value(stack, i) { result.append(Self.describe(cert)) }
            }
        } else if let leaf = SSL_get1_peer_certificate(ssl) {
            result.append(Self.describe(leaf))
            X509_free(leaf)
        }
        return result
    }

    private static func describe(_ cert: OpaquePointer) -> PeerCertificate {
        func line(_ name: OpaquePointer?) -> String {
            guard let name else { return "" }
            var buf = [CChar](repeating: 0, count: 1024)
            _ = relayd_x509_name_line(name, &buf, Int32(buf.count))
            return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        }
        var der: [UInt8] = []
        var out: UnsafeMutablePointer<UInt8>?
        let n = relayd_x509_der(cert, &out)
        if n > 0, let out {
            der = Array(UnsafeBufferPointer(start: out, count: Int(n)))
            relayd_openssl_free(out)
        }
        var names: [String] = []
        if let joined = relayd_x509_dns_names(cert) {
            names = String(cString: joined).split(separator: "\n").map(String.init)
            relayd_openssl_free(joined)
        }
        func bound(_ which: Int32) -> Int? {
            var t: Int64 = 0
            return relayd_x509_validity(cert, which, &t) == 1 ? Int(t) : nil
        }
        return PeerCertificate(subject: line(X509_get_subject_name(cert)),
                               issuer: line(X509_get_issuer_name(cert)),
                               der: der, dnsNames: names, notBefore: bound(0), notAfter: bound(1),
                               publicKeySHA256: spkiSHA256 { relayd_x509_spki_sha256(cert, $0) } ?? "")
    }

    /// Runs `digest` into a 32-byte buffer; lower-case hex, nil on failure.
    private static func spkiSHA256(_ digest: (UnsafeMutablePointer<UInt8>) -> Int32) -> String? {
        var md = [UInt8](repeating: 0, count: 32)
        let ok = md.withUnsafeMutableBufferPointer { digest($0.baseAddress!) } == 1
        guard ok else { return nil }
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for b in md { out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// The server leaf's SPKI SHA-256 (client side, after the handshake):
    /// one digest, no chain encoding, no names — cheap enough for every
    /// delivery. nil before the handshake, on the server side, or when the
    /// peer sent no certificate.
    public func leafPublicKeySHA256() -> String? {
        guard handshakeDone, isClient else { return nil }
        return Self.spkiSHA256 { relayd_ssl_peer_spki_sha256(ssl, $0) }
    }

    // MARK: application data

    /// Encrypts plaintext; the ciphertext is then in takeNetworkBytes().
    public func writePlaintext(_ bytes: UnsafeRawBufferPointer) throws {
        guard handshakeDone, failure == nil else {
            throw failure ?? TLSFailure(kind: .protocolError, detail: "write before handshake")
        }
        guard let base = bytes.baseAddress else { return }
        var offset = 0
        while offset < bytes.count {
            OpenSSLErrorQueue.clear()
            let n = SSL_write(ssl, base + offset, Int32(min(bytes.count - offset, Self.maxPiece)))
            if n <= 0 {
                let f = TLSFailure(kind: .protocolError,
                                   detail: OpenSSLErrorQueue.describe(OpenSSLErrorQueue.drain()))
                failure = f
                throw f
            }
            offset += Int(n)
        }
    }

    public func writePlaintext(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try writePlaintext($0) }
    }

    /// Decrypts whatever complete records have been fed.
    public func readPlaintext() -> TLSReadResult {
        if let failure { return .failed(failure) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            OpenSSLErrorQueue.clear()
            let n = chunk.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            if n > 0 {
                out.append(contentsOf: chunk[0..<Int(n)])
                continue
            }
            switch SSL_get_error(ssl, n) {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                return .data(out)
            case SSL_ERROR_ZERO_RETURN:
                return .closed(out)
            default:
                let f = TLSFailure(kind: .protocolError,
                                   detail: OpenSSLErrorQueue.describe(OpenSSLErrorQueue.drain()))
                failure = f
                return .failed(f)
            }
        }
    }

    /// Queues a close_notify alert for sending.
    public func close() {
        if handshakeDone, failure == nil {
            OpenSSLErrorQueue.clear()
            _ = SSL_shutdown(ssl)
            OpenSSLErrorQueue.clear()
        }
    }
}
