// The connection timer's lazy bookkeeping on a fake clock: later deadlines
// do not reschedule, earlier ones do, and a firing before the (moved)
// deadline re-arms once instead of timing out.
import Testing
@testable import RelayIO

@Suite struct LazyDeadlineTests {
    @Test func firstDeadlineArmsTheTimer() {
        var d = LazyDeadline()
        #expect(d.set(1_000) == 1_000)
        #expect(d.armed == 1_000)
    }

    @Test func laterDeadlinesLeaveTheTimerAlone() {
        var d = LazyDeadline()
        _ = d.set(1_000)
        for at in stride(from: UInt64(1_100), through: 50_000, by: 100) {
            #expect(d.set(at) == nil)
        }
        #expect(d.armed == 1_000)
        #expect(d.wanted == 50_000)
    }

    @Test func anEarlierDeadlineReschedulesAtOnce() {
        var d = LazyDeadline()
        _ = d.set(10_000_000_000)
        #expect(d.set(2_000_000_000) == 2_000_000_000)
        #expect(d.armed == 2_000_000_000)
    }

    @Test func firingBeforeTheMovedDeadlineRearmsOnceThenTimesOut() {
        var d = LazyDeadline()
        _ = d.set(1_000_000_000)
        _ = d.set(5_000_000_000)  // activity pushed it on
        #expect(d.fired(now: 1_000_000_000) == .rearm(5_000_000_000))
        #expect(d.armed == 5_000_000_000)
        #expect(d.fired(now: 5_000_000_000) == .due)
        #expect(d.wanted == nil)
        #expect(d.armed == nil)
    }

    @Test func firingWithinTheSlackCountsAsDue() {
        var d = LazyDeadline()
        _ = d.set(1_000_000_000)
        #expect(d.fired(now: 1_000_000_000 - LazyDeadline.slackNanoseconds) == .due)
    }

    @Test func aStaleFiringDoesNothing() {
        var d = LazyDeadline()
        _ = d.set(1_000)
        #expect(d.fired(now: 1_000) == .due)
        #expect(d.fired(now: 2_000) == .none)
    }

    @Test func afterATimeoutANewDeadlineArmsAgain() {
        var d = LazyDeadline()
        _ = d.set(1_000)
        _ = d.fired(now: 1_000)
        #expect(d.set(3_000) == 3_000)
    }

    /// A session that reads every millisecond for a minute with a 300 s
    /// idle limit: the timer is armed once, not 60,000 times.
    @Test func aBusySessionArmsOnce() {
        var d = LazyDeadline()
        var arms = 0
        let second: UInt64 = 1_000_000_000
        for ms in 0..<60_000 {
            let now = UInt64(ms) * 1_000_000
            if d.set(now + 300 * second) != nil { arms += 1 }
        }
        #expect(arms == 1)
    }
}
