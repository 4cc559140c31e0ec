// Why a TLS handshake or session failed, in the vocabulary the delivery log
// and DSNs use. The policy engine maps these to transient or permanent
// outcomes; the TLS layer only names them precisely.
import COpenSSL

public struct TLSFailure: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Kind: String, Equatable, Sendable {
        /// The peer offered or accepted only versions below our floor.
        case protocolBelowFloor = "protocol-below-floor"
        /// No cipher both sides accept (after our mandatory exclusions).
        case noSharedCipher = "no-shared-cipher"
        /// The negotiated cipher is weaker than 128 bits.
        case weakCipher = "weak-cipher"
        /// The certificate chain does not lead to a trusted anchor, or is
        /// expired, revoked, malformed.
        case certificateUntrusted = "certificate-untrusted"
        /// The chain is fine but the name does not match the expected host.
        case hostnameMismatch = "hostname-mismatch"
        /// The peer presented no certificate although one was required.
        case noPeerCertificate = "no-peer-certificate"
        /// The peer closed the transport before the handshake finished.
        case peerClosed = "peer-closed"
        /// Any other handshake or record-layer error.
        case protocolError = "protocol-error"
    }

    public let kind: Kind
    /// OpenSSL's own words (error queue or verify error string).
    public let detail: String

    public init(kind: Kind, detail: String) {
        self.kind = kind
        self.detail = detail
    }

    public var description: String { detail.isEmpty ? kind.rawValue : "\(kind.rawValue): \(detail)" }

    /// Classifies a handshake failure from the error queue and, on a client,
    /// the verification result.
    static func classify(entries: [OpenSSLErrorEntry], verifyResult: Int, isClient: Bool) -> TLSFailure {
        let detail = OpenSSLErrorQueue.describe(entries)
        if isClient, verifyResult != Int(X509_V_OK),
           entries.contains(where: { $0.reason == SSL_R_CERTIFICATE_VERIFY_FAILED }) {
            return TLSFailure.fromVerifyResult(verifyResult)
        }
        let reasons = Set(entries.map(\.reason))
        let versionReasons: Set<Int32> = [SSL_R_UNSUPPORTED_PROTOCOL, SSL_R_NO_PROTOCOLS_AVAILABLE,
                                          SSL_R_TLSV1_ALERT_PROTOCOL_VERSION, SSL_R_WRONG_SSL_VERSION,
                                          SSL_R_VERSION_TOO_LOW]
        if !reasons.isDisjoint(with: versionReasons) {
            return TLSFailure(kind: .protocolBelowFloor, detail: detail)
        }
        let cipherReasons: Set<Int32> = [SSL_R_NO_SHARED_CIPHER, SSL_R_NO_CIPHERS_AVAILABLE,
                                         SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE]
        if !reasons.isDisjoint(with: cipherReasons) {
            return TLSFailure(kind: .noSharedCipher, detail: detail)
        }
        if reasons.contains(SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
            return TLSFailure(kind: .noPeerCertificate, detail: detail)
        }
        return TLSFailure(kind: .protocolError, detail: detail.isEmpty ? "handshake failed" : detail)
    }

    static func fromVerifyResult(_ code: Int) -> TLSFailure {
        let text = String(cString: X509_verify_cert_error_string(code))
        if code == Int(X509_V_ERR_HOSTNAME_MISMATCH) {
            return TLSFailure(kind: .hostnameMismatch, detail: text)
        }
        return TLSFailure(kind: .certificateUntrusted, detail: text)
    }
}
