// Runs one ClientSession over one outgoing Connection to one address and
// reports how it ended, with the TLS parameters that were in force. One
// object per attempt; everything on the attempt's serial queue.
//
// The body is streamed: a chunk is read (from memory or the queue file),
// dot-stuffed and queued only while the connection holds less than a chunk
// unsent, and the next waits for the socket to drain. A delivery so holds a
// few chunks of its body at a time, never the whole of it or a stuffed or
// encrypted copy. The end of data (".") is sent only after the body source
// ended cleanly; a queue file that fails its check mid-way ends the
// connection without it, so the receiver discards the transaction.
import RelayIO
import RelayModel
import RelayQueue
import RelaySMTP
import RelayTLS
import Dispatch

public struct ClientRunResult: Sendable {
    public let outcome: ClientOutcome
    public let tls: TLSSessionInfo?
    /// TLS was attempted and failed (opportunistic callers may retry in plaintext).
    public let tlsFailure: TLSFailure?
    /// The body could not be read or failed its check while being sent; the
    /// transaction was abandoned before its end (no other address will do
    /// better).
    public var bodyFailure: String? = nil
    /// SHA-256 of the leaf certificate's public key (SubjectPublicKeyInfo),
    /// for learned TLS status; nil without TLS.
    public var leafKey: String? = nil
}

final class ClientRun: ConnectionDelegate {
    private var session: ClientSession
    private let connection: Connection
    private let body: MessageBody
    /// The pass over the body while it is being sent.
    private var bodyStream: BodyStream?
    private var stuffer = DotStuffer()
    private var bodyFailure: String?
    private let tlsContext: TLSContext
    private let tlsOptions: TLSConnection.Options
    private var completion: (@Sendable (ClientRunResult) -> Void)?
    private var tlsFailure: TLSFailure?
    /// Keeps the run alive while the connection holds only a weak delegate.
    private var selfRetain: ClientRun?
    /// Where to keep the connection afterwards (nil: QUIT and close).
    private let pool: ConnectionPool?
    private let poolKey: ConnectionPool.Key?
    private let uses: Int
    private let reusing: Bool

    init(configuration: ClientSessionConfiguration, body: MessageBody, connection: Connection,
         tlsContext: TLSContext, tlsOptions: TLSConnection.Options,
         pool: ConnectionPool? = nil, poolKey: ConnectionPool.Key? = nil, reused: ConnectionPool.Entry? = nil,
         completion: @escaping @Sendable (ClientRunResult) -> Void) {
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
                bodyStream = body.makeStream()
                stuffer = DotStuffer()
                sendMoreBody()
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

    /// Body bytes read per step: large enough that per-chunk costs (pread,
    /// SSL_write, send) vanish next to the bytes, small enough that the few
    /// a delivery holds (read, stuffed, encrypted, unsent) stay small.
    static let chunkSize = 64 * 1024

    /// Queues body chunks while the connection has less than one unsent.
    private func sendMoreBody() {
        while let stream = bodyStream, connection.isOpen, connection.unsentBytes < Self.chunkSize {
            var out: [UInt8] = []
            do {
                if let chunk = try stream.next(maxBytes: Self.chunkSize) {
                    stuffer.encode(chunk, into: &out)
                } else {
                    stuffer.finish(into: &out)
                    bodyStream = nil
                }
            } catch {
                // Closing is the only way to withhold the end of data; the
                // receiver drops a transaction cut off before it.
                bodyStream = nil
                bodyFailure = "\(error)"
                connection.abort(reason: "message body unreadable: \(error)")
                return
            }
            connection.send(out)
        }
    }

    private func finish(_ outcome: ClientOutcome) {
        guard let completion else { return }
        self.completion = nil
        var result = ClientRunResult(outcome: outcome, tls: connection.tlsInfo, tlsFailure: tlsFailure)
        if result.tls != nil { result.leafKey = connection.leafPublicKeySHA256() }
        result.bodyFailure = bodyFailure
        completion(result)
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
        if bodyStream != nil {
            // A reply before our end of data: the server gave up on the
            // transaction, and whatever we send next would be read as data.
            bodyStream = nil
            connection.abort(reason: "reply before the end of data")
            return
        }
        perform(session.receive(bytes))
    }

    func connectionDrained(_ connection: Connection) {
        guard bodyStream != nil else { return }
        // Progress: the body stage's timeout counts from the last chunk.
        connection.setIdleTimeout(seconds: session.timeoutSeconds)
        sendMoreBody()
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
        bodyStream = nil
        perform(session.connectionClosed())
        selfRetain = nil
    }
}
