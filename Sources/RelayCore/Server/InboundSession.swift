// Runs one ServerSession over one Connection: feeds it bytes, performs the
// actions it asks for (TLS, password checks, durable stores) off the
// connection queue where they are slow, keeps the session's deadlines on the
// connection's one timer, and logs every refusal it sends and one line when
// the connection opens and one when it closes.
//
// Confinement: everything here runs on the connection's queue. The slow
// work (a password check on the auth queue, a store in the committer)
// hands its result back with `connection.queue.async`; begin(), shutdown()
// and the delegate calls check the queue in debug builds. Hence @unchecked
// Sendable: the session is captured by those hand-backs, never touched
// from them.
import RelayConfig
import RelayIO
import RelayMetrics
import RelayModel
import RelayQueue
import RelaySMTP
import RelayTLS
import Dispatch
import Logging
#if canImport(Glibc)
import Glibc
#endif

final class InboundSession: ConnectionDelegate, @unchecked Sendable {
    unowned let server: InboundServer
    let connection: Connection
    let listener: Config.Listener
    let settings: InboundSettings
    let client: IPAddress
    private var session: ServerSession
    private var logger: Logger
    private var messages = 0
    private var ended = false
    private let opened: Double
    private var deadlines: InboundDeadlines
    /// Why the session ended, when relayd ended it (the connection's own
    /// reason, "peer closed" say, is used otherwise).
    private var closeReason: String?

    init(server: InboundServer, connection: Connection, listener: Config.Listener,
         settings: InboundSettings, client: IPAddress) {
        self.server = server
        self.connection = connection
        self.listener = listener
        self.settings = settings
        self.client = client
        self.session = ServerSession(configuration: settings.sessionConfiguration(for: listener, client: client),
                                     clientAddress: "\(client)")
        var logger = server.logger
        logger[metadataKey: "client"] = "\(client)"
        logger[metadataKey: "listener"] = "\(listener.kind.rawValue)"
        self.logger = logger
        let limits = settings.config.limits
        opened = Self.now()
        deadlines = InboundDeadlines(idle: limits.idleTimeout, data: limits.dataTimeout,
                                     session: limits.sessionTimeout, now: opened)
    }

    /// On the connection queue.
    func begin() {
        dispatchPrecondition(condition: .onQueue(connection.queue))
        connection.delegate = self
        connection.start()
        armDeadline()
        logger.info("connect")
        if listener.kind == .smtps {
            do { try connection.startServerTLS(context: settings.tlsContext) } catch {
                logger.error("TLS setup failed", metadata: ["error": "\(error)"])
                connection.abort(reason: "TLS setup failed")
            }
        } else {
            perform(session.start())
        }
    }

    func shutdown() {
        dispatchPrecondition(condition: .onQueue(connection.queue))
        perform(session.shutdown())
    }

    private func perform(_ actions: [ServerAction]) {
        var pending: [UInt8] = []
        var lastReply: Reply?
        func flushReplies() {
            if !pending.isEmpty { connection.send(pending); pending.removeAll() }
        }
        for action in actions {
            switch action {
            case .send(let reply):
                pending += reply.wire
                lastReply = reply
                if reply.code >= 400 {
                    logger.notice("refused", metadata: ["command": "\(session.lastVerb)", "reply": "\(reply)"])
                    if let reason = RelayMetrics.RefusalReason.of(reply, verb: session.lastVerb) {
                        server.metrics?.messageRefused(reason)
                    }
                }
            case .startTLS:
                flushReplies()
                if session.discardedAtSTARTTLS > 0 {
                    logger.warning("discarded plaintext pipelined after STARTTLS",
                                   metadata: ["bytes": "\(session.discardedAtSTARTTLS)"])
                }
                do { try connection.startServerTLS(context: settings.tlsContext) } catch {
                    logger.error("TLS setup failed", metadata: ["error": "\(error)"])
                    connection.abort(reason: "TLS setup failed")
                    return
                }
            case .authenticate(let credentials, let mechanism):
                flushReplies()
                authenticate(credentials, mechanism)
            case .store(let envelope, let body):
                flushReplies()
                store(envelope, body)
            case .discarded(let bytes, let reason):
                logger.notice("discarded input", metadata: ["bytes": "\(bytes)", "why": "\(reason.rawValue)"])
            case .close:
                flushReplies()
                if closeReason == nil {
                    closeReason = lastReply.map { $0.code == 221 ? "quit" : "closed with \($0)" } ?? "closed"
                }
                connection.close()
            }
        }
        flushReplies()
        // Nothing more is read while the session waits for a disk or a
        // password check with input already buffered: further pipelined
        // input stays in the peer's socket. (Reading goes on while nothing
        // is buffered: pausing the read source for every message cost a
        // trip through libdispatch's manager thread each time.)
        connection.readsHeld = session.shouldHoldReads
    }

    private func now() -> Double { Self.now() }

    private static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    private func authenticate(_ credentials: Credentials, _ mechanism: SASL.Mechanism) {
        let throttle = server.throttle
        let ip = client
        let verifier = settings.verifier
        let (delay, blocked) = throttle.admit(ip, now: now())
        server.authQueue.asyncAfter(deadline: .now() + delay) { [self] in
            let ok = !blocked && (verifier?.verify(username: credentials.username, password: credentials.password) ?? false)
            if ok { throttle.recordSuccess(ip) }
            connection.queue.async { [self] in
                if ok {
                    logger.info("authenticated", metadata: ["user": "\(credentials.username)", "mechanism": "\(mechanism.rawValue)"])
                } else {
                    server.metrics?.authFailed()
                    logger.warning("authentication failed", metadata: ["user": "\(credentials.username)",
                                                                       "mechanism": "\(mechanism.rawValue)",
                                                                       "ip_blocked": "\(blocked)"])
                }
                perform(session.authenticationFinished(username: credentials.username, success: ok))
            }
        }
    }

