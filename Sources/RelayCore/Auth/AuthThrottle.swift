// Failed-AUTH accounting per client across connections (the per-connection
// count lives in ServerSession). Each failure slows the next answer to that
// client; past the limit inside the window, its attempts are refused
// without checking the password at all, so a brute-force run learns
// nothing even when it guesses right. Thread-safe: called from the
// connection and verification queues.
//
// A client is an IPv4 address, or an IPv6 /64: a site is normally given at
// least a /64 and picks addresses in it freely, so counting IPv6 per
// address would give each such client 2^64 fresh starts. An IPv4-mapped
// IPv6 address (a dual-stack socket) counts as the IPv4 address it is.
import RelayModel
import RelaySync

public final class AuthThrottle: Sendable {
    /// The limit and the failure record, shared by every session's password
    /// checks on the auth queue.
    private struct State {
        var limit: Int
        /// Keyed by `client(of:)`.
        var failures: [IPAddress: [Double]] = [:]

        func recent(_ client: IPAddress, now: Double, window: Double) -> [Double] {
            (failures[client] ?? []).filter { now - $0 < window }
        }

        mutating func append(_ client: IPAddress, now: Double, window: Double) {
            var list = recent(client, now: now, window: window)
            list.append(now)
            failures[client] = list
            if failures.count > 100_000 {
                // Bound memory under a spray from many addresses.
                failures = failures.filter { !$0.value.allSatisfy { now - $0 >= window } }
            }
        }
    }

    private let state: Locked<State>
    /// Failures per client inside the window; a reload may change it.
    public var maxFailures: Int {
        get { state.withLock { $0.limit } }
        set { state.withLock { $0.limit = newValue } }
    }
    public let window: Double

    public init(maxFailures: Int = 10, windowSeconds: Double = 900) {
        self.state = Locked(State(limit: maxFailures))
        self.window = windowSeconds
    }

    /// What failures from this address are counted under.
    static func client(of ip: IPAddress) -> IPAddress {
        let address = ip.unmapped
        return address.isV4 ? address : address.masked(toPrefix: 64)
    }

    /// Whether this address's client is over the limit right now.
    public func isBlocked(_ ip: IPAddress, now: Double) -> Bool {
        state.withLock { $0.recent(Self.client(of: ip), now: now, window: window).count >= $0.limit }
    }

    /// Seconds to wait before answering this address's attempt: 0 with no
    /// recent failures, growing one second per failure, capped at 10.
    public func delay(for ip: IPAddress, now: Double) -> Double {
        state.withLock { min(10, Double($0.recent(Self.client(of: ip), now: now, window: window).count)) }
    }

    /// For an attempt about to be checked: how long to wait before
    /// answering it and whether it is refused unchecked. The attempt counts
    /// as a failure from now on, until `recordSuccess` clears the record:
    /// attempts made in parallel over many connections each see the ones
    /// before them, where checking first and recording after would let them
    /// all pass before the first failure landed.
    public func admit(_ ip: IPAddress, now: Double) -> (delay: Double, blocked: Bool) {
        state.withLock { s in
            let client = Self.client(of: ip)
            let count = s.recent(client, now: now, window: window).count
            s.append(client, now: now, window: window)
            return (min(10, Double(count)), count >= s.limit)
        }
    }

    public func recordFailure(_ ip: IPAddress, now: Double) {
        state.withLock { $0.append(Self.client(of: ip), now: now, window: window) }
    }

    public func recordSuccess(_ ip: IPAddress) {
        state.withLock { _ = $0.failures.removeValue(forKey: Self.client(of: ip)) }
    }
}
