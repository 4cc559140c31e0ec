import Testing
@testable import RelayModel
@testable import RelayTLS
import RelayTestSupport

/// SPEC: "Inbound listeners always require forward secrecy (no static-RSA
/// key exchange); outbound prefers it and logs when a receiver could not
/// offer it." The server side here carries the RSA fixture: with an EC
/// certificate static RSA could never be chosen, and a refusal would prove
/// nothing.
@Suite struct ForwardSecrecyTests {
    static let staticRSA = "AES256-GCM-SHA384"

    /// A relayd listener (or, with `forwardSecrecyRequired: false`, the
    /// test's stand-in for a receiver that offers static RSA alone).
    static func server(cipherList: String = TLSCipherPolicy.defaultCipherList, ceiling: TLSProtocolVersion? = nil,
                       cert: String = "rsa", forwardSecrecyRequired: Bool = true) throws -> TLSContext {
        var cfg = TLSContextConfiguration(role: .server, certificateChainFile: Fixtures.path(cert + ".pem"),
                                          privateKeyFile: Fixtures.path(cert + ".key"), maximumVersion: ceiling,
                                          ciphers: TLSCipherPolicy(cipherList: cipherList))
        cfg.forwardSecrecyRequired = forwardSecrecyRequired
        return try TLSContext(cfg)
    }

    static func client(cipherList: String = TLSCipherPolicy.defaultCipherList, ceiling: TLSProtocolVersion? = nil) throws -> TLSContext {
        try makeClientContext(ceiling: ceiling, cipherList: cipherList)
    }

    // MARK: what each side is willing to negotiate

    /// Operator lists, including ones that ask for static RSA outright.
    static let operatorLists = ["HIGH", "ALL", "ALL:COMPLEMENTOFALL", "kRSA:ECDHE", "AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384",
                                "AES128-SHA:AES256-SHA256:DHE-RSA-AES128-GCM-SHA256"]

    @Test("an inbound context can negotiate only ephemeral key exchange, whatever `ciphers` says", arguments: operatorLists)
    func inboundOffersOnlyForwardSecrecy(list: String) throws {
        let inbound = try Self.server(cipherList: list).negotiableCiphers
        #expect(inbound.contains { !$0.name.hasPrefix("TLS_") }, "TLS 1.2 must stay possible")
        #expect(inbound.filter { !$0.forwardSecret }.map(\.name) == [])
        // Narrowing, never widening: nothing the same list outbound lacks.
        let outbound = Set(try Self.client(cipherList: list).negotiableCiphers.map(\.name))
        #expect(Set(inbound.map(\.name)).isSubset(of: outbound))
    }

    @Test("outbound keeps static RSA, after every forward-secret suite, and adds nothing", arguments: [
        ("AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384", ["ECDHE-RSA-AES256-GCM-SHA384", "AES256-GCM-SHA384"]),
        ("AES256-GCM-SHA384:AES128-GCM-SHA256:ECDHE+AESGCM",
         ["ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
          "ECDHE-RSA-AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-GCM-SHA256"]),
        ("ECDHE-RSA-AES128-GCM-SHA256", ["ECDHE-RSA-AES128-GCM-SHA256"]),
    ])
    func outboundPrefersForwardSecrecy(list: String, expected: [String]) throws {
        let tls12 = try Self.client(cipherList: list).negotiableCiphers.filter { !$0.name.hasPrefix("TLS_") }
        #expect(Set(tls12.map(\.name)) == Set(expected))
        let firstStatic = tls12.firstIndex { !$0.forwardSecret } ?? tls12.endIndex
        #expect(tls12[firstStatic...].allSatisfy { !$0.forwardSecret }, "\(tls12.map(\.name))")
        #expect(tls12.prefix(upTo: firstStatic).count == tls12.filter(\.forwardSecret).count)
    }

