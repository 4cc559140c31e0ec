import Foundation
import Logging
import Testing
@testable import RelayModel
@testable import RelayIO
@testable import RelayCore
@testable import RelayMetrics
import RelayTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The scrape listener over real loopback sockets (blocking client side,
/// every wait bounded by SO_RCVTIMEO).
@Suite(.serialized) struct MetricsServerTests {
    static let build = RelayMetrics.BuildInfo(version: "t", openssl: "t", cares: "t")

    func connect(_ port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw SystemError("connect") }
        return fd
    }

    /// Everything the server sends until it closes (or 5 s pass).
    func readAll(_ fd: Int32) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<1000 {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            out += buf[..<n]
        }
        return out
    }

    func exchange(_ port: UInt16, _ request: String) throws -> String {
        let fd = try connect(port)
        defer { close(fd) }
        _ = Array(request.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        return String(decoding: readAll(fd), as: UTF8.self)
    }

    func server(_ metrics: RelayMetrics, maxConnections: Int = 16, deadline: Double = 5) throws -> (MetricsServer, UInt16) {
        let s = MetricsServer(address: HostPort("127.0.0.1:\(unusedPort())", defaultPort: nil)!, metrics: metrics,
                              logger: Logger(label: "test"), maxConnections: maxConnections, readDeadline: deadline)
        return (s, try s.start())
    }

    @Test func servesTheRegistryAndRefusesTheRest() throws {
        let metrics = RelayMetrics(listeners: ["127.0.0.1:25"], build: Self.build)
        metrics.authFailed()
        let (s, port) = try server(metrics)
        defer { s.stop() }
        let ok = try exchange(port, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect(ok.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(ok.contains("\r\nContent-Type: text/plain; version=0.0.4"))
        #expect(ok.contains("\nrelayd_auth_failures_total 1\n"))
        let body = ok.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        #expect(ok.contains("\r\nContent-Length: \(body.utf8.count)\r\n"))
        #expect(try exchange(port, "GET /other HTTP/1.0\r\n\r\n").hasPrefix("HTTP/1.1 404 "))
        #expect(try exchange(port, "PUT /metrics HTTP/1.0\r\n\r\n").contains("\r\nAllow: GET\r\n"))
        #expect(try exchange(port, "garbage\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
    }

    @Test func aSlowClientIsDroppedAtTheDeadlineAndExtraConnectionsAtOnce() throws {
        let metrics = RelayMetrics(listeners: [], build: Self.build)
        let (s, port) = try server(metrics, maxConnections: 2, deadline: 0.5)
        defer { s.stop() }
        let slow = try connect(port)
        defer { close(slow) }
        _ = Array("GET /met".utf8).withUnsafeBytes { write(slow, $0.baseAddress, $0.count) }
        let second = try connect(port)
        defer { close(second) }
        #expect(waitUntil(2) { s.openConnections == 2 })
        // The third is over the cap: closed unread, no answer.
        let third = try connect(port)
        defer { close(third) }
        #expect(readAll(third).isEmpty)
        // The slow one gets nothing and is closed at its deadline.
        let started = Date()
        #expect(readAll(slow).isEmpty)
        #expect(Date().timeIntervalSince(started) < 3)
        #expect(waitUntil(2) { s.openConnections == 0 })
        // Then scrapes work again.
        #expect(try exchange(port, "GET /metrics HTTP/1.0\r\n\r\n").hasPrefix("HTTP/1.1 200 OK"))
    }
}
