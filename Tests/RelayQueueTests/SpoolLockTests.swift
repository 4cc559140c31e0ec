import Foundation
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayLog
@testable import RelayAuth
@testable import RelayQueue
@testable import RelayCore
import RelayTestSupport

/// One relayd per spool. flock is per open file description, so a second
/// open in this process contends like a second process would. Which pid
/// holds the lock (POSIX records, never reported to their own process) is
/// shown end to end in tests/e2e/test_startup.py.
@Suite struct SpoolLockTests {
    let root = NSTemporaryDirectory() + "relayd-lock-\(UUID().uuidString)"

    func cleanUp() { try? FileManager.default.removeItem(atPath: root) }

    @Test func secondAcquireOfTheSameSpoolIsRefused() throws {
        defer { cleanUp() }
        let first = try SpoolLock.acquire(spoolRoot: root)
        let error = #expect(throws: SpoolLock.Held.self) { try SpoolLock.acquire(spoolRoot: root) }
        #expect(error?.description.contains("one relayd per spool") == true)
        #expect(error?.spoolRoot == root)
        withExtendedLifetime(first) {}
    }

    @Test func releaseAndDeinitLetTheNextOneIn() throws {
        defer { cleanUp() }
        let first = try SpoolLock.acquire(spoolRoot: root)
        first.release()
        do { _ = try SpoolLock.acquire(spoolRoot: root) }  // released again on deinit
        let third = try SpoolLock.acquire(spoolRoot: root)
        withExtendedLifetime(third) {}
    }

    @Test func takingTheLockTouchesNothingButTheLockFile() throws {
        defer { cleanUp() }
        let lock = try SpoolLock.acquire(spoolRoot: root)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root) == [SpoolLock.fileName])
        #expect(try FileManager.default.attributesOfItem(atPath: lock.path)[.size] as? Int == 0)
    }

    @Test func queueProbeTakesAFreeLockAndNeverNamesAHolderThatSaidNothing() throws {
        defer { cleanUp() }
        guard case .acquired(let lock) = try SpoolLock.probe(spoolRoot: root) else {
            Issue.record("a free spool was not taken")
            return
        }
        #expect(throws: SpoolLock.Held.self) { try SpoolLock.acquire(spoolRoot: root) }
        // Held, but no other process said it takes requests: nobody to signal.
        guard case .busy = try SpoolLock.probe(spoolRoot: root) else {
            Issue.record("a holder that takes no requests was named for a signal")
            return
        }
        lock.release()
        guard case .acquired = try SpoolLock.probe(spoolRoot: root) else {
            Issue.record("a released lock was not free")
            return
        }
    }
}
