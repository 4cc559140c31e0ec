// The probe driver over real sockets: a scripted SMTP peer on a socket pair
// (with and without STARTTLS), a refused connection, a silent peer, and a
// domain whose MX hosts come from a fake resolver. The peer records every
// command, so each test can show that no MAIL was ever sent.
import Dispatch
import Foundation
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayTLS
@testable import RelayDNS
@testable import RelayIO
@testable import RelayDelivery
import RelayTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Holds a result handed over from another queue; the semaphore orders it.
final class ResultBox<T>: @unchecked Sendable {
    var value: T?
    let done = DispatchSemaphore(value: 0)
    func put(_ v: T) { value = v; done.signal() }
    func wait(_ seconds: Int = 20) -> T? { done.wait(timeout: .now() + .seconds(seconds)) == .success ? value : nil }
}

/// A loopback port nothing listens on (bound, then closed).
func closedPort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    close(fd)
    return UInt16(bigEndian: addr.sin_port)
}

@Suite struct HostProbeTests {
    func prober(timeout: Int = 10) throws -> HostProber {
        HostProber(tlsContext: try makeClientContext(), heloName: "relay.test", timeoutSeconds: timeout, sourceAddress: nil)
    }

    /// Runs the probe against a scripted peer; returns both sides' view.
    func probeScripted(tls: Bool, host: String) throws -> (HostProbeResult, ScriptedSMTPServer.Record) {
        let pair = smallBufferSocketPair()
        let server = ScriptedSMTPServer(fd: pair.server, tls: tls ? try makeServerContext() : nil)
        server.start()
        let p = try prober()
        let box = ResultBox<HostProbeResult>()
        let queue = DispatchQueue(label: "test.probe")
        queue.async {
            p.run(fd: pair.client, host: host, address: IPAddress("127.0.0.1")!, port: 25, queue: queue) { box.put($0) }
        }
        let result = try #require(box.wait())
        let record = try #require(server.finish())
        return (result, record)
    }

    @Test func validCertificateIsReportedTrustedWithItsChain() throws {
        let (r, peer) = try probeScripted(tls: true, host: "mx.relayd.test")
        #expect(r.failure == nil)
        #expect(r.starttlsOffered == true)
        #expect(r.findings.tlsEstablished)
        let tls = try #require(r.tls)
        #expect(tls.protocolVersion == "TLSv1.3")
        #expect(tls.forwardSecret)
        #expect(tls.verification == .trusted)
        #expect(r.certificates.first?.subject == "CN=mx.relayd.test")
        #expect(r.certificates.first?.dnsNames.contains("mx.relayd.test") == true)
        #expect(r.certificates.first?.publicKeySHA256.count == 64)
        #expect(ProbeVerdict.classify(r) == .tlsVerified)
        #expect(peer.usedTLS)
        #expect(peer.commands == ["EHLO relay.test", "STARTTLS", "EHLO relay.test", "QUIT"])
    }

    @Test func wrongNameIsReportedButTheHandshakeCompletes() throws {
        let (r, peer) = try probeScripted(tls: true, host: "mx.other.test")
        #expect(r.failure == nil)
        guard case .failed(let f) = r.tls?.verification else {
            Issue.record("expected a failed verification, got \(String(describing: r.tls))")
            return
        }
        #expect(f.kind == .hostnameMismatch)
        #expect(ProbeVerdict.classify(r) == .tlsUnverified)
        #expect(!peer.commands.contains { $0.uppercased().hasPrefix("MAIL") })
    }

    @Test func peerWithoutSTARTTLSIsAskedNothingMore() throws {
        let (r, peer) = try probeScripted(tls: false, host: "mx.relayd.test")
        #expect(r.failure == nil)
        #expect(r.starttlsOffered == false)
        #expect(r.tls == nil)
        #expect(r.findings.ehloKeywords.contains("PIPELINING"))
        #expect(peer.commands == ["EHLO relay.test", "QUIT"])
    }

    @Test func refusedConnectionIsTheConnectStep() throws {
        let box = ResultBox<HostProbeResult>()
        try prober().probe(host: "mx.example", address: IPAddress("127.0.0.1")!, port: closedPort()) { box.put($0) }
        let r = try #require(box.wait())
        #expect(r.failure?.step == .connect)
        #expect(r.failure?.detail.contains("refused") == true, "\(String(describing: r.failure))")
        #expect(r.starttlsOffered == nil)
        #expect(ProbeVerdict.classify(r) == .noAnswer)
    }

