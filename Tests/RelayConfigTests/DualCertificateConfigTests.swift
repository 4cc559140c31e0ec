import Foundation
import Testing
@testable import RelayTLS
@testable import RelayConfig
import RelayTestSupport

/// `[tls]` with an RSA chain (certificate, key) and an ECDSA chain
/// (ec_certificate, ec_key), as Postfix's smtpd_tls_cert_file and
/// smtpd_tls_eccert_file: check-config loads both and refuses, at the
/// ECDSA chain's key, a key that is not its certificate's, a chain of the
/// wrong type and two chains of one type.
@Suite struct DualCertificateConfigTests {
    static func text(certificate: String = "rsa.pem", key: String = "rsa.key", ecdsa: String) -> String {
        """
        [server]
        hostname = "relay.example.test"
        spool_dir = "/nonexistent/spool"
        [[listener]]
        address = "127.0.0.1:2525"
        kind = "smtp"
        [tls]
        certificate = "\(Fixtures.path(certificate))"
        key = "\(Fixtures.path(key))"
        \(ecdsa)
        """
    }

    static func pair(_ cert: String, _ key: String) -> String {
        "ec_certificate = \"\(Fixtures.path(cert))\"\nec_key = \"\(Fixtures.path(key))\""
    }

    static func errors(_ text: String) -> [ConfigError] {
        do {
            _ = try ConfigLoader.parse(text, file: "/nonexistent/relayd.conf")
            Issue.record("config was accepted")
            return []
        } catch let e as ConfigErrors {
            return e.errors
        } catch {
            Issue.record("unexpected error \(error)")
            return []
        }
    }

    @Test func anRSAAndAnECDSAChainAreAccepted() throws {
        let config = try ConfigLoader.parse(Self.text(ecdsa: Self.pair("mx.pem", "mx.key")), file: "/nonexistent/relayd.conf")
        #expect(config.tls.certificateFile == Fixtures.path("rsa.pem"))
        #expect(config.tls.ecCertificateFile == Fixtures.path("mx.pem"))
        #expect(config.tls.ecKeyFile == Fixtures.path("mx.key"))
        #expect(config.tls.additionalCertificates == [TLSCertificateChain(chainFile: Fixtures.path("mx.pem"),
                                                                          keyFile: Fixtures.path("mx.key"),
                                                                          requiredKeyType: .ecdsa)])
    }

    @Test func oneChainStaysTheDefault() throws {
        let config = try ConfigLoader.parse(Self.text(ecdsa: ""), file: "/nonexistent/relayd.conf")
        #expect(config.tls.ecCertificateFile == nil)
        #expect(config.tls.additionalCertificates.isEmpty)
    }

    @Test func aMismatchedECDSAKeyIsRefusedAtTheECDSAChain() {
        let errs = Self.errors(Self.text(ecdsa: Self.pair("mx.pem", "selfsigned.key")))
        #expect(errs.count == 1, "\(errs)")
        #expect(errs.first?.key == "tls.ec_certificate")
        #expect(errs.first?.line == 10)
        #expect(errs.first?.message == "TLS setup fails: key mismatch: private key \(Fixtures.path("selfsigned.key")) does not "
                + "belong to certificate chain \(Fixtures.path("mx.pem")) (another ECDSA key than the certificate's)")
    }

    @Test func theRSAKeyGivenForTheECDSAChainIsRefused() {
        let errs = Self.errors(Self.text(ecdsa: Self.pair("mx.pem", "rsa.key")))
        #expect(errs.first?.key == "tls.ec_certificate")
        #expect(errs.first?.message.hasSuffix("(an RSA key, the certificate has an ECDSA one)") == true, "\(errs)")
    }

    @Test func twoECDSAChainsAreRefused() {
        let errs = Self.errors(Self.text(certificate: "selfsigned.pem", key: "selfsigned.key", ecdsa: Self.pair("mx.pem", "mx.key")))
        #expect(errs.count == 1, "\(errs)")
        #expect(errs.first?.key == "tls.ec_certificate")
        #expect(errs.first?.message == "TLS setup fails: certificate chains \(Fixtures.path("selfsigned.pem")) and "
                + "\(Fixtures.path("mx.pem")) both have ECDSA keys; the second would replace the first "
                + "(dual certificates are one RSA and one ECDSA chain)")
    }

    @Test func anRSAChainAsTheECDSAOneIsRefused() {
        let errs = Self.errors(Self.text(certificate: "mx.pem", key: "mx.key", ecdsa: Self.pair("rsa.pem", "rsa.key")))
        #expect(errs.first?.key == "tls.ec_certificate")
        #expect(errs.first?.message == "TLS setup fails: certificate chain \(Fixtures.path("rsa.pem")) has an RSA key; "
                + "this chain must be ECDSA")
    }

    @Test func aMismatchInTheRSAChainIsStillReportedAtCertificate() {
        let errs = Self.errors(Self.text(key: "mx.key", ecdsa: Self.pair("mx.pem", "mx.key")))
        #expect(errs.first?.key == "tls.certificate")
        #expect(errs.first?.message.contains("key mismatch: private key \(Fixtures.path("mx.key"))") == true, "\(errs)")
    }

    @Test func halfAPairIsRefused() {
        let noKey = Self.errors(Self.text(ecdsa: "ec_certificate = \"\(Fixtures.path("mx.pem"))\""))
        #expect(noKey.map(\.key) == ["tls.ec_key"])
        #expect(noKey.first?.message == "required with ec_certificate (the ECDSA chain's private key)")
        let noCert = Self.errors(Self.text(ecdsa: "ec_key = \"\(Fixtures.path("mx.key"))\""))
        #expect(noCert.map(\.key) == ["tls.ec_certificate"])
        #expect(noCert.first?.message == "required with ec_key (the ECDSA certificate chain)")
    }

    @Test func aMissingECDSAFileIsNamed() {
        let errs = Self.errors(Self.text(ecdsa: Self.pair("nonexistent-ec.pem", "mx.key")))
        #expect(errs.first?.key == "tls.ec_certificate")
        #expect(errs.first?.message.contains("nonexistent-ec.pem") == true, "\(errs)")
    }
}
