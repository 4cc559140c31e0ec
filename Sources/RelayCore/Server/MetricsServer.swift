// The Prometheus scrape endpoint, on relayd's own sockets: `GET /metrics`
// answered from the RelayMetrics registry, anything else refused, and the
// connection closed after every answer.
//
// It must never cost the SMTP side anything, nor be kept busy by a slow
// or hostile client: it has its own serial queue (the listener, every
// scrape connection and the rendering), at most `maxConnections` open
// connections (one more is closed at once, unread), a request head of at
// most 8 KiB judged by the sans-IO `ScrapeRequestParser`, and one deadline
// from accept to the end of the head (`readDeadline`, 5 s); a client that
// has not sent its head by then is dropped.
//
// Confinement: the listener, the connection table and every scrape
// connection are touched only on `queue`; accepted and the delegate calls
// check it in debug builds. Hence @unchecked Sendable.
import RelayIO
import RelayMetrics
import RelayModel
import RelayTLS
import Dispatch
import Logging
#if canImport(Glibc)
import Glibc
#endif

public final class MetricsServer: @unchecked Sendable {
    public static let defaultMaxConnections = 16
    public static let defaultReadDeadline = 5.0

    public let address: HostPort
    let metrics: RelayMetrics
    let logger: Logger
    let maxConnections: Int
    let readDeadline: Double
    let queue = DispatchQueue(label: "relayd.metrics")
    private var listener: Listener?
    private var scrapes: [ObjectIdentifier: Scrape] = [:]
    /// Connections closed at accept because `maxConnections` were open.
    private(set) var overCap = 0

    public init(address: HostPort, metrics: RelayMetrics, logger: Logger,
                maxConnections: Int = MetricsServer.defaultMaxConnections,
                readDeadline: Double = MetricsServer.defaultReadDeadline) {
        self.address = address
        self.metrics = metrics
        self.logger = logger
        self.maxConnections = maxConnections
        self.readDeadline = readDeadline
    }

    /// Binds and starts accepting; returns the port bound.
    @discardableResult
    public func start() throws -> UInt16 {
        try queue.sync {
            let l: Listener
            do {
                l = try Listener(address: address, queue: queue,
                                 onAccept: { [unowned self] fd, ip in accepted(fd: fd, ip: ip) },
                                 onError: { [logger] e in logger.error("metrics accept failed", metadata: ["error": "\(e)"]) })
            } catch {
                throw ListenError(address: address, reason: error)
            }
            listener = l
            l.start()
            logger.info("metrics listening", metadata: ["address": "\(address.host):\(l.boundPort)"])
            return l.boundPort
        }
    }

    /// Stops accepting and drops every open scrape.
    public func stop() {
        queue.sync {
            listener?.stop()
            listener = nil
            for s in scrapes.values { s.connection.abort(reason: "stopping") }
            scrapes = [:]
        }
    }

    /// Open scrape connections (for tests).
    var openConnections: Int { queue.sync { scrapes.count } }

    private func accepted(fd: Int32, ip: IPAddress) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard scrapes.count < maxConnections else {
            // Unread and unanswered: whoever opens this many is not a
            // scraper waiting for a reply.
            overCap += 1
            Glibc.close(fd)
            if overCap == 1 || overCap % 1000 == 0 {
                logger.warning("metrics connection refused: too many open", metadata: [
                    "client": "\(ip)", "limit": "\(maxConnections)", "refused_so_far": "\(overCap)"])
            }
            return
        }
        let scrape = Scrape(server: self, connection: Connection(fd: fd, peer: ip, queue: queue))
        scrapes[ObjectIdentifier(scrape)] = scrape
        scrape.begin()
    }

    fileprivate func finished(_ scrape: Scrape) {
        dispatchPrecondition(condition: .onQueue(queue))
        scrapes.removeValue(forKey: ObjectIdentifier(scrape))
    }

    /// One scrape connection: the head through the parser, one answer, close.
    fileprivate final class Scrape: ConnectionDelegate {
        unowned let server: MetricsServer
        let connection: Connection
        private var parser = ScrapeRequestParser()
        private var answered = false

        init(server: MetricsServer, connection: Connection) {
            self.server = server
            self.connection = connection
        }

        func begin() {
            dispatchPrecondition(condition: .onQueue(connection.queue))
            connection.delegate = self
            // The answer is small; a reader that does not take it within
            // the linger is dropped like a slow writer.
            connection.closeLinger = server.readDeadline
            connection.start()
            connection.setTimeout(after: server.readDeadline)
        }

        func connection(_ connection: Connection, received bytes: [UInt8]) {
            dispatchPrecondition(condition: .onQueue(connection.queue))
            guard !answered else { return }
            let verdict = parser.receive(bytes)
            guard verdict != .needMore else { return }
            answered = true
            // Nothing past the head is read: the answer is final.
            connection.readsHeld = true
            connection.send(ScrapeRequestParser.response(verdict) { server.metrics.render() })
            connection.close()
        }

        func connection(_ connection: Connection, tlsEstablished info: TLSSessionInfo) {}
        func connection(_ connection: Connection, tlsFailed failure: TLSFailure) {}

        func connectionTimedOut(_ connection: Connection) {
            dispatchPrecondition(condition: .onQueue(connection.queue))
            connection.abort(reason: answered ? "answer not taken in time" : "request head not complete in time")
        }

        func connectionClosed(_ connection: Connection, reason: String) {
            dispatchPrecondition(condition: .onQueue(connection.queue))
            server.finished(self)
        }
    }
}
