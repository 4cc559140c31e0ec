import XCTest
@testable import RelayCore

/// The TLS engine over memory buffers: full handshakes with no socket.
final class TLSEngineTests: XCTestCase {

    func testHandshakeNegotiatesTLS13AndCarriesDataBothWays() throws {
        let server = try TLSConnection(context: makeServerContext())
        let client = try TLSConnection(context: makeClientContext(),
                                       options: .init(serverName: "mx.relayd.test",
                                                      expectedHostname: "mx.relayd.test",
                                                      requireVerification: true))
        let pump = TLSPump(client: client, server: server)
        let outcome = pump.handshake()
        XCTAssertEqual(outcome.client, .complete)
        XCTAssertEqual(outcome.server, .complete)

        let info = try XCTUnwrap(client.sessionInfo)
        XCTAssertEqual(info.protocolVersion, "TLSv1.3")
        XCTAssertGreaterThanOrEqual(info.cipherBits, 128)
        XCTAssertTrue(info.cipher.hasPrefix("TLS_"), info.cipher)
        XCTAssertEqual(info.verification, .trusted)
        XCTAssertGreaterThanOrEqual(info.peerChainLength, 1)
        let chain = client.peerCertificates()
        XCTAssertEqual(chain.count, info.peerChainLength)
        XCTAssertEqual(chain.first?.subject, "CN=mx.relayd.test")
        XCTAssertTrue(chain.first?.issuer.contains("relayd test CA") ?? false)
        XCTAssertFalse(chain.first?.der.isEmpty ?? true)
        XCTAssertEqual(server.sessionInfo?.protocolVersion, "TLSv1.3")
        XCTAssertEqual(server.sessionInfo?.verification, .noPeerCertificate)

        XCTAssertEqual(try pump.send("EHLO client.test\r\n", from: client, to: server), "EHLO client.test\r\n")
        XCTAssertEqual(try pump.send("250 mx.relayd.test\r\n", from: server, to: client), "250 mx.relayd.test\r\n")
        // A large body crosses in several records and arrives intact.
        let big = String(repeating: "0123456789abcdef", count: 8192)
        XCTAssertEqual(try pump.send(big, from: client, to: server), big)
    }

    func testClientLimitedToTLS11IsRefusedWithProtocolReason() throws {
        let server = try TLSConnection(context: makeServerContext())
        // An old peer: TLS 1.1 at most, OpenSSL's security level 0 so it
        // actually sends a 1.1 ClientHello instead of refusing locally.
        let old = try makeClientContext(floor: .tls1_0, ceiling: .tls1_1, securityLevel: 0,
                                        cipherList: "HIGH:@SECLEVEL=0")
        let client = try TLSConnection(context: old)
        let outcome = TLSPump(client: client, server: server).handshake()
        guard case .failed(let failure) = outcome.server else {
            return XCTFail("server accepted a TLS 1.1 client: \(outcome.server)")
        }
        XCTAssertEqual(failure.kind, .protocolBelowFloor, failure.detail)
        XCTAssertTrue(failure.detail.contains("protocol"), failure.detail)
        if case .complete = outcome.client { XCTFail("client completed a refused handshake") }
    }

    func testServerFloorTLS13RefusesTLS12Client() throws {
        let server = try TLSConnection(context: makeServerContext(floor: .tls1_3))
        let client = try TLSConnection(context: makeClientContext(ceiling: .tls1_2))
        let outcome = TLSPump(client: client, server: server).handshake()
        guard case .failed(let failure) = outcome.server else { return XCTFail("\(outcome.server)") }
        XCTAssertEqual(failure.kind, .protocolBelowFloor)
    }

    func testVerifyingClientRejectsSelfSignedServer() throws {
        let server = try TLSConnection(context: makeServerContext(cert: "selfsigned.pem", key: "selfsigned.key"))
        let client = try TLSConnection(context: makeClientContext(),
                                       options: .init(serverName: "mx.relayd.test",
                                                      expectedHostname: "mx.relayd.test",
                                                      requireVerification: true))
        let outcome = TLSPump(client: client, server: server).handshake()
        guard case .failed(let failure) = outcome.client else { return XCTFail("\(outcome.client)") }
        XCTAssertEqual(failure.kind, .certificateUntrusted)
        XCTAssertTrue(failure.detail.contains("self-signed"), failure.detail)
        XCTAssertNil(client.sessionInfo)
    }

    func testVerifyingClientRejectsWrongHostname() throws {
        let server = try TLSConnection(context: makeServerContext())
        let client = try TLSConnection(context: makeClientContext(),
                                       options: .init(serverName: "mail.other.test",
                                                      expectedHostname: "mail.other.test",
                                                      requireVerification: true))
        let outcome = TLSPump(client: client, server: server).handshake()
        guard case .failed(let failure) = outcome.client else { return XCTFail("\(outcome.client)") }
        XCTAssertEqual(failure.kind, .hostnameMismatch, failure.detail)
    }

