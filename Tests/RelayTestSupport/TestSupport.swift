import Foundation
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayPolicy
@testable import RelayLog
@testable import RelayTLS
@testable import RelayDNS
@testable import RelayAuth
@testable import RelayIO
@testable import RelayQueue
@testable import RelayConfig
@testable import RelayDelivery
@testable import RelayCore

public enum Fixtures {
    public static let directory: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path
    }()
    public static func path(_ name: String) -> String { directory + "/" + name }
}

/// Moves ciphertext between two in-memory TLS endpoints until both finish
/// the handshake, one fails, or no bytes move any more.
public struct TLSPump {
    public let client: TLSConnection
    public let server: TLSConnection

    public init(client: TLSConnection, server: TLSConnection) {
        self.client = client
        self.server = server
    }

    public struct Outcome {
        public var client: TLSHandshakeStep
        public var server: TLSHandshakeStep
    }

    public func handshake(maxRounds: Int = 50) -> Outcome {
        var c = client.handshake()
        var s = server.handshake()
        for _ in 0..<maxRounds {
            let toServer = client.takeNetworkBytes()
            let toClient = server.takeNetworkBytes()
            if toServer.isEmpty && toClient.isEmpty { break }
            if !toServer.isEmpty { server.receiveFromNetwork(toServer) }
            if !toClient.isEmpty { client.receiveFromNetwork(toClient) }
            if case .failed = s {} else { s = server.handshake() }
            if case .failed = c {} else { c = client.handshake() }
        }
        return Outcome(client: c, server: s)
    }

    /// Sends plaintext from one side and returns what the other side reads.
    public func send(_ text: String, from sender: TLSConnection, to receiver: TLSConnection) throws -> String {
        try sender.writePlaintext(Array(text.utf8))
        receiver.receiveFromNetwork(sender.takeNetworkBytes())
        guard case .data(let bytes) = receiver.readPlaintext() else { return "<no data>" }
        return String(decoding: bytes, as: UTF8.self)
    }
}

public func makeServerContext(cert: String = "mx.pem", key: String = "mx.key",
                       floor: TLSProtocolVersion = .tls1_2) throws -> TLSContext {
    try TLSContext(TLSContextConfiguration(role: .server,
                                           certificateChainFile: Fixtures.path(cert),
                                           privateKeyFile: Fixtures.path(key),
                                           minimumVersion: floor))
}

public func makeClientContext(ca: String? = "ca.pem", floor: TLSProtocolVersion = .tls1_2,
                       ceiling: TLSProtocolVersion? = nil, securityLevel: Int32 = 2,
                       cipherList: String = TLSCipherPolicy.defaultCipherList) throws -> TLSContext {
    try TLSContext(TLSContextConfiguration(role: .client,
                                           caBundleFile: ca.map(Fixtures.path),
                                           minimumVersion: floor,
                                           maximumVersion: ceiling,
                                           ciphers: TLSCipherPolicy(cipherList: cipherList),
                                           securityLevel: securityLevel))
}

/// A config for tests: hostname relay.example.test, one smtp listener, the
/// fixture certificate, then `sections` (TOML, e.g. "[queue]\n…").
public func configForTests(_ sections: String, spool: String = "/nonexistent/spool",
                       listener: String = "127.0.0.1:2525") throws -> Config {
    try ConfigLoader.parse("""
        [server]
        hostname = "relay.example.test"
        spool_dir = "\(spool)"
        [[listener]]
        address = "\(listener)"
        kind = "smtp"
        [tls]
        certificate = "\(Fixtures.path("mx.pem"))"
        key = "\(Fixtures.path("mx.key"))"
        \(sections)
        """, file: "/nonexistent/relayd.conf")
}

/// Polls `condition` every 20 ms for up to `seconds`.
public func waitUntil(_ seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}
