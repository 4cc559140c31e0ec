import Testing
@testable import RelayModel
@testable import RelayTLS
import RelayTestSupport

/// The TLS engine over memory buffers: full handshakes with no socket.
@Suite struct TLSEngineTests {

    @Test func handshakeNegotiatesTLS13AndCarriesDataBothWays() throws {
        let server = try TLSConnection(context: makeServerContext())
        let client = try TLSConnection(context: makeClientContext(),
                                       options: .init(serverName: "mx.relayd.test",
                                                      expectedHostname: "mx.relayd.test",
                                                      requireVerification: true))
        let pump = TLSPump(client: client, server: server)
        let outcome = pump.handshake()
        #expect(outcome.client == .complete)
        #expect(outcome.server == .complete)

        let info = try #require(client.sessionInfo)
        #expect(info.protocolVersion == "TLSv1.3")
        #expect(info.cipherBits >= 128)
        #expect(info.cipher.hasPrefix("TLS_"), "\(info.cipher)")
        #expect(info.verification == .trusted)
        #expect(info.peerChainLength >= 1)
        let chain = client.peerCertificates()
        #expect(chain.count == info.peerChainLength)
        #expect(chain.first?.subject == "CN=mx.relayd.test")
        #expect(chain.first?.issuer.contains("relayd test CA") == true)
        #expect(chain.first?.der.isEmpty == false)
        #expect(server.sessionInfo?.protocolVersion == "TLSv1.3")
        #expect(server.sessionInfo?.verification == .noPeerCertificate)

        #expect(try pump.send("EHLO client.test\r\n", from: client, to: server) == "EHLO client.test\r\n")
        #expect(try pump.send("250 mx.relayd.test\r\n", from: server, to: client) == "250 mx.relayd.test\r\n")
        // A large body crosses in several records and arrives intact.
        let big = String(repeating: "0123456789abcdef", count: 8192)
        #expect(try pump.send(big, from: client, to: server) == big)
    }

    @Test func clientLimitedToTLS11IsRefusedWithProtocolReason() throws {
        let server = try TLSConnection(context: makeServerContext())
        // An old peer: TLS 1.1 at most, OpenSSL's security level 0 so it
        // actually sends a 1.1 ClientHello instead of refusing locally.
        let old = try makeClientContext(floor: .tls1_0, ceiling: .tls1_1, securityLevel: 0,
                                        cipherList: "HIGH:@SECLEVEL=0")
        let client = try TLSConnection(context: old)
        let outcome = TLSPump(client: client, server: server).handshake()
        guard case .failed(let failure) = outcome.server else {
            Issue.record("server accepted a TLS 1.1 client: \(outcome.server)")
            return
        }
        #expect(failure.kind == .protocolBelowFloor, "\(failure.detail)")
        #expect(failure.detail.contains("protocol"), "\(failure.detail)")
        if case .complete = outcome.client { Issue.record("client completed a refused handshake") }
    }

    @Test func serverFloorTLS13RefusesTLS12Client() throws {
        let server = try TLSConnection(context: makeServerContext(floor: .tls1_3))
        let client = try TLSConnection(context: makeClientContext(ceiling: .tls1_2))
        let outcome = TLSPump(client: client, server: server).handshake()
        guard case .failed(let failure) = outcome.server else {
            Issue.record("\(outcome.server)")
            return
        }
        #expect(failure.kind == .protocolBelowFloor)
    }

    @Test func verifyingClientRejectsSelfSignedServer() throws {
        let server = try TLSConnection(context: makeServerContext(cert: "selfsigned.pem", key: "selfsigned.key"))
        let client = try TLSConnection(context: makeClientContext(),
                                       options: .init(serverName: "mx.relayd.test",
                                                      expectedHostname: "mx.relayd.test",
                                                      requireVerification: true))
        let outcome = TLSPump(client: client, server: server).handshake()
        guard case .failed(let failure) = outcome.client else {
            Issue.record("\(outcome.client)")
            return
        }
        #expect(failure.kind == .certificateUntrusted)
        #expect(failure.detail.contains("self-signed"), "\(failure.detail)")
        #expect(client.sessionInfo == nil)
    }

    @Test func verifyingClientRejectsWrongHostname() throws {
        let server = try TLSConnection(context: makeServerContext())
        let client = try TLSConnection(context: makeClientContext(),
                                       options: .init(serverName: "mail.other.test",
                                                      expectedHostname: "mail.other.test",
                                                      requireVerification: true))
        let outcome = TLSPump(client: client, server: server).handshake()
        guard case .failed(let failure) = outcome.client else {
            Issue.record("\(outcome.client)")
            return
        }
        #expect(failure.kind == .hostnameMismatch, "\(failure.detail)")
    }

