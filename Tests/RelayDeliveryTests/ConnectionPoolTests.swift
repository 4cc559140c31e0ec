// The connection pool with real Connections over socketpairs, the far end
// played by the test: a connection is only handed back under exactly the key
// it was kept under, lives the configured keep time and then says QUIT, and
// leaves the pool when the server closes it.
import Dispatch
import Foundation
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayPolicy
@testable import RelayLog
@testable import RelayTLS
@testable import RelayDNS
@testable import RelayIO
@testable import RelayQueue
@testable import RelayConfig
@testable import RelayDelivery
import RelayTestSupport

private func pairedConnection(_ label: String) -> (Connection, peer: Int32) {
    var fds: [Int32] = [0, 0]
    precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
    for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
    let connection = Connection(fd: fds[0], peer: IPAddress("192.0.2.1")!, queue: DispatchQueue(label: label))
    connection.queue.sync { connection.start() }
    return (connection, fds[1])
}

/// What the peer reads within `seconds`, and whether it then saw EOF.
private func peerReads(_ fd: Int32, seconds: Double) -> (text: String, eof: Bool) {
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 { out += buf[0..<n]; continue }
        if n == 0 { return (String(decoding: out, as: UTF8.self), true) }
        usleep(5_000)
    }
    return (String(decoding: out, as: UTF8.self), false)
}

private func poolKey(address: String = "192.0.2.1", port: UInt16 = 25, tls: TLSRequirement = .required,
                 verified: Bool = true, host: String = "mx.example", user: String? = nil) -> ConnectionPool.Key {
    ConnectionPool.Key(address: IPAddress(address)!, port: port, tls: tls, verified: verified, host: host, user: user, dane: nil)
}

@Suite(.serialized) struct ConnectionPoolBehaviour {
    static let otherKeys: [ConnectionPool.Key] = [
        poolKey(address: "192.0.2.2"), poolKey(port: 587), poolKey(tls: .opportunistic), poolKey(verified: false),
        poolKey(host: "other.example"), poolKey(user: "relay@example"),
    ]

    @Test("a kept connection is handed back only under the key it was kept under", arguments: otherKeys)
    func keySeparation(_ other: ConnectionPool.Key) {
        let pool = ConnectionPool(idleSeconds: 30)
        let (connection, peer) = pairedConnection("pool.key")
        defer { close(peer) }
        let kept = connection.queue.sync {
            pool.offer(poolKey(), connection: connection, extensions: [:], tlsActive: true, uses: 1)
        }
        #expect(kept)
        #expect(pool.take(other) == nil, "handed out under a different policy")
        #expect(pool.take(poolKey())?.connection === connection)
        #expect(pool.take(poolKey()) == nil, "handed out twice")
        connection.queue.sync { connection.abort(reason: "test over") }
    }

    @Test("a kept connection lives the configured time, then says QUIT and leaves the pool")
    func keepTime() {
        let pool = ConnectionPool(idleSeconds: 1)
        let (connection, peer) = pairedConnection("pool.keep")
        defer { close(peer) }
        let started = Date()
        _ = connection.queue.sync {
            pool.offer(poolKey(), connection: connection, extensions: [:], tlsActive: true, uses: 1)
        }
        let early = peerReads(peer, seconds: 0.5)
        #expect(early.text.isEmpty && !early.eof, "closed before its keep time")
        // Generous upper bounds: the suite runs on two loaded cores, and
        // what matters is that it ends after (not before) its keep time and
        // does end; "before" is the 0.5 s read above and the lower bound.
        let (text, eof) = peerReads(peer, seconds: 10)
        let lived = Date().timeIntervalSince(started)
        #expect(text == "QUIT\r\n")
        #expect(eof)
        #expect(lived >= 0.9 && lived < 8, "lived \(lived) s, keep time is 1 s")
        #expect(pool.take(poolKey()) == nil)
    }

    @Test("a connection that reached its use limit is not kept")
    func maxUses() {
        let pool = ConnectionPool(idleSeconds: 30, maxUses: 3)
        let (connection, peer) = pairedConnection("pool.uses")
        defer { close(peer) }
        let kept = connection.queue.sync {
            pool.offer(poolKey(), connection: connection, extensions: [:], tlsActive: true, uses: 3)
        }
        #expect(!kept)
        connection.queue.sync { connection.abort(reason: "test over") }
    }

    @Test("the server closing a kept connection removes it from the pool")
    func serverCloses() {
        let pool = ConnectionPool(idleSeconds: 30)
        let (connection, peer) = pairedConnection("pool.close")
        _ = connection.queue.sync {
            pool.offer(poolKey(), connection: connection, extensions: [:], tlsActive: true, uses: 1)
        }
        close(peer)
        let deadline = Date().addingTimeInterval(3)
        while connection.queue.sync(execute: { connection.isOpen }) && Date() < deadline { usleep(5_000) }
        #expect(pool.take(poolKey()) == nil)
    }

    @Test("closeIdle says QUIT on every kept connection")
    func closeIdle() {
        let pool = ConnectionPool(idleSeconds: 30)
        let pairs = (0..<3).map { pairedConnection("pool.drain.\($0)") }
        defer { for p in pairs { close(p.peer) } }
        for (n, (connection, _)) in pairs.enumerated() {
            _ = connection.queue.sync {
                pool.offer(poolKey(port: UInt16(25 + n)), connection: connection, extensions: [:], tlsActive: true, uses: 1)
            }
        }
        pool.closeIdle()
        for (_, peer) in pairs {
            let (text, eof) = peerReads(peer, seconds: 2)
            #expect(text == "QUIT\r\n" && eof)
        }
        #expect(pool.take(poolKey()) == nil)
    }
}

@Suite struct KeptConnectionOutcomes {
    static let config = ClientSessionConfiguration(
        heloName: "relay.test", tls: .required,
        envelope: Envelope(sender: .null, origin: .init(clientAddress: "127.0.0.1", heloName: "c", esmtp: true,
                                                      authenticatedUser: nil, tlsVersion: nil, tlsCipher: nil, tlsBits: nil)),
        bodySize: 10, keepAlive: true)

    @Test("a kept connection that closes during RSET, or refuses it, fails as kept-connection-lost (retry fresh)",
          arguments: ["close", "refuse"])
    func keptConnection(_ how: String) {
        var session = ClientSession(configuration: Self.config, reusing: ["PIPELINING": ""], tlsActive: true)
        let started = session.start()
        // The envelope has no recipients here, so MAIL alone follows RSET in the group.
        #expect(started == [.send(Array("RSET\r\n".utf8)), .send(Array("MAIL FROM:<>\r\n".utf8))])
        let actions = how == "close" ? session.connectionClosed() : session.receive(Array("421 4.4.2 bye\r\n".utf8))
        #expect(actions.contains(.finished(.failed(.keptConnectionLost))), "\(actions)")
    }
}
