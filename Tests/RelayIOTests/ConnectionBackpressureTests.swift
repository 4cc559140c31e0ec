// Connection over a real socketpair, the far end played by the test: a peer
// that writes and never reads must stop being read once the outbox passes
// its high-water mark, be read again once it drains, and a close that
// cannot flush must give up after the linger time.
import Dispatch
import Foundation
import Testing
@testable import RelayModel
@testable import RelayTLS
@testable import RelayIO
import RelayTestSupport

/// Answers every chunk it receives with twice as many bytes, the way SMTP
/// replies outgrow pipelined NOOPs, and records what happened.
private final class EchoDelegate: ConnectionDelegate, @unchecked Sendable {
    var received = 0
    var closedReason: String?
    let closed = DispatchSemaphore(value: 0)

    func connection(_ connection: Connection, received bytes: [UInt8]) {
        received += bytes.count
        connection.send(bytes + bytes)
    }
    func connection(_ connection: Connection, tlsEstablished info: TLSSessionInfo) {}
    func connection(_ connection: Connection, tlsFailed failure: TLSFailure) {}
    func connectionTimedOut(_ connection: Connection) {}
    func connectionClosed(_ connection: Connection, reason: String) {
        closedReason = reason
        closed.signal()
    }
}

private func socketPair() -> (Int32, Int32) {
    var fds: [Int32] = [0, 0]
    precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
    for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
    return (fds[0], fds[1])
}

/// Writes up to `limit` bytes without blocking; returns how many went.
private func writeUntilFull(_ fd: Int32, limit: Int) -> Int {
    let chunk = [UInt8](repeating: 0x4e, count: 8192)
    var sent = 0
    while sent < limit {
        let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        sent += n
    }
    return sent
}

private func drain(_ fd: Int32) -> Int {
    var buf = [UInt8](repeating: 0, count: 65536)
    var total = 0
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { return total }
        total += n
    }
}

private func on<T>(_ queue: DispatchQueue, _ body: () throws -> T) rethrows -> T { try queue.sync(execute: body) }

@Suite(.serialized) struct ConnectionBackpressure {
    @Test("a peer that never reads stops being read; draining resumes reading")
    func stopsAndResumes() throws {
        let (mine, peer) = socketPair()
        defer { close(peer) }
        let queue = DispatchQueue(label: "test.conn")
        let delegate = EchoDelegate()
        let connection = Connection(fd: mine, peer: IPAddress("127.0.0.1")!, queue: queue)
        on(queue) {
            connection.delegate = delegate
            connection.start()
        }
        // Push in rounds until relayd's side stops taking bytes (bounded).
        var pushed = 0
        for _ in 0..<200 {
            pushed += writeUntilFull(peer, limit: 1 << 20)
            usleep(5_000)
            if on(queue, { connection.isReadingPaused }) && writeUntilFull(peer, limit: 1) == 0 { break }
        }
        #expect(on(queue, { connection.isReadingPaused }), "still reading with \(on(queue, { connection.unsentBytes })) bytes unsent")
        let receivedWhilePaused = on(queue) { delegate.received }
        let unsent = on(queue) { connection.unsentBytes }
        #expect(unsent > Connection.outboxHighWater)
        #expect(unsent <= Connection.outboxHighWater + 2 * 16 * 1024, "the outbox grew past one read's reply")
        #expect(receivedWhilePaused < pushed, "everything was read although nothing was sent back")
        usleep(50_000)
        #expect(on(queue) { delegate.received } == receivedWhilePaused, "read while paused")

        // The peer reads: the outbox drains, and reading starts again.
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline && on(queue, { delegate.received }) == receivedWhilePaused {
            _ = drain(peer)
            usleep(2_000)
        }
        #expect(on(queue) { delegate.received } > receivedWhilePaused)
        on(queue) { connection.abort(reason: "test over") }
        #expect(delegate.closed.wait(timeout: .now() + 5) == .success)
    }

    @Test("the owner's hold stops reading until it is lifted")
    func ownerHold() throws {
        let (mine, peer) = socketPair()
        defer { close(peer) }
        let queue = DispatchQueue(label: "test.hold")
        let delegate = EchoDelegate()
        let connection = Connection(fd: mine, peer: IPAddress("127.0.0.1")!, queue: queue)
        on(queue) {
            connection.delegate = delegate
            connection.start()
            connection.readsHeld = true
        }
        let hundred = [UInt8](repeating: 0x4e, count: 100)
        #expect(hundred.withUnsafeBytes { write(peer, $0.baseAddress, $0.count) } == 100)
        usleep(100_000)
        #expect(on(queue) { delegate.received } == 0)
        on(queue) { connection.readsHeld = false }
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline && on(queue, { delegate.received }) < 100 { usleep(2_000) }
        #expect(on(queue) { delegate.received } == 100)
        on(queue) { connection.abort(reason: "test over") }
        #expect(delegate.closed.wait(timeout: .now() + 5) == .success)
    }

