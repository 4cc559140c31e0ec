// One PostgreSQL connection on libpq's asynchronous API, driven by
// DispatchSources on its socket like CAresResolver drives c-ares: no thread
// ever waits for the database. PQconnectStartParams + PQconnectPoll to
// connect, PQsetnonblocking, PQsendQueryParams + PQflush to send,
// PQconsumeInput / PQisBusy / PQgetResult on readable events.
//
// SQL text is a StaticString in every entry point: the text is a literal in
// the program, never built from runtime strings, and values travel only as
// parameters (text format; results in text format too). The one exception
// is a migration file's script (PGScript, built only by PGMigrations from a
// versioned, checksummed file), sent with PQsendQuery because a file holds
// several statements; the source-scanning test allows exactly that call.
//
// Socket ownership: libpq owns its socket and may replace it while
// connecting (another address, an SSL retry) and closes it in PQfinish. The
// sources here watch a dup(2) of it that this connection owns; the dup is
// closed only by the last source's cancel handler (SocketWatch), so no
// source ever sees a descriptor closed under it or reused, whatever libpq
// does with its own. After every PQconnectPoll the socket's inode is
// compared with the watched one and the watch is renewed when it changed.
//
// One query runs at a time; later ones wait in `pending` (the pool never
// gives a busy connection out, so the list stays short). Each query has a
// timeout: when it fires the caller gets .timeout at once, a PQcancel goes
// out on a helper queue (PQcancel blocks: it opens its own connection), and
// if the server has not finished the statement within a grace period the
// connection is closed.
//
// Confinement (hence @unchecked Sendable): conn, the watch, the timers,
// `current` and `pending` are touched only on `queue`; every method that
// touches them runs there (public ones hop onto it) and asserts it in debug
// builds. `openFlag` is a Locked for readers on other queues.
import CLibPQ
import Dispatch
import RelaySync
#if canImport(Glibc)
import Glibc
#endif

/// A migration file's text: the only SQL not written as a literal. Only
/// PGMigrations makes one, from a file it checksums.
struct PGScript: Sendable {
    let text: String
}

public final class PGConnection: @unchecked Sendable {
    public let queue: DispatchQueue
    private var conn: OpaquePointer?
    private var watch: SocketWatch?
    private var wantRead = false
    private var wantWrite = false
    private var connecting: (@Sendable (Result<PGConnection, PGError>) -> Void)?
    private var connectReplyQueue: DispatchQueue?
    private var connectTimer: (any DispatchSourceTimer)?
    /// Holds the connection while it connects, when nobody else does yet;
    /// cleared when the connect succeeds or fails (the timer bounds it).
    private var keepAlive: PGConnection?
    /// Holds the connection while a request is on it or waiting, so a
    /// caller that lets go of it still gets its answer.
    private var busyRetain: PGConnection?
    private var current: Request?
    private var pending: [Request] = []
    private var flushing = false
    private var onClose: (@Sendable (PGError) -> Void)?
    private let openFlag = Locked(false)
    private static let cancelQueue = DispatchQueue(label: "relayd.pg.cancel", attributes: .concurrent)
    /// After a timeout, how long the server has to end the cancelled statement.
    static let cancelGrace: DispatchTimeInterval = .seconds(3)

    /// Confined to the connection's queue, like the connection.
    private final class Request: @unchecked Sendable {
        enum SQL { case literal(StaticString), script(String) }
        let sql: SQL
        let params: [String?]
        let timeout: DispatchTimeInterval
        let replyQueue: DispatchQueue
        var completion: (@Sendable (Result<PGResult, PGError>) -> Void)?
        var results: [PGResult] = []
        var error: PGError?
        var timer: (any DispatchSourceTimer)?
        init(sql: SQL, params: [String?], timeout: DispatchTimeInterval, replyQueue: DispatchQueue,
             completion: @escaping @Sendable (Result<PGResult, PGError>) -> Void) {
            self.sql = sql
            self.params = params
            self.timeout = timeout
            self.replyQueue = replyQueue
            self.completion = completion
        }

        /// Hands the outcome to the caller once; later calls do nothing.
        func complete(_ result: Result<PGResult, PGError>) {
            guard let c = completion else { return }
            completion = nil
            timer?.cancel()
            timer = nil
            replyQueue.async { c(result) }
        }
    }

    /// The descriptor the sources watch: a dup of libpq's socket, owned
    /// here and closed by the cancel handler of the last of its two sources.
    private final class SocketWatch {
        let fd: Int32
        let inode: UInt64
        let read: any DispatchSourceRead
        let write: any DispatchSourceWrite
        var readResumed = false
        var writeResumed = false

