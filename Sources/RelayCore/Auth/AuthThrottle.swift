// Failed-AUTH accounting per client IP across connections (the per-
// connection count lives in ServerSession). Each failure slows the next
// answer to that IP; past the limit inside the window, that IP's attempts
// are refused without checking the password at all, so a brute-force run
// learns nothing even when it guesses right. Thread-safe: called from the
// verification queue.
import Dispatch

public final class AuthThrottle: @unchecked Sendable {
    public let maxFailures: Int
    public let window: Double
    private let lock = DispatchQueue(label: "relayd.auth-throttle")
    private var failures: [IPAddress: [Double]] = [:]

    public init(maxFailures: Int = 10, windowSeconds: Double = 900) {
        self.maxFailures = maxFailures
        self.window = windowSeconds
    }

    private func recent(_ ip: IPAddress, now: Double) -> [Double] {
        (failures[ip] ?? []).filter { now - $0 < window }
    }

    /// Whether this IP is over the limit right now.
    public func isBlocked(_ ip: IPAddress, now: Double) -> Bool {
        lock.sync { recent(ip, now: now).count >= maxFailures }
    }

    /// Seconds to wait before answering this IP's attempt: 0 with no recent
    /// failures, growing one second per failure, capped at 10.
    public func delay(for ip: IPAddress, now: Double) -> Double {
        lock.sync { min(10, Double(recent(ip, now: now).count)) }
    }

    public func recordFailure(_ ip: IPAddress, now: Double) {
        lock.sync {
            var list = recent(ip, now: now)
            list.append(now)
            failures[ip] = list
            if failures.count > 100_000 {
                // Bound memory under a spray from many addresses.
                failures = failures.filter { !$0.value.allSatisfy { now - $0 >= window } }
            }
        }
    }

    public func recordSuccess(_ ip: IPAddress) {
        lock.sync { _ = failures.removeValue(forKey: ip) }
    }
}
