// Why S/MIME encryption to a recipient cannot go ahead. One reason per
// case, so the caller (delivery, deciding whether the "stronger channel" is
// open for a message) can log exactly what was wrong with which file, and a
// test can tell an expired certificate from a garbage file.
public struct SMIMEError: Error, Equatable, CustomStringConvertible {
    public enum Reason: Equatable, Sendable {
        /// The address has no '@', an empty local part or domain, or a byte
        /// that cannot be part of a file name ('/' or NUL).
        case invalidAddress
        /// The file exists but could not be read (errno).
        case unreadable(errno: Int32)
        /// Larger than any certificate file relayd will read.
        case fileTooLarge(bytes: Int)
        /// No PEM "CERTIFICATE" block OpenSSL can decode.
        case notAPEMCertificate
        /// Dates in the certificate that OpenSSL cannot read.
        case unreadableValidity
        case notYetValid(notBefore: Int, now: Int)
        case expired(notAfter: Int, now: Int)
        /// keyUsage is present and names neither keyEncipherment (RSA) nor
        /// keyAgreement (EC), whichever the key needs.
        case keyUsageForbidsEncryption(needed: String)
        /// An extension OpenSSL cannot decode (keyUsage would then read as absent).
        case malformedExtensions
        /// A public key CMS cannot encrypt to (neither RSA nor EC/X25519/X448).
        case unsupportedKeyType
        /// The S/MIME Capabilities extension is present but not DER we can read.
        case malformedCapabilities
        /// encrypt was called with no recipient.
        case noRecipients
        /// OpenSSL's CMS_encrypt failed; its error queue's reasons.
        case encryptionFailed(String)
    }

    public let reason: Reason
    /// What the reason is about: a file path, an address, or "encrypt".
    public let subject: String

    public init(_ reason: Reason, _ subject: String) {
        self.reason = reason
        self.subject = subject
    }

    public var description: String {
        let why: String
        switch reason {
        case .invalidAddress: why = "not an address a certificate file can be named after"
        case .unreadable(let e): why = "cannot be read (errno \(e))"
        case .fileTooLarge(let n): why = "is \(n) bytes, more than a certificate file may be"
        case .notAPEMCertificate: why = "holds no PEM certificate"
        case .unreadableValidity: why = "certificate validity dates cannot be read"
        case .notYetValid(let nb, let now): why = "certificate is not yet valid (notBefore \(nb), now \(now))"
        case .expired(let na, let now): why = "certificate has expired (notAfter \(na), now \(now))"
        case .keyUsageForbidsEncryption(let needed): why = "certificate keyUsage lacks \(needed)"
        case .malformedExtensions: why = "certificate has an extension that cannot be decoded"
        case .unsupportedKeyType: why = "certificate key is neither RSA nor EC/X25519/X448"
        case .malformedCapabilities: why = "certificate S/MIME Capabilities extension is malformed"
        case .noRecipients: why = "no recipients"
        case .encryptionFailed(let s): why = "CMS encryption failed: \(s)"
        }
        return "\(subject): \(why)"
    }
}
