// A listening socket driven by one DispatchSource: every readiness event
// accepts until EAGAIN and hands each new non-blocking fd to `onAccept`.
// The fd is closed in the source's cancel handler and nowhere else.
//
// Confinement: created, started, stopped and served on `queue` only (the
// inbound server's accept queue); start() and stop() check it in debug
// builds. Hence @unchecked Sendable.
import RelayModel
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

public final class Listener: @unchecked Sendable {
    public let address: HostPort
    /// The port actually bound (differs from address.port when it was 0).
    public let boundPort: UInt16
    private let fd: Int32
    private let source: any DispatchSourceRead
    private let queue: DispatchQueue
    private var started = false
    private var stopped = false
    private var suspended = false
    /// Called on `queue` for each accepted connection.
    private let onAccept: (Int32, IPAddress) -> Void
    private let onError: (SystemError) -> Void

    public init(address: HostPort, queue: DispatchQueue,
                onAccept: @escaping (Int32, IPAddress) -> Void,
                onError: @escaping (SystemError) -> Void) throws {
        self.address = address
        self.queue = queue
        self.onAccept = onAccept
        self.onError = onError
        let fd = try Socket.listen(on: address)
        self.fd = fd
        self.boundPort = Socket.localPort(fd) ?? address.port
        self.source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler { [unowned self] in self.acceptAll() }
        source.setCancelHandler { Glibc.close(fd) }
    }

    public func start() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !started, !stopped else { return }
        started = true
        source.resume()
    }

    /// Stops accepting; the socket closes once the source is cancelled.
    /// Also for a listener never started (another one failed to bind).
    public func stop() {
        dispatchPrecondition(condition: .onQueue(queue))
        shutdown()
    }

    private func shutdown() {
        guard !stopped else { return }
        stopped = true
        source.cancel()
        // A source never resumed, or suspended, never runs its cancel
        // handler, and libdispatch traps when one is released (SIGILL).
        if !started { started = true; source.resume() }
        if suspended { suspended = false; source.resume() }
    }

    deinit {
        // The last reference may go anywhere; nothing else can touch the
        // listener any more, so this is the one call not on `queue`.
        if !started { shutdown() }
    }

    private func acceptAll() {
        while !stopped {
            var storage = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let client = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    accept(fd, $0, &len)
                }
            }
            if client < 0 {
                let e = errno
                if e == EAGAIN || e == EWOULDBLOCK { return }
                if e == EINTR || e == ECONNABORTED { continue }
                onError(SystemError("accept", e))
                if e == EMFILE || e == ENFILE {
                    // Out of descriptors: stop reacting for a moment rather
                    // than spinning on a readiness we cannot serve.
                    source.suspend()
                    suspended = true
                    queue.asyncAfter(deadline: .now() + .milliseconds(200)) { [weak self] in
                        guard let self, !self.stopped, self.suspended else { return }
                        self.suspended = false
                        self.source.resume()
                    }
                }
                return
            }
            // accept4 is hidden behind _GNU_SOURCE in Glibc's Swift overlay.
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            guard let ip = Socket.ipAddress(storage), (try? Socket.setNonBlocking(client)) != nil else {
                Glibc.close(client)
                continue
            }
            Socket.setOption(client, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            onAccept(client, ip)
        }
    }
}
