// S/MIME encryption judged by the openssl tool: each recipient decrypts the
// message to exactly "Content-Type: message/rfc822" CRLF CRLF + the
// original; the CMS content-encryption algorithm and the outer smime-type
// agree (GCM unless a recipient's capabilities say CBC only); the outer
// header is exactly the kept fields, "Subject: ..." and the MIME fields.
import Foundation
import Testing
@testable import RelayTLS

private let now = Int(Date().timeIntervalSince1970)

private func recipient(_ address: String) throws -> SMIMERecipient {
    let fixtures = try SMIMEFixtures.get()
    return try #require(try SMIMECertificateDirectory(path: fixtures.certificates).recipient(for: address, now: now))
}

/// The outer message split at its first CRLF CRLF.
private func split(_ message: [UInt8]) -> (header: String, body: String) {
    let text = String(decoding: message, as: UTF8.self)
    guard let r = text.range(of: "\r\n\r\n") else { return (text, "") }
    return (String(text[..<r.upperBound]), String(text[r.upperBound...]))
}

private let original: [UInt8] = Array("""
    Received: from submit.example.org (submit.example.org [192.0.2.1])\r
    \tby relay.example.net with ESMTPS id 4F2A; Tue, 1 Dec 2026 10:00:00 +0000\r
    Return-Path: <sender@example.org>\r
    From: Sender <sender@example.org>\r
    To: alice@rsa.example,\r
     bob@ec.example\r
    Cc: carol@cbc.example\r
    Subject: Quarterly numbers, confidential\r
    Date: Tue, 1 Dec 2026 10:00:00 +0000\r
    Message-ID: <q4.1@example.org>\r
    In-Reply-To: <q3.9@example.org>\r
    References: <q3.1@example.org>\r
     <q3.9@example.org>\r
    Reply-To: finance@example.org\r
    X-Internal-Project: Bluebird\r
    MIME-Version: 1.0\r
    Content-Type: text/plain; charset=utf-8\r
    Content-Transfer-Encoding: 8bit\r
    \r
    Grüße — the numbers are in.\r
    From here on, 8-bit and a dot line:\r
    .\r

    """.utf8) + (128...255).map { UInt8($0) } + [13, 10]

private func expectedOuterHeader(_ smimeType: String) -> String {
    """
    Received: from submit.example.org (submit.example.org [192.0.2.1])\r
    \tby relay.example.net with ESMTPS id 4F2A; Tue, 1 Dec 2026 10:00:00 +0000\r
    Return-Path: <sender@example.org>\r
    From: Sender <sender@example.org>\r
    To: alice@rsa.example,\r
     bob@ec.example\r
    Cc: carol@cbc.example\r
    Date: Tue, 1 Dec 2026 10:00:00 +0000\r
    Message-ID: <q4.1@example.org>\r
    In-Reply-To: <q3.9@example.org>\r
    References: <q3.1@example.org>\r
     <q3.9@example.org>\r
    Reply-To: finance@example.org\r
    Subject: ...\r
    MIME-Version: 1.0\r
    Content-Type: application/pkcs7-mime; smime-type=\(smimeType); name=smime.p7m\r
    Content-Disposition: attachment; filename=smime.p7m\r
    Content-Transfer-Encoding: base64\r
    \r

    """
}

@Suite struct SMIMEEncryptionTests {
    struct CipherCase: Sendable, CustomTestStringConvertible {
        let recipients: [String]
        let cipher: SMIMECipher
        var testDescription: String { "\(recipients.joined(separator: " + ")) → \(cipher.rawValue)" }
    }

    static let cipherCases: [CipherCase] = [
        CipherCase(recipients: [SMIMEFixtures.rsa], cipher: .aes256GCM),
        CipherCase(recipients: [SMIMEFixtures.ec], cipher: .aes256GCM),
        CipherCase(recipients: [SMIMEFixtures.gcmAndCBC], cipher: .aes256GCM),
        CipherCase(recipients: [SMIMEFixtures.cbcOnly], cipher: .aes256CBC),
        CipherCase(recipients: [SMIMEFixtures.rsa, SMIMEFixtures.ec], cipher: .aes256GCM),
        CipherCase(recipients: [SMIMEFixtures.ec, SMIMEFixtures.cbcOnly], cipher: .aes256CBC),
    ]

