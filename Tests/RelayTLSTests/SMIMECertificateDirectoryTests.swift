// The recipient certificate directory: file names from addresses (domain
// lower-cased; local part as given, then lower-cased), nil for no file, and
// a precise error for a file that is there but unusable.
import Foundation
import Testing
@testable import RelayTLS

private let now = Int(Date().timeIntervalSince1970)

@Suite struct SMIMECertificateDirectoryTests {
    func directory() throws -> SMIMECertificateDirectory {
        SMIMECertificateDirectory(path: try SMIMEFixtures.get().certificates)
    }

    @Test func mixedCaseAddressFindsTheLowerCasedFile() throws {
        let r = try #require(try directory().recipient(for: "Dr.Smith@Partner.Example", now: now))
        #expect(r.address == "Dr.Smith@Partner.Example")
        let file = try Data(contentsOf: URL(fileURLWithPath: "\(try SMIMEFixtures.get().certificates)/dr.smith@partner.example.pem"))
        #expect(r.certificatePEM == Array(file))
    }

    @Test func theLocalPartAsGivenIsTriedFirst() throws {
        let fixtures = try SMIMEFixtures.get()
        let dir = fixtures.root + "/case-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        let rsa = try Data(contentsOf: URL(fileURLWithPath: fixtures.party(SMIMEFixtures.rsa).certificate))
        let ec = try Data(contentsOf: URL(fileURLWithPath: fixtures.party(SMIMEFixtures.ec).certificate))
        try rsa.write(to: URL(fileURLWithPath: dir + "/Grace@case.example.pem"))
        try ec.write(to: URL(fileURLWithPath: dir + "/grace@case.example.pem"))
        let directory = SMIMECertificateDirectory(path: dir + "/")
        #expect(try directory.recipient(for: "Grace@CASE.Example", now: now)?.certificatePEM == Array(rsa))
        #expect(try directory.recipient(for: "GRACE@case.example", now: now)?.certificatePEM == Array(ec))
        #expect(try directory.recipient(for: "grace@case.example", now: now)?.certificatePEM == Array(ec))
        #expect(try directory.recipient(for: "henry@case.example", now: now) == nil)
    }

    @Test func noFileIsNoRecipient() throws {
        #expect(try directory().recipient(for: "nobody@nowhere.example", now: now) == nil)
        #expect(try SMIMECertificateDirectory(path: "/nonexistent/dir").recipient(for: "a@b.example", now: now) == nil)
    }

    @Test func capabilitiesAreRead() throws {
        let dir = try directory()
        let plain = try #require(try dir.recipient(for: SMIMEFixtures.rsa, now: now))
        #expect(plain.capabilities == nil)
        #expect(!plain.prefersCBC)
        let cbc = try #require(try dir.recipient(for: SMIMEFixtures.cbcOnly, now: now))
        #expect(cbc.capabilities == [.aes256CBC])
        #expect(cbc.prefersCBC)
        let both = try #require(try dir.recipient(for: SMIMEFixtures.gcmAndCBC, now: now))
        #expect(both.capabilities == [.aes256GCM, .aes256CBC])
        #expect(!both.prefersCBC)
        #expect(plain.notAfter - plain.notBefore == 30 * 86400)
    }

    enum When: Sendable { case now, afterNotAfter, beforeNotBefore }

    struct Refusal: Sendable, CustomTestStringConvertible {
        let address: String
        let when: When
        /// The reason's case, and words its description must hold.
        let reason: String
        let words: String
        var testDescription: String { "\(address) \(when) → \(reason)" }
    }

    static let refusals: [Refusal] = [
        Refusal(address: SMIMEFixtures.garbage, when: .now, reason: "notAPEMCertificate", words: "holds no PEM certificate"),
        Refusal(address: SMIMEFixtures.rsa, when: .afterNotAfter, reason: "expired", words: "certificate has expired"),
        Refusal(address: SMIMEFixtures.rsa, when: .beforeNotBefore, reason: "notYetValid", words: "not yet valid"),
        Refusal(address: SMIMEFixtures.signOnly, when: .now, reason: "keyUsageForbidsEncryption",
                words: "keyUsage lacks keyEncipherment"),
        Refusal(address: SMIMEFixtures.ecEncipherOnly, when: .now, reason: "keyUsageForbidsEncryption",
                words: "keyUsage lacks keyAgreement"),
        Refusal(address: SMIMEFixtures.badCapabilities, when: .now, reason: "malformedCapabilities",
                words: "S/MIME Capabilities extension is malformed"),
        Refusal(address: SMIMEFixtures.badKeyUsage, when: .now, reason: "malformedExtensions",
                words: "extension that cannot be decoded"),
        Refusal(address: "no-at-sign", when: .now, reason: "invalidAddress", words: "no-at-sign: not an address"),
        Refusal(address: "@example.org", when: .now, reason: "invalidAddress", words: "not an address"),
        Refusal(address: "a@", when: .now, reason: "invalidAddress", words: "not an address"),
        Refusal(address: "../../etc/x@example.org", when: .now, reason: "invalidAddress", words: "not an address"),
    ]

    @Test(arguments: refusals)
    func unusableFilesAreRefusedWithTheReason(_ r: Refusal) throws {
        let dir = try directory()
        var at = now
        if r.when != .now {
            let good = try #require(try dir.recipient(for: r.address, now: now))
            at = r.when == .afterNotAfter ? good.notAfter + 1 : good.notBefore - 1
        }
        do {
            _ = try dir.recipient(for: r.address, now: at)
            Issue.record("\(r.address) accepted")
        } catch let error as SMIMEError {
            #expect("\(error.reason)".hasPrefix(r.reason), "\(error)")
            #expect(error.description.contains(r.words), "\(error)")
            if r.reason != "invalidAddress" {
                #expect(error.subject.hasSuffix("/\(r.address).pem"), "the error names the file: \(error.subject)")
            }
        }
    }

    @Test func theLastMomentsOfValidityCount() throws {
        let dir = try directory()
        let good = try #require(try dir.recipient(for: SMIMEFixtures.rsa, now: now))
        #expect(try dir.recipient(for: SMIMEFixtures.rsa, now: good.notAfter) != nil)
        #expect(try dir.recipient(for: SMIMEFixtures.rsa, now: good.notBefore) != nil)
    }
}
