// The client side of one SMTP delivery (RFC 5321, RFC 3207 STARTTLS, RFC
// 2920 PIPELINING, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8,
// RFC 3461 DSN, RFC 4954 AUTH for relay hops), sans-IO like ServerSession:
// replies in, actions out.
//
// The TLS requirement is enforced here, where the protocol decides it:
// with `.required`, a missing STARTTLS, a refused STARTTLS, or a failed
// handshake ends the session before MAIL is ever sent, so no envelope or
// body byte can travel in plaintext. Whatever the server sends between its
// 220 to STARTTLS and the handshake is thrown away (the client-side twin
// of the STARTTLS injection attack).
import RelayModel
public enum TLSRequirement: Equatable, Sendable {
    case never
    case opportunistic
    case required
}

public struct ClientSessionConfiguration: Sendable {
    public var heloName: String
    public var tls: TLSRequirement
    /// The connection is already TLS (an implicit-TLS relay hop, port 465).
    public var implicitTLS: Bool
    public var envelope: Envelope
    /// Indexes into envelope.recipients that this session delivers.
    public var recipientIndexes: [Int]
    public var bodySize: Int
    /// AUTH PLAIN to a relay hop; sent only over TLS.
    public var credentials: Credentials?
    /// End a finished transaction without QUIT so the connection can carry
    /// the next message to the same destination (RSET first).
    public var keepAlive: Bool

    public init(heloName: String, tls: TLSRequirement, implicitTLS: Bool = false, envelope: Envelope,
                recipientIndexes: [Int]? = nil, bodySize: Int, credentials: Credentials? = nil, keepAlive: Bool = false) {
        self.keepAlive = keepAlive
        self.heloName = heloName
        self.tls = tls
        self.implicitTLS = implicitTLS
        self.envelope = envelope
        self.recipientIndexes = recipientIndexes ?? Array(envelope.recipients.indices)
        self.bodySize = bodySize
        self.credentials = credentials
    }
}

public enum ClientFailure: Equatable, Sendable, CustomStringConvertible {
    case greeting(Reply)
    case tlsNotOffered
    case tlsRefused(Reply)
    case tls(TLSFailure)
    case authRejected(Reply)
    /// MAIL, DATA or the final reply refused the whole message.
    case rejected(Reply, stage: ClientSession.Stage)
    case protocolError(String)
    /// No connection could be made to the address (the reason from connect).
    case connectFailed(String)
    case connectionLost(stage: ClientSession.Stage)
    /// A connection kept from an earlier transaction was closed or refused
    /// RSET: it says nothing about the next hop, and the caller tries a
    /// fresh connection.
    case keptConnectionLost
    case timeout(stage: ClientSession.Stage)
    /// The message needs SMTPUTF8 and the server does not offer it.
    case needsSMTPUTF8
    case messageTooBig(limit: Int)
    /// RFC 8689: the message carries REQUIRETLS and the server, on its TLS
    /// session, does not offer it. Nothing of the envelope was sent.
    case requireTLSNotOffered

    public var description: String {
        switch self {
        case .greeting(let r): return "greeting: \(r)"
        case .tlsNotOffered: return "TLS required but STARTTLS not offered"
        case .tlsRefused(let r): return "STARTTLS refused: \(r)"
        case .tls(let f): return "TLS failed: \(f)"
        case .authRejected(let r): return "AUTH rejected: \(r)"
        case .rejected(let r, let stage): return "\(stage.rawValue.uppercased()) rejected: \(r)"
        case .protocolError(let s): return "protocol error: \(s)"
        case .connectFailed(let why): return "connect: \(why)"
        case .connectionLost(let stage): return "connection lost during \(stage.rawValue)"
        case .keptConnectionLost: return "kept connection no longer usable"
        case .timeout(let stage): return "timeout during \(stage.rawValue)"
        case .needsSMTPUTF8: return "message needs SMTPUTF8, which the server does not support"
        case .messageTooBig(let limit): return "message larger than the server's SIZE limit \(limit)"
        case .requireTLSNotOffered: return "message requires REQUIRETLS, which the server does not offer"
        }
    }

    /// Whether a policy about TLS (not the network) ended the session.
    public var isTLSPolicyFailure: Bool {
        switch self {
        case .tlsNotOffered, .tlsRefused, .tls: return true
        default: return false
        }
    }
}