    @Test(arguments: cipherCases)
    func everyRecipientDecryptsTheWrappedOriginal(_ c: CipherCase) throws {
        let fixtures = try SMIMEFixtures.get()
        let recipients = try c.recipients.map(recipient)
        #expect(SMIMEEncryption.cipher(for: recipients) == c.cipher)
        let encrypted = try SMIMEEncryption.encrypt(original, to: recipients)

        let (header, body) = split(encrypted)
        #expect(header == expectedOuterHeader(c.cipher.smimeType))
        let bodyLines = body.components(separatedBy: "\r\n")
        #expect(bodyLines.last == "", "the body ends with CRLF")
        #expect(bodyLines.dropLast(2).allSatisfy { $0.count == 76 }, "base64 in lines of 76")
        #expect(bodyLines.dropLast().allSatisfy { !$0.isEmpty && $0.count <= 76 })

        let printed = try fixtures.printed(encrypted)
        switch c.cipher {
        case .aes256GCM:
            #expect(printed.contains("contentType: id-smime-ct-authEnvelopedData"))
            #expect(printed.contains("algorithm: aes-256-gcm"))
            #expect(!printed.contains("aes-256-cbc"))
        case .aes256CBC:
            #expect(printed.contains("contentType: pkcs7-envelopedData"))
            #expect(printed.contains("algorithm: aes-256-cbc"))
            #expect(!printed.contains("aes-256-gcm"))
        }

        for address in c.recipients {
            let decrypted = try fixtures.decrypt(encrypted, as: fixtures.party(address))
            #expect(decrypted == Array("Content-Type: message/rfc822\r\n\r\n".utf8) + original, "recipient \(address)")
        }
    }

    @Test func anotherKeyCannotDecrypt() throws {
        let fixtures = try SMIMEFixtures.get()
        let encrypted = try SMIMEEncryption.encrypt(original, to: [recipient(SMIMEFixtures.rsa)])
        #expect(try fixtures.decrypt(encrypted, as: fixtures.party(SMIMEFixtures.smith)) == nil)
    }

    @Test func noRecipientsIsAnError() {
        #expect(throws: SMIMEError(.noRecipients, "encrypt")) { try SMIMEEncryption.encrypt(original, to: []) }
    }

    /// A recipient value is only made by its throwing init, so encrypt
    /// never meets a broken PEM; the init refuses a truncated one.
    @Test func aTruncatedCertificateMakesNoRecipient() throws {
        let bad = try recipient(SMIMEFixtures.rsa)
        #expect(throws: SMIMEError(.notAPEMCertificate, bad.address)) {
            try SMIMERecipient(address: bad.address, certificatePEM: Array(bad.certificatePEM.prefix(100)), now: now)
        }
    }

    struct Hostile: Sendable, CustomTestStringConvertible {
        let name: String
        let message: [UInt8]
        /// The kept fields that must appear outside, in order.
        let outside: [String]
        var testDescription: String { name }
    }

    static let hostile: [Hostile] = [
        Hostile(name: "0 bytes", message: [], outside: []),
        Hostile(name: "no separator", message: Array("From: a@example.org\r\nTo: b@example.org\r\nSubject: x".utf8),
                outside: ["From: a@example.org", "To: b@example.org"]),
        Hostile(name: "bare LF", message: Array("From: a@example.org\nX-A: 1\nTo: b@example.org,\n c@example.org\n\nbody\n".utf8),
                outside: ["From: a@example.org", "To: b@example.org,", " c@example.org"]),
        Hostile(name: "1 MiB header line",
                message: Array("From: a@example.org\r\nTo: ".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 1 << 20)
                    + Array("\r\n\r\nbody\r\n".utf8),
                outside: ["From: a@example.org"]),
        Hostile(name: "only a blank line", message: Array("\r\n".utf8), outside: []),
        Hostile(name: "continuation first, no colon, lone CR",
                message: Array(" orphan\r\nnot a field\r\nDate: x\ry\r\nCc: c@example.org\r\n\r\n".utf8),
                outside: ["Cc: c@example.org"]),
        Hostile(name: "body looks like header", message: Array("\r\nFrom: a@example.org\r\n".utf8), outside: []),
    ]

    @Test(arguments: hostile)
    func hostileMessagesAreEncryptedWhole(_ h: Hostile) throws {
        let fixtures = try SMIMEFixtures.get()
        let encrypted = try SMIMEEncryption.encrypt(h.message, to: [recipient(SMIMEFixtures.rsa)])
        let (header, _) = split(encrypted)
        let lines = header.components(separatedBy: "\r\n")
        let subject = try #require(lines.firstIndex(of: "Subject: ..."))
        #expect(Array(lines[..<subject]) == h.outside)
        let bytes = Array(header.utf8)
        #expect(bytes.indices.allSatisfy { bytes[$0] != 10 || ($0 > 0 && bytes[$0 - 1] == 13) }, "no bare LF outside")
        let decrypted = try fixtures.decrypt(encrypted, as: fixtures.party(SMIMEFixtures.rsa))
        #expect(decrypted == Array("Content-Type: message/rfc822\r\n\r\n".utf8) + h.message)
    }
}
