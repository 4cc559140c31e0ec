// "Mail for DOMAIN loops back to myself": the pure matcher of next hops
// against listener binds, then whole delivery attempts whose smarthost,
// transport relay, fallback relay or MX host is relayd itself (bounced
// with 5.4.6, never connected to), and check-config's route warnings.
import Foundation
import Logging
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

// MARK: the matcher

/// This host's interface addresses, for every case of the table.
private let interfaces = ["192.0.2.10", "2001:db8::10"].map { IPAddress($0)! }

@Suite struct SelfLoopMatcher {
    static let binds = ["127.0.0.1:25", "192.0.2.10:25", "*:25", "0.0.0.0:25", "[::]:25", "[2001:db8::10]:25", "*:587"]
    static let hops = ["127.0.0.1", "127.0.0.29", "0.0.0.0", "192.0.2.10", "::ffff:192.0.2.10", "2001:db8::10",
                       "::1", "::", "198.51.100.7", "2001:db8::99"]
    /// Which next hops (all on port 25) reach each bind.
    static let reaching: [String: Set<String>] = [
        "127.0.0.1:25": ["127.0.0.1", "0.0.0.0"],
        "192.0.2.10:25": ["192.0.2.10", "::ffff:192.0.2.10"],
        "*:25": ["127.0.0.1", "127.0.0.29", "0.0.0.0", "192.0.2.10", "::ffff:192.0.2.10", "2001:db8::10", "::1", "::"],
        "0.0.0.0:25": ["127.0.0.1", "127.0.0.29", "0.0.0.0", "192.0.2.10", "::ffff:192.0.2.10"],
        "[::]:25": ["2001:db8::10", "::1", "::"],
        "[2001:db8::10]:25": ["2001:db8::10"],
        "*:587": [],
    ]

    @Test("a next hop on port 25 is relayd itself exactly when it reaches the listener", arguments: binds, hops)
    func matches(bind: String, hop: String) {
        let listener = HostPort(bind, defaultPort: nil)!
        let found = SelfLoop.listener(reachedBy: IPAddress(hop)!, port: 25, listeners: [listener], localAddresses: { interfaces })
        #expect((found != nil) == Self.reaching[bind]!.contains(hop))
        if let found { #expect(found == listener) }
    }

    @Test("the interface addresses are listed only when a wildcard bind has the hop's port")
    func interfacesAskedOnlyWhenNeeded() {
        var asked = 0
        let listeners = ["127.0.0.1:2525", "*:587"].map { HostPort($0, defaultPort: nil)! }
        _ = SelfLoop.listener(reachedBy: IPAddress("192.0.2.10")!, port: 2525, listeners: listeners,
                              localAddresses: { asked += 1; return interfaces })
        #expect(asked == 0)
        _ = SelfLoop.listener(reachedBy: IPAddress("192.0.2.10")!, port: 587, listeners: listeners + listeners,
                              localAddresses: { asked += 1; return interfaces })
        #expect(asked == 1)
    }

    @Test func thisHostsOwnInterfacesIncludeLoopback() {
        #expect(LocalAddresses.current().contains(IPAddress("127.0.0.1")!))
    }
}

// MARK: delivery attempts

/// An SMTP server on 127.0.0.1 that never offers STARTTLS: what sends a
/// `forced` domain to its fallback relay.
final class PlaintextSMTPStub: @unchecked Sendable {
    let fd: Int32
    let port: UInt16

    init() throws {
        let listening = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var storage = sockaddr_storage()
        let len = Socket.fill(&storage, IPAddress("127.0.0.1")!, 0)
        let rc = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listening, $0, len) } }
        guard rc == 0, listen(listening, 16) == 0, let port = Socket.localPort(listening) else {
            close(listening)
            throw SystemError("stub listen")
        }
        fd = listening
        self.port = port
        Thread.detachNewThread {
            while true {
                let c = accept(listening, nil, nil)
                guard c >= 0 else { return }
                Thread.detachNewThread { Self.serve(c) }
            }
        }
    }

    static func serve(_ c: Int32) {
        defer { close(c) }
        func say(_ s: String) { _ = s.withCString { send(c, $0, strlen($0), Int32(MSG_NOSIGNAL)) } }
        say("220 stub.loop.test ESMTP\r\n")
        var pending: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(c, &buf, buf.count, 0)
            guard n > 0 else { return }
            pending += buf[..<n]
            while let lf = pending.firstIndex(of: 10) {
                let line = String(decoding: pending[..<lf], as: UTF8.self).uppercased()
                pending.removeFirst(lf + 1)
                if line.hasPrefix("QUIT") { return say("221 bye\r\n") }
                say(line.hasPrefix("EHLO") ? "250 stub.loop.test\r\n" : "250 ok\r\n")
            }
        }
    }

    deinit { shutdown(fd, Int32(SHUT_RDWR)); close(fd) }
}

