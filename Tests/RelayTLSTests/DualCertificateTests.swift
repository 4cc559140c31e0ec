import Testing
@testable import RelayModel
@testable import RelayTLS
import RelayTestSupport

/// Issue 16: "`[tls]` accepts an RSA and an ECDSA chain together. The
/// server presents ECDSA to clients that support it and RSA to the rest."
/// The server here holds rsa.pem (RSA 2048) and mx.pem (ECDSA P-256); each
/// client restricts what it can verify with its signature algorithms (and,
/// for TLS 1.2, its cipher suites), and the leaf it got is told by its key
/// digest. The digests were read from the fixtures with the openssl tool:
///   openssl x509 -in rsa.pem -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum
@Suite struct DualCertificateTests {
    static let rsaSPKI = "2cf7381fffa6ca8e0d628248ee3f42fa007c06d76d45bed811d63f3af10fdacd"
    static let ecdsaSPKI = PeerCertificateTests.mxSPKI

    static let ecdsaOnly = "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512"
    /// TLS 1.3 signs handshakes with RSA-PSS only; PKCS#1 stays for the
    /// certificate's own signature (rsa.pem is sha256WithRSAEncryption).
    static let rsaOnly = "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:RSA+SHA256:RSA+SHA384:RSA+SHA512"

    static func dualServer() throws -> TLSContext {
        try TLSContext(TLSContextConfiguration(
            role: .server, certificateChainFile: Fixtures.path("rsa.pem"), privateKeyFile: Fixtures.path("rsa.key"),
            additionalCertificates: [TLSCertificateChain(chainFile: Fixtures.path("mx.pem"), keyFile: Fixtures.path("mx.key"),
                                                         requiredKeyType: .ecdsa)]))
    }

    struct Client: Sendable, CustomTestStringConvertible {
        let name: String
        let version: TLSProtocolVersion
        let signatureAlgorithms: String?
        let cipherList: String
        let expectedLeaf: String
        let expectedCipher: String
        var testDescription: String { name }
    }

    static let clients: [Client] = [
        Client(name: "TLS 1.3 client offering only ECDSA signatures gets the ECDSA leaf", version: .tls1_3,
               signatureAlgorithms: ecdsaOnly, cipherList: TLSCipherPolicy.defaultCipherList,
               expectedLeaf: ecdsaSPKI, expectedCipher: "TLS_AES_256_GCM_SHA384"),
        Client(name: "TLS 1.3 client offering only RSA signatures gets the RSA leaf", version: .tls1_3,
               signatureAlgorithms: rsaOnly, cipherList: TLSCipherPolicy.defaultCipherList,
               expectedLeaf: rsaSPKI, expectedCipher: "TLS_AES_256_GCM_SHA384"),
        Client(name: "TLS 1.2 client with only ECDSA suites and signatures gets the ECDSA leaf", version: .tls1_2,
               signatureAlgorithms: ecdsaOnly, cipherList: "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256",
               expectedLeaf: ecdsaSPKI, expectedCipher: "ECDHE-ECDSA-AES256-GCM-SHA384"),
        Client(name: "TLS 1.2 client with only RSA suites and signatures gets the RSA leaf", version: .tls1_2,
               signatureAlgorithms: rsaOnly, cipherList: "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256",
               expectedLeaf: rsaSPKI, expectedCipher: "ECDHE-RSA-AES256-GCM-SHA384"),
        Client(name: "TLS 1.3 client offering everything gets the ECDSA leaf", version: .tls1_3,
               signatureAlgorithms: nil, cipherList: TLSCipherPolicy.defaultCipherList,
               expectedLeaf: ecdsaSPKI, expectedCipher: "TLS_AES_256_GCM_SHA384"),
        Client(name: "TLS 1.2 client offering everything gets the ECDSA leaf", version: .tls1_2,
               signatureAlgorithms: nil, cipherList: TLSCipherPolicy.defaultCipherList,
               expectedLeaf: ecdsaSPKI, expectedCipher: "ECDHE-ECDSA-AES256-GCM-SHA384"),
    ]

