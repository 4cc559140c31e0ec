import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import RelayModel
@testable import RelayQueue

/// Recycled queue files (Spool.swift, "Recycled queue files"): a finished
/// message's file goes to free/ and is overwritten in place by a later one.
@Suite final class SpoolRecycleTests {
    let dir = NSTemporaryDirectory() + "relayd-recycle-\(UUID().uuidString)"

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    func message(_ n: UInt64, bodyBytes: Int) -> QueuedMessage {
        var env = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<a@b.test>")!),
                           origin: Envelope.Origin(clientAddress: "192.0.2.1", heloName: "client.test", esmtp: true))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u\(n)@example.org>")!)]
        var body = Array("Subject: m\(n)\r\n\r\n".utf8)
        while body.count < bodyBytes { body += Array("line \(n) \(body.count)\r\n".utf8) }
        return QueuedMessage(id: QueueID.make(microseconds: 1_700_000_000_000_000 + n, random: UInt32(n)),
                             arrival: 1_700_000_000, envelope: env, body: body)
    }

    func inode(_ p: String) -> UInt64? {
        var st = stat()
        return stat(p, &st) == 0 ? UInt64(st.st_ino) : nil
    }

    /// Stores `m`, delivers it (incoming → active) and finishes it.
    func storeAndFinish(_ spool: Spool, _ m: QueuedMessage) throws {
        try spool.store(m)
        try spool.move(m.id, from: .incoming, to: .active, durable: false)
        try spool.remove(m.id, from: .active, durable: false)
    }

    /// A pooled file removed behind the spool's back (an operator cleaning
    /// free/) is dropped from the pool and the store goes on with the next
    /// one, or a new file: it never turns into a refused message.
    @Test func aVanishedPoolFileIsSkipped() throws {
        let spool = try Spool(root: dir, reserveBytes: 0, fsyncEnabled: false)
        _ = spool.recover()
        let done = (1...2).map { message(UInt64($0), bodyBytes: 300) }
        for m in done { try spool.store(m) }
        for m in done {
            try spool.move(m.id, from: .incoming, to: .active, durable: false)
            try spool.remove(m.id, from: .active, durable: false)
        }
        #expect(spool.freeList.count == 2)
        for name in spool.list(.free) { unlink(spool.path(.free, name)) }
        let next = message(9, bodyBytes: 300)
        try spool.store(next)
        #expect(try spool.read(.incoming, next.id) == next)
        #expect(spool.freeList.isEmpty, "the vanished files left the pool")
        #expect(spool.list(.tmp).isEmpty)
    }

    @Test func finishedFileIsReusedInPlaceShorterAndLonger() throws {
        let spool = try Spool(root: dir, reserveBytes: 0)
        #expect(spool.recover().freeFiles == 0, "the pool starts empty")
        let long = message(1, bodyBytes: 5000)
        try spool.store(long)
        let ino = inode(spool.path(.incoming, long.id))
        try spool.move(long.id, from: .incoming, to: .active, durable: false)
        try spool.remove(long.id, from: .active, durable: false)
        #expect(spool.list(.active).isEmpty)
        #expect(spool.list(.free) == [long.id], "the finished file waits in free/")
        #expect(spool.freeList == [long.id])

        // A shorter message takes the same inode, cut to its length.
        let short = message(2, bodyBytes: 300)
        try spool.store(short)
        #expect(inode(spool.path(.incoming, short.id)) == ino, "same inode: none allocated")
        #expect(spool.list(.free).isEmpty && spool.freeList.isEmpty && spool.list(.tmp).isEmpty)
        #expect(try Data(contentsOf: URL(fileURLWithPath: spool.path(.incoming, short.id))) == Data(QueueFile.encode(short)))
        #expect(try spool.read(.incoming, short.id) == short)
        try spool.verify(.incoming, short.id)

        // And a longer one after it grows it.
        try spool.move(short.id, from: .incoming, to: .active, durable: false)
        try spool.remove(short.id, from: .active, durable: false)
        let longer = message(3, bodyBytes: 9000)
        try spool.store(batch: [longer]).forEach { try $0.get() }
        #expect(inode(spool.path(.incoming, longer.id)) == ino)
        #expect(try Data(contentsOf: URL(fileURLWithPath: spool.path(.incoming, longer.id))) == Data(QueueFile.encode(longer)))
        #expect(try spool.read(.incoming, longer.id) == longer)
        #expect(spool.recover() == Spool.RecoveryReport(intact: 1))
    }

    @Test func durableRemovesAndSpoolsWithoutRecoveryUnlinkAsBefore() throws {
        let spool = try Spool(root: dir, reserveBytes: 0)
        // No recover(): recycling is off (a `relayd queue` process).
        try storeAndFinish(spool, message(1, bodyBytes: 100))
        #expect(spool.list(.free).isEmpty)
        _ = spool.recover()
        // Operator deletes stay durable unlinks.
        let m = message(2, bodyBytes: 100)
        try spool.store(m)
        try spool.remove(m.id, from: .incoming)
        #expect(spool.list(.free).isEmpty && spool.list(.incoming).isEmpty)
    }

    @Test func poolIsBoundedInFilesAndFileSize() throws {
        let spool = try Spool(root: dir, reserveBytes: 0, freePoolFiles: 2, freePoolFileBytes: 2048)
        _ = spool.recover()
        let big = message(9, bodyBytes: 4096)
        try storeAndFinish(spool, big)
        #expect(spool.list(.free).isEmpty, "a file over the size bound is unlinked")
        let small = (1...3).map { message($0, bodyBytes: 200) }
        for m in small { try spool.store(m) }
        for m in small {
            try spool.move(m.id, from: .incoming, to: .active, durable: false)
            try spool.remove(m.id, from: .active, durable: false)
        }
        #expect(spool.list(.free).count == 2, "at most freePoolFiles files")
        #expect(spool.list(.active).isEmpty, "the third was unlinked")

        // Never above what openMessage reads whole (no runner descriptor
        // stays on a file that may be reused).
        #expect(try Spool(root: dir, reserveBytes: 0, freePoolFileBytes: 1 << 30).freePoolFileBytes == Spool.wholeFileLimit)

        // Recovery applies the same bounds to what it finds in free/.
        let other = try Spool(root: dir, reserveBytes: 0, freePoolFiles: 1, freePoolFileBytes: 2048)
        #expect(other.recover().freeFiles == 1)
        #expect(other.list(.free).count == 1)
    }

    @Test func recoveryPoolsFreeFilesAndDropsOnlyTheFreeNameOfADoubleNamedFile() throws {
        let spool = try Spool(root: dir, reserveBytes: 0)
        _ = spool.recover()
        // A queued message whose inode is (impossibly) also named in free/.
        let queued = message(2, bodyBytes: 100)
        try spool.store(queued)
        let done = message(1, bodyBytes: 100)
        try storeAndFinish(spool, done)
        #expect(link(spool.path(.incoming, queued.id), spool.path(.free, "stray")) == 0)

        let restarted = try Spool(root: dir, reserveBytes: 0)
        let report = restarted.recover()
        #expect(report.freeFiles == 1)
        #expect(restarted.list(.free) == [done.id])
        #expect(report.intact == 1 && report.quarantined.isEmpty)
        #expect(try restarted.read(.incoming, queued.id) == queued, "the queued message keeps its file")
        // The next store reuses the pooled file.
        let next = message(3, bodyBytes: 100)
        try restarted.store(next)
        #expect(restarted.list(.free).isEmpty)
        #expect(try restarted.read(.incoming, next.id) == next)
    }

    /// The writer torn at every offset of a recycled file that held a
    /// longer message: pwritev stopped at `cut`, the old tail still in
    /// place (no truncation, no fsync), and the variant where only `cut`
    /// bytes are left at all. Whatever name the torn file is found under at
    /// recovery, it is never taken as a message: under free/ (where the
    /// writer overwrites it) it is pooled again; under tmp/ it is
    /// discarded; under incoming/NEW (the rename could not have happened,
    /// but suppose it) it goes to corrupt/; under the old name active/OLD it
    /// goes to corrupt/, except when not one new byte reached it (then it is
    /// OLD itself, redelivered as after a lost unlink). A complete write
    /// reads back exactly.
    @Test func tornRewriteOfALongerFileIsNeverAccepted() throws {
        let old = message(1, bodyBytes: 700)
        let new = message(2, bodyBytes: 250)
        let oldBytes = QueueFile.encode(old), newBytes = QueueFile.encode(new)
        #expect(oldBytes.count > newBytes.count + 200)
        let spool = try Spool(root: dir, reserveBytes: 0, fsyncEnabled: false)
        var checked = 0

        /// Puts `image` under `folder`/`name`, runs recovery, and returns
        /// its report; the spool is empty again afterwards.
        func recoverWith(_ image: [UInt8], _ folder: Spool.Folder, _ name: String) throws -> Spool.RecoveryReport {
            try Data(image).write(to: URL(fileURLWithPath: spool.path(folder, name)))
            let report = spool.recover()
            for f in [Spool.Folder.incoming, .active, .corrupt, .free] {
                for n in spool.list(f) { unlink(spool.path(f, n)) }
            }
            return report
        }

        for cut in 0...newBytes.count {
            // The real writer, torn: OLD's file overwritten in place, under
            // its free/ name, up to `cut`.
            let tmp = spool.path(.free, old.id)
            try Data(oldBytes).write(to: URL(fileURLWithPath: tmp))
            try spool.writeQueueFile(tmp, new, reuse: true, tearAt: cut)
            let torn = try [UInt8](Data(contentsOf: URL(fileURLWithPath: tmp)))
            #expect(torn == Array(newBytes[0..<cut]) + Array(oldBytes[cut...]), "cut \(cut)")
            unlink(tmp)
            let truncatedOnly = Array(newBytes[0..<cut])

            for image in [torn, truncatedOnly] where image != newBytes {
                // Not one differing byte written yet: that is OLD, intact.
                if image != oldBytes {
                    #expect(throws: (any Error).self, "cut \(cut): torn image decoded") { _ = try QueueFile.decode(image) }
                }

                let asFree = try recoverWith(image, .free, old.id)
                #expect(asFree.freeFiles == 1 && asFree.intact == 0 && asFree.quarantined.isEmpty
                        && asFree.discardedPartial.isEmpty, "cut \(cut) under free/: pooled, never a message")

                let asTmp = try recoverWith(image, .tmp, new.id)
                #expect(asTmp.discardedPartial == [new.id] && asTmp.intact == 0, "cut \(cut) under tmp/")

                let asIncoming = try recoverWith(image, .incoming, new.id)
                #expect(asIncoming.intact == 0 && asIncoming.quarantined.map(\.id) == [new.id],
                        "cut \(cut) under incoming/: \(asIncoming)")

                let asOld = try recoverWith(image, .active, old.id)
                if image == oldBytes {
                    #expect(asOld.intact == 1 && asOld.quarantined.isEmpty, "untouched OLD under its own name")
                } else {
                    #expect(asOld.intact == 0 && asOld.quarantined.map(\.id) == [old.id], "cut \(cut) under active/OLD")
                }
                checked += 1
            }
        }
        // Both tears at every offset; only the truncated-only image at the full
        // length is the complete file.
        #expect(checked == 2 * newBytes.count + 1)

        // The complete write, through the same writer, reads back exactly.
        let tmp = spool.path(.tmp, new.id)
        try Data(oldBytes).write(to: URL(fileURLWithPath: tmp))
        try spool.writeQueueFile(tmp, new, reuse: true)
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: tmp))) == newBytes)
        try spool.rename(tmp, to: spool.path(.incoming, new.id))
        #expect(spool.recover() == Spool.RecoveryReport(intact: 1))
        #expect(try spool.read(.incoming, new.id) == new)
    }

    /// Many messages through a small pool, in batches, finishing as they
    /// go: every message reads back exactly, no inode is ever shared by
    /// two live messages, and the pool's inodes are the only ones used
    /// once it is warm.
    @Test func steadyStateUsesOnlyPooledInodes() throws {
        let spool = try Spool(root: dir, reserveBytes: 0, fsyncEnabled: false, freePoolFiles: 8)
        _ = spool.recover()
        var live: [QueuedMessage] = []
        var inodes = Set<UInt64>()
        var n: UInt64 = 0
        for round in 0..<20 {
            let batch = (0..<4).map { i -> QueuedMessage in
                n += 1
                return message(n, bodyBytes: 100 + Int((n * 7919) % 3000) + i)
            }
            for r in spool.store(batch: batch) { try r.get() }
            live += batch
            var seen = Set<UInt64>()
            for m in live {
                #expect(try spool.read(.incoming, m.id) == m)
                let ino = inode(spool.path(.incoming, m.id))!
                #expect(seen.insert(ino).inserted, "two live messages share an inode")
                if round >= 2 { inodes.insert(ino) }
            }
            // Finish the older half.
            while live.count > 4 {
                let m = live.removeFirst()
                try spool.move(m.id, from: .incoming, to: .active, durable: false)
                try spool.remove(m.id, from: .active, durable: false)
            }
        }
        #expect(inodes.count == 8, "warm: the same eight inodes go round")
    }
}
