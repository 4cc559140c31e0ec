// Runs one ServerSession over one Connection: feeds it bytes, performs the
// actions it asks for (TLS, password checks, durable stores) off the
// connection queue where they are slow, and logs every refusal it sends.
import Dispatch
import Logging
#if canImport(Glibc)
import Glibc
#endif

final class InboundSession: ConnectionDelegate {
    unowned let server: InboundServer
    let connection: Connection
    let listener: Config.Listener
    let settings: InboundSettings
    let client: IPAddress
    private var session: ServerSession
    private var logger: Logger
    private var messages = 0
    private var ended = false
    /// Monotonic time the current DATA phase began.
    private var dataStarted: Double?

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
    }

    /// On the connection queue.
    func begin() {
        connection.delegate = self
        connection.start()
        connection.setIdleTimeout(seconds: settings.config.limits.idleTimeout)
        logger.debug("connect")
        if listener.kind == .smtps {
            do { try connection.startServerTLS(context: settings.tlsContext) } catch {
                logger.error("TLS setup failed", metadata: ["error": "\(error)"])
                connection.abort(reason: "TLS setup failed")
            }
        } else {
            perform(session.start())
        }
    }

    func shutdown() { perform(session.shutdown()) }

    private func perform(_ actions: [ServerAction]) {
        var pending: [UInt8] = []
        func flushReplies() {
            if !pending.isEmpty { connection.send(pending); pending.removeAll() }
        }
        for action in actions {
            switch action {
            case .send(let reply):
                pending += reply.wire
                if reply.code >= 400 {
                    logger.notice("refused", metadata: ["command": "\(session.lastVerb)", "reply": "\(reply)"])
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
            case .close:
                flushReplies()
                connection.close()
            }
        }
        flushReplies()
    }

    private func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    private func authenticate(_ credentials: Credentials, _ mechanism: SASL.Mechanism) {
        let throttle = server.throttle
        let ip = client
        let hash = settings.users?.hashes[credentials.username]
        let delay = throttle.delay(for: ip, now: now())
        let blocked = throttle.isBlocked(ip, now: now())
        server.authQueue.asyncAfter(deadline: .now() + delay) { [self] in
            let ok = !blocked && PasswordVerifier.verify(password: credentials.password, hash: hash)
            if ok { throttle.recordSuccess(ip) } else { throttle.recordFailure(ip, now: now()) }
            connection.queue.async { [self] in
                if ok {
                    logger.info("authenticated", metadata: ["user": "\(credentials.username)", "mechanism": "\(mechanism.rawValue)"])
                } else {
                    logger.warning("authentication failed", metadata: ["user": "\(credentials.username)",
                                                                       "mechanism": "\(mechanism.rawValue)",
                                                                       "ip_blocked": "\(blocked)"])
                }
                perform(session.authenticationFinished(username: credentials.username, success: ok))
            }
        }
    }

    private func store(_ envelope: Envelope, _ body: [UInt8]) {
        let id = QueueID.generate()
        let arrival = Int(time(nil))
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
                    server.onQueued?(message)
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

    func connection(_ connection: Connection, received bytes: [UInt8]) {
        connection.setIdleTimeout(seconds: settings.config.limits.idleTimeout)
        perform(session.receive(bytes))
        if session.isReceivingData {
            let t = now()
            if let started = dataStarted {
                if t - started > Double(settings.config.limits.dataTimeout) {
                    logger.notice("DATA phase too slow; cutting off", metadata: ["seconds": "\(Int(t - started))"])
                    perform(session.timedOut())
                }
            } else {
                dataStarted = t
            }
        } else {
            dataStarted = nil
        }
    }

    func connection(_ connection: Connection, tlsEstablished info: TLSSessionInfo) {
        logger.info("TLS established", metadata: ["tls": "\(info.protocolVersion)", "cipher": "\(info.cipher)",
                                                  "bits": "\(info.cipherBits)", "resumed": "\(info.resumed)"])
        perform(session.tlsEstablished(TLSState(version: info.protocolVersion, cipher: info.cipher, bits: info.cipherBits)))
        if listener.kind == .smtps { perform(session.start()) }
    }

    func connection(_ connection: Connection, tlsFailed failure: TLSFailure) {
        logger.warning("TLS handshake failed", metadata: ["reason": "\(failure.kind.rawValue)", "detail": "\(failure.detail)"])
    }

    func connectionTimedOut(_ connection: Connection) {
        logger.notice("timeout")
        perform(session.timedOut())
    }

    func connectionClosed(_ connection: Connection, reason: String) {
        guard !ended else { return }
        ended = true
        logger.debug("disconnect", metadata: ["reason": "\(reason)", "messages": "\(messages)"])
        server.finished(self)
    }
}
