// A small SMTP receiver for in-process tests of the client side: one
// blocking socket on its own thread, optional STARTTLS through a server
// TLSConnection, and a record of the raw DATA bytes and whether the end of
// data ever arrived. It reads slowly on request, so the sender's socket
// pushes back and its drained path runs.
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
#if canImport(Glibc)
import Glibc
#endif

public final class ScriptedSMTPServer: @unchecked Sendable {
    public struct Record {
        /// Everything after the 354, up to and including the end marker.
        public var rawData: [UInt8] = []
        public var sawEndOfData = false
        public var usedTLS = false
        public var messages = 0
        /// Every command line received, in order (DATA content excluded).
        public var commands: [String] = []
    }

    private let fd: Int32
    private let tlsContext: TLSContext?
    private let readDelay: useconds_t
    private var tls: TLSConnection?
    private var buffer: [UInt8] = []
    private let lock = NSLock()
    private var record = Record()
    private let done = DispatchSemaphore(value: 0)

    /// `fd` is blocking and becomes the server's (closed when it ends).
    public init(fd: Int32, tls: TLSContext? = nil, readDelayMicroseconds: useconds_t = 0) {
        self.fd = fd
        self.tlsContext = tls
        self.readDelay = readDelayMicroseconds
    }

    public func start() {
        let t = Thread { [self] in
            run()
            close(fd)
            done.signal()
        }
        t.start()
    }

    /// Waits (bounded) for the session to end and returns what it saw.
    public func finish(timeout: Double = 30) -> Record? {
        guard done.wait(timeout: .now() + timeout) == .success else { return nil }
        lock.lock(); defer { lock.unlock() }
        return record
    }

    private func update(_ f: (inout Record) -> Void) { lock.lock(); f(&record); lock.unlock() }

    // MARK: transport

    private func writeRaw(_ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            off += n
        }
        return true
    }

    private func send(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard let tls else { return writeRaw(bytes) }
        guard (try? tls.writePlaintext(bytes)) != nil else { return false }
        return writeRaw(tls.takeNetworkBytes())
    }

    private func readRaw() -> [UInt8]? {
        if readDelay > 0 { usleep(readDelay) }
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        return n > 0 ? Array(chunk[0..<n]) : nil
    }

    /// Appends more plaintext to the buffer; false at end of stream.
    private func fill() -> Bool {
        // Records that arrived with the end of the handshake may already
        // hold plaintext: take it before waiting on the socket.
        if let tls, case .data(let p) = tls.readPlaintext(), !p.isEmpty {
            buffer += p
            return true
        }
        while true {
            guard let raw = readRaw() else { return false }
            guard let tls else { buffer += raw; return true }
            tls.receiveFromNetwork(raw)
            switch tls.readPlaintext() {
            case .data(let p): if !p.isEmpty { buffer += p; return true }
            case .closed(let p): buffer += p; return !p.isEmpty
            case .failed: return false
            }
        }
    }

    private func line() -> String? {
        while true {
            if let lf = buffer.firstIndex(of: 10) {
                let l = String(decoding: buffer[..<lf], as: UTF8.self).trimmingCharacters(in: .newlines)
                buffer.removeSubrange(...lf)
                return l
            }
            guard fill() else { return nil }
        }
    }

    private func handshake() -> Bool {
        guard let ctx = tlsContext, let t = try? TLSConnection(context: ctx) else { return false }
        tls = t
        if !buffer.isEmpty { t.receiveFromNetwork(buffer); buffer = [] }
        while true {
            switch t.handshake() {
            case .complete:
                _ = writeRaw(t.takeNetworkBytes())
                update { $0.usedTLS = true }
                return true
            case .failed: return false
            case .incomplete:
                guard writeRaw(t.takeNetworkBytes()), let raw = readRaw() else { return false }
                t.receiveFromNetwork(raw)
            }
        }
    }

    // MARK: the dialogue

    private func run() {
        guard send("220 test.example ESMTP\r\n") else { return }
        while let l = line() {
            update { $0.commands.append(l) }
            let verb = l.prefix(4).uppercased()
            switch verb {
            case "EHLO":
                let starttls = tlsContext != nil && tls == nil ? "250-STARTTLS\r\n" : ""
                guard send("250-test.example\r\n250-PIPELINING\r\n" + starttls + "250 8BITMIME\r\n") else { return }
            case "STAR":
                guard send("220 2.0.0 go ahead\r\n"), handshake() else { return }
            case "MAIL", "RCPT", "RSET", "NOOP":
                guard send("250 2.0.0 ok\r\n") else { return }
            case "DATA":
                guard send("354 go ahead\r\n") else { return }
                guard readData() else { return }
                update { $0.messages += 1 }
                guard send("250 2.0.0 ok: queued\r\n") else { return }
            case "QUIT":
                _ = send("221 2.0.0 bye\r\n")
                return
            default:
                guard send("502 5.5.1 what\r\n") else { return }
            }
        }
    }

    /// Reads up to the end marker; false if the stream ended first.
    private func readData() -> Bool {
        var data: [UInt8] = []
        let marker: [UInt8] = [13, 10, 46, 13, 10]
        var scanFrom = 0
        while true {
            data += buffer
            buffer = []
            // The end marker, also as the very first line (an empty body).
            if data.starts(with: [46, 13, 10]) {
                buffer = Array(data[3...])
                update { $0.rawData = [46, 13, 10]; $0.sawEndOfData = true }
                return true
            }
            if let r = data[max(0, scanFrom - 4)...].firstRange(of: marker) {
                buffer = Array(data[r.upperBound...])
                let kept = Array(data[..<r.upperBound])
                update { $0.rawData = kept; $0.sawEndOfData = true }
                return true
            }
            scanFrom = data.count
            update { $0.rawData = data }
            guard fill() else { return false }
        }
    }
}

/// A connected pair: a non-blocking client fd for Connection, a blocking
/// server fd, both with small buffers so the client's writes push back.
public func smallBufferSocketPair() -> (client: Int32, server: Int32) {
    var fds: [Int32] = [0, 0]
    precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
    var small: Int32 = 16 * 1024
    for fd in fds {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
    }
    _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
    return (fds[0], fds[1])
}

/// Undoes dot-stuffing of DATA bytes that end with the end marker.
public func unstuff(_ raw: [UInt8]) -> [UInt8]? {
    var reader = DataReader(maxSize: 1 << 30, maxLineLength: 1 << 30)
    guard case .complete(let body) = reader.consume(raw[...]).outcome else { return nil }
    return body
}
