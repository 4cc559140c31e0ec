// Harnesses that play one side of an SMTP dialogue against the sans-IO
// session machines, resolving every action at once.
import Foundation
import Logging
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

/// Drives a ServerSession like the real server would, resolving its
/// requests at once: TLS "succeeds", AUTH checks a fixed password, stores
/// are recorded.
public struct SessionHarness {
    public var session: ServerSession
    public var output: [UInt8] = []
    public var stored: [(Envelope, [UInt8])] = []
    public var closed = false
    public var tlsStarted = 0
    public var authAttempts: [Credentials] = []
    public var storeResult: StoreResult?
    public var discarded: [Int] = []

    public init(_ config: ServerSessionConfiguration, client: String = "192.0.2.10") {
        session = ServerSession(configuration: config, clientAddress: client)
        run(session.start())
    }

    public mutating func run(_ actions: [ServerAction]) {
        var queue = actions
        while !queue.isEmpty {
            let action = queue.removeFirst()
            switch action {
            case .send(let reply): output += reply.wire
            case .close: closed = true
            case .startTLS:
                tlsStarted += 1
                queue += session.tlsEstablished(TLSState(version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", bits: 256))
            case .authenticate(let c, _):
                authAttempts.append(c)
                queue += session.authenticationFinished(username: c.username, success: c.password == Array("secret".utf8))
            case .discarded(let bytes, _):
                discarded.append(bytes)
            case .store(let env, let body):
                stored.append((env, body))
                queue += session.storeFinished(storeResult ?? .queued(id: "Q\(stored.count)"))
            }
        }
    }

    public mutating func send(_ text: String) { run(session.receive(Array(text.utf8))) }
    public mutating func sendBytes(_ bytes: [UInt8]) { run(session.receive(bytes)) }
    public mutating func sendOneByteAtATime(_ text: String) {
        for b in Array(text.utf8) { run(session.receive([b])) }
    }

    public var replies: [String] {
        String(decoding: output, as: UTF8.self).split(separator: "\r\n").map(String.init)
    }
    /// The final line of each reply: "250 2.1.0 Ok".
    public var finalReplies: [String] { replies.filter { $0.count >= 4 && $0[$0.index($0.startIndex, offsetBy: 3)] == " " } }
    public var codes: [Int] { finalReplies.map { Int($0.prefix(3))! } }
}

/// Plays a scripted server against ClientSession.
public struct ClientHarness {
    public var session: ClientSession
    public var sent: [String] = []
    public var outcome: ClientOutcome?
    public var tlsRequested = 0
    public var bodySent = 0
    public var closed = false

    public init(_ config: ClientSessionConfiguration) { session = ClientSession(configuration: config) }

    public mutating func apply(_ actions: [ClientAction]) {
        for a in actions {
            switch a {
            case .send(let bytes): sent.append(String(decoding: bytes, as: UTF8.self))
            case .startTLS: tlsRequested += 1
            case .sendBody: bodySent += 1
            case .close: closed = true
            case .finished(let o): outcome = o
            }
        }
    }

    public mutating func server(_ text: String, byteAtATime: Bool = false) {
        if byteAtATime {
            for b in Array(text.utf8) { apply(session.receive([b])) }
        } else {
            apply(session.receive(Array(text.utf8)))
        }
    }

    public var commands: [String] { sent.flatMap { $0.split(separator: "\r\n").map(String.init) } }
}
