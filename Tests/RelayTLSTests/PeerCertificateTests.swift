import Testing
@testable import RelayModel
@testable import RelayTLS
import RelayTestSupport

/// What a client learns about the server's certificates: names, validity and
/// the DANE form of the key. The expected values were read from the fixtures
/// with the openssl tool, not with this code:
///   openssl x509 -in mx.pem -noout -dates -ext subjectAltName
///   openssl x509 -in mx.pem -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum
@Suite struct PeerCertificateTests {
    static let mxSPKI = "d3a05d76563079aacc05979751043381f6ed3007ef2cd97d869ec32f870b8f04"
    static let selfSignedSPKI = "c0e94e5e78de59cb347f0f5f51f62bac0138e9d2910bfc475c2ed0fff9efadcb"
    /// Nov 29 07:36:13 2026 GMT and Nov 5 07:36:13 2126 GMT.
    static let notBefore = 1_795_937_773
    static let notAfter = 4_949_537_773

    func handshake(cert: String, key: String) throws -> TLSConnection {
        let server = try TLSConnection(context: makeServerContext(cert: cert, key: key))
        let client = try TLSConnection(context: makeClientContext(),
                                       options: .init(serverName: "mx.relayd.test", expectedHostname: "mx.relayd.test"))
        #expect(client.leafPublicKeySHA256() == nil, "no digest before the handshake")
        let outcome = TLSPump(client: client, server: server).handshake()
        #expect(outcome.client == .complete)
        return client
    }

    @Test func leafCarriesNamesValidityAndKeyDigest() throws {
        let client = try handshake(cert: "mx.pem", key: "mx.key")
        let leaf = try #require(client.peerCertificates().first)
        #expect(leaf.subject == "CN=mx.relayd.test")
        #expect(leaf.dnsNames == ["mx.relayd.test", "localhost"], "the IP entry is not a DNS name")
        #expect(leaf.notBefore == Self.notBefore)
        #expect(leaf.notAfter == Self.notAfter)
        #expect(leaf.publicKeySHA256 == Self.mxSPKI)
        #expect(client.leafPublicKeySHA256() == Self.mxSPKI)
    }

    @Test func selfSignedLeafIsDescribedAndUntrusted() throws {
        let client = try handshake(cert: "selfsigned.pem", key: "selfsigned.key")
        let leaf = try #require(client.peerCertificates().first)
        #expect(leaf.dnsNames == ["mx.relayd.test"])
        #expect(leaf.publicKeySHA256 == Self.selfSignedSPKI)
        #expect(client.leafPublicKeySHA256() == Self.selfSignedSPKI)
        if case .failed(let f) = client.sessionInfo?.verification {
            #expect(f.kind == .certificateUntrusted)
        } else {
            Issue.record("a self-signed certificate verified: \(String(describing: client.sessionInfo?.verification))")
        }
    }

    @Test func serverSideHasNoLeafDigest() throws {
        let server = try TLSConnection(context: makeServerContext())
        let client = try TLSConnection(context: makeClientContext())
        _ = TLSPump(client: client, server: server).handshake()
        #expect(server.leafPublicKeySHA256() == nil)
    }
}
