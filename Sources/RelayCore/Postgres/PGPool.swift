// A fixed set of PGConnections and a bounded queue of requests waiting for
// one. Each slot connects at start and reconnects after a loss, with a
// backoff that doubles up to a cap. A request waits at most its timeout for
// a connection, and the queue holds at most `queueLimit` requests: past it
// the request fails at once (.saturated), so an outage never turns into
// unbounded memory. While no connection is up and the last attempt failed
// the pool is unhealthy and new requests fail at once (.unavailable): the
// callers (the shared-state stores) fall back on their local copy instead
// of waiting. Health changes are logged once per transition, with counters.
//
// Every callback runs on the queue the caller names.
//
// Confinement (hence @unchecked Sendable): slots, waiters and counters live
// on `queue`; public entry points hop onto it, internal ones assert it.
// `stats` is a Locked copy for readers on other queues.
import Dispatch
import Logging
import RelaySync

public struct PGPoolConfiguration: Sendable {
    public var connect: PGConnectOptions
    /// Connections kept open (config `pool_size`).
    public var size: Int
    /// Requests that may wait for a connection; one more fails at once.
    public var queueLimit: Int
    /// How long a request may wait for a connection, and then how long its
    /// statement may run: a caller hears back within twice this at most.
    public var queryTimeout: DispatchTimeInterval
    /// Reconnect backoff: the first wait, doubled per failure up to the cap.
    public var reconnectMinimum: DispatchTimeInterval
    public var reconnectMaximum: DispatchTimeInterval

    public init(connect: PGConnectOptions, size: Int = 4, queueLimit: Int = 1000,
                queryTimeout: DispatchTimeInterval? = nil,
                reconnectMinimum: DispatchTimeInterval = .milliseconds(200),
                reconnectMaximum: DispatchTimeInterval = .seconds(30)) {
        self.connect = connect
        self.size = max(1, size)
        self.queueLimit = max(1, queueLimit)
        self.queryTimeout = queryTimeout ?? .milliseconds(connect.statementTimeoutMilliseconds + 2000)
        self.reconnectMinimum = reconnectMinimum
        self.reconnectMaximum = reconnectMaximum
    }
}

/// What an outage can be logged and measured from.
public struct PGPoolStats: Sendable, Equatable {
    /// At least one connection is up (or none has failed yet).
    public var healthy = true
    public var openConnections = 0
    public var waiting = 0
    public var queries = 0
    public var failures = 0
    public var timeouts = 0
    public var rejected = 0
    public var connects = 0
    public var connectFailures = 0
    public var disconnects = 0
    public var lastError: String?
}

public final class PGPool: @unchecked Sendable {
    public let configuration: PGPoolConfiguration
    private let queue = DispatchQueue(label: "relayd.pg.pool")
    private let logger: Logger
    private var slots: [Slot]
    private var waiters: [Waiter] = []
    private var nextWaiterID = 0
    private var counters = PGPoolStats()
    private var started = false
    private var shut = false
    private var everFailed = false
    private let published = Locked(PGPoolStats())

    /// Confined to the pool's queue.
    private final class Slot: @unchecked Sendable {
        var connection: PGConnection?
        var busy = false
        var connecting = false
        var failures = 0
    }

    private struct Waiter {
        let id: Int
        let replyQueue: DispatchQueue
        let work: (PGConnection?, PGError?, @escaping @Sendable () -> Void) -> Void
    }

    public init(_ configuration: PGPoolConfiguration, logger: Logger = Logger(label: "relayd.postgres")) {
        self.configuration = configuration
        self.logger = logger
        slots = (0..<configuration.size).map { _ in Slot() }
    }

    /// Opens the connections. Requests made before are queued.
    public func start() {
        queue.async {
            guard !self.started, !self.shut else { return }
            self.started = true
            for i in self.slots.indices { self.connect(i) }
        }
    }

    /// Closes every connection; waiting requests fail with .closed.
    /// `completion` runs on `replyQueue` once the pool is closed.
    public func shutdown(on replyQueue: DispatchQueue = .global(), completion: (@Sendable () -> Void)? = nil) {
        queue.async {
            self.shut = true
            let failed = self.waiters
            self.waiters = []
            for w in failed { w.work(nil, .closed) {} }
            for slot in self.slots { slot.connection?.close(); slot.connection = nil }
            self.publish()
            if let completion { replyQueue.async(execute: completion) }
        }
    }

