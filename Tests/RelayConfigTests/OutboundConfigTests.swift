// [outbound] default_level in its table form and connection_reuse, read
// from real files; and what the engine makes of a default with a strength
// or a fallback.
import Foundation
import Testing
@testable import RelayModel
@testable import RelayPolicy
@testable import RelayTLS
@testable import RelayAuth
@testable import RelayDNS
@testable import RelayConfig
@testable import RelayDelivery
import RelayTestSupport

private func loadOutbound(_ outbound: String, in folder: String? = nil) throws -> Config {
    let dir = folder ?? NSTemporaryDirectory() + "relayd-outbound-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let text = """
    [server]
    hostname = "relay.example.test"
    spool_dir = "spool"

    [[listener]]
    address = "127.0.0.1:2525"
    kind = "smtp"

    [tls]
    certificate = "\(Fixtures.path("mx.pem"))"
    key = "\(Fixtures.path("mx.key"))"

    [outbound]
    \(outbound)

    [[outbound.relay]]
    name = "portal"
    address = "127.0.0.1:2526"
    """
    try text.write(toFile: dir + "/relayd.conf", atomically: true, encoding: .utf8)
    return try ConfigLoader.load(path: dir + "/relayd.conf")
}

private func problems(_ outbound: String) -> [String] {
    do {
        _ = try loadOutbound(outbound)
        return []
    } catch let e as ConfigErrors {
        return e.errors.map { "\($0)" }
    } catch {
        return ["\(error)"]
    }
}

struct DefaultLevelCase: CustomTestStringConvertible, Sendable {
    let line: String
    let level: PolicyLevel
    let verifies: Bool
    let fallback: String?
    var testDescription: String { line }
}

@Suite struct DefaultLevelForms {
    static let acceptedForms: [DefaultLevelCase] = [
        .init(line: #"default_level = "verify""#, level: .verify, verifies: true, fallback: nil),
        .init(line: #"default_level = { level = "tls-exclusive", strength = "forced" }"#,
              level: .tlsExclusive, verifies: false, fallback: nil),
        .init(line: #"default_level = { level = "tls-exclusive" }"#, level: .tlsExclusive, verifies: true, fallback: nil),
        .init(line: #"default_level = { level = "forced", fallback = "portal" }"#, level: .forced, verifies: false,
              fallback: "portal"),
    ]

    @Test("default_level takes a level or the per-domain table form", arguments: acceptedForms)
    func accepted(_ c: DefaultLevelCase) throws {
        let config = try loadOutbound(c.line)
        #expect(config.outbound.defaultLevel == c.level)
        let decision = OutboundSettings.engine(config).decide("anywhere.example")
        #expect(decision.layer == .defaultLevel)
        #expect(decision.level == c.level)
        #expect(decision.requiresVerification == c.verifies)
        #expect(decision.fallback == c.fallback)
    }

    @Test("a bad table names outbound.default_level", arguments: [
        #"default_level = { level = "forced", fallback = "nowhere" }"#,
        #"default_level = { level = "opportunistic", strength = "forced" }"#,
        #"default_level = { level = "opportunistic", fallback = "portal" }"#,
        #"default_level = { strength = "forced" }"#,
        #"default_level = "paranoid""#,
    ])
    func refused(_ line: String) {
        let found = problems(line)
        #expect(!found.isEmpty)
        #expect(found.allSatisfy { $0.contains("outbound.default_level") }, "\(found)")
    }

    @Test func anOperatorEntryStillWinsOverATableDefault() throws {
        let config = try loadOutbound("""
        default_level = { level = "tls-exclusive", strength = "forced" }
        [outbound.domains]
        "legacy.example" = "opportunistic"
        """)
        let d = OutboundSettings.engine(config).decide("legacy.example")
        #expect(d.level == .opportunistic)
        #expect(d.layer == .operatorEntry)
    }
}

@Suite struct ConnectionReuseSetting {
    @Test("connection_reuse: seconds kept, 0 is off", arguments: [
        ("", 5), (#"connection_reuse = "0s""#, 0), ("connection_reuse = 0", 0), (#"connection_reuse = "0""#, 0),
        (#"connection_reuse = "2s""#, 2), (#"connection_reuse = "5m""#, 300),
    ])
    func accepted(_ line: String, _ seconds: Int) throws {
        let config = try loadOutbound(line)
        #expect(config.outbound.connectionReuse == seconds)
        let env = try OutboundSettings.environment(config: config, resolver: NoDNS(), logger: .init(label: "test"))
        #expect((env.pool == nil) == (seconds == 0))
        #expect(env.pool.map { $0.idleSeconds } ?? 0 == seconds)
    }

    @Test(arguments: [#"connection_reuse = "6m""#, "connection_reuse = -1", #"connection_reuse = "soon""#])
    func refused(_ line: String) {
        let found = problems(line)
        #expect(found.count == 1)
        #expect(found.first?.contains("outbound.connection_reuse") == true, "\(found)")
    }
}

/// A resolver for settings that are built but never asked anything.
private final class NoDNS: DNSResolving {
    func query(_ name: String, _ type: DNSType, completion: @escaping @Sendable (Result<DNSResponse, DNSError>) -> Void) {
        completion(.failure(.timeout))
    }
}

@Suite struct ReloadRestartKeys {
    @Test("a reload names exactly the keys it cannot apply", arguments: [
        ("", [String]()),
        ("[dns]\nservers = [\"127.0.0.1:5353\"]", ["dns.servers"]),
        ("[log]\nlevel = \"debug\"", ["log.level"]),
        ("[limits]\nauth_failures_per_ip = 3", []),
        ("[queue]\nmin_free_space = 5", []),
    ])
    func restartKeys(_ extra: String, _ expected: [String]) throws {
        let dir = NSTemporaryDirectory() + "relayd-reload-\(UUID().uuidString)"
        let base = try loadOutbound("", in: dir)
        let changed = try loadOutbound("\n\(extra)", in: dir)
        #expect(changed.changesNeedingRestart(from: base) == expected)
    }
}

@Suite struct ReloadableLimits {
    @Test func throttleLimitChangesInPlace() {
        let throttle = AuthThrottle(maxFailures: 5)
        let ip = IPAddress("192.0.2.7")!
        for i in 0..<3 { throttle.recordFailure(ip, now: Double(i)) }
        #expect(!throttle.isBlocked(ip, now: 4))
        throttle.maxFailures = 3
        #expect(throttle.isBlocked(ip, now: 4))
    }
}
