// A one-connection HTTPS server on 127.0.0.1 (ephemeral port) for the
// fetcher's tests: a blocking socket on its own thread, TLS through a
// server TLSConnection, and a scripted answer. It records the SNI name the
// client sent — read from the ClientHello on the wire, since TLSConnection
// does not expose the server side's view of it — the request, and how many
// body bytes it managed to write before the client went away.
import Foundation
@testable import RelayModel
@testable import RelayTLS
#if canImport(Glibc)
import Glibc
#endif

final class TestHTTPSServer: @unchecked Sendable {
    enum Behaviour: Sendable {
        /// Answers with these bytes, then close_notify (unless `cleanClose`
        /// is false: then a bare TCP close) .
        case respond(String, cleanClose: Bool = true)
        /// Answers with `head`, then writes `bodyBytes` bytes of body in
        /// pieces for as long as the client takes them.
        case stream(head: String, bodyBytes: Int)
        /// Accepts and reads, but never writes a byte (not even TLS).
        case silentTCP
        /// Completes the handshake and reads the request, never answers.
        case silentAfterHandshake
    }

    struct Record: Sendable {
        var connections = 0
        var serverName: String?
        var request = ""
        /// The request's body, as far as its Content-Length says.
        var requestBody: [UInt8] = []
        var handshakeCompleted = false
        var bodyBytesWritten = 0
    }

    let port: UInt16
    private let listenFD: Int32
    private let context: TLSContext
    private let behaviour: Behaviour
    private let lock = NSLock()
    private var record = Record()
    private let done = DispatchSemaphore(value: 0)

    init(context: TLSContext, behaviour: Behaviour) throws {
        self.context = context
        self.behaviour = behaviour
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard fd >= 0, rc == 0, listen(fd, 8) == 0 else { throw SystemError("test server listen") }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        listenFD = fd
        port = UInt16(bigEndian: bound.sin_port)
        Thread { [self] in
            serveOne()
            close(listenFD)
            done.signal()
        }.start()
    }

    /// Waits (bounded) for the connection to end and returns what it saw.
    func finish(timeout: Double = 20) -> Record? {
        guard done.wait(timeout: .now() + timeout) == .success else { return nil }
        lock.lock(); defer { lock.unlock() }
        return record
    }

    private func update(_ f: (inout Record) -> Void) { lock.lock(); f(&record); lock.unlock() }

    // MARK: one connection

