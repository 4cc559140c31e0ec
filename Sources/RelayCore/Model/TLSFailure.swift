// Why a TLS handshake or session failed, in the vocabulary the delivery log
// and DSNs use. A plain value in Model/ so the sans-IO SMTP client can carry
// it; TLS/ fills it from OpenSSL (TLSFailure+OpenSSL.swift).

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
        /// DANE: no TLSA record matches what the server presented.
        case daneNoMatch = "dane-no-match"
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
}