struct LoopRoute: CustomTestStringConvertible, Sendable {
    let name: String
    /// Builds the [outbound] lines and the DNS answers, given relayd's own
    /// port and the plaintext stub's.
    let setup: @Sendable (_ own: UInt16, _ stub: UInt16, _ dns: FakeResolver) -> (bind: String, outbound: String)
    /// "5.4.6" or the status of a failure that is not a loop.
    let status: String
    /// Delivery attempt lines expected (connections made).
    let attempts: Int
    var testDescription: String { name }
}

@Suite(.serialized) struct LoopBackToMyself {
    static let routes: [LoopRoute] = [
        .init(name: "smarthost at relayd's own listener", setup: { own, _, _ in
            ("127.0.0.1:\(own)", """
            smarthost = "self"
            [[outbound.relay]]
            name = "self"
            address = "127.0.0.1:\(own)"
            level = "none"
            """)
        }, status: "5.4.6", attempts: 0),
        .init(name: "transport relay whose name resolves to this host, listener on every address", setup: { own, _, dns in
            dns.set("relay.loop.test", .a, [.a(IPAddress("127.0.0.7")!)])
            return ("*:\(own)", """
            [[outbound.relay]]
            name = "inside"
            address = "relay.loop.test:\(own)"
            level = "none"
            [outbound.transport]
            "far.example" = "inside"
            """)
        }, status: "5.4.6", attempts: 0),
        .init(name: "MX host 127.0.0.1", setup: { own, _, dns in
            dns.set("far.example", .mx, [.mx(preference: 10, exchange: "mx.far.example")])
            dns.set("mx.far.example", .a, [.a(IPAddress("127.0.0.1")!)])
            return ("127.0.0.1:\(own)", "mx_port = \(own)\ndefault_level = \"none\"")
        }, status: "5.4.6", attempts: 0),
        .init(name: "implicit MX: the domain's own address is this host", setup: { own, _, dns in
            dns.set("far.example", .a, [.a(IPAddress("127.0.0.1")!)])
            return ("*:\(own)", "mx_port = \(own)\ndefault_level = \"none\"")
        }, status: "5.4.6", attempts: 0),
        .init(name: "best MX is this host, a backup elsewhere", setup: { own, _, dns in
            dns.set("far.example", .mx, [.mx(preference: 10, exchange: "me.far.example"), .mx(preference: 20, exchange: "other.far.example")])
            dns.set("me.far.example", .a, [.a(IPAddress("127.0.0.2")!)])
            dns.set("other.far.example", .a, [.a(IPAddress("127.0.0.3")!)])
            return ("127.0.0.2:\(own)", "mx_port = \(own)\ndefault_level = \"none\"")
        }, status: "5.4.6", attempts: 0),
        .init(name: "this host is a backup MX: only the better one is tried", setup: { own, _, dns in
            dns.set("far.example", .mx, [.mx(preference: 10, exchange: "other.far.example"), .mx(preference: 20, exchange: "me.far.example")])
            dns.set("me.far.example", .a, [.a(IPAddress("127.0.0.2")!)])
            dns.set("other.far.example", .a, [.a(IPAddress("127.0.0.3")!)])
            return ("127.0.0.2:\(own)", "mx_port = \(own)\ndefault_level = \"none\"")
        }, status: "4.4.1", attempts: 1),
        .init(name: "fallback relay at relayd's own listener", setup: { own, stub, dns in
            dns.set("far.example", .mx, [.mx(preference: 10, exchange: "mx.far.example")])
            dns.set("mx.far.example", .a, [.a(IPAddress("127.0.0.1")!)])
            return ("127.0.0.1:\(own)", """
            mx_port = \(stub)
            [[outbound.relay]]
            name = "portal"
            address = "127.0.0.1:\(own)"
            level = "none"
            [outbound.domains]
            "far.example" = { level = "forced", fallback = "portal" }
            """)
        }, status: "5.4.6", attempts: 1),
    ]