    private func serveOne() {
        var pfd = pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, 15_000) == 1 else { return }
        let fd = accept(listenFD, nil, nil)
        guard fd >= 0 else { return }
        defer { close(fd) }
        update { $0.connections += 1 }
        // Never block for ever on a client that stopped reading or writing.
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))

        if case .silentTCP = behaviour {
            while readRaw(fd) != nil {}
            return
        }
        guard let tls = try? TLSConnection(context: context), handshake(fd, tls) else { return }
        guard let (request, body) = readRequest(fd, tls) else { return }
        update { $0.request = request; $0.requestBody = body }
        switch behaviour {
        case .silentTCP:
            return
        case .silentAfterHandshake:
            while readRaw(fd) != nil {}
        case .respond(let text, let cleanClose):
            guard write(fd, tls, Array(text.utf8)) else { return }
            if cleanClose {
                tls.close()
                _ = writeRaw(fd, tls.takeNetworkBytes())
            }
        case .stream(let head, let bodyBytes):
            guard write(fd, tls, Array(head.utf8)) else { return }
            let piece = [UInt8](repeating: UInt8(ascii: "x"), count: 16 * 1024)
            var written = 0
            while written < bodyBytes {
                let n = min(piece.count, bodyBytes - written)
                guard write(fd, tls, Array(piece[0..<n])) else { return }
                written += n
                update { $0.bodyBytesWritten = written }
            }
            tls.close()
            _ = writeRaw(fd, tls.takeNetworkBytes())
        }
    }

    private func handshake(_ fd: Int32, _ tls: TLSConnection) -> Bool {
        var hello: [UInt8] = []
        while true {
            guard let raw = readRaw(fd) else { return false }
            if hello.count < 64 * 1024 {
                hello += raw
                if let name = ClientHello.serverName(hello) { update { $0.serverName = name } }
            }
            tls.receiveFromNetwork(raw)
            let step = tls.handshake()
            guard writeRaw(fd, tls.takeNetworkBytes()) else { return false }
            switch step {
            case .complete:
                update { $0.handshakeCompleted = true }
                return true
            case .failed: return false
            case .incomplete: continue
            }
        }
    }

    /// The request head, and the body its Content-Length announces.
    private func readRequest(_ fd: Int32, _ tls: TLSConnection) -> (String, [UInt8])? {
        var plain: [UInt8] = []
        let end: [UInt8] = [13, 10, 13, 10]
        while true {
            if case .data(let p) = tls.readPlaintext() { plain += p }
            if let range = plain.firstRange(of: end) {
                let head = String(decoding: plain[..<range.upperBound], as: UTF8.self)
                let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.dropFirst(15).trimmingCharacters(in: .whitespaces)) } ?? 0
                if plain.count - range.upperBound >= length {
                    return (head, Array(plain[range.upperBound..<(range.upperBound + length)]))
                }
            }
            guard let raw = readRaw(fd) else { return nil }
            tls.receiveFromNetwork(raw)
        }
    }

    private func write(_ fd: Int32, _ tls: TLSConnection, _ bytes: [UInt8]) -> Bool {
        guard (try? tls.writePlaintext(bytes)) != nil else { return false }
        return writeRaw(fd, tls.takeNetworkBytes())
    }

    private func readRaw(_ fd: Int32) -> [UInt8]? {
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        return n > 0 ? Array(chunk[0..<n]) : nil
    }

    private func writeRaw(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            off += n
        }
        return true
    }
}

/// The server_name extension (RFC 6066 §3) of a ClientHello, read from the
/// raw TLS records as they arrived (RFC 8446 §4.1.2): what the client put
/// on the wire, whatever the server's TLS library makes of it.
enum ClientHello {
    static func serverName(_ records: [UInt8]) -> String? {
        // Join the handshake records' payloads; the hello may span several.
        var handshake: [UInt8] = []
        var i = 0
        while i + 5 <= records.count, records[i] == 22 {
            let length = Int(records[i + 3]) << 8 | Int(records[i + 4])
            guard i + 5 + length <= records.count else { break }
            handshake += records[(i + 5)..<(i + 5 + length)]
            i += 5 + length
        }
        var r = Reader(bytes: handshake)
        guard r.u8() == 1, let bodyLength = r.u24(), bodyLength <= r.left else { return nil }
        guard r.skip(2 + 32),                       // legacy_version, random
              let sid = r.u8(), r.skip(Int(sid)),   // legacy_session_id
              let suites = r.u16(), r.skip(suites), // cipher_suites
              let comp = r.u8(), r.skip(Int(comp)), // legacy_compression_methods
              let extensionsLength = r.u16(), extensionsLength <= r.left else { return nil }
        let end = r.position + extensionsLength
        while r.position + 4 <= end {
            guard let type = r.u16(), let length = r.u16(), length <= r.left else { return nil }
            guard type == 0 else { _ = r.skip(length); continue }
            guard r.u16() != nil, r.u8() == 0, let nameLength = r.u16(), let name = r.take(nameLength) else { return nil }
            return String(decoding: name, as: UTF8.self)
        }
        return nil
    }

    private struct Reader {
        let bytes: [UInt8]
        var position = 0
        var left: Int { bytes.count - position }
        mutating func take(_ n: Int) -> ArraySlice<UInt8>? {
            guard n <= left else { return nil }
            defer { position += n }
            return bytes[position..<(position + n)]
        }
        mutating func skip(_ n: Int) -> Bool { take(n) != nil }
        mutating func u8() -> UInt8? { take(1)?.first }
        mutating func u16() -> Int? { take(2).map { Int($0.first!) << 8 | Int($0.last!) } }
        mutating func u24() -> Int? { take(3).map { $0.reduce(0) { $0 << 8 | Int($1) } } }
    }
}
