// The durable spool: where an accepted message lives until every recipient
// has a final outcome. Queue/ owns the spool directories and may import
// Model and SMTP types; it does no networking.
//
//   tmp/       files being written; never read as messages, emptied at start
//   incoming/  complete, fsynced messages not yet picked up by the queue worker
//   active/    picked up (the worker owns them while delivering)
//   deferred/  waiting for their next attempt
//   hold/      put on hold by the operator
//   corrupt/   failed a self-check; kept for a human, never delivered
//   free/      finished queue files kept for reuse (content meaningless)
//
// Durability (SPEC: "250 only once the message is durably on disk"): the
// file is written under a name never read as a message (tmp/ID, or a
// recycled file's free/ name), renamed into incoming/, and the batch is
// synced (below), in that order, before `store` returns.
//
// ## Recycled queue files (issue 16)
//
// Creating and unlinking one inode per message was a third of relayd's CPU
// (ext4 allocating and freeing inodes, bench/RESULTS.md). So a delivered
// message's file is not unlinked: `remove(_:from:durable: false)` renames
// it into free/ (inode and blocks kept), and `store` takes a file from an
// in-memory free list, overwrites it in place under its free/ name from
// offset 0 (pwritev of header, body, end record), cuts it to the new length
// with ftruncate when the old content was longer, and renames it straight
// into incoming/ID. (It used to be renamed to tmp/ID first; free/ is as
// safe a place to write in — recovery never reads a free/ file as a
// message — and each rename is a directory change paid per message.)
// Everything after the rename (incoming/, the batch's sync, state folders,
// readers, `relayd queue`) is unchanged, and the file format is unchanged.
//
// ## Making a batch durable (`[queue] sync`)
//
// The committer hands the spool a batch of messages (all the stores that
// arrived while the previous batch was being synced). Every file of the
// batch is written and renamed into incoming/; then one sync makes the
// batch durable, and only then does any of its clients hear 250:
//
//  - `file` (the default): each file is fdatasynced before its rename
//    (its data and size; fdatasync skips only the timestamps), and
//    incoming/ is fsynced once for the batch. The data is on disk before
//    the name that makes it findable, as Postfix does it.
//  - `filesystem`: no per-file fsync; one syncfs(2) on the spool's
//    filesystem after the renames. syncfs returns only when every dirty
//    page and inode of the filesystem — the batch's file data, its inodes,
//    and the directory blocks of its renames — has been written and the
//    device cache flushed, so it guarantees at least what `file` does. A
//    kill -9 between a rename and the syncfs loses nothing the kernel had
//    (the page cache survives a process); a power loss in that window can
//    leave incoming/ID pointing at unwritten data, which fails its checksum
//    at recovery and goes to corrupt/ — but that message was never
//    acknowledged. Its errors: since Linux 5.8 syncfs reports any writeback
//    error on the filesystem since the previous call through the same
//    descriptor (kept open for the spool's life), so a lost write fails the
//    batch (every client gets 451) even when background writeback met it
//    first; each commit lane keeps its own descriptor (SyncHandle), so one
//    lane cannot consume an error another lane's batch hit. The cost is
//    the filesystem's, not the spool's: other programs' dirty data on the
//    same filesystem is written with the batch, so a large unrelated write
//    in progress delays the 250s. One flush per batch instead of one per
//    message took about a third of the CPU per stored message in a
//    micro-test on the benchmark machine, but with four commit lanes it was
//    no faster end to end there; it may pay off where flushes are slow and
//    the spool has a filesystem of its own, as `/var/spool` often does.
//
// Why ftruncate rather than "the end record is where the size record says,
// ignore the bytes after it": with the truncation a queue file is, as before,
// exactly its content, so the one structural rule every reader already
// applies (header-derived length == file length, end record at EOF) rejects
// any mix of new head and stale tail by construction, not by the checksum
// alone; and no reader (decode, QueueFileReader, the CLI, tests that read
// spool files) had to learn a new rule. The cost is small: messages of
// similar size mostly shrink or grow within the same blocks, so the
// truncation is an i_size change, not a block free (measured: see
// bench/RESULTS.md "spool change").
//
// The pool: empty at start, built by `recover()` from free/ (recycling is
// only ever switched on by recover(), which only the spool lock's holder,
// the daemon, runs; a `relayd queue` process never recycles), at most
// `freePoolFiles` files of at most `freePoolFileBytes` each; a file over
// either bound is unlinked as before. Operator deletes (durable removes)
// unlink as before.
//
// Crash safety, step by step (kill -9 keeps every completed syscall;
// power loss may lose any metadata change not yet fsynced, but, as the
// spool has always assumed, the filesystem keeps its metadata consistent —
// a journal or fsck — so a rename is atomic and link counts are right):
//
//  1. Finish: the state record is removed, then active/ID is renamed to
//     free/ID without a directory fsync (as the unlink was). A crash before
//     the rename, or losing it, leaves active/ID: delivered again
//     (at-least-once, as today). After it, free/ID is pool, never a message.
//  2. Take: free/F leaves the in-memory free list; on disk nothing changes.
//  3. Overwrite: pwritev from 0, ftruncate if shorter, and (sync = file)
//     fdatasync. The file is named free/F throughout; a crash at any byte leaves
//     free/ content, which recovery pools again and never reads as a
//     message. Nothing was acknowledged.
//  4. Publish: rename free/F → incoming/ID, then the batch's sync (the
//     incoming/ fsync, or the syncfs) — and only then `250`. With sync =
//     file the data was fsynced in 3, so incoming/ID never names a torn
//     file; with sync = filesystem see above.
//  5. A stale name: could a crash leave the OLD name of a recycled inode
//     (active/OLD, step 1 lost) while its new content (NEW) is on disk?
//     Journaled filesystems commit renames in order, so a durable step 4
//     implies a durable step 1. Were it to happen anyway, the file under
//     active/OLD holds "id NEW" (or a torn mix) and fails its check (id
//     must match the name; length and checksum must match): recovery
//     renames it to corrupt/ (as any failed file; the inode stays NEW's
//     under incoming/NEW) and OLD, which had finished, is not delivered
//     again. If the rewrite never reached the disk, active/OLD
//     still holds OLD intact: delivered again, exactly today's lost unlink.
//  6. Recovery: tmp/ is emptied (as today), free/ files are pooled (a free/
//     file that also has another name, st_nlink > 1, loses its free/ name
//     only), queue folders are checked as before.
//
// A reader that has a queue file open while it is recycled reads another id
// or a checksum mismatch, never a wrong message under the right id: `read`
// checks the id, and the CLI (`relayd queue`, which may race the daemon)
// skips unreadable files, as it skips files unlinked under it. The queue
// runner itself never has one open: it recycles a file only after the
// message's last delivery ended, and only files up to `wholeFileLimit`,
// which `openMessage` reads whole (no descriptor kept).
//
// Tests: Tests/RelayQueueTests/SpoolRecycleTests.swift (reuse in place,
// bounds, recovery of free/, and the real writer torn at every offset of a
// file that held a longer message, under every name it could be found
// under), Tests/RelayQueueTests/SpoolTests.swift (both sync methods).
import RelayModel
import CSyncFS
#if canImport(Glibc)
import Glibc
import Dispatch
import RelaySync
#endif

