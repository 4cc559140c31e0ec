// The DNS resolver: one c-ares channel, used only from one serial queue
// (c-ares 1.18 is not thread-safe), driven by DispatchSources for its
// sockets and one timer for its retransmissions, as swift-corelibs-
// foundation drives libcurl. No thread blocks and nothing polls.
//
// Queries are built here (DNSMessage.query: AD bit set, CD never) and sent
// raw with ares_send; answers are parsed here too, so callers see the
// rcode and the AD bit for every answer — MX, A/AAAA and TLSA alike.
// ARES_FLAG_NOCHECKRESP keeps SERVFAIL a SERVFAIL instead of c-ares
// treating it as a dead server and answering "no such record".
//
// Confinement: the channel, the socket sources, the timer and the
// deferred-close ledger are touched only on `queue`; query() hops onto it,
// and the c-ares callbacks (socket state, socket closed) run inside calls
// made there and check it in debug builds. Hence @unchecked Sendable, for
// the resolver and for its DeferredClose (owned by cancel handlers that
// run on the same queue).
import RelayModel
import CAres
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

public enum DNSError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No answer from any server in time: transient.
    case timeout
    /// c-ares could not talk to the servers at all: transient.
    case unreachable(String)
    /// An answer arrived but could not be parsed: transient (it may be an
    /// attack or a broken middlebox; never read as "no record").
    case malformed(String)
    case badName(String)

    public var description: String {
        switch self {
        case .timeout: return "DNS timeout"
        case .unreachable(let s): return "DNS servers unreachable: \(s)"
        case .malformed(let s): return "malformed DNS answer: \(s)"
        case .badName(let s): return "cannot query name \(s)"
        }
    }
}

/// What the delivery code needs from DNS; tests substitute a fake.
public protocol DNSResolving: AnyObject, Sendable {
    func query(_ name: String, _ type: DNSType, completion: @escaping @Sendable (Result<DNSResponse, DNSError>) -> Void)
}

public final class CAresResolver: DNSResolving, @unchecked Sendable {
    public let queue = DispatchQueue(label: "relayd.dns")
    private var channel: OpaquePointer?
    private var readSources: [Int32: any DispatchSourceRead] = [:]
    private var writeSources: [Int32: any DispatchSourceWrite] = [:]
    private let closer = DeferredClose()
    private var timer: (any DispatchSourceTimer)?
    private static let onQueueKey = DispatchSpecificKey<Bool>()

    /// Sockets c-ares is done with are closed only once no DispatchSource
    /// is registered for them (STYLE: close only in the cancel handler).
    /// Its own object, held by the cancel handlers, so a descriptor is
    /// still closed when its last source's cancel runs after the resolver
    /// is gone. Confined to the resolver's queue.
    private final class DeferredClose: @unchecked Sendable {
        /// Sources cancelled whose cancel handler has not run yet, per fd.
        var cancelling: [Int32: Int] = [:]
        /// Sockets c-ares closed, waiting for their sources' cancels.
        var closeWhenCancelled: Set<Int32> = []

        func cancel(_ source: any DispatchSourceProtocol, fd: Int32) {
            cancelling[fd, default: 0] += 1
            source.cancel()
        }

        func sourceCancelled(_ fd: Int32) {
            let left = cancelling[fd, default: 1] - 1
            if left > 0 { cancelling[fd] = left; return }
            cancelling.removeValue(forKey: fd)
            if closeWhenCancelled.remove(fd) != nil { close(fd) }
        }

        func closedByCAres(_ fd: Int32) {
            if cancelling[fd, default: 0] == 0 { close(fd) } else { closeWhenCancelled.insert(fd) }
        }
    }

    private final class Request {
        let name: String
        let type: DNSType
        let completion: @Sendable (Result<DNSResponse, DNSError>) -> Void
        init(name: String, type: DNSType, completion: @escaping @Sendable (Result<DNSResponse, DNSError>) -> Void) {
            self.name = name
            self.type = type
            self.completion = completion
        }
    }

    /// `servers` empty: /etc/resolv.conf. Each query is tried `tries` times
    /// per server with `timeoutMilliseconds` for the first try.
    public init(servers: [HostPort], timeoutMilliseconds: Int = 2000, tries: Int = 2) throws {
        guard CAresLibrary.initialize() else { throw DNSError.unreachable("ares_library_init failed") }
        var options = ares_options()
        options.flags = ARES_FLAG_NOCHECKRESP
        options.timeout = Int32(timeoutMilliseconds)
        options.tries = Int32(tries)
        options.sock_state_cb = { data, fd, readable, writable in
            guard let data else { return }
            let resolver = Unmanaged<CAresResolver>.fromOpaque(data).takeUnretainedValue()
            resolver.socketStateChanged(fd: fd, readable: readable != 0, writable: writable != 0)
        }
        options.sock_state_cb_data = Unmanaged.passUnretained(self).toOpaque()
        let mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB
        var ch: OpaquePointer?
        let rc = ares_init_options(&ch, &options, mask)
        guard rc == ARES_SUCCESS, let ch else {
            throw DNSError.unreachable("ares_init_options: \(String(cString: ares_strerror(rc)))")
        }
        channel = ch
        relayd_ares_use_socket_functions(ch, { fd, data in
            guard let data else { return }
            Unmanaged<CAresResolver>.fromOpaque(data).takeUnretainedValue().socketClosedByCAres(fd)
        }, Unmanaged.passUnretained(self).toOpaque())
        if !servers.isEmpty {
            let csv = servers.map(\.description).joined(separator: ",")
            let rc = ares_set_servers_ports_csv(ch, csv)
            guard rc == ARES_SUCCESS else {
                ares_destroy(ch)
                channel = nil
                throw DNSError.unreachable("bad DNS server list \(csv): \(String(cString: ares_strerror(rc)))")
            }
        }
        queue.setSpecific(key: Self.onQueueKey, value: true)
        let t = DispatchSource.makeTimerSource(queue: queue)
        t.setEventHandler { [weak self] in self?.processTimeouts() }
        t.schedule(deadline: .distantFuture)
        t.resume()
        timer = t
    }