    @Test(arguments: routes)
    func route(_ route: LoopRoute) throws {
        let stub = try PlaintextSMTPStub()
        defer { withExtendedLifetime(stub) {} }
        let dns = FakeResolver()
        let own = unusedPort()
        let (bind, outbound) = route.setup(own, stub.port, dns)
        let config = try loopConfig(bind: bind, outbound: outbound)
        let log = LogLines()
        let env = DeliveryEnvironment(config: config, engine: OutboundSettings.engine(config),
                                      mx: MXResolver(resolver: dns, shuffle: { $0 }), dns: dns,
                                      tlsContext: try OutboundSettings.clientTLSContext(config),
                                      logger: log.logger, queue: DispatchQueue(label: "test.delivery"))
        var envelope = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<s@sender.test>")!),
                                origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        envelope.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u@far.example>")!)]
        let message = QueuedMessage(id: "LOOPTEST1", arrival: 0, envelope: envelope, body: Array("Subject: x\r\n\r\nx\r\n".utf8))
        let done = DispatchSemaphore(value: 0)
        final class Box: @unchecked Sendable { var report: DomainDeliveryReport? }
        let box = Box()
        DomainDelivery(env: env, message: SpooledMessage(message), domain: "far.example", recipientIndexes: [0]).run { report in
            box.report = report
            done.signal()
        }
        #expect(done.wait(timeout: .now() + 15) == .success)
        guard case .failed(let f)? = box.report?.results[0] else {
            Issue.record("expected a failure, got \(String(describing: box.report?.results))")
            return
        }
        #expect(f.status == route.status, "\(f)")
        #expect(log.count("msg=\"delivery attempt\"") == route.attempts, "\(log.all)")
        if route.status == "5.4.6" {
            #expect(f.isPermanent)
            #expect(f.reason == "mail for far.example loops back to myself")
            #expect(log.count("loops back to myself") == 1, "\(log.all)")
            // Nothing ever connected to relayd's own port.
            #expect(!log.all.contains { $0.contains("msg=\"delivery attempt\"") && $0.contains("port=\(own)") })
        } else {
            #expect(!f.isPermanent)
            #expect(log.all.contains { $0.contains("msg=\"delivery attempt\"") && $0.contains("ip=127.0.0.3") })
        }
    }
}

// MARK: check-config

@Suite struct RouteWarnings {
    func warnings(_ config: Config, _ dns: FakeResolver) -> [String] {
        let done = DispatchSemaphore(value: 0)
        final class Box: @unchecked Sendable { var w: [String] = [] }
        let box = Box()
        RouteCheck(config: config, resolver: dns, localAddresses: { interfaces }).run { box.w = $0; done.signal() }
        _ = done.wait(timeout: .now() + 10)
        return box.w
    }

    @Test("relay domains: no transport and no MX, an MX that is this host, and what is fine")
    func relayDomains() throws {
        let dns = FakeResolver()
        dns.setRcode("gone.example", .mx, .nxDomain)
        dns.set("bare.example", .a, [.a(IPAddress("198.51.100.9")!)])
        dns.set("me.example", .mx, [.mx(preference: 10, exchange: "mx.me.example")])
        dns.set("mx.me.example", .a, [.a(IPAddress("192.0.2.10")!)])
        dns.set("local.example", .mx, [.mx(preference: 10, exchange: "mx.local.example")])
        dns.set("mx.local.example", .a, [.a(IPAddress("127.0.0.1")!)])
        dns.set("fine.example", .mx, [.mx(preference: 10, exchange: "mx.fine.example")])
        dns.set("mx.fine.example", .a, [.a(IPAddress("198.51.100.10")!)])
        dns.fail("flaky.example", .mx, .timeout)
        let config = try loopConfig(bind: "*:25", outbound: """
            mx_port = 25
            [[outbound.relay]]
            name = "inside"
            address = "198.51.100.20:25"
            [outbound.transport]
            "routed.example" = "inside"
            """, relayDomains: ["gone.example", "bare.example", "me.example", "local.example", "fine.example",
                               "flaky.example", "routed.example", ".sub.example"])
        let w = warnings(config, dns)
        #expect(w.count == 5, "\(w)")
        #expect(w.contains { $0.hasPrefix("relay domain gone.example has neither an [outbound.transport] entry nor a usable MX") })
        #expect(w.contains { $0.hasPrefix("relay domain bare.example has neither an [outbound.transport] entry nor an MX record") })
        #expect(w.contains { $0.hasPrefix("relay domain me.example: its MX host mx.me.example [192.0.2.10] is this host; relayd's listener *:25") })
        #expect(w.contains { $0.hasPrefix("relay domain local.example: its MX host mx.local.example [127.0.0.1] is this host") })
        #expect(w.contains { $0.hasPrefix("relay domain flaky.example: its MX hosts could not be checked: MX lookup for flaky.example failed: DNS timeout") })
        #expect(!w.contains { $0.contains("fine.example") || $0.contains("routed.example") || $0.contains("sub.example") })
    }

    @Test("a relay that is relayd's own listener")
    func relayIsSelf() throws {
        let dns = FakeResolver()
        dns.set("smart.example", .a, [.a(IPAddress("127.0.0.1")!)])
        let config = try loopConfig(bind: "127.0.0.1:2525", outbound: """
            smarthost = "up"
            [[outbound.relay]]
            name = "up"
            address = "smart.example:2525"
            [[outbound.relay]]
            name = "direct"
            address = "127.0.0.1:2525"
            [[outbound.relay]]
            name = "elsewhere"
            address = "127.0.0.1:2526"
            """, relayDomains: ["example.org"])
        let w = warnings(config, dns)
        #expect(w == [
            "[[outbound.relay]] direct (127.0.0.1:2525) is relayd's own listener 127.0.0.1:2525: mail sent through it would loop back to myself (bounced with 5.4.6)",
            "[[outbound.relay]] up (smart.example:2525) is relayd's own listener 127.0.0.1:2525: mail sent through it would loop back to myself (bounced with 5.4.6)",
        ])
    }
}