public final class Spool: Sendable {
    public enum Folder: String, CaseIterable, Sendable {
        case tmp, incoming, active, deferred, hold, corrupt, free
    }

    public enum StoreError: Error, Equatable, CustomStringConvertible {
        case insufficientSpace(available: UInt64)
        case io(String)
        public var description: String {
            switch self {
            case .insufficientSpace(let a): return "free space \(a) bytes is under the reserve"
            case .io(let s): return s
            }
        }
    }

    public let root: String
    /// Refuse new mail (452 4.3.1) when less than this many bytes are
    /// free. A reload may change it, from another queue than the writers'.
    public var reserveBytes: UInt64 {
        get { reserve.withLock { $0 } }
        set { reserve.withLock { $0 = newValue } }
    }
    private let reserve: Locked<UInt64>
    /// Tests and the durability benchmark may turn fsync off; production never does.
    public let fsyncEnabled: Bool
    /// Bounds of the free pool: files, and the size of one file (so at
    /// most 64 MiB by default, held only after a backlog that large). The
    /// pool grows only when the queue backlog exceeds it: then new files
    /// are created, and unlinked as the backlog drains past the bound.
    public static let defaultFreePoolFiles = 1024
    /// The largest file kept (= `wholeFileLimit`, which bounds it).
    public static let defaultFreePoolFileBytes = 64 * 1024
    public let freePoolFiles: Int
    public let freePoolFileBytes: Int

