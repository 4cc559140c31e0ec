// Captured log lines and configs for the mail-loop tests.
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

/// Log lines, as relayd writes them, kept for the test to read.
public final class LogLines: @unchecked Sendable {
    public init() {}
    private let lock = NSLock()
    private var lines: [String] = []
    public var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
    public lazy var logger = Logger(label: "test") { [self] label in
        LogfmtHandler(label: label, level: .debug, timestamps: false) { [self] line in
            lock.lock(); lines.append(line); lock.unlock()
        }
    }
    public func count(_ fragment: String) -> Int { all.filter { $0.contains(fragment) }.count }
}

/// A config with one listener at `bind` and the given [outbound] lines.
public func loopConfig(bind: String, outbound: String, relayDomains: [String] = [], limits: String = "") throws -> Config {
    let text = """
    [server]
    hostname = "relay.loop.test"
    spool_dir = "spool"

    [[listener]]
    address = "\(bind)"
    kind = "smtp"

    [tls]
    certificate = "\(Fixtures.path("mx.pem"))"
    key = "\(Fixtures.path("mx.key"))"

    [relay]
    domains = [\(relayDomains.map { "\"\($0)\"" }.joined(separator: ", "))]

    [limits]
    \(limits)

    [outbound]
    connect_timeout = "2s"
    connection_reuse = "0s"
    \(outbound)
    """
    return try ConfigLoader.parse(text, file: NSTemporaryDirectory() + "relayd-loop.conf")
}

/// A port nothing listens on (bound once, then closed).
public func unusedPort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var storage = sockaddr_storage()
    let len = Socket.fill(&storage, IPAddress("127.0.0.1")!, 0)
    _ = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    return Socket.localPort(fd)!
}