    @Test func silentPeerTimesOutAtTheGreeting() throws {
        let pair = smallBufferSocketPair()
        defer { close(pair.server) }
        let p = try prober(timeout: 1)
        let box = ResultBox<HostProbeResult>()
        let queue = DispatchQueue(label: "test.probe.silent")
        let started = Date()
        queue.async {
            p.run(fd: pair.client, host: "mx.example", address: IPAddress("127.0.0.1")!, port: 25, queue: queue) { box.put($0) }
        }
        let r = try #require(box.wait(10))
        #expect(r.failure == ProbeFailure(step: .greeting, detail: "no answer within 1 s"))
        #expect(Date().timeIntervalSince(started) < 5)
    }

    @Test func domainAddressesAreProbedInDeliveryOrderAndBounded() throws {
        let dns = FakeResolver()
        // The less preferred host is listed first; its answer must come last.
        dns.set("example.test", .mx, [.mx(preference: 20, exchange: "mx2.example.test"), .mx(preference: 10, exchange: "mx1.example.test")])
        dns.set("mx1.example.test", .a, [.a(IPAddress("127.0.0.1")!)])
        dns.set("mx1.example.test", .aaaa, [.aaaa(IPAddress("::1")!)])
        dns.set("mx2.example.test", .a, [.a(IPAddress("127.0.0.2")!), .a(IPAddress("127.0.0.3")!)])
        let domain = DomainProber(resolver: dns, prober: try prober(timeout: 2), port: closedPort(), maxAddresses: 3, concurrency: 2)
        let box = ResultBox<DomainProbeResult>()
        let queue = DispatchQueue(label: "test.domainprobe")
        domain.probe(domain: "Example.TEST", queue: queue) { r in
            dispatchPrecondition(condition: .onQueue(queue))
            box.put(r)
        }
        let r = try #require(box.wait())
        #expect(r.domain == "example.test")
        #expect(r.addresses.map(\.host) == ["mx1.example.test", "mx1.example.test", "mx2.example.test"])
        #expect(r.addresses.map(\.address.description) == ["127.0.0.1", "::1", "127.0.0.2"])
        #expect(r.notProbed == 1)
        #expect(r.addresses.allSatisfy { $0.failure?.step == .connect })
        guard case .found(let hosts) = r.mx else { Issue.record("\(r.mx)"); return }
        #expect(hosts.map(\.name) == ["mx1.example.test", "mx2.example.test"])
    }

    @Test func failedMXLookupIsReportedWithNoAddresses() throws {
        let dns = FakeResolver()
        dns.setRcode("gone.test", .mx, .nxDomain)
        let domain = DomainProber(resolver: dns, prober: try prober(), port: 25)
        let box = ResultBox<DomainProbeResult>()
        domain.probe(domain: "gone.test", queue: DispatchQueue(label: "test.nx")) { box.put($0) }
        let r = try #require(box.wait())
        guard case .failed(let why) = r.mx else { Issue.record("\(r.mx)"); return }
        #expect(why.contains("NXDOMAIN"))
        #expect(r.addresses.isEmpty)
        #expect(ProbeVerdict.fitness(r.addresses.map(ProbeVerdict.classify)) == .unknown)
    }

    @Test func namedAddressTakesTheFirstMXNameUnlessOneIsGiven() throws {
        let dns = FakeResolver()
        dns.set("named.test", .mx, [.mx(preference: 10, exchange: "mx.named.test")])
        dns.set("mx.named.test", .a, [.a(IPAddress("127.0.0.9")!)])
        let domain = DomainProber(resolver: dns, prober: try prober(timeout: 2), port: closedPort())
        for (given, expected) in [(nil, "mx.named.test"), ("Other.Test", "other.test")] as [(String?, String)] {
            let box = ResultBox<DomainProbeResult>()
            domain.probe(domain: "named.test", address: IPAddress("127.0.0.1")!, name: given,
                         queue: DispatchQueue(label: "test.named")) { box.put($0) }
            let r = try #require(box.wait())
            #expect(r.addresses.map(\.host) == [expected])
            #expect(r.addresses.map(\.address.description) == ["127.0.0.1"])
        }
    }
}
