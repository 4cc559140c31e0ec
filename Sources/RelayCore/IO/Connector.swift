// Outgoing TCP connections: non-blocking connect driven by a write
// DispatchSource, bounded by a timer, optionally from a fixed source
// address. Hands back a ready fd or the error that names the cause.
//
// The attempt's state (finished, result) is shared by the write source,
// the timer and the cancel handler, all on `queue`; it sits in a lock so
// the compiler can check that, at the cost of an uncontended lock per
// connect. Dispatch is imported @preconcurrency: Linux's libdispatch
// overlay does not yet mark DispatchSource Sendable (Darwin's does), and
// the handlers here capture the sources they cancel.
import RelayModel
@preconcurrency import Dispatch
import RelaySync
#if canImport(Glibc)
import Glibc
#endif

public enum Connector {
    public static func connect(to ip: IPAddress, port: UInt16, from source: IPAddress?, timeoutSeconds: Int,
                               queue: DispatchQueue, completion: @escaping @Sendable (Result<Int32, SystemError>) -> Void) {
        let family = ip.isV4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return queue.async { completion(.failure(SystemError("socket"))) } }
        do {
            try Socket.setNonBlocking(fd)
            Socket.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            if let source, source.isV4 == ip.isV4 {
                var storage = sockaddr_storage()
                let len = Socket.fill(&storage, source, 0)
                let rc = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
                guard rc == 0 else { throw SystemError("bind \(source)") }
            }
            var storage = sockaddr_storage()
            let len = Socket.fill(&storage, ip, port)
            let rc = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, len) } }
            if rc == 0 { return queue.async { completion(.success(fd)) } }
            guard errno == EINPROGRESS else { throw SystemError("connect \(ip):\(port)") }
        } catch let e as SystemError {
            Glibc.close(fd)
            return queue.async { completion(.failure(e)) }
        } catch {
            Glibc.close(fd)
            return queue.async { completion(.failure(SystemError("connect", EIO))) }
        }

        // Wait for writability (connected or failed) or the deadline.
        let source = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
        let timer = DispatchSource.makeTimerSource(queue: queue)
        struct State { var finished = false; var result: Result<Int32, SystemError> }
        let state = Locked(State(result: .failure(SystemError("connect \(ip):\(port)", ETIMEDOUT))))
        let finish: @Sendable (Result<Int32, SystemError>) -> Void = { r in
            let first = state.withLock { s in
                guard !s.finished else { return false }
                s.finished = true
                s.result = r
                return true
            }
            guard first else { return }
            timer.cancel()
            source.cancel()
        }
        source.setEventHandler {
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
            finish(err == 0 ? .success(fd) : .failure(SystemError("connect \(ip):\(port)", err)))
        }
        // The fd is handed over (or closed) only once the source is gone.
        source.setCancelHandler {
            let result = state.withLock { $0.result }
            if case .failure = result { Glibc.close(fd) }
            completion(result)
        }
        timer.setEventHandler { finish(.failure(SystemError("connect \(ip):\(port)", ETIMEDOUT))) }
        timer.schedule(deadline: .now() + .seconds(timeoutSeconds))
        timer.resume()
        source.resume()
    }
}