public enum ClientOutcome: Equatable, Sendable {
    /// Per-recipient replies (index into envelope.recipients → reply).
    case completed([Int: Reply])
    case failed(ClientFailure)
}

public enum ClientAction: Equatable, Sendable {
    case send([UInt8])
    /// Run the client TLS handshake; report `tlsEstablished` or `tlsFailed`.
    case startTLS
    /// Send the dot-stuffed message body (the caller owns the bytes).
    case sendBody
    case close
    case finished(ClientOutcome)
}

public struct ClientSession: Sendable {
    /// Where in the dialogue the session is; failures name it.
    public enum Stage: String, Equatable, Sendable {
        case greeting, ehlo, helo, starttls, handshake, auth, rset, mail, rcpt, data, body, done
    }

    public let configuration: ClientSessionConfiguration
    var stage = Stage.greeting
    var parser = ReplyParser()
    var tlsActive: Bool
    public private(set) var extensions: [String: String] = [:]
    public private(set) var usedTLS = false
    var pendingRcpt: [Int] = []
    var mailAccepted = false
    var rcptReplies: [Int: Reply] = [:]
    /// MAIL was refused while RCPTs were already pipelined behind it: their
    /// replies are read, then the message fails with this reply.
    var mailRefusal: Reply?
    var accepted: [Int] = []
    /// Set when a 5xx to EHLO sent us to HELO.
    var heloFallback = false

    public init(configuration: ClientSessionConfiguration) {
        self.configuration = configuration
        self.tlsActive = configuration.implicitTLS
        self.usedTLS = configuration.implicitTLS
    }

    /// A session on a connection kept from an earlier transaction: greeting,
    /// EHLO, STARTTLS and AUTH were done then; `start()` sends RSET.
    public init(configuration: ClientSessionConfiguration, reusing extensions: [String: String], tlsActive: Bool) {
        self.configuration = configuration
        self.tlsActive = tlsActive
        self.usedTLS = tlsActive
        self.extensions = extensions
        self.stage = .rset
    }

    /// What to send first: nothing on a new connection (the server
    /// speaks first), RSET on a reused one — with MAIL and the RCPTs behind
    /// it in one group when the server pipelines (RFC 2920 §3.1 allows
    /// RSET, MAIL and RCPT anywhere in a group): a round trip fewer per
    /// message on a kept connection. A refused RSET (a kept connection the
    /// server no longer wants) still ends in `keptConnectionLost`, the
    /// replies behind it unread, so the caller retries on a fresh one.
    public mutating func start() -> [ClientAction] {
        guard stage == .rset else { return [] }
        guard pipelining else { return [send("RSET")] }
        let transaction = startTransaction()
        // Refused before MAIL (size, SMTPUTF8, REQUIRETLS): QUIT alone.
        guard stage == .mail else { return transaction }
        awaitingRSET = true
        return [send("RSET")] + transaction
    }

    /// RSET went out with the transaction behind it and its reply has not
    /// come yet.
    var awaitingRSET = false

    /// Whether the session ended with the connection still in a clean
    /// state for another transaction (keepAlive, no QUIT sent).
    public private(set) var endedReusable = false

    /// RFC 5321 §4.5.3.2 timeouts for the current stage, in seconds.
    public var timeoutSeconds: Int {
        switch stage {
        case .greeting, .ehlo, .helo, .mail, .rcpt, .auth, .rset: return 300
        case .starttls, .handshake, .data: return 120
        case .body: return 600
        case .done: return 60
        }
    }

    // MARK: events

    public mutating func receive(_ bytes: [UInt8]) -> [ClientAction] {
        guard stage != .done, stage != .handshake else { return [] }
        parser.append(bytes)
        var actions: [ClientAction] = []
        while stage != .done {
            let reply: Reply?
            do { reply = try parser.next() } catch {
                return actions + fail(.protocolError("\(error)"))
            }
            guard let reply else { break }
            actions += handle(reply)
            if stage == .handshake {
                // Bytes after the 220 to STARTTLS and before the handshake
                // are the server's (or an attacker's) plaintext: dropped.
                parser = ReplyParser()
                break
            }
        }
        return actions
    }

    public mutating func tlsEstablished() -> [ClientAction] {
        guard stage == .handshake else { return [] }
        tlsActive = true
        usedTLS = true
        extensions = [:]
        parser = ReplyParser()
        stage = .ehlo
        return [send("EHLO \(configuration.heloName)")]
    }