    /// A snapshot of health and counters, from any queue.
    public var stats: PGPoolStats { published.withLock { $0 } }

    /// Runs one statement on some connection.
    public func query(_ sql: StaticString, _ parameters: [String?] = [], on replyQueue: DispatchQueue,
                      completion: @escaping @Sendable (Result<PGResult, PGError>) -> Void) {
        let timeout = configuration.queryTimeout
        enqueue(replyQueue: replyQueue, fail: { completion(.failure($0)) }) { [weak self] connection, release in
            let pool = self
            connection.query(sql, parameters, timeout: timeout, on: replyQueue) { result in
                release()
                pool?.count(result)
                completion(result)
            }
        }
    }

    /// Lends one connection for several statements (a transaction, a
    /// session advisory lock). The lease must be released; its statements
    /// each have the pool's query timeout unless given their own.
    public func withConnection(on replyQueue: DispatchQueue,
                               _ body: @escaping @Sendable (Result<PGLease, PGError>) -> Void) {
        let timeout = configuration.queryTimeout
        enqueue(replyQueue: replyQueue, fail: { body(.failure($0)) }) { connection, release in
            replyQueue.async { body(.success(PGLease(connection: connection, timeout: timeout, release: release))) }
        }
    }

    // MARK: on queue

    private func enqueue(replyQueue: DispatchQueue, fail: @escaping @Sendable (PGError) -> Void,
                         run: @escaping @Sendable (PGConnection, @escaping @Sendable () -> Void) -> Void) {
        queue.async { [self] in
            if shut { return replyQueue.async { fail(.closed) } }
            if !counters.healthy {
                counters.rejected += 1
                publish()
                let why = counters.lastError ?? "no connection"
                return replyQueue.async { fail(.unavailable(why)) }
            }
            guard waiters.count < configuration.queueLimit else {
                counters.rejected += 1
                publish()
                let limit = configuration.queueLimit
                return replyQueue.async { fail(.saturated(limit: limit)) }
            }
            nextWaiterID += 1
            let id = nextWaiterID
            waiters.append(Waiter(id: id, replyQueue: replyQueue) { connection, error, release in
                if let connection { run(connection, release) } else { replyQueue.async { fail(error ?? .closed) } }
            })
            queue.asyncAfter(deadline: .now() + configuration.queryTimeout) { [weak self] in self?.expire(id) }
            publish()
            dispatch()
        }
    }