        init?(libpqSocket: Int32, queue: DispatchQueue, onRead: @escaping @Sendable () -> Void,
              onWrite: @escaping @Sendable () -> Void) {
            guard let inode = PGConnection.inode(libpqSocket) else { return nil }
            let fd = dup(libpqSocket)
            guard fd >= 0 else { return nil }
            self.fd = fd
            self.inode = inode
            read = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
            write = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
            read.setEventHandler(handler: onRead)
            write.setEventHandler(handler: onWrite)
            let remaining = Locked(2)
            let closeWhenBothCancelled: @Sendable () -> Void = {
                if remaining.withLock({ $0 -= 1; return $0 }) == 0 { _ = Glibc.close(fd) }
            }
            read.setCancelHandler(handler: closeWhenBothCancelled)
            write.setCancelHandler(handler: closeWhenBothCancelled)
        }

        func want(read r: Bool, write w: Bool) {
            if r != readResumed { if r { read.resume() } else { read.suspend() }; readResumed = r }
            if w != writeResumed { if w { write.resume() } else { write.suspend() }; writeResumed = w }
        }

        /// Cancels both sources; a suspended source runs its cancel handler
        /// only once resumed, so each is resumed first.
        func stop() {
            read.cancel()
            write.cancel()
            if !readResumed { read.resume(); readResumed = true }
            if !writeResumed { write.resume(); writeResumed = true }
        }
    }

    private init(label: String) {
        queue = DispatchQueue(label: label)
    }

    /// Whether the connection is up (readable from any queue).
    public var isOpen: Bool { openFlag.withLock { $0 } }

    /// Starts a connection; `completion` runs on `replyQueue` once it is up
    /// or has failed. `onClose` runs (on the connection's queue) once, when
    /// an open connection closes for any reason, with the reason.
    public static func connect(_ options: PGConnectOptions, on replyQueue: DispatchQueue,
                               onClose: (@Sendable (PGError) -> Void)? = nil,
                               completion: @escaping @Sendable (Result<PGConnection, PGError>) -> Void) {
        let c = PGConnection(label: "relayd.pg.connection")
        c.queue.async { c.start(options, replyQueue: replyQueue, onClose: onClose, completion: completion) }
    }

    /// Runs one statement: `sql` is a literal, `$1…` are `parameters` (nil
    /// is NULL). The result (or the error) arrives on `replyQueue`, at the
    /// latest `timeout` after the call.
    public func query(_ sql: StaticString, _ parameters: [String?] = [], timeout: DispatchTimeInterval = .seconds(10),
                      on replyQueue: DispatchQueue, completion: @escaping @Sendable (Result<PGResult, PGError>) -> Void) {
        let request = Request(sql: .literal(sql), params: parameters, timeout: timeout, replyQueue: replyQueue,
                              completion: completion)
        queue.async { self.enqueue(request) }
    }

    /// A migration script (several statements, no parameters).
    func run(_ script: PGScript, timeout: DispatchTimeInterval, on replyQueue: DispatchQueue,
             completion: @escaping @Sendable (Result<PGResult, PGError>) -> Void) {
        let request = Request(sql: .script(script.text), params: [], timeout: timeout, replyQueue: replyQueue,
                              completion: completion)
        queue.async { self.enqueue(request) }
    }

    /// Closes the connection; queries not finished fail with .closed.
    public func close() {
        queue.async { self.teardown(.closed) }
    }

    deinit {
        // Only reached when nothing holds the connection, so no handler can
        // run concurrently; the sources hold it weakly.
        watch?.stop()
        if let conn { PQfinish(conn) }
    }

    // MARK: connecting (on queue)

    private func start(_ options: PGConnectOptions, replyQueue: DispatchQueue, onClose: (@Sendable (PGError) -> Void)?,
                       completion: @escaping @Sendable (Result<PGConnection, PGError>) -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        let pairs = options.keywords
        let keys: [UnsafeMutablePointer<CChar>?] = pairs.map { strdup($0.0) } + [nil]
        let values: [UnsafeMutablePointer<CChar>?] = pairs.map { strdup($0.1) } + [nil]
        defer { keys.forEach { free($0) }; values.forEach { free($0) } }
        let c: OpaquePointer? = keys.map { UnsafePointer($0) }.withUnsafeBufferPointer { k in
            values.map { UnsafePointer($0) }.withUnsafeBufferPointer { v in
                PQconnectStartParams(k.baseAddress, v.baseAddress, 1)
            }
        }
        guard let c else {
            return replyQueue.async { completion(.failure(.connectFailed("libpq could not allocate a connection"))) }
        }
        conn = c
        PQsetNoticeProcessor(c, { _, _ in }, nil)
        guard PQstatus(c) != CONNECTION_BAD else {
            let message = errorMessage()
            PQfinish(c)
            conn = nil
            return replyQueue.async { completion(.failure(.connectFailed(message))) }
        }
        connecting = completion
        connectReplyQueue = replyQueue
        keepAlive = self
        self.onClose = onClose
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.setEventHandler { [weak self] in self?.connectFailed("no connection within \(options.connectTimeoutSeconds)s") }
        timer.schedule(deadline: .now() + .seconds(max(1, options.connectTimeoutSeconds)))
        timer.resume()
        connectTimer = timer
        // libpq: after PQconnectStart, act as if PQconnectPoll had said WRITING.
        renewWatch()
        want(read: false, write: true)
    }

