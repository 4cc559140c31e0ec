// DANE (RFC 7672) through OpenSSL, on in-memory handshakes: a DANE-EE(3)
// record authenticates the server by its key alone — whatever its name,
// issuer or dates —, a record that matches nothing fails the handshake
// with dane-no-match, and the session says which record matched.
import Testing
@testable import RelayModel
@testable import RelayTLS
import RelayTestSupport

private func bytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = hex.makeIterator()
    while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
    return out
}

@Suite struct DANETests {
    static let mxKey = TLSARecord(usage: 3, selector: 1, matchingType: 1, data: bytes(PeerCertificateTests.mxSPKI))
    static let selfSignedKey = TLSARecord(usage: 3, selector: 1, matchingType: 1, data: bytes(PeerCertificateTests.selfSignedSPKI))

    func handshake(cert: String = "mx.pem", key: String = "mx.key", base: String = "mx.relayd.test",
                   records: [TLSARecord]) throws -> (TLSConnection, TLSPump.Outcome) {
        let server = try TLSConnection(context: makeServerContext(cert: cert, key: key))
        // No trust store at all: DANE-EE must not need one.
        let client = try TLSConnection(context: makeClientContext(ca: nil),
                                       options: .init(serverName: base, requireVerification: true,
                                                      dane: DANEPolicy(baseDomain: base, records: records)))
        return (client, TLSPump(client: client, server: server).handshake())
    }

    @Test func daneEEMatchesTheKeyWhateverTheName() throws {
        for base in ["mx.relayd.test", "another.name.example"] {
            let (client, outcome) = try handshake(base: base, records: [Self.mxKey])
            #expect(outcome.client == .complete, "base \(base)")
            #expect(client.sessionInfo?.verification == .trusted)
            #expect(client.sessionInfo?.daneMatch == Self.mxKey)
        }
    }

    @Test func daneEETakesASelfSignedCertificate() throws {
        let (client, outcome) = try handshake(cert: "selfsigned.pem", key: "selfsigned.key", records: [Self.selfSignedKey])
        #expect(outcome.client == .complete)
        #expect(client.sessionInfo?.daneMatch == Self.selfSignedKey)
    }

    @Test func theMatchingRecordIsFoundAmongOthers() throws {
        let (client, outcome) = try handshake(records: [Self.selfSignedKey, Self.mxKey])
        #expect(outcome.client == .complete)
        #expect(client.sessionInfo?.daneMatch == Self.mxKey)
    }

    @Test func aRecordThatMatchesNothingFailsTheHandshake() throws {
        let (client, outcome) = try handshake(records: [Self.selfSignedKey])
        guard case .failed(let f) = outcome.client else {
            Issue.record("handshake completed: \(outcome)")
            return
        }
        #expect(f.kind == .daneNoMatch)
        #expect(client.sessionInfo == nil)
    }

    @Test func withoutDANENoRecordIsReported() throws {
        let server = try TLSConnection(context: makeServerContext())
        let client = try TLSConnection(context: makeClientContext(), options: .init(serverName: "mx.relayd.test",
                                                                                     expectedHostname: "mx.relayd.test"))
        #expect(TLSPump(client: client, server: server).handshake().client == .complete)
        #expect(client.sessionInfo?.verification == .trusted)
        #expect(client.sessionInfo?.daneMatch == nil)
    }

    @Test func recordsOpenSSLCannotUseAreRefusedUpFront() throws {
        let unusable = TLSARecord(usage: 3, selector: 1, matchingType: 9, data: [1, 2, 3])
        #expect(throws: TLSSetupError.self) {
            _ = try TLSConnection(context: makeClientContext(ca: nil),
                                  options: .init(serverName: "mx.relayd.test", requireVerification: true,
                                                 dane: DANEPolicy(baseDomain: "mx.relayd.test", records: [unusable])))
        }
    }

    @Test(arguments: [
        (TLSARecord(usage: 3, selector: 1, matchingType: 1, data: Array(repeating: 1, count: 32)), true),
        (TLSARecord(usage: 2, selector: 0, matchingType: 2, data: Array(repeating: 1, count: 64)), true),
        (TLSARecord(usage: 3, selector: 0, matchingType: 0, data: [0x30, 0x82]), true),
        (TLSARecord(usage: 1, selector: 1, matchingType: 1, data: Array(repeating: 1, count: 32)), false),
        (TLSARecord(usage: 0, selector: 0, matchingType: 1, data: Array(repeating: 1, count: 32)), false),
        (TLSARecord(usage: 4, selector: 1, matchingType: 1, data: Array(repeating: 1, count: 32)), false),
        (TLSARecord(usage: 3, selector: 2, matchingType: 1, data: Array(repeating: 1, count: 32)), false),
        (TLSARecord(usage: 3, selector: 1, matchingType: 3, data: Array(repeating: 1, count: 32)), false),
        (TLSARecord(usage: 3, selector: 1, matchingType: 1, data: Array(repeating: 1, count: 31)), false),
        (TLSARecord(usage: 3, selector: 1, matchingType: 2, data: Array(repeating: 1, count: 32)), false),
        (TLSARecord(usage: 3, selector: 1, matchingType: 0, data: []), false),
    ])
    func theSMTPFilter(record: TLSARecord, usable: Bool) {
        #expect(record.isUsableForSMTP == usable)
    }

    @Test func matchingIsComputedFromThePresentedChain() throws {
        let (client, outcome) = try handshake(records: [Self.mxKey])
        #expect(outcome.client == .complete)
        let chain = client.peerCertificates()
        let leaf = try #require(chain.first)
        #expect(TLSAMatching.association(of: leaf.der, selector: 1, matchingType: 1) == Self.mxKey.data)
        #expect(TLSAMatching.association(of: leaf.der, selector: 0, matchingType: 0) == leaf.der)
        #expect(TLSAMatching.association(of: leaf.der, selector: 1, matchingType: 2)?.count == 64)
        #expect(TLSAMatching.matchingDepth(Self.mxKey, chain: chain) == 0)
        #expect(TLSAMatching.matchingDepth(Self.selfSignedKey, chain: chain) == nil)
        let full = TLSARecord(usage: 3, selector: 0, matchingType: 1,
                              data: try #require(TLSAMatching.association(of: leaf.der, selector: 0, matchingType: 1)))
        #expect(TLSAMatching.matchingDepth(full, chain: chain) == 0)
        #expect(TLSAMatching.association(of: [0x30, 0x03, 0x02, 0x01], selector: 0, matchingType: 1) == nil, "not a certificate")
        #expect(TLSAMatching.association(of: leaf.der, selector: 2, matchingType: 1) == nil)
    }
}