    private func expire(_ id: Int) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let i = waiters.firstIndex(where: { $0.id == id }) else { return }
        let w = waiters.remove(at: i)
        counters.timeouts += 1
        counters.failures += 1
        publish()
        w.work(nil, .timeout) {}
    }

    /// Gives idle open connections to the oldest waiters.
    private func dispatch() {
        dispatchPrecondition(condition: .onQueue(queue))
        for (i, slot) in slots.enumerated() where !waiters.isEmpty {
            guard !slot.busy, let connection = slot.connection, connection.isOpen else { continue }
            slot.busy = true
            let w = waiters.removeFirst()
            let once = Locked(false)
            let release: @Sendable () -> Void = { [weak self] in
                guard !once.withLock({ done in defer { done = true }; return done }) else { return }
                guard let self else { return }
                self.queue.async { self.released(i, connection) }
            }
            w.work(connection, nil, release)
        }
        publish()
    }

    private func released(_ index: Int, _ connection: PGConnection) {
        let slot = slots[index]
        if slot.connection === connection { slot.busy = false }
        dispatch()
    }

    private func count(_ result: Result<PGResult, PGError>) {
        queue.async { [self] in
            counters.queries += 1
            if case .failure(let e) = result {
                counters.failures += 1
                if e == .timeout { counters.timeouts += 1 }
            }
            publish()
        }
    }

    private func connect(_ index: Int) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !shut else { return }
        let slot = slots[index]
        slot.connecting = true
        PGConnection.connect(configuration.connect, on: queue, onClose: { [weak self] reason in
            guard let self else { return }
            self.queue.async { self.lost(index, reason) }
        }) { [weak self] result in
            guard let self else { return }
            slot.connecting = false
            switch result {
            case .success(let connection):
                if self.shut { connection.close(); return }
                slot.connection = connection
                slot.busy = false
                slot.failures = 0
                self.counters.connects += 1
                self.healthChanged()
                self.dispatch()
            case .failure(let error):
                slot.failures += 1
                self.counters.connectFailures += 1
                self.counters.lastError = error.description
                self.everFailed = true
                self.healthChanged()
                self.retry(index)
            }
        }
    }

    private func lost(_ index: Int, _ reason: PGError) {
        dispatchPrecondition(condition: .onQueue(queue))
        let slot = slots[index]
        slot.connection = nil
        slot.busy = false
        counters.disconnects += 1
        if reason != .closed { counters.lastError = reason.description; everFailed = true }
        healthChanged()
        if !shut { retry(index) }
    }

    private func retry(_ index: Int) {
        let slot = slots[index]
        let minimum = Self.milliseconds(configuration.reconnectMinimum)
        let maximum = Self.milliseconds(configuration.reconnectMaximum)
        let exponent = min(max(slot.failures - 1, 0), 20)
        let wait = min(maximum, minimum << exponent)
        queue.asyncAfter(deadline: .now() + .milliseconds(wait)) { [weak self] in self?.connect(index) }
    }

    /// Recomputes health; logs a transition and fails waiters when down.
    private func healthChanged() {
        let open = slots.filter { $0.connection?.isOpen ?? false }.count
        counters.openConnections = open
        let healthy = open > 0 || !everFailed
        if healthy != counters.healthy {
            counters.healthy = healthy
            let meta: Logger.Metadata = ["open": "\(open)", "queries": "\(counters.queries)",
                                         "failures": "\(counters.failures)", "rejected": "\(counters.rejected)",
                                         "connect_failures": "\(counters.connectFailures)"]
            if healthy {
                logger.notice("PostgreSQL reachable again", metadata: meta)
            } else {
                logger.warning("PostgreSQL unreachable: \(counters.lastError ?? "no connection")", metadata: meta)
                let failed = waiters
                waiters = []
                let why = counters.lastError ?? "no connection"
                for w in failed { counters.failures += 1; w.work(nil, .unavailable(why)) {} }
            }
        }
        publish()
    }

    private func publish() {
        counters.waiting = waiters.count
        let snapshot = counters
        published.withLock { $0 = snapshot }
    }

    static func milliseconds(_ interval: DispatchTimeInterval) -> Int {
        switch interval {
        case .seconds(let s): return s * 1000
        case .milliseconds(let m): return m
        case .microseconds(let u): return u / 1000
        case .nanoseconds(let n): return n / 1_000_000
        case .never: return Int.max / 4
        @unknown default: return 1000
        }
    }
}

/// One connection lent by the pool: run statements on it in order, then
/// release it. A lease not released keeps its connection out of the pool.
public final class PGLease: Sendable {
    private let connection: PGConnection
    private let timeout: DispatchTimeInterval
    private let releaseAction: @Sendable () -> Void

    init(connection: PGConnection, timeout: DispatchTimeInterval, release: @escaping @Sendable () -> Void) {
        self.connection = connection
        self.timeout = timeout
        self.releaseAction = release
    }

    public func query(_ sql: StaticString, _ parameters: [String?] = [], timeout: DispatchTimeInterval? = nil,
                      on replyQueue: DispatchQueue, completion: @escaping @Sendable (Result<PGResult, PGError>) -> Void) {
        connection.query(sql, parameters, timeout: timeout ?? self.timeout, on: replyQueue, completion: completion)
    }

    func run(_ script: PGScript, timeout: DispatchTimeInterval? = nil, on replyQueue: DispatchQueue,
             completion: @escaping @Sendable (Result<PGResult, PGError>) -> Void) {
        connection.run(script, timeout: timeout ?? self.timeout, on: replyQueue, completion: completion)
    }

    /// Gives the connection back (once; later calls do nothing).
    public func release() { releaseAction() }
}
