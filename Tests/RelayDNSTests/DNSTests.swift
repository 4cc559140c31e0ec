import Foundation
import Testing
@testable import RelayModel
@testable import RelayDNS
import RelayTestSupport

/// Builds DNS answers for tests.
enum DNSBuilder {
    static func name(_ n: String) -> [UInt8] { DNSMessage.encodeName(n)! }

    static func rr(_ owner: [UInt8], type: UInt16, ttl: UInt32 = 300, rdata: [UInt8]) -> [UInt8] {
        owner + [UInt8(type >> 8), UInt8(type & 0xff), 0, 1,
                 UInt8(ttl >> 24), UInt8((ttl >> 16) & 0xff), UInt8((ttl >> 8) & 0xff), UInt8(ttl & 0xff),
                 UInt8(rdata.count >> 8), UInt8(rdata.count & 0xff)] + rdata
    }

    /// A response to `query` (its id and question copied) with these answers.
    static func response(to query: [UInt8], rcode: UInt8 = 0, ad: Bool = false, answers: [[UInt8]]) -> [UInt8] {
        var q = DNSMessage.Parser(msg: query)
        q.offset = 12
        _ = try! q.name()
        let questionEnd = q.offset + 4
        var out = Array(query[0..<2])
        out += [0x81, 0x80 | (ad ? 0x20 : 0) | rcode]
        out += [0, 1, UInt8(answers.count >> 8), UInt8(answers.count & 0xff), 0, 0, 0, 0]
        out += query[12..<questionEnd]
        for a in answers { out += a }
        return out
    }
}

@Suite struct DNSMessageTests {
    @Test func queryHasADAndNoCD() {
        let q = DNSMessage.query(name: "Example.COM.", type: .mx, id: 0x1234)!
        #expect(q[0...1] == [0x12, 0x34])
        #expect(q[2] == 0x01, "RD")
        #expect(q[3] & 0x20 == 0x20, "AD set")
        #expect(q[3] & 0x10 == 0, "CD never set")
        #expect(DNSMessage.query(name: String(repeating: "a", count: 64) + ".test", type: .a, id: 1) == nil)
        #expect(DNSMessage.query(name: "a..b", type: .a, id: 1) == nil)
    }

    @Test func parsesMXWithCompressionAndAD() throws {
        let q = DNSMessage.query(name: "example.test", type: .mx, id: 7)!
        // Owner is a pointer to the question name at offset 12.
        let owner: [UInt8] = [0xc0, 12]
        let mx = DNSBuilder.rr(owner, type: 15, rdata: [0, 10] + [2] + Array("mx".utf8) + [0xc0, 12])
        let resp = DNSBuilder.response(to: q, ad: true, answers: [mx])
        let parsed = try DNSMessage.parse(resp)
        #expect(parsed.rcode == .noError)
        #expect(parsed.authenticated)
        #expect(parsed.questionName == "example.test")
        #expect(parsed.answers.first?.data == .mx(preference: 10, exchange: "mx.example.test"))
    }

