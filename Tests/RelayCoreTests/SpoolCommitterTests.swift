// The group committer's lanes against a real spool in a temporary folder:
// every store is answered once, with its own id, only after its file is in
// incoming/; concurrent stores spread over both lanes; a failing spool
// answers every store of the batch with the failure.
import Foundation
import Dispatch
import Logging
import Testing
@testable import RelayCore
@testable import RelayModel
@testable import RelayQueue
@testable import RelaySMTP
import RelaySync

@Suite final class SpoolCommitterTests {
    let dir = NSTemporaryDirectory() + "relayd-committer-\(UUID().uuidString)"

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    static func message(_ n: Int) -> QueuedMessage {
        var env = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<a@b.test>")!),
                           origin: Envelope.Origin(clientAddress: "192.0.2.1", heloName: "c.test", esmtp: true))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u\(n)@example.org>")!)]
        return QueuedMessage(id: QueueID.make(microseconds: 1_700_000_000_000_000 + UInt64(n), random: UInt32(n)),
                             arrival: 1_700_000_000, envelope: env, body: Array("Subject: \(n)\r\n\r\nbody \(n)\r\n".utf8))
    }

    /// Submits `count` messages from `count` concurrent callers and waits
    /// for every answer (at most 30 s).
    func submitAll(_ committer: SpoolCommitter, _ count: Int) -> [Int: [StoreResult]] {
        let answers = Locked<[Int: [StoreResult]]>([:])
        let group = DispatchGroup()
        DispatchQueue.concurrentPerform(iterations: count) { n in
            group.enter()
            committer.submit(Self.message(n)) { result in
                answers.withLock { $0[n, default: []].append(result) }
                group.leave()
            }
        }
        #expect(group.wait(timeout: .now() + 30) == .success)
        return answers.withLock { $0 }
    }

    @Test(arguments: Spool.SyncMethod.allCases)
    func everyStoreIsAnsweredOnceAfterItsFileIsInIncoming(sync: Spool.SyncMethod) throws {
        // fsync on: the lanes really sync (each with its own handle for syncfs).
        let spool = try Spool(root: dir + "-\(sync.rawValue)", reserveBytes: 0, syncMethod: sync)
        defer { try? FileManager.default.removeItem(atPath: dir + "-\(sync.rawValue)") }
        let committer = SpoolCommitter(spool: spool, logger: Logger(label: "test"))
        let count = 400
        let answers = submitAll(committer, count)
        #expect(answers.count == count)
        for n in 0..<count {
            let m = Self.message(n)
            #expect(answers[n]?.count == 1, "message \(n) answered \(answers[n]?.count ?? 0) times")
            guard case .queued(let id)? = answers[n]?.first else {
                Issue.record("message \(n): \(String(describing: answers[n]))")
                continue
            }
            #expect(id == m.id)
            #expect(try spool.read(.incoming, id) == m)
        }
        let perLane = committer.batchesPerLane
        #expect(perLane.count == SpoolCommitter.defaultLanes)
        #expect(perLane.reduce(0, +) <= count, "stores were batched")
        #expect(perLane.allSatisfy { $0 > 0 }, "concurrent stores use every lane: \(perLane)")
    }

    @Test func aFailingSpoolAnswersEveryStoreWithTheFailure() throws {
        let spool = try Spool(root: dir, reserveBytes: UInt64.max, fsyncEnabled: false)
        let committer = SpoolCommitter(spool: spool, logger: Logger(label: "test"))
        let answers = submitAll(committer, 50)
        #expect(answers.count == 50)
        for (_, results) in answers {
            #expect(results.count == 1)
            guard case .insufficientSpace? = results.first else {
                Issue.record("\(results)")
                continue
            }
        }
        #expect(spool.list(.incoming).isEmpty)
    }

    @Test func oneLaneStillCommitsEverything() throws {
        let spool = try Spool(root: dir, reserveBytes: 0, fsyncEnabled: false)
        let committer = SpoolCommitter(spool: spool, logger: Logger(label: "test"), lanes: 1)
        let answers = submitAll(committer, 100)
        #expect(answers.values.allSatisfy { $0.count == 1 })
        #expect(spool.list(.incoming).count == 100)
        #expect(committer.batchesPerLane.count == 1)
    }
}