    @Test func nonVerifyingClientCompletesButRecordsWhyUntrusted() throws {
        // Opportunistic and forced levels: encryption without authentication,
        // but the log line must still say what verification would have found.
        let server = try TLSConnection(context: makeServerContext(cert: "selfsigned.pem", key: "selfsigned.key"))
        let client = try TLSConnection(context: makeClientContext(),
                                       options: .init(serverName: "mx.relayd.test",
                                                      expectedHostname: "mx.relayd.test",
                                                      requireVerification: false))
        let outcome = TLSPump(client: client, server: server).handshake()
        #expect(outcome.client == .complete)
        guard case .failed(let why) = client.sessionInfo?.verification else {
            Issue.record("verification not recorded: \(String(describing: client.sessionInfo))")
            return
        }
        #expect(why.kind == .certificateUntrusted)
    }

    @Test func byteAtATimeDeliveryStillCompletes() throws {
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
        #expect(c == .complete)
        #expect(s == .complete)
    }

    @Test func garbageFromPeerFailsHandshakeCleanly() throws {
        let server = try TLSConnection(context: makeServerContext())
        server.receiveFromNetwork(Array("EHLO plaintext.example\r\n".utf8))
        guard case .failed(let failure) = server.handshake() else {
            Issue.record("garbage accepted")
            return
        }
        #expect(failure.kind == .protocolError)
        // Once failed, stays failed.
        guard case .failed = server.handshake() else {
            Issue.record("failure forgotten")
            return
        }
    }

    @Test func closeNotifyIsReportedAsClosed() throws {
        let server = try TLSConnection(context: makeServerContext())
        let client = try TLSConnection(context: makeClientContext())
        _ = TLSPump(client: client, server: server).handshake()
        try client.writePlaintext(Array("QUIT\r\n".utf8))
        client.close()
        server.receiveFromNetwork(client.takeNetworkBytes())
        #expect(server.readPlaintext() == .closed(Array("QUIT\r\n".utf8)))
    }

    @Test func weakOrLegacyCipherListsAreRefusedAtSetup() {
        // RC4 and 3DES only: after the mandatory exclusions nothing is left.
        #expect(throws: (any Error).self) { try makeClientContext(cipherList: "RC4:3DES") }
        #expect(throws: (any Error).self) { try makeClientContext(cipherList: "eNULL") }
        #expect(TLSCipherPolicy(cipherList: "ALL").effectiveCipherList(for: .client).hasSuffix(TLSCipherPolicy.mandatoryExclusions))
    }

    @Test func missingCertificateFileIsASetupError() {
        let error = #expect(throws: (any Error).self) {
            try TLSContext(TLSContextConfiguration(
                role: .server, certificateChainFile: "/nonexistent/cert.pem", privateKeyFile: "/nonexistent/key.pem"))
        }
        #expect(error.map { "\($0)".contains("/nonexistent/cert.pem") } == true, "\(String(describing: error))")
    }

    @Test func libraryIsOpenSSL3() {
        #expect(TLSLibrary.runtimeMajor == 3)
        #expect(TLSLibrary.runtimeVersion.hasPrefix("OpenSSL 3."), "\(TLSLibrary.runtimeVersion)")
    }

    @Test func protocolVersionSpellings() {
        #expect(TLSProtocolVersion(configName: "TLSv1.2") == .tls1_2)
        #expect(TLSProtocolVersion(configName: "tls1.3") == .tls1_3)
        #expect(TLSProtocolVersion(configName: "1.0") == .tls1_0)
        #expect(TLSProtocolVersion(configName: "SSLv3") == nil)
        #expect(TLSProtocolVersion(configName: "TLSv0.9") == nil)
    }
}

@Suite struct TLSAddressVerificationTests {
    @Test(arguments: [("127.0.0.1", true), ("127.0.0.2", false)])
    func relayByAddressIsVerifiedAgainstIPSubjectAltName(_ address: String, _ ok: Bool) throws {
        let server = try TLSConnection(context: makeServerContext())
        let client = try TLSConnection(context: makeClientContext(),
                                       options: .init(serverName: address, expectedHostname: address, requireVerification: true))
        let outcome = TLSPump(client: client, server: server).handshake()
        if ok {
            #expect(outcome.client == .complete, "\(address)")
        } else {
            guard case .failed(let f) = outcome.client else {
                Issue.record("\(address)")
                return
            }
            #expect(f.kind == .hostnameMismatch, "\(f)")
        }
    }
}
