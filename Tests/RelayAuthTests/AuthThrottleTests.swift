// The AUTH failure throttle counts an IPv4 address alone and an IPv6
// address with the rest of its /64 (issue 18, item 7); IPv4-mapped IPv6
// addresses are IPv4. The clock is a plain number passed as `now:`.
import Testing
@testable import RelayModel
@testable import RelayAuth
import RelayTestSupport

@Suite struct AuthThrottlePerClient {
    /// Failures from the first address; does the second one share them?
    static let pairs: [(String, String, Bool)] = [
        ("192.0.2.9", "192.0.2.9", true),
        ("192.0.2.9", "192.0.2.10", false),
        ("192.0.2.9", "::ffff:192.0.2.9", true),
        ("::ffff:192.0.2.9", "192.0.2.9", true),
        ("::ffff:192.0.2.9", "::ffff:192.0.2.10", false),
        ("2001:db8:1:2::1", "2001:db8:1:2::1", true),
        ("2001:db8:1:2::1", "2001:db8:1:2::2", true),
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true),
        ("2001:db8:1:2:8000::", "2001:db8:1:2:7fff:ffff:ffff:ffff", true),
        ("2001:db8:1:2::1", "2001:db8:1:3::1", false),
        ("2001:db8:1:2::1", "2001:db8:1:1:ffff:ffff:ffff:ffff", false),
        ("2001:db8:1:2::1", "2001:db9:1:2::1", false),
        ("::1", "::2", true),
        ("::1", "::ffff:0.0.0.1", false),
    ]

    @Test("after the limit from one address, is the other address refused too?", arguments: pairs)
    func sharedLimit(_ first: String, _ second: String, _ shared: Bool) throws {
        let throttle = AuthThrottle(maxFailures: 3, windowSeconds: 100)
        let a = try #require(IPAddress(first)), b = try #require(IPAddress(second))
        for t in 1...3 { throttle.recordFailure(a, now: Double(t)) }
        #expect(throttle.isBlocked(a, now: 4))
        #expect(throttle.isBlocked(b, now: 4) == shared)
        #expect(throttle.delay(for: b, now: 4) == (shared ? 3 : 0))
        #expect(!throttle.isBlocked(b, now: 103), "the window ends")
    }

    @Test("a /64 that spreads its attempts over many addresses is refused after the limit")
    func spreadOverA64() throws {
        let throttle = AuthThrottle(maxFailures: 10, windowSeconds: 900)
        var refused = 0
        for i in 1...50 {
            let ip = try #require(IPAddress("2001:db8:aa:bb:\(String(i, radix: 16))::\(String(i * 7, radix: 16))"))
            if throttle.isBlocked(ip, now: Double(i)) { refused += 1 }
            throttle.recordFailure(ip, now: Double(i))
        }
        #expect(refused == 40)
        #expect(!throttle.isBlocked(IPAddress("2001:db8:aa:bc::1")!, now: 51), "the next /64 is someone else")
    }

    @Test("a success from any address in the /64 clears it")
    func successClears() {
        let throttle = AuthThrottle(maxFailures: 2, windowSeconds: 100)
        throttle.recordFailure(IPAddress("2001:db8::1")!, now: 1)
        throttle.recordFailure(IPAddress("2001:db8::2")!, now: 2)
        #expect(throttle.isBlocked(IPAddress("2001:db8::3")!, now: 3))
        throttle.recordSuccess(IPAddress("2001:db8::4")!)
        #expect(!throttle.isBlocked(IPAddress("2001:db8::1")!, now: 3))
        #expect(throttle.delay(for: IPAddress("2001:db8::1")!, now: 3) == 0)
    }

    @Test("attempts admitted in parallel, before any is answered, still meet the limit")
    func parallelAttemptsCount() {
        let throttle = AuthThrottle(maxFailures: 3, windowSeconds: 100)
        let admitted = (1...6).map { throttle.admit(IPAddress("2001:db8::\($0)")!, now: 1) }
        #expect(admitted.map(\.delay) == [0, 1, 2, 3, 4, 5])
        #expect(admitted.map(\.blocked) == [false, false, false, true, true, true])
    }

    @Test("an admitted attempt that succeeds leaves no failure behind")
    func admittedSuccess() {
        let throttle = AuthThrottle(maxFailures: 3, windowSeconds: 100)
        let ip = IPAddress("192.0.2.9")!
        _ = throttle.admit(ip, now: 1)
        #expect(throttle.delay(for: ip, now: 2) == 1, "counted as a failure until answered")
        throttle.recordSuccess(ip)
        #expect(throttle.admit(ip, now: 3) == (0, false))
    }
}

@Suite struct IPAddressMasking {
    @Test("masked(toPrefix:) keeps the first bits and clears the rest", arguments: [
        ("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::"),
        ("2001:db8:1:2:3:4:5:6", 60, "2001:db8:1::"),
        ("2001:db8:1:ff:3:4:5:6", 60, "2001:db8:1:f0::"),
        ("2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6"),
        ("2001:db8:1:2:3:4:5:6", 0, "::"),
        ("192.0.2.77", 24, "192.0.2.0"),
        ("192.0.2.77", 29, "192.0.2.72"),
        ("192.0.2.77", 32, "192.0.2.77"),
    ])
    func masks(_ address: String, _ length: Int, _ expected: String) {
        #expect(IPAddress(address)?.masked(toPrefix: length) == IPAddress(expected))
    }
}
