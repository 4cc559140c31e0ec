// One TCP connection on a non-blocking socket, driven by exactly one read
// and one write DispatchSource on the connection's serial queue. It moves
// bytes and runs TLS over them; it has no idea what the bytes mean.
//
// Lifecycle: start() → events to the delegate → close() (flush, then
// teardown) or abort(). Teardown cancels both sources; the fd is closed in
// the cancel handler of the last one, so no event handler can ever run on a
// recycled descriptor.
//
// Confinement: every property is read and written on `queue` only, and every
// entry point checks that in debug builds (dispatchPrecondition). That is
// what makes the class @unchecked Sendable: it may be handed between
// queues, but it is only touched on its own.
//
// Backpressure, after swift-nio's writability and autoRead: reading stops
// while more than `outboxHighWater` bytes wait to be sent (a peer that
// pipelines and never reads gets no further), and while the owner holds
// reads (the session waits for a disk or a password check); it resumes
// when the outbox drains below `outboxLowWater` and the hold is lifted. A
// close that cannot flush (the peer stopped reading) gives up after
// `closeLinger` seconds, so no such peer holds a descriptor for ever.
import RelayModel
import RelayTLS
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

public protocol ConnectionDelegate: AnyObject {
    /// Plaintext application bytes (decrypted when TLS is active).
    func connection(_ connection: Connection, received bytes: [UInt8])
    func connection(_ connection: Connection, tlsEstablished info: TLSSessionInfo)
    func connection(_ connection: Connection, tlsFailed failure: TLSFailure)
    /// The idle timer fired.
    func connectionTimedOut(_ connection: Connection)
    /// Always the last call; `reason` says why ("closed", "peer closed", an error).
    func connectionClosed(_ connection: Connection, reason: String)
    /// The socket took everything queued after it had pushed back: a sender
    /// pacing itself by `unsentBytes` may queue more. Optional.
    func connectionDrained(_ connection: Connection)
}

extension ConnectionDelegate {
    public func connectionDrained(_ connection: Connection) {}
}

public final class Connection: @unchecked Sendable {
    public let fd: Int32
    public let queue: DispatchQueue
    public let peer: IPAddress
    public weak var delegate: (any ConnectionDelegate)?

    private let readSource: any DispatchSourceRead
    private let writeSource: any DispatchSourceWrite
    private var writeSourceRunning = false
    private var timer: (any DispatchSourceTimer)?
    private var deadline = LazyDeadline()
    private var outbox: [UInt8] = []
    private var outboxOffset = 0
    private var tls: TLSConnection?
    /// Application bytes sent while a handshake runs: once TLS has begun,
    /// nothing goes out in plaintext (a 421 on a timeout mid-STARTTLS, say).
    private var heldUntilHandshake: [UInt8] = []
    private var closeWhenFlushed = false
    private var tornDown = false
    private var pendingCancels = 2
    private var started = false
    private var readSourceSuspended = true
    private var pausedForOutput = false
    static let outboxHighWater = 64 * 1024
    static let outboxLowWater = 16 * 1024
    /// Seconds a close waits for the peer to take the last bytes.
    public var closeLinger = 5.0
    /// The owner's hold on reading (the session is waiting for something).
    public var readsHeld = false {
        didSet { if readsHeld != oldValue { updateReading() } }
    }
    /// Reading is stopped (output backlog or the owner's hold).
    public var isReadingPaused: Bool { readSourceSuspended }
    /// Bytes queued but not yet taken by the socket.
    public var unsentBytes: Int { outbox.count - outboxOffset }
    /// Bytes per read(2). The buffer is temporary (stack where possible),
    /// so an idle connection holds none: 10,000 idle sessions must not cost
    /// 160 MB of read buffers.
    private static let readSize = 16 * 1024

    /// Bytes read from and written to the socket (ciphertext under TLS).
    public private(set) var bytesIn = 0
    public private(set) var bytesOut = 0

    public private(set) var tlsInfo: TLSSessionInfo?
    public var isTLSActive: Bool { tlsInfo != nil }
    /// False once the connection is torn down (by either side).
    public var isOpen: Bool { !tornDown }

    public init(fd: Int32, peer: IPAddress, queue: DispatchQueue) {
        self.fd = fd
        self.peer = peer
        self.queue = queue
        readSource = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        writeSource = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
    }

    public func start() {
        dispatchPrecondition(condition: .onQueue(queue))
        installHandlers()
        started = true
        updateReading()
    }

