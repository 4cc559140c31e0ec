// A value behind a pthread mutex: the few pieces of state that many queues
// share (the pool's idle table, the auth throttle, the spool committer's
// waiting stores, collectors of concurrent DNS answers).
//
// Why not Synchronization.Mutex: on Linux it locks with futex(2) through
// code ThreadSanitizer does not instrument, so TSan sees no ordering
// between two holders and reports every guarded access as a race (`make
// tsan` did, on SpoolCommitter.submit). pthread_mutex_lock is intercepted
// by TSan, so with this lock a race report means a race. The cost is the
// same uncontended lock.
//
// @unchecked Sendable: the invariant is that `value` is only ever touched
// inside withLock, which holds the mutex; the mutex lives at a fixed heap
// address for the object's life.
#if canImport(Glibc)
import Glibc
#endif

public final class Locked<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let rc = pthread_mutex_init(mutex, nil)
        precondition(rc == 0, "pthread_mutex_init: \(rc)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the value, under the lock.
    public func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
