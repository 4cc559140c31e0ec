// One relayd per spool. Whoever changes the spool outside the queue runner
// — `relayd run` (start-up recovery deletes tmp/ and moves active/ back to
// incoming/) and `relayd queue` acting with no daemon — first takes an
// exclusive flock(2) on spool/relayd.lock and keeps it until it exits.
//
// Which process holds it, and whether that process takes SIGUSR1, is told
// by the kernel, never by a file a crashed daemon may have left behind: the
// holder also puts POSIX read locks on single bytes of the lock file, and
// anyone may ask F_GETLK who holds them, which answers with a live pid or
// nothing. flock alone names no holder; OFD locks report pid -1.
//
//   byte 0  "owner": taken right after the flock (daemon or offline CLI)
//   byte 1  "takes requests": the daemon, once its SIGUSR1 handler and queue
//           runner are running; dropped when it starts to stop
//
// POSIX locks belong to the process and vanish on any close of the file by
// it, so nothing else in a relayd process may open relayd.lock. They are
// only ever the name tag: exclusion is the flock, which is per open file
// description, survives such a close, and also works between two opens in
// one process. The file stays empty and is never unlinked (unlinking a lock
// file lets two processes lock two different files).
import RelayModel
#if canImport(Glibc)
import Glibc
#endif

public final class SpoolLock {
    public static let fileName = "relayd.lock"

    /// The spool is locked by another process; `owner` is its pid when the
    /// kernel can say (nil while the holder is taking the lock).
    public struct Held: Error, CustomStringConvertible {
        public let spoolRoot: String
        public let owner: pid_t?
        /// The pid that takes SIGUSR1, if the holder is a running daemon.
        let daemon: pid_t?
        public var description: String {
            let who = owner.map { "relayd pid \($0)" } ?? "another process"
            return "spool \(spoolRoot) is locked by \(who) (\(spoolRoot)/\(SpoolLock.fileName)); one relayd per spool"
        }
    }

    /// What `relayd queue` finds.
    public enum Probe {
        /// No one held it; now this process does (act offline, then release).
        case acquired(SpoolLock)
        /// A daemon holds it and takes SIGUSR1: this pid, as the kernel says.
        case daemon(pid_t)
        /// Held by a process that takes no requests (yet): a daemon starting
        /// or stopping, or another `relayd queue`. Never to be signalled.
        case busy(owner: pid_t?)
    }

    private static let ownerByte: Int = 0
    private static let requestsByte: Int = 1

    public let path: String
    private var fd: Int32

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    deinit { release() }

    /// Takes the lock or throws `Held` (or a `SystemError` when the file
    /// cannot be opened). Creates the spool directory if it is missing.
    public static func acquire(spoolRoot: String) throws -> SpoolLock {
        switch try take(spoolRoot: spoolRoot) {
        case .success(let lock): return lock
        case .failure(let held): throw held
        }
    }

    /// For `relayd queue`: the lock if it was free, else who holds it.
    public static func probe(spoolRoot: String) throws -> Probe {
        switch try take(spoolRoot: spoolRoot) {
        case .success(let lock):
            return .acquired(lock)
        case .failure(let held):
            return held.daemon.map { .daemon($0) } ?? .busy(owner: held.owner)
        }
    }

    private static func take(spoolRoot: String) throws -> Result<SpoolLock, Held> {
        let fd = try open(spoolRoot)
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            if e == EINTR { continue }
            guard e == EWOULDBLOCK else {
                Glibc.close(fd)
                throw SystemError("flock \(spoolRoot)/\(fileName)", e)
            }
            // The holder names itself just after its flock; give it a moment.
            var owner = holder(fd, ownerByte)
            for _ in 0..<20 where owner == nil {
                usleep(10_000)
                owner = holder(fd, ownerByte)
            }
            let daemon = holder(fd, requestsByte)
            Glibc.close(fd)
            return .failure(Held(spoolRoot: spoolRoot, owner: owner ?? daemon, daemon: daemon))
        }
        let lock = SpoolLock(path: spoolRoot + "/" + fileName, fd: fd)
        _ = lock.setRecord(ownerByte, F_RDLCK)
        return .success(lock)
    }

    /// Read-only is enough for flock and read locks, so a lock file created
    /// by root's `relayd queue` still opens for the daemon's user.
    private static func open(_ spoolRoot: String) throws -> Int32 {
        try Spool.makeDirectory(spoolRoot)
        let p = spoolRoot + "/" + fileName
        let fd = Glibc.open(p, O_RDONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SystemError("open \(p)") }
        return fd
    }

    /// Says the daemon now takes SIGUSR1 for queue requests. False when the
    /// record could not be set (then `relayd queue` never signals it).
    @discardableResult
    public func acceptRequests() -> Bool { setRecord(Self.requestsByte, F_RDLCK) }

    /// Stopping: `relayd queue` waits for the exit instead of signalling.
    public func withdrawRequests() { _ = setRecord(Self.requestsByte, F_UNLCK) }

    /// Gives the lock up (also on deinit, and by the kernel at exit).
    public func release() {
        guard fd >= 0 else { return }
        Glibc.close(fd)  // drops the flock and this process's records
        fd = -1
    }

    private func setRecord(_ byte: Int, _ type: Int32) -> Bool {
        guard fd >= 0 else { return false }
        var fl = Glibc.flock()
        fl.l_type = Int16(type)
        fl.l_whence = Int16(SEEK_SET)
        fl.l_start = off_t(byte)
        fl.l_len = 1
        while fcntl(fd, F_SETLK, &fl) != 0 {
            if errno != EINTR { return false }
        }
        return true
    }

    /// The pid holding a record on `byte`, from the kernel. Records of this
    /// process never show (POSIX locks do not conflict with their owner).
    private static func holder(_ fd: Int32, _ byte: Int) -> pid_t? {
        var fl = Glibc.flock()
        fl.l_type = Int16(F_WRLCK)
        fl.l_whence = Int16(SEEK_SET)
        fl.l_start = off_t(byte)
        fl.l_len = 1
        guard fcntl(fd, F_GETLK, &fl) == 0, fl.l_type != Int16(F_UNLCK), fl.l_pid > 0 else { return nil }
        return fl.l_pid
    }
}