    @Test("a close the peer never reads gives up after the linger time")
    func closeLinger() throws {
        let (mine, peer) = socketPair()
        defer { close(peer) }
        let queue = DispatchQueue(label: "test.linger")
        let delegate = EchoDelegate()
        let connection = Connection(fd: mine, peer: IPAddress("127.0.0.1")!, queue: queue)
        on(queue) {
            connection.delegate = delegate
            connection.closeLinger = 0.3
            connection.start()
            connection.send([UInt8](repeating: 0x41, count: 4 << 20))
            connection.close()
        }
        let started = Date()
        #expect(delegate.closed.wait(timeout: .now() + 5) == .success)
        #expect(Date().timeIntervalSince(started) < 3)
        #expect(on(queue) { delegate.closedReason }?.hasPrefix("peer did not read") == true)
    }
}

@Suite struct ConnectionNeverStarted {
    @Test("a connection aborted before start() still closes its descriptor")
    func abortBeforeStart() throws {
        let (mine, peer) = socketPair()
        defer { close(peer) }
        _ = fcntl(peer, F_SETFL, fcntl(peer, F_GETFL) | O_NONBLOCK)
        let queue = DispatchQueue(label: "test.never-started")
        let connection = Connection(fd: mine, peer: IPAddress("127.0.0.1")!, queue: queue)
        on(queue) { connection.abort(reason: "deadline passed before the run began") }
        // The peer sees end of file once relayd's side is closed.
        #expect(collect(peer, seconds: 5).eof)
    }
}

/// Reads what arrives on a non-blocking fd within `seconds`, or until EOF.
private func collect(_ fd: Int32, seconds: Double) -> (bytes: [UInt8], eof: Bool) {
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 { out += buf[0..<n]; continue }
        if n == 0 { return (out, true) }
        usleep(2_000)
    }
    return (out, false)
}

@Suite(.serialized) struct ConnectionTLSHold {
    @Test("a reply sent while the server handshake runs never goes out in plaintext")
    func noPlaintextMidHandshake() throws {
        let (mine, peer) = socketPair()
        defer { close(peer) }
        let queue = DispatchQueue(label: "test.midhandshake")
        let delegate = EchoDelegate()
        let connection = Connection(fd: mine, peer: IPAddress("127.0.0.1")!, queue: queue)
        let context = try makeServerContext()
        try on(queue) {
            connection.delegate = delegate
            connection.start()
            try connection.startServerTLS(context: context)
            connection.send(Array("421 4.4.2 timeout\r\n".utf8))
            connection.close()
        }
        let (bytes, eof) = collect(peer, seconds: 3)
        #expect(eof, "the connection was not closed")
        #expect(!String(decoding: bytes, as: UTF8.self).contains("421"), "plaintext reply during the handshake")
    }

    @Test("bytes held during the handshake arrive inside TLS once it completes")
    func heldBytesArriveEncrypted() throws {
        let (mine, peer) = socketPair()
        defer { close(peer) }
        let queue = DispatchQueue(label: "test.held")
        let delegate = EchoDelegate()
        let connection = Connection(fd: mine, peer: IPAddress("127.0.0.1")!, queue: queue)
        let serverContext = try makeServerContext()
        try on(queue) {
            connection.delegate = delegate
            connection.start()
            try connection.startServerTLS(context: serverContext)
            connection.send(Array("220 held\r\n".utf8))
        }
        let client = try TLSConnection(context: try makeClientContext())
        var plaintext: [UInt8] = []
        var sawRaw: [UInt8] = []
        let deadline = Date().addingTimeInterval(5)
        _ = client.handshake()
        while Date() < deadline && !String(decoding: plaintext, as: UTF8.self).contains("220 held") {
            let out = client.takeNetworkBytes()
            if !out.isEmpty { _ = out.withUnsafeBytes { write(peer, $0.baseAddress, $0.count) } }
            let (got, _) = collect(peer, seconds: 0.05)
            sawRaw += got
            if !got.isEmpty { client.receiveFromNetwork(got) }
            if case .complete = client.handshake(), case .data(let d) = client.readPlaintext() { plaintext += d }
        }
        #expect(String(decoding: plaintext, as: UTF8.self) == "220 held\r\n")
        #expect(!String(decoding: sawRaw, as: UTF8.self).contains("220 held"))
        on(queue) { connection.abort(reason: "test over") }
    }
}
