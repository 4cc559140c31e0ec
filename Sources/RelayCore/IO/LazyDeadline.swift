// The bookkeeping of a connection's one timer, kept lazy: moving a deadline
// later does not touch the dispatch timer. Sans-IO (times are plain
// nanosecond counts) so it is tested with a fake clock.
//
// Why: sessions push their idle deadline forward on every read, and every
// DispatchSourceTimer reschedule on Linux goes through libdispatch's manager
// thread (a queue push, an epoll_ctl and a wake-up of that thread). Under
// load that was 7 % of relayd's CPU samples plus the manager thread's own
// wake-ups (bench/RESULTS.md, profile of 2026-12-02). Deadlines almost
// always move later, so the timer stays where it is and, when it fires
// before the current deadline, is re-armed once to that deadline — at most
// one reschedule per timeout period instead of one per read. A deadline
// moved earlier (the session's data or total limit) re-arms at once, so a
// timeout never fires late.
public struct LazyDeadline: Equatable, Sendable {
    /// When the timeout is due (nil: none wanted).
    public private(set) var wanted: UInt64?
    /// When the dispatch timer is set to fire (nil: not armed).
    public private(set) var armed: UInt64?
    /// A timer firing this close before `wanted` counts as on time.
    public static let slackNanoseconds: UInt64 = 1_000_000

    public init() {}

    /// The deadline is now `at`. Returns the time to arm the dispatch timer
    /// for, or nil when the timer already set fires no later than `at` (it
    /// will be moved on when it fires).
    public mutating func set(_ at: UInt64) -> UInt64? {
        wanted = at
        if let armed, armed <= at { return nil }
        armed = at
        return at
    }

    public enum Firing: Equatable, Sendable {
        /// The deadline has come: time out.
        case due
        /// Fired before the deadline, which had moved later: arm again for this time.
        case rearm(UInt64)
        /// No deadline is wanted (a stale firing): nothing to do.
        case none
    }

    /// The dispatch timer fired at `now`.
    public mutating func fired(now: UInt64) -> Firing {
        armed = nil
        guard let wanted else { return .none }
        if wanted > now + Self.slackNanoseconds {
            armed = wanted
            return .rearm(wanted)
        }
        self.wanted = nil
        return .due
    }
}