    private func store(_ received: Envelope, _ receivedBody: [UInt8]) {
        let id = QueueID.generate()
        let arrival = Int(time(nil))
        let controls = InboundControls.apply(envelope: received, body: receivedBody, config: settings.config)
        let envelope = controls.envelope, body = controls.body
        let header = ReceivedHeader.make(envelope: envelope, queueID: id, hostname: settings.config.server.hostname,
                                         includeUser: settings.config.server.receivedHeaderNamesUser, unixTime: arrival)
        var full = Array(header.utf8)
        full.reserveCapacity(full.count + body.count)
        full.append(contentsOf: body)
        let message = QueuedMessage(id: id, arrival: arrival, envelope: envelope, body: full)
        server.committer.submit(message) { [self] result in
            connection.queue.async { [self] in
                if case .queued = result {
                    messages += 1
                    deadlines.messageCompleted(at: now())
                    armDeadline()
                    server.onQueued?(message)
                    for note in controls.notes {
                        if case .escalationRefused = note {
                            logger.warning("message control", metadata: ["id": "\(id)", "control": "\(note)"])
                        } else {
                            logger.info("message control", metadata: ["id": "\(id)", "control": "\(note)"])
                        }
                    }
                    server.metrics?.messageReceived(listener: InboundServer.metricsLabel(listener))
                    logger.info("queued", metadata: [
                        "id": "\(id)", "from": "<\(envelope.sender)>", "nrcpt": "\(envelope.recipients.count)",
                        "size": "\(message.body.count)", "tls": "\(envelope.origin.tlsVersion ?? "none")",
                        "cipher": "\(envelope.origin.tlsCipher ?? "none")",
                        "user": "\(envelope.origin.authenticatedUser ?? "")",
                    ])
                }
                perform(session.storeFinished(result))
            }
        }
    }

    // MARK: ConnectionDelegate

    /// Points the connection's timer at the earliest of the session's
    /// deadlines.
    private func armDeadline() {
        connection.setTimeout(after: deadlines.next.at - now())
    }

    func connection(_ connection: Connection, received bytes: [UInt8]) {
        dispatchPrecondition(condition: .onQueue(connection.queue))
        perform(session.receive(bytes))
        deadlines.received(at: now(), partialLine: session.holdsPartialLine, inData: session.isReceivingData)
        let next = deadlines.next
        if next.at <= now() {
            // A trickle that never goes quiet: the limit passed between two
            // reads, before the timer could fire.
            cutOff(next.limit)
        } else {
            armDeadline()
        }
    }

    private func cutOff(_ limit: InboundDeadlines.Limit) {
        logger.notice("timeout", metadata: ["limit": "\(limit.rawValue)",
                                            "seconds": "\(Int(now() - opened))"])
        closeReason = limit.rawValue
        perform(session.timedOut())
    }

    func connection(_ connection: Connection, tlsEstablished info: TLSSessionInfo) {
        dispatchPrecondition(condition: .onQueue(connection.queue))
        logger.info("TLS established", metadata: ["tls": "\(info.protocolVersion)", "cipher": "\(info.cipher)",
                                                  "bits": "\(info.cipherBits)", "fs": "\(info.forwardSecret ? "yes" : "no")",
                                                  "resumed": "\(info.resumed)"])
        perform(session.tlsEstablished(TLSState(version: info.protocolVersion, cipher: info.cipher, bits: info.cipherBits)))
        if listener.kind == .smtps { perform(session.start()) }
    }

    func connection(_ connection: Connection, tlsFailed failure: TLSFailure) {
        dispatchPrecondition(condition: .onQueue(connection.queue))
        // Scanners and broken clients fail handshakes all day; nothing for
        // an operator to act on, so info, with the reason.
        logger.info("TLS handshake failed", metadata: ["reason": "\(failure.kind.rawValue)", "detail": "\(failure.detail)"])
        closeReason = "TLS handshake failed: \(failure.kind.rawValue)"
    }

    func connectionTimedOut(_ connection: Connection) {
        dispatchPrecondition(condition: .onQueue(connection.queue))
        let next = deadlines.next
        // Dispatch may fire a hair early; never cut a session short.
        if next.at - now() > 0.05 {
            armDeadline()
            return
        }
        cutOff(next.limit)
    }

    func connectionClosed(_ connection: Connection, reason: String) {
        dispatchPrecondition(condition: .onQueue(connection.queue))
        guard !ended else { return }
        ended = true
        logger.info("disconnect", metadata: [
            "reason": "\(closeReason ?? reason)", "seconds": "\(Double(Int((now() - opened) * 1000)) / 1000)",
            "bytes_in": "\(connection.bytesIn)", "bytes_out": "\(connection.bytesOut)",
            "tls": "\(connection.tlsInfo?.protocolVersion ?? "none")", "messages": "\(messages)",
        ])
        server.metrics?.sessionClosed(listener: InboundServer.metricsLabel(listener), tls: connection.tlsInfo != nil)
        server.finished(self)
    }
}