    public mutating func tlsFailed(_ failure: TLSFailure) -> [ClientAction] {
        guard stage == .handshake else { return [] }
        stage = .done
        return [.close, .finished(.failed(.tls(failure)))]
    }

    public mutating func connectionClosed() -> [ClientAction] {
        guard stage != .done else { return [] }
        let s = stage
        stage = .done
        if s == .handshake {
            // A handshake cut short is a TLS failure like any other: the
            // policy (plaintext retry, defer, drop) must see it as one.
            return [.finished(.failed(.tls(TLSFailure(kind: .peerClosed, detail: "connection closed during the TLS handshake"))))]
        }
        return [.finished(.failed(s == .rset || awaitingRSET ? .keptConnectionLost : .connectionLost(stage: s)))]
    }

    public mutating func timedOut() -> [ClientAction] {
        guard stage != .done else { return [] }
        // Still waiting for the pipelined RSET's reply: the RSET timed out.
        let s = awaitingRSET ? .rset : stage
        stage = .done
        return [.close, .finished(.failed(.timeout(stage: s)))]
    }

    // MARK: replies

    mutating func handle(_ reply: Reply) -> [ClientAction] {
        if awaitingRSET {
            awaitingRSET = false
            // A kept connection the server no longer wants: the caller
            // retries on a fresh one.
            return reply.code == 250 ? [] : quitFailing(.keptConnectionLost)
        }
        switch stage {
        case .greeting:
            guard reply.code == 220 else { return quitFailing(.greeting(reply)) }
            stage = .ehlo
            return [send("EHLO \(configuration.heloName)")]
        case .ehlo:
            if reply.code == 250 {
                extensions = Self.parseExtensions(reply)
                return afterGreeting()
            }
            if reply.isPermanent && !tlsActive && configuration.tls != .required {
                heloFallback = true
                stage = .helo
                return [send("HELO \(configuration.heloName)")]
            }
            return quitFailing(reply.isPermanent && configuration.tls == .required ? .tlsNotOffered
                               : .rejected(reply, stage: .ehlo))
        case .helo:
            guard reply.code == 250 else { return quitFailing(.rejected(reply, stage: .helo)) }
            return startTransaction()
        case .starttls:
            if reply.code == 220 {
                stage = .handshake
                return [.startTLS]
            }
            if configuration.tls == .required { return quitFailing(.tlsRefused(reply)) }
            return afterTLSDecision()
        case .handshake, .done:
            return []
        case .auth:
            guard reply.code == 235 else { return quitFailing(.authRejected(reply)) }
            return startTransaction()
        case .rset:
            // A kept connection the server no longer wants: the caller
            // retries on a fresh one.
            guard reply.code == 250 else { return quitFailing(.keptConnectionLost) }
            return startTransaction()
        case .mail:
            mailAccepted = reply.code == 250
            if !mailAccepted && (!pipelining || pendingRcpt.isEmpty) { return quitFailing(.rejected(reply, stage: .mail)) }
            if !mailAccepted {
                // Pipelined RCPT replies still arrive; remember why.
                mailRefusal = reply
            }
            stage = .rcpt
            return pipelining ? [] : nextRcpt()
        case .rcpt:
            guard !pendingRcpt.isEmpty else { return fail(.protocolError("unexpected reply \(reply)")) }
            let index = pendingRcpt.removeFirst()
            if let mailReply = mailRefusal {
                rcptReplies[index] = mailReply
            } else {
                rcptReplies[index] = reply
                if reply.code == 250 || reply.code == 251 { accepted.append(index) }
            }
            if !pipelining && !pendingRcpt.isEmpty && mailRefusal == nil { return nextRcpt() }
            guard pendingRcpt.isEmpty else { return [] }
            if let mailReply = mailRefusal {
                mailRefusal = nil
                return quitFailing(.rejected(mailReply, stage: .mail))
            }
            if accepted.isEmpty { return quitCompleting() }
            stage = .data
            return [send("DATA")]
        case .data:
            guard reply.code == 354 else {
                for i in accepted { rcptReplies[i] = reply }
                return quitCompleting()
            }
            stage = .body
            return [.sendBody]
        case .body:
            for i in accepted { rcptReplies[i] = reply }
            return quitCompleting()
        }
    }

    var pipelining: Bool { extensions["PIPELINING"] != nil }

