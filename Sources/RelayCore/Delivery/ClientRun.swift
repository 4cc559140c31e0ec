// Runs one ClientSession over one outgoing Connection to one address and
// reports how it ended, with the TLS parameters that were in force. One
// object per attempt; everything on the attempt's serial queue.
import Dispatch

public struct ClientRunResult: Sendable {
    public let outcome: ClientOutcome
    public let tls: TLSSessionInfo?
    /// TLS was attempted and failed (opportunistic callers may retry in plaintext).
    public let tlsFailure: TLSFailure?
}

final class ClientRun: ConnectionDelegate {
    private var session: ClientSession
    private let connection: Connection
    private let body: [UInt8]
    private let tlsContext: TLSContext
    private let tlsOptions: TLSConnection.Options
    private var completion: ((ClientRunResult) -> Void)?
    private var tlsFailure: TLSFailure?
    /// Keeps the run alive while the connection holds only a weak delegate.
    private var selfRetain: ClientRun?
    /// Where to keep the connection afterwards (nil: QUIT and close).
    private let pool: ConnectionPool?
    private let poolKey: ConnectionPool.Key?
    private let uses: Int
    private let reusing: Bool

    init(configuration: ClientSessionConfiguration, body: [UInt8], connection: Connection,
         tlsContext: TLSContext, tlsOptions: TLSConnection.Options,
         pool: ConnectionPool? = nil, poolKey: ConnectionPool.Key? = nil, reused: ConnectionPool.Entry? = nil,
         completion: @escaping (ClientRunResult) -> Void) {
        if let reused {
            self.session = ClientSession(configuration: configuration, reusing: reused.extensions, tlsActive: reused.tlsActive)
        } else {
            self.session = ClientSession(configuration: configuration)
        }
        self.pool = pool
        self.poolKey = poolKey
        self.uses = reused?.uses ?? 0
        self.reusing = reused != nil
        self.connection = connection
        self.body = body
        self.tlsContext = tlsContext
        self.tlsOptions = tlsOptions
        self.completion = completion
    }

    /// On the connection's queue.
    func start() {
        selfRetain = self
        connection.delegate = self
        if reusing {
            // The server may have closed it between the pool and here: that
            // says nothing about the hop, and the caller goes fresh.
            guard connection.isOpen else {
                finish(.failed(.keptConnectionLost))
                selfRetain = nil
                return
            }
            perform(session.start())
            return
        }
        connection.start()
        connection.setIdleTimeout(seconds: session.timeoutSeconds)
        if session.configuration.implicitTLS {
            do { try connection.startClientTLS(context: tlsContext, options: tlsOptions) } catch {
                finish(.failed(.tls(TLSFailure(kind: .protocolError, detail: "\(error)"))))
            }
        }
    }

    private func perform(_ actions: [ClientAction]) {
        for action in actions {
            switch action {
            case .send(let bytes):
                connection.send(bytes)
            case .sendBody:
                connection.send(DotStuffer.encode(body))
            case .startTLS:
                do { try connection.startClientTLS(context: tlsContext, options: tlsOptions) } catch {
                    perform(session.tlsFailed(TLSFailure(kind: .protocolError, detail: "\(error)")))
                }
            case .close:
                connection.close()
            case .finished(let outcome):
                finish(outcome)
            }
        }
        // Once finished, the connection is closing or kept by the pool,
        // whose keep time is the one that counts: re-arming here made a
        // kept connection live the session's 60 s instead.
        if completion != nil { connection.setIdleTimeout(seconds: session.timeoutSeconds) }
    }

    private func finish(_ outcome: ClientOutcome) {
        guard let completion else { return }
        self.completion = nil
        completion(ClientRunResult(outcome: outcome, tls: connection.tlsInfo, tlsFailure: tlsFailure))
        if session.endedReusable {
            if let pool, let poolKey,
               pool.offer(poolKey, connection: connection, extensions: session.extensions,
                          tlsActive: connection.isTLSActive || session.configuration.implicitTLS, uses: uses + 1) {
                selfRetain = nil  // the pool's watcher is the delegate now
                return
            }
            connection.send(Array("QUIT\r\n".utf8))
        }
        connection.close()
    }

    func connection(_ connection: Connection, received bytes: [UInt8]) {
        perform(session.receive(bytes))
    }

    func connection(_ connection: Connection, tlsEstablished info: TLSSessionInfo) {
        if session.configuration.implicitTLS {
            return  // the greeting arrives as TLS data
        }
        perform(session.tlsEstablished())
    }

    func connection(_ connection: Connection, tlsFailed failure: TLSFailure) {
        tlsFailure = failure
        if session.configuration.implicitTLS {
            finish(.failed(.tls(failure)))
        } else {
            perform(session.tlsFailed(failure))
        }
    }

    func connectionTimedOut(_ connection: Connection) {
        perform(session.timedOut())
        connection.abort(reason: "timeout")
    }

    func connectionClosed(_ connection: Connection, reason: String) {
        perform(session.connectionClosed())
        selfRetain = nil
    }
}