    func testNonVerifyingClientCompletesButRecordsWhyUntrusted() throws {
        // Opportunistic and forced levels: encryption without authentication,
        // but the log line must still say what verification would have found.
        let server = try TLSConnection(context: makeServerContext(cert: "selfsigned.pem", key: "selfsigned.key"))
        let client = try TLSConnection(context: makeClientContext(),
                                       options: .init(serverName: "mx.relayd.test",
                                                      expectedHostname: "mx.relayd.test",
                                                      requireVerification: false))
        let outcome = TLSPump(client: client, server: server).handshake()
        XCTAssertEqual(outcome.client, .complete)
        guard case .failed(let why) = client.sessionInfo?.verification else {
            return XCTFail("verification not recorded: \(String(describing: client.sessionInfo))")
        }
        XCTAssertEqual(why.kind, .certificateUntrusted)
    }

    func testByteAtATimeDeliveryStillCompletes() throws {
        let server = try TLSConnection(context: makeServerContext())
        let client = try TLSConnection(context: makeClientContext(),
                                       options: .init(expectedHostname: "localhost", requireVerification: true))
        var c = client.handshake()
        var s = server.handshake()
        for _ in 0..<20000 {
            if c == .complete && s == .complete { break }
            let toServer = client.takeNetworkBytes()
            for b in toServer { server.receiveFromNetwork([b]); s = server.handshake() }
            let toClient = server.takeNetworkBytes()
            for b in toClient { client.receiveFromNetwork([b]); c = client.handshake() }
            if toServer.isEmpty && toClient.isEmpty { break }
        }
        XCTAssertEqual(c, .complete)
        XCTAssertEqual(s, .complete)
    }

    func testGarbageFromPeerFailsHandshakeCleanly() throws {
        let server = try TLSConnection(context: makeServerContext())
        server.receiveFromNetwork(Array("EHLO plaintext.example\r\n".utf8))
        guard case .failed(let failure) = server.handshake() else { return XCTFail("garbage accepted") }
        XCTAssertEqual(failure.kind, .protocolError)
        // Once failed, stays failed.
        guard case .failed = server.handshake() else { return XCTFail("failure forgotten") }
    }

    func testCloseNotifyIsReportedAsClosed() throws {
        let server = try TLSConnection(context: makeServerContext())
        let client = try TLSConnection(context: makeClientContext())
        _ = TLSPump(client: client, server: server).handshake()
        try client.writePlaintext(Array("QUIT\r\n".utf8))
        client.close()
        server.receiveFromNetwork(client.takeNetworkBytes())
        XCTAssertEqual(server.readPlaintext(), .closed(Array("QUIT\r\n".utf8)))
    }

    func testWeakOrLegacyCipherListsAreRefusedAtSetup() {
        // RC4 and 3DES only: after the mandatory exclusions nothing is left.
        XCTAssertThrowsError(try makeClientContext(cipherList: "RC4:3DES"))
        XCTAssertThrowsError(try makeClientContext(cipherList: "eNULL"))
        XCTAssertTrue(TLSCipherPolicy(cipherList: "ALL").effectiveCipherList(for: .client).hasSuffix(TLSCipherPolicy.mandatoryExclusions))
    }

    func testMissingCertificateFileIsASetupError() {
        XCTAssertThrowsError(try TLSContext(TLSContextConfiguration(
            role: .server, certificateChainFile: "/nonexistent/cert.pem", privateKeyFile: "/nonexistent/key.pem"))) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/cert.pem"), "\(error)")
        }
    }

    func testLibraryIsOpenSSL3() {
        XCTAssertEqual(TLSLibrary.runtimeMajor, 3)
        XCTAssertTrue(TLSLibrary.runtimeVersion.hasPrefix("OpenSSL 3."), TLSLibrary.runtimeVersion)
    }

    func testProtocolVersionSpellings() {
        XCTAssertEqual(TLSProtocolVersion(configName: "TLSv1.2"), .tls1_2)
        XCTAssertEqual(TLSProtocolVersion(configName: "tls1.3"), .tls1_3)
        XCTAssertEqual(TLSProtocolVersion(configName: "1.0"), .tls1_0)
        XCTAssertNil(TLSProtocolVersion(configName: "SSLv3"))
        XCTAssertNil(TLSProtocolVersion(configName: "TLSv0.9"))
    }
}

final class TLSAddressVerificationTests: XCTestCase {
    func testRelayByAddressIsVerifiedAgainstIPSubjectAltName() throws {
        for (address, ok) in [("127.0.0.1", true), ("127.0.0.2", false)] {
            let server = try TLSConnection(context: makeServerContext())
            let client = try TLSConnection(context: makeClientContext(),
                                           options: .init(serverName: address, expectedHostname: address, requireVerification: true))
            let outcome = TLSPump(client: client, server: server).handshake()
            if ok {
                XCTAssertEqual(outcome.client, .complete, address)
            } else {
                guard case .failed(let f) = outcome.client else { XCTFail(address); continue }
                XCTAssertEqual(f.kind, .hostnameMismatch, "\(f)")
            }
        }
    }
}