    /// How a batch of stores is made durable (see "Making a batch durable" above).
    public enum SyncMethod: String, Sendable, CaseIterable {
        /// fdatasync each queue file, then fsync the incoming/ directory once.
        case file
        /// One syncfs(2) of the spool's filesystem for the whole batch.
        case filesystem
    }
    public let syncMethod: SyncMethod
    /// The spool root, open for the life of the spool, for callers that
    /// store without a `SyncHandle` of their own.
    private let rootHandle: SyncHandle

    /// A descriptor of the spool root for one caller's syncfs(2) calls.
    /// syncfs reports a writeback error on the filesystem once per open
    /// file description (Linux ≥ 5.8: each has its own error cursor), so
    /// callers that sync concurrently — the commit lanes — each keep their
    /// own: an error is then reported to every lane's next batch, never
    /// consumed by one lane while another acknowledges a batch it hit.
    /// Opened before the caller's first write, so no error after that
    /// point is missed.
    public final class SyncHandle: Sendable {
        let fd: Int32
        init(root: String) throws {
            fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard fd >= 0 else { throw SystemError("open \(root)") }
        }
        deinit { Glibc.close(fd) }
    }

    /// A sync handle for one concurrent caller of `store(batch:using:)`.
    public func makeSyncHandle() throws -> SyncHandle { try SyncHandle(root: root) }

    /// The free list: names in free/, newest last. nil until `recover()`
    /// switches recycling on.
    private let pool = Locked<FreePool?>(nil)

    struct FreePool {
        var names: [String] = []
        /// Renames into free/ under way, counted against the bound.
        var reserved = 0
    }

    public init(root: String, reserveBytes: UInt64 = 100 * 1024 * 1024, fsyncEnabled: Bool = true,
                freePoolFiles: Int = Spool.defaultFreePoolFiles, freePoolFileBytes: Int = Spool.defaultFreePoolFileBytes,
                syncMethod: SyncMethod = .file) throws {
        self.root = root
        self.reserve = Locked(reserveBytes)
        self.fsyncEnabled = fsyncEnabled
        self.syncMethod = syncMethod
        self.freePoolFiles = freePoolFiles
        // Never above wholeFileLimit: a file small enough to recycle is read
        // whole when opened for delivery, so no descriptor of the queue
        // runner stays on a file that is later reused.
        self.freePoolFileBytes = min(freePoolFileBytes, Self.wholeFileLimit)
        try Self.makeDirectory(root)
        for f in Folder.allCases { try Self.makeDirectory(root + "/" + f.rawValue) }
        rootHandle = try SyncHandle(root: root)
    }

    public func path(_ folder: Folder) -> String { root + "/" + folder.rawValue }
    public func path(_ folder: Folder, _ id: String) -> String { path(folder) + "/" + id }

    package static func makeDirectory(_ p: String) throws {
        if mkdir(p, 0o700) != 0 && errno != EEXIST { throw SystemError("mkdir \(p)") }
    }

    // MARK: storing

    /// Writes the message durably into incoming/. Returns only after the
    /// data and the directory entry are on stable storage.
    public func store(_ message: QueuedMessage) throws {
        try store(batch: [message])[0].get()
    }

    /// Writes `m` complete under a name that is never read as a message —
    /// a file from the free pool, overwritten in place under its free/
    /// name, or a new tmp/ID — fdatasyncs it when the batch is synced file by
    /// file, and renames it to incoming/ID. Not yet durable: the batch's
    /// sync (`syncBatch`) makes it so.
    func writeAndPublish(_ m: QueuedMessage) throws {
        let target = path(.incoming, m.id)
        let syncFile = syncMethod == .file
        // A pooled file that cannot be written (removed behind our back, or
        // an I/O error) is dropped from the pool and the next one tried — a
        // few at most, then a new file, which reports the error if it too
        // fails.
        var tries = 0
        while tries < 3, let name = takeFree() {
            tries += 1
            let p = path(.free, name)
            do {
                try writeQueueFile(p, m, reuse: true, sync: syncFile)
            } catch {
                unlink(p)  // torn or gone: content meaningless, the slot is dropped
                continue
            }
            do {
                try rename(p, to: target)
                return
            } catch {
                unlink(p)
                throw error
            }
        }
        let tmp = path(.tmp, m.id)
        do {
            try writeQueueFile(tmp, m, sync: syncFile)
            try rename(tmp, to: target)
        } catch {
            unlink(tmp)
            throw error
        }
    }