    private func pollConnect() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let conn, connecting != nil else { return }
        let status = PQconnectPoll(conn)
        renewWatch()
        switch status {
        case PGRES_POLLING_READING: want(read: true, write: false)
        case PGRES_POLLING_WRITING: want(read: false, write: true)
        case PGRES_POLLING_OK:
            guard PQsetnonblocking(conn, 1) == 0 else { return connectFailed(errorMessage()) }
            connectTimer?.cancel()
            connectTimer = nil
            openFlag.withLock { $0 = true }
            want(read: true, write: false)
            let completion = connecting
            connecting = nil
            connectReplyQueue?.async { completion?(.success(self)) }
            connectReplyQueue = nil
            keepAlive = nil
            sendNext()
        default:
            connectFailed(errorMessage())
        }
    }

    private func connectFailed(_ message: String) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let completion = connecting else { return }
        connecting = nil
        onClose = nil
        teardown(.connectFailed(message))
        connectReplyQueue?.async { completion(.failure(.connectFailed(message))) }
        connectReplyQueue = nil
        keepAlive = nil
    }

    /// Watches libpq's current socket, anew when it changed.
    private func renewWatch() {
        guard let conn else { return }
        let s = PQsocket(conn)
        guard s >= 0 else { return }
        if let watch, watch.inode == Self.inode(s) { return }
        watch?.stop()
        wantRead = false
        wantWrite = false
        watch = SocketWatch(libpqSocket: s, queue: queue,
                            onRead: { [weak self] in self?.readable() },
                            onWrite: { [weak self] in self?.writable() })
    }

    private func want(read r: Bool, write w: Bool) {
        wantRead = r
        wantWrite = w
        watch?.want(read: r, write: w)
    }

    fileprivate static func inode(_ fd: Int32) -> UInt64? {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        return UInt64(st.st_ino)
    }

    // MARK: queries (on queue)

    private func enqueue(_ request: Request) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard conn != nil else { return request.complete(.failure(.closed)) }
        if let bad = request.params.first(where: { $0?.utf8.contains(0) ?? false }) {
            _ = bad
            return request.complete(.failure(.invalidRequest("a parameter holds a NUL character")))
        }
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.setEventHandler { [weak self, weak request] in
            guard let self, let request else { return }
            self.timedOut(request)
        }
        timer.schedule(deadline: .now() + request.timeout)
        timer.resume()
        request.timer = timer
        pending.append(request)
        busyRetain = self
        sendNext()
    }

    private func sendNext() {
        dispatchPrecondition(condition: .onQueue(queue))
        if current == nil, pending.isEmpty { busyRetain = nil }
        guard current == nil, connecting == nil, let conn, !pending.isEmpty else { return }
        let request = pending.removeFirst()
        if request.completion == nil { return sendNext() }  // timed out while waiting
        current = request
        let sent: Int32
        switch request.sql {
        case .literal(let sql):
            guard sql.hasPointerRepresentation else {
                current = nil
                request.complete(.failure(.invalidRequest("SQL text is not a string literal")))
                return sendNext()
            }
            let text = UnsafeRawPointer(sql.utf8Start).assumingMemoryBound(to: CChar.self)
            let values: [UnsafeMutablePointer<CChar>?] = request.params.map { $0.flatMap { strdup($0) } }
            defer { values.forEach { free($0) } }
            sent = values.map { UnsafePointer($0) }.withUnsafeBufferPointer { v in
                PQsendQueryParams(conn, text, Int32(v.count), nil, v.baseAddress, nil, nil, 0)
            }
        case .script(let text):
            sent = PQsendQuery(conn, text)  // sql-scan: migration script (PGScript), the one non-literal
        }
        guard sent == 1 else { return teardown(.connectionLost(errorMessage())) }
        flush()
    }

    private func flush() {
        guard let conn else { return }
        switch PQflush(conn) {
        case 0: flushing = false; want(read: true, write: false)
        case 1: flushing = true; want(read: true, write: true)
        default: teardown(.connectionLost(errorMessage()))
        }
    }

    private func writable() {
        dispatchPrecondition(condition: .onQueue(queue))
        if connecting != nil { return pollConnect() }
        if flushing { flush() } else { want(read: true, write: false) }
    }

    private func readable() {
        dispatchPrecondition(condition: .onQueue(queue))
        if connecting != nil { return pollConnect() }
        guard let conn else { return }
        guard PQconsumeInput(conn) == 1 else { return teardown(.connectionLost(errorMessage())) }
        if flushing { flush() }
        while self.conn != nil, PQisBusy(conn) == 0 {
            guard let res = PQgetResult(conn) else {
                finishCurrent()
                break
            }
            collect(res)
            PQclear(res)
        }
        if self.conn != nil, PQstatus(conn) == CONNECTION_BAD { teardown(.connectionLost(errorMessage())) }
    }

    private func collect(_ res: OpaquePointer) {
        guard let request = current else { return }
        let status = PQresultStatus(res)
        if status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK {
            request.results.append(Self.result(res))
        } else if request.error == nil {
            let state = PQresultErrorField(res, Int32(UInt8(ascii: "C"))).map { String(cString: $0) } ?? "?????"
            let message = PQresultErrorField(res, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
                ?? String(cString: PQresultErrorMessage(res))
            request.error = .server(sqlState: state, message: message)
        }
    }

    private static func result(_ res: OpaquePointer) -> PGResult {
        let nf = PQnfields(res), nt = PQntuples(res)
        let columns = (0..<nf).map { String(cString: PQfname(res, $0)) }
        var rows: [[String?]] = []
        rows.reserveCapacity(Int(nt))
        for r in 0..<nt {
            rows.append((0..<nf).map { c -> String? in
                if PQgetisnull(res, r, c) == 1 { return nil }
                let length = Int(PQgetlength(res, r, c))
                return PQgetvalue(res, r, c).withMemoryRebound(to: UInt8.self, capacity: length) {
                    String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
                }
            })
        }
        let tuples = String(cString: PQcmdTuples(res))
        return PGResult(columns: columns, rows: rows, commandStatus: String(cString: PQcmdStatus(res)),
                        affectedRows: Int(tuples))
    }

    /// PQgetResult said the command is over.
    private func finishCurrent() {
        guard let request = current else { return }
        current = nil
        if let error = request.error {
            request.complete(.failure(error))
        } else {
            // The last statement's result: for a script, its last statement.
            request.complete(.success(request.results.last
                ?? PGResult(columns: [], rows: [], commandStatus: "", affectedRows: nil)))
        }
        sendNext()
    }

    private func timedOut(_ request: Request) {
        dispatchPrecondition(condition: .onQueue(queue))
        request.complete(.failure(.timeout))
        guard current === request, let conn else { return }
        // Ask the server to stop the statement; PQcancel blocks, so not here.
        if let cancel = PQgetCancel(conn) {
            let handle = CancelHandle(cancel)
            Self.cancelQueue.async { handle.send() }
        }
        queue.asyncAfter(deadline: .now() + Self.cancelGrace) { [weak self, weak request] in
            guard let self, let request, self.current === request else { return }
            self.teardown(.timeout)
        }
    }

    /// Owns one PGcancel: sends it and frees it, on the cancel queue.
    private final class CancelHandle: @unchecked Sendable {
        private let cancel: OpaquePointer
        init(_ cancel: OpaquePointer) { self.cancel = cancel }
        func send() {
            var buffer = [CChar](repeating: 0, count: 256)
            _ = PQcancel(cancel, &buffer, 256)
            PQfreeCancel(cancel)
        }
    }

    // MARK: closing (on queue)

    private func teardown(_ reason: PGError) {
        dispatchPrecondition(condition: .onQueue(queue))
        if connecting != nil, case .connectFailed = reason {} else if connecting != nil {
            return connectFailed(reason.description)
        }
        let wasOpen = openFlag.withLock { open -> Bool in defer { open = false }; return open }
        connectTimer?.cancel()
        connectTimer = nil
        watch?.stop()
        watch = nil
        if let conn { PQfinish(conn) }
        conn = nil
        let failed = (current.map { [$0] } ?? []) + pending
        current = nil
        pending = []
        for r in failed { r.complete(.failure(reason)) }
        busyRetain = nil
        if wasOpen, let onClose {
            self.onClose = nil
            onClose(reason)
        }
    }

    private func errorMessage() -> String {
        guard let conn, let m = PQerrorMessage(conn) else { return "unknown libpq error" }
        let s = String(cString: m)
        return s.hasSuffix("\n") ? String(s.dropLast()) : s
    }
}
