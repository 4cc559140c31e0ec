// ClientRun against a peer that answers from a script (a socket pair, a
// thread, no TLS): how each way a server can fail becomes a typed failure
// with its stage, and what the client sends — or does not send — after it.
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
#if canImport(Glibc)
import Glibc
#endif

/// Reads command lines and answers each by its verb; `nil` for a verb
/// closes the connection instead of answering. Records every line seen.
final class ScriptedPeer: @unchecked Sendable {
    private let fd: Int32
    private let greeting: String?
    private let script: [String: String?]
    private let lock = NSLock()
    private var lines: [String] = []
    private let done = DispatchSemaphore(value: 0)

    init(fd: Int32, greeting: String? = "220 peer.test ESMTP", script: [String: String?]) {
        self.fd = fd
        self.greeting = greeting
        self.script = script
    }

    func start() {
        Thread { [self] in
            run()
            close(fd)
            done.signal()
        }.start()
    }

    /// The lines the client sent, once the session has ended (bounded wait).
    func commands() -> [String] {
        _ = done.wait(timeout: .now() + 20)
        lock.lock(); defer { lock.unlock() }
        return lines
    }

    private func send(_ s: String) { _ = s.withCString { Glibc.send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) } }

    private func run() {
        guard let greeting else { return }
        send(greeting + "\r\n")
        var buffer: [UInt8] = []
        var inData = false
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n <= 0 { return }
            buffer += chunk[0..<n]
            while let nl = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self).trimmingCharacters(in: .newlines)
                buffer.removeSubrange(...nl)
                if inData {
                    if line == "." { inData = false; if !answer(".") { return } }
                    continue
                }
                lock.lock(); lines.append(line); lock.unlock()
                let verb = line.split(separator: " ").first.map { $0.uppercased() } ?? ""
                let key = verb
                if key == "DATA", case .some(.some(let r)) = script["DATA"], r.hasPrefix("354") { inData = true }
                if !answer(key) { return }
                if key == "QUIT" { return }
            }
        }
    }

    /// false: the script says to hang up here.
    private func answer(_ key: String) -> Bool {
        let reply: String?
        if let scripted = script[key] { reply = scripted } else {
            switch key {
            case "EHLO": reply = "250-peer.test\r\n250 PIPELINING"
            case "QUIT": reply = "221 bye"
            default: reply = "250 ok"
            }
        }
        guard let reply else { return false }
        send(reply + "\r\n")
        return true
    }
}

private func run(_ peer: (Int32) -> ScriptedPeer, tls: TLSRequirement = .never, recipients: Int = 1) throws -> (ClientRunResult, [String]) {
    var fds: [Int32] = [0, 0]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { throw SystemError("socketpair") }
    let server = peer(fds[1])
    server.start()
    _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
    var envelope = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<s@sender.test>")!),
                            origin: Envelope.Origin(clientAddress: "127.0.0.1"))
    envelope.recipients = (0..<recipients).map { Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u\($0)@far.test>")!) }
    let body: [UInt8] = Array("Subject: x\r\n\r\nhello\r\n".utf8)
    let queue = DispatchQueue(label: "test.clientrun")
    let connection = Connection(fd: fds[0], peer: IPAddress("127.0.0.1")!, queue: queue)
    let config = ClientSessionConfiguration(heloName: "relay.test", tls: tls, envelope: envelope, bodySize: body.count)
    let context = try makeClientContext()
    final class Box: @unchecked Sendable { var r: ClientRunResult? }
    let box = Box()
    let finished = DispatchSemaphore(value: 0)
    queue.async {
        ClientRun(configuration: config, body: .memory(body), connection: connection, tlsContext: context,
                  tlsOptions: TLSConnection.Options()) { r in
            box.r = r
            finished.signal()
        }.start()
    }
    _ = finished.wait(timeout: .now() + 20)
    let result = try #require(box.r)
    return (result, server.commands())
}

@Suite struct ClientRunFailures {
    @Test func aRefusingGreetingIsAGreetingFailureAndTheClientSaysQuit() throws {
        let (r, sent) = try run { ScriptedPeer(fd: $0, greeting: "421 4.3.2 busy", script: [:]) }
        #expect(r.outcome == .failed(.greeting(Reply(421, "4.3.2", "busy"))))
        #expect(!sent.contains { $0.hasPrefix("MAIL") })
    }

    @Test func requiredTLSWithoutSTARTTLSNeverSendsMail() throws {
        let (r, sent) = try run({ ScriptedPeer(fd: $0, script: [:]) }, tls: .required)
        #expect(r.outcome == .failed(.tlsNotOffered))
        #expect(r.tls == nil)
        #expect(!sent.contains { $0.hasPrefix("MAIL") || $0.hasPrefix("RCPT") || $0 == "DATA" }, "\(sent)")
    }

    @Test func aRefusedSTARTTLSIsTypedWithTheReply() throws {
        let (r, sent) = try run({ ScriptedPeer(fd: $0, script: ["EHLO": "250-peer.test\r\n250 STARTTLS", "STARTTLS": "454 4.7.0 not now"]) },
                                tls: .required)
        #expect(r.outcome == .failed(.tlsRefused(Reply(454, "4.7.0", "not now"))))
        #expect(!sent.contains { $0.hasPrefix("MAIL") })
    }

    @Test func aMailRefusalIsTheWholeMessagesVerdict() throws {
        let (r, _) = try run { ScriptedPeer(fd: $0, script: ["MAIL": "550 5.7.1 not from you"]) }
        #expect(r.outcome == .failed(.rejected(Reply(550, "5.7.1", "not from you"), stage: .mail)))
    }

    @Test func aHangUpIsLostAtTheStageItHappened() throws {
        let (r, _) = try run { ScriptedPeer(fd: $0, script: ["RCPT": nil]) }
        #expect(r.outcome == .failed(.connectionLost(stage: .rcpt)))
        let (r2, _) = try run { ScriptedPeer(fd: $0, script: ["DATA": "354 go", ".": nil]) }
        #expect(r2.outcome == .failed(.connectionLost(stage: .body)))
    }

    @Test func perRecipientRepliesAreKeptAndOnlyAcceptedOnesGetTheBody() throws {
        // Both recipients accepted: the final reply is each one's.
        let (r, sent) = try run({ ScriptedPeer(fd: $0, script: ["DATA": "354 go", ".": "250 2.0.0 queued"]) }, recipients: 2)
        #expect(r.outcome == .completed([0: Reply(250, "2.0.0", "queued"), 1: Reply(250, "2.0.0", "queued")]))
        #expect(sent.filter { $0.hasPrefix("RCPT") }.count == 2)
        #expect(sent.last == "QUIT")
    }
}