    /// Makes every write and rename of the batch durable: incoming/'s
    /// entries (the files were fsynced one by one), or the whole
    /// filesystem in one syncfs(2).
    func syncBatch(_ handle: SyncHandle) throws {
        guard fsyncEnabled else { return }
        switch syncMethod {
        case .file:
            try syncDirectory(path(.incoming))
        case .filesystem:
            guard relayd_syncfs(handle.fd) == 0 else { throw SystemError("syncfs \(root)") }
        }
    }

    /// The newest file of the free list, taken off it.
    func takeFree() -> String? {
        pool.withLock { $0?.names.popLast() }
    }

    /// Names in the free list (tests).
    package var freeList: [String] { pool.withLock { $0?.names ?? [] } }

    func writeFile(_ p: String, _ bytes: [UInt8], replacing: Bool = false) throws {
        let fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC | (replacing ? O_TRUNC : O_EXCL), 0o600)
        guard fd >= 0 else { throw SystemError("open \(p)") }
        defer { Glibc.close(fd) }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 { if errno == EINTR { continue }; throw SystemError("write \(p)") }
            offset += n
        }
        if fsyncEnabled { guard fsync(fd) == 0 else { throw SystemError("fsync \(p)") } }
    }

    /// Writes a queue file from its three parts (header records, body,
    /// trailer) with pwritev(2) from offset 0, so the body is never copied
    /// into a file-sized buffer: one copy fewer of every message being
    /// stored. `reuse`: `p` is an existing (recycled) file, overwritten in
    /// place and cut to the new length. `tearAt` (tests only) stops the
    /// write after that many bytes, before the truncation and the fsync,
    /// as a crash would.
    func writeQueueFile(_ p: String, _ m: QueuedMessage, reuse: Bool = false, sync: Bool = true, tearAt: Int? = nil) throws {
        let header = QueueFile.encodeHeader(m)
        let sum = QueueFile.fnv1a64(m.body[...], from: QueueFile.fnv1a64(header[...]))
        let trailer = QueueFile.trailer(checksumOfHeaderAndBody: sum)
        let fd = reuse ? open(p, O_WRONLY | O_CLOEXEC) : open(p, O_WRONLY | O_CREAT | O_CLOEXEC | O_EXCL, 0o600)
        guard fd >= 0 else { throw SystemError("open \(p)") }
        defer { Glibc.close(fd) }
        let fullLength = header.count + m.body.count + trailer.count
        let total = min(fullLength, tearAt ?? fullLength)
        var written = 0
        while written < total {
            let n = header.withUnsafeBytes { h in
                m.body.withUnsafeBytes { b in
                    trailer.withUnsafeBytes { t in
                        // The parts not yet (fully) written, as iovecs.
                        var iov: [iovec] = []
                        var skip = written
                        for part in [h, b, t] where part.count > 0 {
                            if skip >= part.count { skip -= part.count; continue }
                            iov.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: part.baseAddress! + skip),
                                             iov_len: part.count - skip))
                            skip = 0
                        }
                        // A torn write (tests): cut the last iovec at `total`.
                        var excess = fullLength - total
                        while excess > 0, let last = iov.last {
                            if last.iov_len <= excess { excess -= last.iov_len; iov.removeLast() } else {
                                iov[iov.count - 1].iov_len -= excess
                                excess = 0
                            }
                        }
                        return pwritev(fd, iov, Int32(iov.count), off_t(written))
                    }
                }
            }
            if n < 0 { if errno == EINTR { continue }; throw SystemError("write \(p)") }
            written += n
        }
        if tearAt != nil { return }
        if reuse {
            // Stale bytes of a longer message must not stay after the end record.
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw SystemError("fstat \(p)") }
            if Int(st.st_size) > total { guard ftruncate(fd, off_t(total)) == 0 else { throw SystemError("ftruncate \(p)") } }
        }
        // fdatasync: the data and what it takes to read it back (size,
        // blocks), not the timestamps — a recycled file rewritten at the
        // same size then costs one data write and a flush, not an inode
        // write too. The name is made durable by the batch's directory fsync.
        if sync && fsyncEnabled { guard fdatasync(fd) == 0 else { throw SystemError("fdatasync \(p)") } }
    }

    func rename(_ from: String, to: String) throws {
        guard Glibc.rename(from, to) == 0 else { throw SystemError("rename \(from)") }
    }

    func syncDirectory(_ p: String) throws {
        guard fsyncEnabled else { return }
        let fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open \(p)") }
        defer { Glibc.close(fd) }
        guard fsync(fd) == 0 else { throw SystemError("fsync \(p)") }
    }

    public func freeBytes() -> UInt64? {
        var s = statvfs()
        guard statvfs(root, &s) == 0 else { return nil }
        return UInt64(s.f_bavail) * UInt64(s.f_frsize)
    }

    // MARK: reading and moving

    public func list(_ folder: Folder) -> [String] {
        guard let dir = opendir(path(folder)) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name == "." || name == ".." { continue }
            names.append(name)
        }
        return names.sorted()
    }

    func unlinkPath(_ p: String) -> Bool { unlink(p) == 0 }

    func readFileIfExists(_ p: String) throws -> [UInt8]? {
        let fd = open(p, O_RDONLY | O_CLOEXEC)
        if fd < 0 && errno == ENOENT { return nil }
        guard fd >= 0 else { throw SystemError("open \(p)") }
        defer { Glibc.close(fd) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw SystemError("read \(p)") }
            if n == 0 { break }
            data.append(contentsOf: chunk[0..<n])
        }
        return data
    }

    public func read(_ folder: Folder, _ id: String) throws -> QueuedMessage {
        let p = path(folder, id)
        guard let data = try readFileIfExists(p) else { throw SystemError("open \(p)", ENOENT) }
        let message = try QueueFile.decode(data)
        guard message.id == id else { throw QueueFileError.badRecord("id does not match file name") }
        return message
    }

    /// Opens a message for delivery. A file up to `wholeFileLimit` bytes is
    /// read and checked at once (as cheap as opening it); a larger one keeps
    /// a descriptor and its body is read, and checked, as it is sent.
    public func openMessage(_ folder: Folder, _ id: String) throws -> SpooledMessage {
        let p = path(folder, id)
        let fd = open(p, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open \(p)") }
        // Ours to close until a QueueFileReader takes it.
        var owned = true
        defer { if owned { Glibc.close(fd) } }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SystemError("fstat \(p)") }
        let size = Int(st.st_size)
        let prefix = try QueueFileReader.read(fd, count: min(size, Self.wholeFileLimit), at: 0)
        if prefix.count == size {
            let m = try QueueFile.decode(prefix)
            guard m.id == id else { throw QueueFileError.badRecord("id does not match file name") }
            return SpooledMessage(m)
        }
        let file = try QueueFileReader(fd: fd, fileSize: size, prefix: prefix)
        owned = false
        guard file.header.id == id else { throw QueueFileError.badRecord("id does not match file name") }
        return SpooledMessage(id: id, arrival: file.header.arrival, envelope: file.header.envelope, body: .spool(file))
    }

    /// Files up to this size are read whole for delivery.
    static let wholeFileLimit = 64 * 1024

    /// Checks a queue file completely without holding it in memory: the
    /// header parses, the id matches, the checksum over every byte matches.
    public func verify(_ folder: Folder, _ id: String) throws {
        let m = try openMessage(folder, id)
        let stream = m.body.makeStream()
        while try stream.next(maxBytes: 1024 * 1024) != nil {}
    }

    /// Moves a message between folders. `durable: false` skips the
    /// directory fsync where losing the rename in a crash is harmless
    /// because start-up recovery looks in every folder (incoming ↔ active,
    /// as Postfix's qmgr does); moves the operator asked for stay durable.
    public func move(_ id: String, from: Folder, to: Folder, durable: Bool = true) throws {
        try rename(path(from, id), to: path(to, id))
        if durable { try syncDirectory(path(to)) }
    }

    /// Removes a message. `durable: false` for delivered mail: a lost unlink
    /// means one more delivery after a crash (at-least-once), never a loss.
    /// Non-durable removes recycle the file into free/ when the pool
    /// (switched on by `recover()`) has room and the file is small enough.
    public func remove(_ id: String, from folder: Folder, durable: Bool = true) throws {
        if !durable, recycle(path(folder, id), as: id) { return }
        guard unlink(path(folder, id)) == 0 else { throw SystemError("unlink \(path(folder, id))") }
        if durable { try syncDirectory(path(folder)) }
    }

    /// Renames `p` into free/`name` and puts it on the free list; false
    /// (nothing changed) when recycling is off, the pool is full, the file
    /// is too big or the rename fails.
    func recycle(_ p: String, as name: String) -> Bool {
        let admitted = pool.withLock { pool -> Bool in
            guard pool != nil, pool!.names.count + pool!.reserved < freePoolFiles else { return false }
            pool!.reserved += 1
            return true
        }
        guard admitted else { return false }
        var st = stat()
        let ok = stat(p, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG && st.st_nlink == 1
            && Int(st.st_size) <= freePoolFileBytes && Glibc.rename(p, path(.free, name)) == 0
        pool.withLock { pool in
            pool?.reserved -= 1
            if ok { pool?.names.append(name) }
        }
        return ok
    }

    /// Group commit: writes every message and renames it into incoming/,
    /// then syncs once for the batch (`syncMethod`). Each result says
    /// whether that message is durable; a failure of the batch's sync fails
    /// the whole batch (none is acknowledged).
    /// Callers that store concurrently pass each their own `handle`
    /// (`makeSyncHandle()`).
    public func store(batch messages: [QueuedMessage], using handle: SyncHandle? = nil) -> [Result<Void, StoreError>] {
        let available = freeBytes()
        if let available, available < reserveBytes {
            return messages.map { _ in .failure(.insufficientSpace(available: available)) }
        }
        var results: [Result<Void, StoreError>] = []
        var renamed: [Int] = []
        for (i, m) in messages.enumerated() {
            do {
                try writeAndPublish(m)
                results.append(.success(()))
                renamed.append(i)
            } catch {
                results.append(.failure(.io("\(error)")))
            }
        }
        if !renamed.isEmpty {
            do { try syncBatch(handle ?? rootHandle) } catch {
                // Not durable: take them back so nothing half-kept is delivered.
                for i in renamed {
                    unlink(path(.incoming, messages[i].id))
                    results[i] = .failure(.io("\(error)"))
                }
            }
        }
        return results
    }

    // MARK: start-up recovery

    public struct RecoveryReport: Equatable, Sendable {
        /// tmp/ leftovers: writes that never finished, never acknowledged.
        public var discardedPartial: [String] = []
        /// Files that failed their self-check, now in corrupt/.
        public var quarantined: [(id: String, reason: String)] = []
        public var intact: Int = 0
        /// Files in free/ taken into the free pool.
        public var freeFiles: Int = 0

        public static func == (a: RecoveryReport, b: RecoveryReport) -> Bool {
            a.discardedPartial == b.discardedPartial && a.intact == b.intact
                && a.quarantined.map(\.id) == b.quarantined.map(\.id)
        }
    }

    /// Run once before accepting mail: clears tmp/, checks every queued
    /// file, moves unreadable ones to corrupt/, and returns messages that
    /// were active at the crash to incoming/ so they are delivered again.
    public func recover() -> RecoveryReport {
        var report = RecoveryReport()
        for name in list(.tmp) {
            unlink(path(.tmp, name))
            report.discardedPartial.append(name)
        }
        // The free pool: files kept for reuse, content meaningless. One that
        // has another name too (never left by a clean rename) loses only its
        // free/ name; beyond the bounds, files are unlinked.
        var free = FreePool()
        for name in list(.free) {
            let p = path(.free, name)
            var st = stat()
            if lstat(p, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_nlink == 1,
               Int(st.st_size) <= freePoolFileBytes, free.names.count < freePoolFiles {
                free.names.append(name)
            } else {
                unlink(p)
            }
        }
        report.freeFiles = free.names.count
        pool.withLock { $0 = free }
        for folder in [Folder.incoming, .active, .deferred, .hold] {
            for name in list(folder) {
                do {
                    guard QueueID.isValid(name) else { throw QueueFileError.badRecord("file name is not a queue id") }
                    try verify(folder, name)
                    report.intact += 1
                    if folder == .active { try move(name, from: .active, to: .incoming) }
                } catch {
                    let target = path(.corrupt, name)
                    if Glibc.rename(path(folder, name), target) != 0 { unlink(path(folder, name)) }
                    report.quarantined.append((name, "\(folder.rawValue): \(error)"))
                }
            }
        }
        try? syncDirectory(path(.corrupt))
        return report
    }
}