    @Test func aListWithNothingForwardSecretIsRefusedInboundButServesOutbound() throws {
        let error = #expect(throws: TLSSetupError.self) { try Self.server(cipherList: Self.staticRSA) }
        #expect(error?.message.contains("forward secrecy") == true, "\(String(describing: error))")
        let outbound = try Self.client(cipherList: Self.staticRSA).negotiableCiphers.map(\.name)
        #expect(outbound.contains(Self.staticRSA))
    }

    @Test func effectiveListsAppendTheExclusionsLast() {
        let policy = TLSCipherPolicy(cipherList: "ALL")
        #expect(policy.effectiveCipherList(for: .server) == "ALL:" + TLSCipherPolicy.mandatoryExclusions + ":!kRSA:!kPSK:!kRSAPSK")
        #expect(policy.effectiveCipherList(for: .client) == "ALL:+kRSA:" + TLSCipherPolicy.mandatoryExclusions)
    }

    // MARK: handshakes

    struct Handshake: Sendable, CustomTestStringConvertible {
        let name: String
        let server: @Sendable () throws -> TLSContext
        let client: @Sendable () throws -> TLSContext
        /// nil: the server refuses for want of a shared cipher.
        let expected: (version: String, cipher: String, forwardSecret: Bool)?
        var testDescription: String { name }
    }

    static let handshakes: [Handshake] = [
        Handshake(name: "static-RSA-only client → relayd listener, default ciphers",
                  server: { try server() }, client: { try client(cipherList: staticRSA, ceiling: .tls1_2) }, expected: nil),
        Handshake(name: "static-RSA-only client → relayd listener whose operator lists static RSA first",
                  server: { try server(cipherList: "\(staticRSA):ECDHE-RSA-AES256-GCM-SHA384") },
                  client: { try client(cipherList: staticRSA, ceiling: .tls1_2) }, expected: nil),
        Handshake(name: "static-RSA-only client → relayd listener with ciphers = ALL",
                  server: { try server(cipherList: "ALL") }, client: { try client(cipherList: staticRSA, ceiling: .tls1_2) }, expected: nil),
        Handshake(name: "relayd outbound → receiver offering static RSA only",
                  server: { try server(cipherList: staticRSA, ceiling: .tls1_2, forwardSecrecyRequired: false) },
                  client: { try client() }, expected: ("TLSv1.2", staticRSA, false)),
        Handshake(name: "TLS 1.2 with an RSA certificate: ECDHE",
                  server: { try server() }, client: { try client(ceiling: .tls1_2) },
                  expected: ("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384", true)),
        Handshake(name: "TLS 1.2 with an EC certificate: ECDHE",
                  server: { try server(cert: "mx") }, client: { try client(ceiling: .tls1_2) },
                  expected: ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384", true)),
        Handshake(name: "TLS 1.3", server: { try server() }, client: { try client() },
                  expected: ("TLSv1.3", "TLS_AES_256_GCM_SHA384", true)),
    ]

    @Test(arguments: handshakes)
    func forwardSecrecyOfAHandshake(_ h: Handshake) throws {
        let server = try TLSConnection(context: h.server())
        let client = try TLSConnection(context: h.client(), options: .init(serverName: "mx.relayd.test"))
        let outcome = TLSPump(client: client, server: server).handshake()
        guard let expected = h.expected else {
            guard case .failed(let failure) = outcome.server else {
                Issue.record("the listener accepted: \(String(describing: server.sessionInfo))")
                return
            }
            #expect(failure.kind == .noSharedCipher, "\(failure)")
            #expect(outcome.client != .complete)
            return
        }
        #expect(outcome.client == .complete)
        #expect(outcome.server == .complete)
        for info in [client.sessionInfo, server.sessionInfo] {
            #expect(info?.protocolVersion == expected.version)
            #expect(info?.cipher == expected.cipher)
            #expect(info?.forwardSecret == expected.forwardSecret)
        }
    }
}