    deinit {
        // The channel is only ever touched on its queue (c-ares 1.18 is not
        // thread-safe), and so is its destruction.
        if DispatchQueue.getSpecific(key: Self.onQueueKey) == true {
            shutdownOnQueue()
        } else {
            queue.sync { shutdownOnQueue() }
        }
    }

    /// Cancels every socket source and the timer, then destroys the
    /// channel: c-ares fails each pending query with ARES_EDESTRUCTION
    /// (which releases its request) and closes its sockets through
    /// `socketClosedByCAres`, which waits for the cancels to finish.
    private func shutdownOnQueue() {
        guard let ch = channel else { return }
        for (fd, s) in readSources { closer.cancel(s, fd: fd) }
        for (fd, s) in writeSources { closer.cancel(s, fd: fd) }
        readSources = [:]
        writeSources = [:]
        timer?.cancel()
        timer = nil
        channel = nil
        ares_destroy(ch)
    }

    public func query(_ name: String, _ type: DNSType, completion: @escaping @Sendable (Result<DNSResponse, DNSError>) -> Void) {
        queue.async { [self] in
            guard let channel else { return completion(.failure(.unreachable("resolver closed"))) }
            guard let packet = DNSMessage.query(name: name, type: type, id: UInt16.random(in: 0...UInt16.max)) else {
                return completion(.failure(.badName(name)))
            }
            let request = Unmanaged.passRetained(Request(name: name, type: type, completion: completion)).toOpaque()
            packet.withUnsafeBufferPointer { buf in
                ares_send(channel, buf.baseAddress, Int32(buf.count), { arg, status, _, abuf, alen in
                    guard let arg else { return }
                    let request = Unmanaged<Request>.fromOpaque(arg).takeRetainedValue()
                    CAresResolver.finish(request, status: status, answer: abuf, length: Int(alen))
                }, request)
            }
            rescheduleTimer()
        }
    }

    private static func finish(_ request: Request, status: Int32, answer: UnsafeMutablePointer<UInt8>?, length: Int) {
        guard status == ARES_SUCCESS else {
            switch status {
            case ARES_ETIMEOUT: request.completion(.failure(.timeout))
            default: request.completion(.failure(.unreachable(String(cString: ares_strerror(status)))))
            }
            return
        }
        guard let answer, length > 0 else { return request.completion(.failure(.malformed("empty answer"))) }
        let bytes = Array(UnsafeBufferPointer(start: answer, count: length))
        do {
            let response = try DNSMessage.parse(bytes)
            // NOCHECKRESP also lets through answers to other questions.
            guard response.questionName == DNSName.normalize(request.name), response.questionType == request.type.rawValue else {
                return request.completion(.failure(.malformed("answer is for another question")))
            }
            request.completion(.success(response))
        } catch {
            request.completion(.failure(.malformed("\(error)")))
        }
    }

    // MARK: driving c-ares from Dispatch (all on `queue`)

    private func socketStateChanged(fd: Int32, readable: Bool, writable: Bool) {
        dispatchPrecondition(condition: .onQueue(queue))
        let closer = self.closer
        if readable, readSources[fd] == nil {
            let s = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
            s.setEventHandler { [weak self] in self?.process(read: fd, write: ARES_SOCKET_BAD) }
            s.setCancelHandler { closer.sourceCancelled(fd) }
            s.resume()
            readSources[fd] = s
        } else if !readable, let s = readSources.removeValue(forKey: fd) {
            closer.cancel(s, fd: fd)
        }
        if writable, writeSources[fd] == nil {
            let s = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
            s.setEventHandler { [weak self] in self?.process(read: ARES_SOCKET_BAD, write: fd) }
            s.setCancelHandler { closer.sourceCancelled(fd) }
            s.resume()
            writeSources[fd] = s
        } else if !writable, let s = writeSources.removeValue(forKey: fd) {
            closer.cancel(s, fd: fd)
        }
    }

    /// c-ares' close(2), deferred until no DispatchSource can still be
    /// registered for the descriptor.
    private func socketClosedByCAres(_ fd: Int32) {
        dispatchPrecondition(condition: .onQueue(queue))
        if let s = readSources.removeValue(forKey: fd) { closer.cancel(s, fd: fd) }
        if let s = writeSources.removeValue(forKey: fd) { closer.cancel(s, fd: fd) }
        closer.closedByCAres(fd)
    }

    private func process(read: Int32, write: Int32) {
        guard let channel else { return }
        ares_process_fd(channel, read, write)
        rescheduleTimer()
    }

    private func processTimeouts() {
        process(read: ARES_SOCKET_BAD, write: ARES_SOCKET_BAD)
    }

    private func rescheduleTimer() {
        guard let channel, let timer else { return }
        var tv = timeval()
        if let next = ares_timeout(channel, nil, &tv) {
            let ms = Int(next.pointee.tv_sec) * 1000 + Int(next.pointee.tv_usec) / 1000
            timer.schedule(deadline: .now() + .milliseconds(max(1, ms)))
        } else {
            timer.schedule(deadline: .distantFuture)
        }
    }
}