    @Test func parsesAAAAATXTTLSAAndRcodes() throws {
        let q = DNSMessage.query(name: "x.test", type: .a, id: 9)!
        let n = DNSBuilder.name("x.test")
        let answers = [
            DNSBuilder.rr(n, type: 1, rdata: [192, 0, 2, 1]),
            DNSBuilder.rr(n, type: 28, rdata: [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1]),
            DNSBuilder.rr(n, type: 16, rdata: [3] + Array("v=1".utf8) + [0]),
            DNSBuilder.rr(n, type: 52, rdata: [3, 1, 1, 0xaa, 0xbb]),
            DNSBuilder.rr(n, type: 99, rdata: [1, 2, 3]),
        ]
        let r = try DNSMessage.parse(DNSBuilder.response(to: q, answers: answers))
        #expect(r.answers.map(\.data) == [.a(IPAddress("192.0.2.1")!), .aaaa(IPAddress("2001:db8::1")!),
                                          .txt([Array("v=1".utf8), []]),
                                          .tlsa(usage: 3, selector: 1, matchingType: 1, data: [0xaa, 0xbb]),
                                          .other(type: 99)])
        #expect(try DNSMessage.parse(DNSBuilder.response(to: q, rcode: 2, answers: [])).rcode == .servFail)
        #expect(try DNSMessage.parse(DNSBuilder.response(to: q, rcode: 3, answers: [])).rcode == .nxDomain)
    }

    @Test func hostileAnswersAreErrorsNotPartialResults() {
        let q = DNSMessage.query(name: "x.test", type: .mx, id: 9)!
        let n = DNSBuilder.name("x.test")
        let good = DNSBuilder.response(to: q, answers: [DNSBuilder.rr(n, type: 15, rdata: [0, 5, 0])])
        #expect(throws: Never.self) { try DNSMessage.parse(good) }
        var cases: [String: [UInt8]] = [:]
        // Pointer to itself, pointer forward, pointer loop between two names.
        cases["self-pointer"] = DNSBuilder.response(to: q, answers: [DNSBuilder.rr([0xc0, UInt8(q.count - 11)], type: 1, rdata: [1, 2, 3, 4])])
        cases["forward-pointer"] = DNSBuilder.response(to: q, answers: [DNSBuilder.rr([0xc0, 0xff], type: 1, rdata: [1, 2, 3, 4])])
        cases["A with 5 bytes"] = DNSBuilder.response(to: q, answers: [DNSBuilder.rr(n, type: 1, rdata: [1, 2, 3, 4, 5])])
        cases["AAAA with 4 bytes"] = DNSBuilder.response(to: q, answers: [DNSBuilder.rr(n, type: 28, rdata: [1, 2, 3, 4])])
        cases["MX name past rdata"] = DNSBuilder.response(to: q, answers: [DNSBuilder.rr(n, type: 15, rdata: [0, 5, 3, 0x61])])
        cases["MX with trailing bytes"] = DNSBuilder.response(to: q, answers: [DNSBuilder.rr(n, type: 15, rdata: [0, 5, 0, 9])])
        cases["TXT string past rdata"] = DNSBuilder.response(to: q, answers: [DNSBuilder.rr(n, type: 16, rdata: [9, 0x61])])
        cases["label with a dot"] = DNSBuilder.response(to: q, answers: [DNSBuilder.rr([3, 0x61, 0x2e, 0x62, 0], type: 1, rdata: [1, 2, 3, 4])])
        cases["label with NUL"] = DNSBuilder.response(to: q, answers: [DNSBuilder.rr([1, 0, 0], type: 1, rdata: [1, 2, 3, 4])])
        cases["reserved label type"] = DNSBuilder.response(to: q, answers: [DNSBuilder.rr([0x40, 0], type: 1, rdata: [1, 2, 3, 4])])
        var lying = good
        lying[7] = 200  // ANCOUNT 200 with one record present
        cases["answer count lies"] = lying
        var query = good
        query[2] &= 0x7f  // QR clear: a query, not a response
        cases["not a response"] = query
        var twoQuestions = good
        twoQuestions[5] = 2
        cases["two questions"] = twoQuestions
        // A name longer than 255 octets through pointers.
        var long: [UInt8] = Array(q[0..<12])
        long[2] = 0x81
        long[5] = 1; long[7] = 0; long[11] = 0
        var chain: [UInt8] = []
        for _ in 0..<5 { chain += [63] + Array(repeating: 0x61, count: 63) }
        long += chain + [0, 0, 1, 0, 1]
        cases["name over 255"] = long
        for (label, bytes) in cases {
            #expect(throws: (any Error).self, "\(label)") { try DNSMessage.parse(bytes) }
        }
        for cut in 0..<good.count {
            #expect(throws: (any Error).self, "truncated at \(cut)") { try DNSMessage.parse(Array(good[0..<cut])) }
        }
    }
}