    mutating func afterGreeting() -> [ClientAction] {
        if !tlsActive && configuration.tls != .never {
            if extensions["STARTTLS"] != nil {
                stage = .starttls
                return [send("STARTTLS")]
            }
            if configuration.tls == .required { return quitFailing(.tlsNotOffered) }
        }
        return afterTLSDecision()
    }

    mutating func afterTLSDecision() -> [ClientAction] {
        if let creds = configuration.credentials {
            guard tlsActive else { return quitFailing(.tlsNotOffered) }  // never AUTH in plaintext
            stage = .auth
            var message: [UInt8] = [0]
            message += Array(creds.username.utf8)
            message.append(0)
            message += creds.password
            return [send("AUTH PLAIN \(SASL.encodeBase64(message))")]
        }
        return startTransaction()
    }

    mutating func startTransaction() -> [ClientAction] {
        let env = configuration.envelope
        let needsUTF8 = env.smtpUTF8 || env.sender.mailbox?.needsSMTPUTF8 == true
            || configuration.recipientIndexes.contains { env.recipients[$0].mailbox.needsSMTPUTF8 }
        if needsUTF8 && extensions["SMTPUTF8"] == nil { return quitFailing(.needsSMTPUTF8) }
        if let limit = extensions["SIZE"].flatMap({ Int($0) }), limit > 0, configuration.bodySize > limit {
            return quitFailing(.messageTooBig(limit: limit))
        }
        // RFC 8689 §4.2.1: a REQUIRETLS message goes only over TLS to a
        // server that offers REQUIRETLS there, and says so on MAIL.
        if env.requireTLS && (!tlsActive || extensions["REQUIRETLS"] == nil) { return quitFailing(.requireTLSNotOffered) }
        var mail = "MAIL FROM:<\(env.sender)>"
        if extensions["SIZE"] != nil { mail += " SIZE=\(configuration.bodySize)" }
        if env.bodyType == .eightBitMIME && extensions["8BITMIME"] != nil { mail += " BODY=8BITMIME" }
        if needsUTF8 { mail += " SMTPUTF8" }
        let dsn = extensions["DSN"] != nil
        if dsn, let ret = env.ret { mail += " RET=\(ret.rawValue)" }
        if dsn, let id = env.envelopeID { mail += " ENVID=\(XText.encode(id))" }
        if env.requireTLS { mail += " REQUIRETLS" }
        stage = .mail
        pendingRcpt = configuration.recipientIndexes
        var actions = [send(mail)]
        if pipelining {
            for i in pendingRcpt { actions.append(send(rcptCommand(i, dsn: dsn))) }
        }
        return actions
    }

    func rcptCommand(_ i: Int, dsn: Bool) -> String {
        let r = configuration.envelope.recipients[i]
        var cmd = "RCPT TO:<\(r.mailbox)>"
        if dsn, let notify = r.notify { cmd += " NOTIFY=\(notify.map(\.rawValue).joined(separator: ","))" }
        if dsn, let orcpt = r.originalRecipient, let semi = orcpt.firstIndex(of: ";") {
            cmd += " ORCPT=\(orcpt[..<semi]);\(XText.encode(String(orcpt[orcpt.index(after: semi)...])))"
        }
        return cmd
    }

    mutating func nextRcpt() -> [ClientAction] {
        guard let i = pendingRcpt.first else { return [] }
        return [send(rcptCommand(i, dsn: extensions["DSN"] != nil))]
    }

    // MARK: endings

    mutating func quitFailing(_ failure: ClientFailure) -> [ClientAction] {
        stage = .done
        return [send("QUIT"), .close, .finished(.failed(failure))]
    }

    mutating func quitCompleting() -> [ClientAction] {
        stage = .done
        if configuration.keepAlive {
            endedReusable = true
            return [.finished(.completed(rcptReplies))]
        }
        return [send("QUIT"), .close, .finished(.completed(rcptReplies))]
    }

    mutating func fail(_ failure: ClientFailure) -> [ClientAction] {
        stage = .done
        return [.close, .finished(.failed(failure))]
    }

    func send(_ line: String) -> ClientAction { .send(Array((line + "\r\n").utf8)) }

    /// EHLO keywords (upper-cased) → their parameters.
    static func parseExtensions(_ reply: Reply) -> [String: String] {
        var ext: [String: String] = [:]
        for line in reply.lines.dropFirst() {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard let key = parts.first, !key.isEmpty else { continue }
            ext[key.uppercased()] = parts.count > 1 ? String(parts[1]) : ""
        }
        return ext
    }
}