    @Test(arguments: clients)
    func eachClientGetsTheLeafItCanVerify(_ c: Client) throws {
        var cfg = TLSContextConfiguration(role: .client, caBundleFile: Fixtures.path("ca.pem"), minimumVersion: c.version,
                                          maximumVersion: c.version, ciphers: TLSCipherPolicy(cipherList: c.cipherList))
        cfg.signatureAlgorithms = c.signatureAlgorithms
        let server = try TLSConnection(context: Self.dualServer())
        let client = try TLSConnection(context: TLSContext(cfg), options: .init(serverName: "mx.relayd.test"))
        let outcome = TLSPump(client: client, server: server).handshake()
        #expect(outcome.client == .complete)
        #expect(outcome.server == .complete)
        #expect(client.leafPublicKeySHA256() == c.expectedLeaf)
        #expect(client.sessionInfo?.protocolVersion == c.version.name)
        #expect(client.sessionInfo?.cipher == c.expectedCipher)
    }

    @Test func aSingleRSAChainRefusesAnECDSAOnlyClient() throws {
        // The control: without the ECDSA chain the same client has nothing
        // it can verify, so the leaf above came from the second chain.
        var cfg = TLSContextConfiguration(role: .client, caBundleFile: Fixtures.path("ca.pem"), minimumVersion: .tls1_3)
        cfg.signatureAlgorithms = Self.ecdsaOnly
        let server = try TLSConnection(context: makeServerContext(cert: "rsa.pem", key: "rsa.key"))
        let client = try TLSConnection(context: TLSContext(cfg))
        let outcome = TLSPump(client: client, server: server).handshake()
        #expect(outcome.client != .complete)
    }

    // MARK: refused set-ups, each naming the chain at fault

    static func setupError(primary: (String, String), ecdsa: (String, String), required: TLSKeyType? = .ecdsa) -> TLSSetupError? {
        return #expect(throws: TLSSetupError.self) {
            try TLSContext(TLSContextConfiguration(
                role: .server, certificateChainFile: Fixtures.path(primary.0), privateKeyFile: Fixtures.path(primary.1),
                additionalCertificates: [TLSCertificateChain(chainFile: Fixtures.path(ecdsa.0), keyFile: Fixtures.path(ecdsa.1),
                                                             requiredKeyType: required)]))
        }
    }

    @Test func twoChainsOfOneKeyTypeAreRefused() {
        let error = Self.setupError(primary: ("selfsigned.pem", "selfsigned.key"), ecdsa: ("mx.pem", "mx.key"))
        #expect(error?.chain == 1)
        #expect(error?.message == "certificate chains \(Fixtures.path("selfsigned.pem")) and \(Fixtures.path("mx.pem")) both "
                + "have ECDSA keys; the second would replace the first (dual certificates are one RSA and one ECDSA chain)")
        // Without a required type too: OpenSSL would silently keep only the second.
        let untyped = Self.setupError(primary: ("selfsigned.pem", "selfsigned.key"), ecdsa: ("mx.pem", "mx.key"), required: nil)
        #expect(untyped?.message.contains("both have ECDSA keys") == true)
    }

    @Test func theECDSAChainMustBeECDSA() {
        let error = Self.setupError(primary: ("mx.pem", "mx.key"), ecdsa: ("rsa.pem", "rsa.key"))
        #expect(error?.chain == 1)
        #expect(error?.message == "certificate chain \(Fixtures.path("rsa.pem")) has an RSA key; this chain must be ECDSA")
    }

    @Test func anECDSAChainWithAnotherECDSAKeyIsRefused() {
        let error = Self.setupError(primary: ("rsa.pem", "rsa.key"), ecdsa: ("mx.pem", "selfsigned.key"))
        #expect(error?.chain == 1)
        #expect(error?.message == "key mismatch: private key \(Fixtures.path("selfsigned.key")) does not belong to certificate "
                + "chain \(Fixtures.path("mx.pem")) (another ECDSA key than the certificate's)")
    }

    @Test func anECDSAChainWithTheRSAKeyIsRefused() {
        // OpenSSL files a key under its own type: unchecked, the RSA key
        // would have been taken as the first chain's.
        let error = Self.setupError(primary: ("rsa.pem", "rsa.key"), ecdsa: ("mx.pem", "rsa.key"))
        #expect(error?.chain == 1)
        #expect(error?.message == "key mismatch: private key \(Fixtures.path("rsa.key")) does not belong to certificate "
                + "chain \(Fixtures.path("mx.pem")) (an RSA key, the certificate has an ECDSA one)")
    }

    @Test func aMismatchInTheFirstChainNamesTheFirstChain() {
        let error = Self.setupError(primary: ("rsa.pem", "mx.key"), ecdsa: ("mx.pem", "mx.key"))
        #expect(error?.chain == 0)
        #expect(error?.message.hasPrefix("key mismatch: private key \(Fixtures.path("mx.key"))") == true)
    }
}
