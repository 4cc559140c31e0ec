// The inbound side, wired: listeners from config, connection limits, and a
// session per connection. Server/ is the top of RelayCore: it may import
// every other folder; nothing imports it but the relayd executable.
//
// Threads: listeners and the connection table live on `acceptQueue`; each
// connection has its own serial queue (targeting one shared concurrent
// queue, so there is no thread per connection); durable writes run on
// the SpoolCommitter (group commit); password checks on `authQueue`.
//
// Confinement: the server's mutable state (settings, listeners, sessions,
// per-IP counts, the drain) is touched only on `acceptQueue`: public entry
// points hop onto it, and `accepted` (called by the listeners) checks it in
// debug builds. Hence @unchecked Sendable.
import RelayAuth
import RelayConfig
import RelayIO
import RelayMetrics
import RelayModel
import RelayQueue
import RelaySMTP
import Dispatch
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// A listener that could not be bound: "cannot listen on 127.0.0.1:25:
/// Address already in use".
public struct ListenError: Error, CustomStringConvertible {
    public let address: HostPort
    public let reason: any Error
    public var description: String {
        let why = (reason as? SystemError).map { String(cString: strerror($0.code)) } ?? "\(reason)"
        return "cannot listen on \(address): \(why)"
    }
}

public final class InboundServer: @unchecked Sendable {
    public let logger: Logger
    let spool: Spool
    let acceptQueue = DispatchQueue(label: "relayd.accept")
    let connectionTarget = DispatchQueue(label: "relayd.connections", attributes: .concurrent)
    let committer: SpoolCommitter
    let authQueue = DispatchQueue(label: "relayd.auth", attributes: .concurrent)
    let throttle: AuthThrottle
    /// Sessions, messages and refusals are counted here (nil: not at all).
    let metrics: RelayMetrics?
    /// Replaced whole on reload; read on acceptQueue.
    private var settings: InboundSettings
    private var listeners: [(Listener, Config.Listener)] = []
    private var sessions: [ObjectIdentifier: InboundSession] = [:]
    private var perIP: [IPAddress: Int] = [:]
    private var stopping = false
    /// While draining: called once, when the last session ends or the
    /// grace period is over.
    private var drainDone: (@Sendable () -> Void)?
    /// Called (from any queue) with each message once it is durably queued.
    public var onQueued: (@Sendable (QueuedMessage) -> Void)?

    public init(settings: InboundSettings, spool: Spool, logger: Logger, metrics: RelayMetrics? = nil) {
        self.settings = settings
        self.spool = spool
        self.logger = logger
        self.metrics = metrics
        self.throttle = AuthThrottle(maxFailures: settings.config.limits.authFailuresPerIP)
        self.committer = SpoolCommitter(spool: spool, logger: logger, metrics: metrics,
                                        lanes: SpoolCommitter.lanes(fromEnvironment: getenv("RELAYD_SPOOL_LANES").map { String(cString: $0) }))
    }

    /// Binds every configured listener; throws if any cannot be bound (and
    /// closes the ones that were).
    public func start() throws {
        try acceptQueue.sync {
            for l in settings.config.listeners {
                do {
                    let listener = try Listener(
                        address: l.address, queue: acceptQueue,
                        onAccept: { [unowned self] fd, ip in self.accepted(fd: fd, ip: ip, listener: l) },
                        onError: { [logger] e in logger.error("accept failed", metadata: ["error": "\(e)", "listener": "\(l.address)"]) })
                    listeners.append((listener, l))
                } catch {
                    for (bound, _) in listeners { bound.stop() }
                    listeners = []
                    throw ListenError(address: l.address, reason: error)
                }
            }
            for (listener, l) in listeners {
                listener.start()
                logger.info("listening", metadata: ["address": "\(l.address.host):\(listener.boundPort)", "kind": "\(l.kind.rawValue)",
                                                    "require_tls": "\(l.requireTLS)", "require_auth": "\(l.requireAuth)"])
            }
        }
    }

    public func replaceSettings(_ new: InboundSettings) {
        acceptQueue.sync { settings = new }
        throttle.maxFailures = new.config.limits.authFailuresPerIP
    }

    private func accepted(fd: Int32, ip: IPAddress, listener: Config.Listener) {
        dispatchPrecondition(condition: .onQueue(acceptQueue))
        let limits = settings.config.limits
        let queue = DispatchQueue(label: "relayd.conn", target: connectionTarget)
        let connection = Connection(fd: fd, peer: ip, queue: queue)
        var refusal: Reply?
        if stopping {
            refusal = Reply(421, "4.3.2", "\(settings.config.server.hostname) Service shutting down")
        } else if sessions.count >= limits.maxConnections {
            refusal = Reply(421, "4.7.0", "\(settings.config.server.hostname) Too many connections; try again later")
        } else if perIP[ip, default: 0] >= limits.maxConnectionsPerIP {
            refusal = Reply(421, "4.7.0", "\(settings.config.server.hostname) Too many connections from your address")
        }
        if let refusal {
            logger.warning("connection refused", metadata: ["client": "\(ip)", "reply": "\(refusal)"])
            if !stopping { metrics?.messageRefused(.rateLimited) }
            queue.async {
                connection.start()
                if listener.kind != .smtps { connection.send(refusal.wire) }
                connection.close()
            }
            return
        }
        let session = InboundSession(server: self, connection: connection, listener: listener,
                                     settings: settings, client: ip)
        sessions[ObjectIdentifier(session)] = session
        perIP[ip, default: 0] += 1
        metrics?.sessionOpened(listener: Self.metricsLabel(listener))
        queue.async { session.begin() }
    }

    /// The `listener` label: the listener's address as configured.
    static func metricsLabel(_ listener: Config.Listener) -> String {
        "\(listener.address)"
    }

    /// The `listener` label values: one per configured listener.
    public static func metricsLabels(_ config: Config) -> [String] {
        config.listeners.map(metricsLabel)
    }

    /// Called by a session when its connection is gone.
    func finished(_ session: InboundSession) {
        acceptQueue.async { [self] in
            guard sessions.removeValue(forKey: ObjectIdentifier(session)) != nil else { return }
            let ip = session.client
            if let n = perIP[ip], n > 1 { perIP[ip] = n - 1 } else { perIP.removeValue(forKey: ip) }
            if stopping && sessions.isEmpty { finishDrain() }
        }
    }

    /// Stops accepting, asks every session to end at its next safe point,
    /// and calls `done` when all have ended or `grace` seconds have passed.
    public func stop(grace: Double, done: @escaping @Sendable () -> Void) {
        acceptQueue.async { [self] in
            stopping = true
            for (l, _) in listeners { l.stop() }
            listeners = []
            if sessions.isEmpty { done(); return }
            logger.info("draining sessions", metadata: ["count": "\(sessions.count)", "grace_seconds": "\(Int(grace))"])
            drainDone = done
            for s in sessions.values { s.connection.queue.async { s.shutdown() } }
            acceptQueue.asyncAfter(deadline: .now() + grace) { [self] in
                if !sessions.isEmpty {
                    logger.warning("grace period over; closing remaining sessions", metadata: ["count": "\(sessions.count)"])
                }
                finishDrain()
            }
        }
    }

    private func finishDrain() {
        guard let done = drainDone else { return }
        drainDone = nil
        done()
    }

}