    /// The fd is closed by whichever source's cancel handler runs last.
    /// Installed by start(), or by a teardown of a connection never
    /// started, so its descriptor is closed all the same.
    private func installHandlers() {
        let fd = self.fd
        let cancelled: () -> Void = { [self] in
            pendingCancels -= 1
            if pendingCancels == 0 { Glibc.close(fd) }
        }
        readSource.setEventHandler { [weak self] in self?.readable() }
        readSource.setCancelHandler(handler: cancelled)
        writeSource.setEventHandler { [weak self] in self?.writable() }
        writeSource.setCancelHandler(handler: cancelled)
    }

    private func updateReading() {
        guard started, !tornDown else { return }
        let shouldRead = !readsHeld && !pausedForOutput
        if shouldRead && readSourceSuspended {
            readSourceSuspended = false
            readSource.resume()
        } else if !shouldRead && !readSourceSuspended {
            readSourceSuspended = true
            readSource.suspend()
        }
    }

    // MARK: timers

    /// (Re)arms the idle timer; `connectionTimedOut` fires if nothing is
    /// received for `seconds`.
    public func setIdleTimeout(seconds: Int) {
        dispatchPrecondition(condition: .onQueue(queue))
        setTimeout(after: Double(seconds))
    }

    /// Arms the one timer to fire `seconds` from now, replacing any
    /// earlier setting; `connectionTimedOut` is called when it does.
    public func setTimeout(after seconds: Double) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !tornDown, !closeWhenFlushed else { return }
        armTimer(after: seconds)
    }

    /// Lazy: a deadline moved later leaves the dispatch timer where it is
    /// (see LazyDeadline); only an earlier one reschedules it.
    private func armTimer(after seconds: Double) {
        if timer == nil {
            let t = DispatchSource.makeTimerSource(queue: queue)
            t.setEventHandler { [weak self] in self?.timerFired() }
            t.resume()
            timer = t
        }
        let at = DispatchTime.now().uptimeNanoseconds &+ UInt64(min(max(0, seconds), 1e8) * 1e9)
        if let armAt = deadline.set(at) { timer?.schedule(deadline: DispatchTime(uptimeNanoseconds: armAt)) }
    }

    private func timerFired() {
        guard !tornDown else { return }
        switch deadline.fired(now: DispatchTime.now().uptimeNanoseconds) {
        case .none:
            return
        case .rearm(let at):
            timer?.schedule(deadline: DispatchTime(uptimeNanoseconds: at))
        case .due:
            if closeWhenFlushed {
                teardown(reason: "peer did not read the last \(unsentBytes) bytes")
                return
            }
            delegate?.connectionTimedOut(self)
        }
    }

    // MARK: output

    /// Queues application bytes (encrypted when TLS is active) and writes
    /// as much as the socket takes now.
    public func send(_ bytes: [UInt8]) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !tornDown, !closeWhenFlushed else { return }
        if tls != nil && !isTLSActive {
            heldUntilHandshake += bytes
            return
        }
        if let tls, isTLSActive {
            do { try tls.writePlaintext(bytes) } catch {
                teardown(reason: "TLS write failed: \(error)")
                return
            }
            appendOutbox(tls.takeNetworkBytes())
        } else {
            appendOutbox(bytes)
        }
        flush()
        if !tornDown && unsentBytes > Self.outboxHighWater && !pausedForOutput {
            pausedForOutput = true
            updateReading()
        }
    }

    private func appendOutbox(_ bytes: [UInt8]) {
        if outboxOffset > 0 && outboxOffset == outbox.count {
            outbox.removeAll(keepingCapacity: true)
            outboxOffset = 0
        }
        outbox.append(contentsOf: bytes)
    }

    private func flush() {
        while outboxOffset < outbox.count {
            let n = outbox.withUnsafeBytes { raw in
                Glibc.send(fd, raw.baseAddress! + outboxOffset, outbox.count - outboxOffset, Int32(MSG_NOSIGNAL))
            }
            if n > 0 { outboxOffset += n; bytesOut += n; continue }
            let e = errno
            if n < 0 && e == EINTR { continue }
            if n < 0 && (e == EAGAIN || e == EWOULDBLOCK) {
                if !writeSourceRunning { writeSourceRunning = true; writeSource.resume() }
                return
            }
            teardown(reason: "write failed: \(String(cString: strerror(e)))")
            return
        }
        outbox.removeAll(keepingCapacity: outbox.count <= 64 * 1024)
        outboxOffset = 0
        resumeIfDrained()
        if writeSourceRunning { writeSourceRunning = false; writeSource.suspend() }
        if closeWhenFlushed { teardown(reason: "closed") }
    }

    private func writable() {
        flush()
        resumeIfDrained()
        if !tornDown && unsentBytes == 0 { delegate?.connectionDrained(self) }
    }

    private func resumeIfDrained() {
        if pausedForOutput && !tornDown && unsentBytes <= Self.outboxLowWater {
            pausedForOutput = false
            updateReading()
        }
    }

    // MARK: input

    private func readable() {
        while !tornDown && !readSourceSuspended {
            let (n, bytes) = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: Self.readSize) { buf -> (Int, [UInt8]) in
                let n = Glibc.read(fd, buf.baseAddress, buf.count)
                return (n, n > 0 ? Array(buf[0..<n]) : [])
            }
            if n > 0 {
                bytesIn += n
                ingest(bytes)
                continue
            }
            if n == 0 { teardown(reason: "peer closed"); return }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return }
            teardown(reason: "read failed: \(String(cString: strerror(e)))")
            return
        }
    }

    private func ingest(_ bytes: [UInt8]) {
        guard let tls else {
            delegate?.connection(self, received: bytes)
            return
        }
        tls.receiveFromNetwork(bytes)
        if tlsInfo == nil {
            switch tls.handshake() {
            case .incomplete:
                appendOutbox(tls.takeNetworkBytes())
                flush()
                return
            case .failed(let failure):
                // Send the alert OpenSSL queued, then go.
                appendOutbox(tls.takeNetworkBytes())
                delegate?.connection(self, tlsFailed: failure)
                close()
                return
            case .complete:
                appendOutbox(tls.takeNetworkBytes())
                flush()
                tlsInfo = tls.sessionInfo
                if !heldUntilHandshake.isEmpty {
                    let held = heldUntilHandshake
                    heldUntilHandshake = []
                    send(held)
                }
                if let info = tlsInfo { delegate?.connection(self, tlsEstablished: info) }
            }
        }
        switch tls.readPlaintext() {
        case .data(let plain):
            if !plain.isEmpty { delegate?.connection(self, received: plain) }
        case .closed(let plain):
            if !plain.isEmpty { delegate?.connection(self, received: plain) }
            teardown(reason: "peer closed TLS")
        case .failed(let failure):
            teardown(reason: "TLS error: \(failure)")
        }
    }

    // MARK: TLS

    /// Switches to TLS as the server: every byte read from now on is TLS.
    /// Anything still unsent in plaintext (the 220 to STARTTLS) goes first.
    public func startServerTLS(context: TLSContext) throws {
        dispatchPrecondition(condition: .onQueue(queue))
        tls = try TLSConnection(context: context)
    }

    /// Switches to TLS as the client and sends the ClientHello. Plaintext
    /// already received but not yet consumed is the caller's to discard.
    public func startClientTLS(context: TLSContext, options: TLSConnection.Options) throws {
        dispatchPrecondition(condition: .onQueue(queue))
        let connection = try TLSConnection(context: context, options: options)
        tls = connection
        if case .failed(let failure) = connection.handshake() {
            delegate?.connection(self, tlsFailed: failure)
            close()
            return
        }
        appendOutbox(connection.takeNetworkBytes())
        flush()
    }

    /// The peer's certificates, leaf first, with names and DER (encoded
    /// now: for a probe, not for every delivery). Empty before TLS.
    public func peerCertificates() -> [PeerCertificate] {
        dispatchPrecondition(condition: .onQueue(queue))
        guard isTLSActive else { return [] }
        return tls?.peerCertificates() ?? []
    }

    /// The server leaf's SPKI SHA-256 (client side), nil before TLS.
    public func leafPublicKeySHA256() -> String? {
        dispatchPrecondition(condition: .onQueue(queue))
        guard isTLSActive else { return nil }
        return tls?.leafPublicKeySHA256()
    }

    // MARK: closing

    /// Closes after everything queued has been written.
    public func close() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !tornDown else { return }
        if let tls, isTLSActive {
            tls.close()
            appendOutbox(tls.takeNetworkBytes())
        }
        closeWhenFlushed = true
        flush()
        if !tornDown { armTimer(after: closeLinger) }
    }

    /// Closes at once, dropping unsent output.
    public func abort(reason: String) {
        dispatchPrecondition(condition: .onQueue(queue))
        teardown(reason: reason)
    }

    private func teardown(reason: String) {
        guard !tornDown else { return }
        tornDown = true
        if !started { installHandlers() }
        timer?.cancel()
        timer = nil
        readSource.cancel()
        writeSource.cancel()
        // A suspended source never delivers its cancel handler.
        if !writeSourceRunning { writeSourceRunning = true; writeSource.resume() }
        if readSourceSuspended { readSourceSuspended = false; readSource.resume() }
        outbox = []
        delegate?.connectionClosed(self, reason: reason)
    }
}
