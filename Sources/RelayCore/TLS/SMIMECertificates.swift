// Recipient certificates for S/MIME encryption (RFC 8551), the "stronger
// channel" relayd may use when a message that must go with strong TLS
// cannot get it.
//
// The operator keeps one PEM file per recipient address in a directory,
// named "<local>@<domain>.pem". The domain is case-insensitive, so it is
// always lower-cased; the local part is, by RFC 5321, case-sensitive, so
// the name as given is tried first and the lower-cased one second (what an
// operator would most likely have saved). No certificate is not an error
// (nil): the caller then knows this recipient cannot be encrypted to. A file
// that is there but unusable is an error with the precise reason, because
// the operator meant it to work.
//
// "Usable" is judged here once, so encryption never meets a surprise: a PEM
// certificate (the first one in the file), valid at `now`, with a key CMS
// can encrypt to, and — when keyUsage is present — keyEncipherment for an
// RSA key, keyAgreement for an EC key (RFC 8550 §4.4.2). Not judged: the
// chain or trust. The operator placing the file is the trust decision.
//
// The X509* lives in one SMIMECertificate, freed in its deinit; a
// recipient keeps only the PEM bytes and the facts read from them, so it
// is a plain Sendable value that crosses queues.
import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// One parsed certificate, the only owner of its X509*. Never leaves RelayTLS.
final class SMIMECertificate {
    let pointer: OpaquePointer

    init?(pem: [UInt8]) {
        guard let cert = pem.withUnsafeBufferPointer({ relayd_x509_from_pem($0.baseAddress, $0.count) }) else {
            OpenSSLErrorQueue.clear()
            return nil
        }
        pointer = cert
    }

    deinit { X509_free(pointer) }
}

public struct SMIMERecipient: Sendable {
    public let address: String
    public let certificatePEM: [UInt8]
    /// Validity, seconds since the epoch (UTC).
    public let notBefore: Int
    public let notAfter: Int
    /// The AES-256 content ciphers the certificate's S/MIME Capabilities
    /// extension names; nil when it has no such extension.
    public let capabilities: Set<SMIMECipher>?
    /// The capability list exists and names AES-256-CBC but not AES-256-GCM:
    /// this recipient's client says it cannot take AuthEnvelopedData.
    public let prefersCBC: Bool

    /// Reads and judges a certificate; `source` names it in errors (the
    /// file path), the address when nil.
    public init(address: String, certificatePEM: [UInt8], now: Int, source: String? = nil) throws {
        let subject = source ?? address
        guard let cert = SMIMECertificate(pem: certificatePEM) else {
            throw SMIMEError(.notAPEMCertificate, subject)
        }
        var before: Int64 = 0, after: Int64 = 0
        guard relayd_x509_validity(cert.pointer, 0, &before) == 1, relayd_x509_validity(cert.pointer, 1, &after) == 1 else {
            throw SMIMEError(.unreadableValidity, subject)
        }
        guard now >= Int(before) else { throw SMIMEError(.notYetValid(notBefore: Int(before), now: now), subject) }
        guard now <= Int(after) else { throw SMIMEError(.expired(notAfter: Int(after), now: now), subject) }

        let keyKind = relayd_x509_cms_key_kind(cert.pointer)
        guard keyKind == 1 || keyKind == 2 else { throw SMIMEError(.unsupportedKeyType, subject) }
        let usage = relayd_x509_key_usage(cert.pointer)
        guard usage != -2 else {
            OpenSSLErrorQueue.clear()
            throw SMIMEError(.malformedExtensions, subject)
        }
        if usage >= 0 {
            let (bit, name) = keyKind == 1 ? (Int(KU_KEY_ENCIPHERMENT), "keyEncipherment") : (Int(KU_KEY_AGREEMENT), "keyAgreement")
            guard Int(usage) & bit != 0 else { throw SMIMEError(.keyUsageForbidsEncryption(needed: name), subject) }
        }

        let caps = relayd_x509_smime_caps(cert.pointer)
        guard caps != -2 else {
            OpenSSLErrorQueue.clear()
            throw SMIMEError(.malformedCapabilities, subject)
        }
        var listed: Set<SMIMECipher>?
        if caps >= 0 {
            var set = Set<SMIMECipher>()
            if caps & 1 != 0 { set.insert(.aes256GCM) }
            if caps & 2 != 0 { set.insert(.aes256CBC) }
            listed = set
        }

        self.address = address
        self.certificatePEM = certificatePEM
        self.notBefore = Int(before)
        self.notAfter = Int(after)
        self.capabilities = listed
        self.prefersCBC = listed.map { $0.contains(.aes256CBC) && !$0.contains(.aes256GCM) } ?? false
    }
}

public struct SMIMECertificateDirectory: Sendable {
    public let path: String
    /// A certificate file larger than this is refused unread.
    static let maximumFileSize = 1 << 20

    public init(path: String) {
        self.path = path
    }

    /// The certificate for `address` (file "<local>@<domain>.pem", domain
    /// lower-cased, local part as given and then lower-cased as a second
    /// try); nil when none; throws when the file exists but is not a usable
    /// PEM certificate (expired, not yet valid, or without
    /// keyEncipherment/keyAgreement where keyUsage is present), with a
    /// precise reason.
    public func recipient(for address: String, now: Int) throws -> SMIMERecipient? {
        for name in try Self.fileNames(for: address) {
            let file = path.hasSuffix("/") ? path + name : path + "/" + name
            guard let pem = try Self.contents(of: file) else { continue }
            return try SMIMERecipient(address: address, certificatePEM: pem, now: now, source: file)
        }
        return nil
    }

    /// The file names to try, in order.
    static func fileNames(for address: String) throws -> [String] {
        guard let at = address.lastIndex(of: "@") else { throw SMIMEError(.invalidAddress, address) }
        let local = String(address[..<at])
        let domain = String(address[address.index(after: at)...]).lowercased()
        guard !local.isEmpty, !domain.isEmpty,
              !address.utf8.contains(where: { $0 == UInt8(ascii: "/") || $0 == 0 }) else {
            throw SMIMEError(.invalidAddress, address)
        }
        let exact = "\(local)@\(domain).pem"
        let lower = "\(local.lowercased())@\(domain).pem"
        return exact == lower ? [exact] : [exact, lower]
    }

    /// The file's bytes; nil when it does not exist.
    static func contents(of file: String) throws -> [UInt8]? {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            if e == ENOENT { return nil }
            throw SMIMEError(.unreadable(errno: e), file)
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                throw SMIMEError(.unreadable(errno: e), file)
            }
            if n == 0 { return bytes }
            bytes += chunk[0..<n]
            if bytes.count > maximumFileSize { throw SMIMEError(.fileTooLarge(bytes: bytes.count), file) }
        }
    }
}
