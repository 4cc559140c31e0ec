// S/MIME encryption (RFC 8551) of a whole message to its recipients'
// certificates, through OpenSSL's CMS: relayd's "stronger channel" when a
// message that must go with strong TLS cannot get it. Pure: bytes in,
// bytes out; the certificates come from SMIMECertificateDirectory.
//
// Cipher. AES-256-GCM, i.e. AuthEnvelopedData (RFC 5083, smime-type
// authEnveloped-data, RFC 8551 §3.2): authenticated, so a changed
// ciphertext is refused rather than decrypted to garbage. AES-256-CBC
// (EnvelopedData, smime-type enveloped-data) only when some recipient's
// certificate says its client cannot take GCM: it has an S/MIME
// Capabilities list that names AES-256-CBC and not AES-256-GCM. One CMS
// for all recipients of a call, so one such recipient moves all to CBC.
//
// Inside. "Content-Type: message/rfc822" CRLF CRLF, then the original
// message exactly — every header field as it came (RFC 8551 §3.1: the
// whole message wrapped, so the inner header is the true one). Encrypted
// with CMS_BINARY: no line-end translation, 8-bit bodies survive.
//
// Outside. A transport needs some header fields in the clear; everything
// else stays only inside. Kept, as the original field lines (folding
// preserved, in their order): the trace fields Received and Return-Path,
// and From, To, Cc, Date, Message-ID, In-Reply-To, References, Reply-To —
// routing, threading and display of a sender need them, and they say no
// more than the envelope already does. Subject is replaced by
// "Subject: ..." (the protected-headers convention: the real subject is
// inside) and always present. Then MIME-Version, the application/pkcs7-mime
// Content-Type with smime-type and name=smime.p7m, Content-Disposition
// attachment, base64 in 76-character CRLF lines. A kept field with a line
// over 998 octets, a NUL or a bare CR is left inside only (see
// SMIMEHeaderSection).
import COpenSSL

public enum SMIMECipher: String, Sendable, Hashable, CaseIterable {
    case aes256GCM = "aes-256-gcm"
    case aes256CBC = "aes-256-cbc"

    /// The smime-type parameter of the outer Content-Type.
    public var smimeType: String {
        switch self {
        case .aes256GCM: "authEnveloped-data"
        case .aes256CBC: "enveloped-data"
        }
    }
}

public enum SMIMEEncryption {
    /// The original fields that also stand outside the envelope (lower-cased names).
    public static let outerFields: Set<String> = [
        "received", "return-path", "from", "to", "cc", "date", "message-id", "in-reply-to", "references", "reply-to",
    ]

    /// What the inner content starts with, before the original message.
    static let innerPrefix = Array("Content-Type: message/rfc822\r\n\r\n".utf8)

    /// AES-256-GCM unless some recipient cannot take it.
    public static func cipher(for recipients: [SMIMERecipient]) -> SMIMECipher {
        recipients.contains(where: \.prefersCBC) ? .aes256CBC : .aes256GCM
    }

    /// `message`: a whole RFC 5322 message, CRLF lines (header section,
    /// blank line, body). Returns a whole RFC 5322 message: minimal outer
    /// header fields, the original message (every header field, the
    /// RFC 8551 §3.1 way: wrapped as message/rfc822) encrypted inside.
    public static func encrypt(_ message: [UInt8], to recipients: [SMIMERecipient]) throws -> [UInt8] {
        guard !recipients.isEmpty else { throw SMIMEError(.noRecipients, "encrypt") }
        let cipher = cipher(for: recipients)
        let der = try envelopedDER(innerPrefix + message, to: recipients, cipher: cipher)

        var out = SMIMEHeaderSection(message).lines(of: outerFields)
        out += Array("""
            Subject: ...\r
            MIME-Version: 1.0\r
            Content-Type: application/pkcs7-mime; smime-type=\(cipher.smimeType); name=smime.p7m\r
            Content-Disposition: attachment; filename=smime.p7m\r
            Content-Transfer-Encoding: base64\r
            \r

            """.utf8)
        out += MIMEBase64.lines(der)
        return out
    }

    /// The DER CMS ContentInfo of `content` encrypted to every recipient.
    static func envelopedDER(_ content: [UInt8], to recipients: [SMIMERecipient], cipher: SMIMECipher) throws -> [UInt8] {
        var certificates: [SMIMECertificate] = []
        for r in recipients {
            guard let cert = SMIMECertificate(pem: r.certificatePEM) else {
                throw SMIMEError(.notAPEMCertificate, r.address)
            }
            certificates.append(cert)
        }
        OpenSSLErrorQueue.clear()
        var der: UnsafeMutablePointer<UInt8>?
        let length = withExtendedLifetime(certificates) {
            let pointers: [OpaquePointer?] = certificates.map(\.pointer)
            return pointers.withUnsafeBufferPointer { certs in
                content.withUnsafeBufferPointer { data in
                    relayd_cms_encrypt_der(certs.baseAddress, Int32(certs.count), data.baseAddress, data.count,
                                           cipher == .aes256CBC ? 1 : 0, &der)
                }
            }
        }
        guard length > 0, let der else {
            let why = OpenSSLErrorQueue.describe(OpenSSLErrorQueue.drain())
            throw SMIMEError(.encryptionFailed(why.isEmpty ? "no reason given" : why), "encrypt")
        }
        defer { relayd_openssl_free(der) }
        return Array(UnsafeBufferPointer(start: der, count: length))
    }
}
