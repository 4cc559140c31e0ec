// Turning OpenSSL's error queue and verify results into TLSFailure.
import RelayModel
import COpenSSL

extension TLSFailure {
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
        if code == Int(X509_V_ERR_HOSTNAME_MISMATCH) || code == Int(X509_V_ERR_IP_ADDRESS_MISMATCH) {
            return TLSFailure(kind: .hostnameMismatch, detail: text)
        }
        if code == Int(X509_V_ERR_DANE_NO_MATCH) {
            return TLSFailure(kind: .daneNoMatch, detail: text)
        }
        return TLSFailure(kind: .certificateUntrusted, detail: text)
    }
}