/// A tiny UDP DNS server on 127.0.0.1 for driving the real c-ares resolver.
final class FakeDNSServer: @unchecked Sendable {
    let fd: Int32
    let port: UInt16
    let respond: @Sendable ([UInt8]) -> [UInt8]?
    private var thread: Thread?
    private let lock = NSLock()
    private var _queries = 0
    var queries: Int { lock.lock(); defer { lock.unlock() }; return _queries }

    init(respond: @escaping @Sendable ([UInt8]) -> [UInt8]?) {
        self.respond = respond
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        self.fd = fd
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = UInt16(bigEndian: addr.sin_port)
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let t = Thread { [self] in self.loop() }
        thread = t
        t.start()
    }

    private var stopped = false
    func stop() { lock.lock(); stopped = true; lock.unlock(); Thread.sleep(forTimeInterval: 0.3); close(fd) }

    private func loop() {
        var buf = [UInt8](repeating: 0, count: 2048)
        while true {
            lock.lock(); let s = stopped; lock.unlock()
            if s { return }
            var from = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = buf.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &from) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(fd, raw.baseAddress, raw.count, 0, $0, &len) } }
            }
            if n <= 0 { continue }
            lock.lock(); _queries += 1; lock.unlock()
            guard let answer = respond(Array(buf[0..<n])) else { continue }
            _ = answer.withUnsafeBytes { raw in
                withUnsafePointer(to: &from) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, raw.baseAddress, raw.count, 0, $0, len) } }
            }
        }
    }
}

/// The real c-ares resolver against FakeDNSServer. Each query waits for
/// its answer on a semaphore, but no longer than 10 s: a resolver that
/// never calls back fails the test instead of hanging the run.
@Suite struct ResolverTests {
    func resolve(_ server: FakeDNSServer, _ name: String, _ type: DNSType, timeoutMs: Int = 300) throws -> Result<DNSResponse, DNSError> {
        let resolver = try CAresResolver(servers: [HostPort("127.0.0.1:\(server.port)", defaultPort: 53)!],
                                         timeoutMilliseconds: timeoutMs, tries: 1)
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox()
        resolver.query(name, type) { result in box.value = result; done.signal() }
        let answered = withExtendedLifetime(resolver) { done.wait(timeout: .now() + 10) }
        try #require(answered == .success, "no answer from the resolver within 10 s")
        return try #require(box.value)
    }

    final class ResultBox: @unchecked Sendable { var value: Result<DNSResponse, DNSError>? }

    @Test func mxAnswerWithADThroughCAres() throws {
        let server = FakeDNSServer { q in
            DNSBuilder.response(to: q, ad: true, answers: [DNSBuilder.rr([0xc0, 12], type: 15,
                                                                         rdata: [0, 10, 2] + Array("mx".utf8) + [0xc0, 12])])
        }
        defer { server.stop() }
        let response = try resolve(server, "Example.Test", .mx).get()
        #expect(response.authenticated)
        #expect(response.answers.first?.data == .mx(preference: 10, exchange: "mx.example.test"))
    }

    @Test func servfailStaysServfail() throws {
        let server = FakeDNSServer { q in DNSBuilder.response(to: q, rcode: 2, answers: []) }
        defer { server.stop() }
        #expect(try resolve(server, "broken.test", .mx).get().rcode == .servFail)
    }

    @Test func silentServerTimesOut() throws {
        let server = FakeDNSServer { _ in nil }
        defer { server.stop() }
        #expect(try resolve(server, "slow.test", .a, timeoutMs: 200) == .failure(.timeout))
    }

    @Test func garbageAnswerIsMalformedNotEmpty() throws {
        let server = FakeDNSServer { q in
            var r = DNSBuilder.response(to: q, answers: [DNSBuilder.rr([0xc0, 12], type: 1, rdata: [1, 2, 3, 4])])
            r[7] = 9  // lie about the answer count
            return r
        }
        defer { server.stop() }
        guard case .failure(.malformed) = try resolve(server, "liar.test", .a) else {
            Issue.record("accepted")
            return
        }
    }
}
