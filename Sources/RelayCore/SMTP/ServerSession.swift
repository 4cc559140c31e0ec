// The server side of one SMTP session (RFC 5321, with RFC 3207 STARTTLS,
// RFC 4954 AUTH, RFC 1870 SIZE, RFC 2920 PIPELINING, RFC 3461 DSN, RFC 6531
// SMTPUTF8) as a sans-IO state machine: bytes in, actions out. It never
// touches a socket, a file or the clock, so every hostile input can be
// replayed in a unit test whole or one byte at a time.
//
// Work the session cannot do itself (a TLS handshake, a password check, a
// durable write) is requested with an action; until the caller reports the
// result, the session buffers further input without acting on it, which is
// what keeps pipelined commands in order.
import RelayModel
public struct ServerSessionConfiguration: Sendable {
    public var hostname: String
    /// STARTTLS can be offered (a certificate is configured, not implicit TLS).
    public var startTLSAvailable: Bool
    /// MAIL refused until the session is encrypted (530 5.7.0).
    public var requireTLS: Bool
    /// MAIL refused until AUTH succeeded (530 5.7.0).
    public var requireAuth: Bool
    /// A users file is configured; AUTH is offered once TLS is up.
    public var authAvailable: Bool
    /// The client address is in the configured relay networks.
    public var clientIsTrusted: Bool
    /// Domains anyone may send to (inbound-gateway role), lower-case;
    /// ".example.com" covers subdomains.
    public var relayDomains: Set<String>
    /// Senders from these domains must use TLS (530 5.7.0 otherwise).
    public var requireTLSSenderDomains: Set<String>
    public var maxMessageSize: Int
    public var maxRecipients: Int
    public var maxErrors: Int
    public var maxAuthFailures: Int
    /// Most Received: fields a message may carry once the caller has added
    /// its own (554 5.4.6 beyond): the mail-loop limit.
    public var maxHops: Int

    public init(hostname: String, startTLSAvailable: Bool = true, requireTLS: Bool = false, requireAuth: Bool = false,
                authAvailable: Bool = false, clientIsTrusted: Bool = false, relayDomains: Set<String> = [],
                requireTLSSenderDomains: Set<String> = [], maxMessageSize: Int = 36_700_160,
                maxRecipients: Int = 1000, maxErrors: Int = 10, maxAuthFailures: Int = 3, maxHops: Int = 50) {
        self.hostname = hostname
        self.startTLSAvailable = startTLSAvailable
        self.requireTLS = requireTLS
        self.requireAuth = requireAuth
        self.authAvailable = authAvailable
        self.clientIsTrusted = clientIsTrusted
        self.relayDomains = relayDomains
        self.requireTLSSenderDomains = requireTLSSenderDomains
        self.maxMessageSize = maxMessageSize
        self.maxRecipients = maxRecipients
        self.maxErrors = maxErrors
        self.maxAuthFailures = maxAuthFailures
        self.maxHops = maxHops
    }
}

public enum ServerAction: Equatable, Sendable {
    case send(Reply)
    /// Flush what was sent, then run the server TLS handshake; report with
    /// `tlsEstablished` (or close on failure).
    case startTLS
    /// Check these credentials; report with `authenticationFinished`.
    case authenticate(Credentials, SASL.Mechanism)
    /// Write the message durably; report with `storeFinished`.
    case store(Envelope, body: [UInt8])
    /// Input was thrown away unread (for the log): what the client sent
    /// behind a refused DATA without waiting for the reply.
    case discarded(bytes: Int, reason: DiscardReason)
    /// Flush what was sent, then close the connection.
    case close
}

public enum DiscardReason: String, Equatable, Sendable {
    /// RFC 2920 §3.1: DATA ends a pipelined group, so bytes sent behind a
    /// DATA that was refused are a message body, never commands.
    case pipelinedAfterRefusedDATA = "pipelined after refused DATA"
}

public enum StoreResult: Equatable, Sendable {
    case queued(id: String)
    /// Disk or I/O failure: 451 4.3.0.
    case failed(reason: String)
    /// Free space under the reserve: 452 4.3.1.
    case insufficientSpace
}

public struct TLSState: Equatable, Sendable {
    public let version: String
    public let cipher: String
    public let bits: Int

    public init(version: String, cipher: String, bits: Int) {
        self.version = version
        self.cipher = cipher
        self.bits = bits
    }
}

public struct ServerSession: Sendable {
    enum Phase: Equatable, Sendable {
        case command
        case data
        case authLoginUsername
        case authLoginPassword(String)
        case authPlainResponse
        case waitingForAuthentication
        case waitingForStore
        case waitingForTLS
        /// Reading a refused DATA's body only to find where it ends.
        case discardingRefusedData
        case closed
    }

    public let configuration: ServerSessionConfiguration
    public let clientAddress: String
    var phase: Phase = .command
    var input: [UInt8] = []
    /// After an over-long line: skip bytes until the next LF.
    var discardingLine = false
    var dataReader: DataReader?
    /// A DATA was refused with nothing buffered behind it: if the next line
    /// is no command, it is the first line of a body sent without waiting.
    var bodyMayFollowRefusedDATA = false
    /// Bytes thrown away since the current discard began.
    var discardedBytes = 0

    var heloName: String?
    var esmtp = false
    public internal(set) var tls: TLSState?
    public internal(set) var authenticatedUser: String?
    var envelope: Envelope?
    var errorCount = 0
    var authFailures = 0
    var draining = false
    /// The verb of the command being answered, for log lines ("AUTH" never
    /// carries its arguments).
    public internal(set) var lastVerb = ""
    /// Bytes discarded at STARTTLS (a plaintext command injection attempt).
    public internal(set) var discardedAtSTARTTLS = 0

    /// RFC 5321 §4.5.3.1.4: 512 octets for a command line. MAIL, RCPT and
    /// AUTH get the room their extensions add (RFC 1870, 3461, 4954).
    static let commandLineLimit = 512
    static let extendedLineLimit = 2048
    /// Input buffered while a reply is pending (a pipelined group waiting
    /// for a disk or a password check). The caller stops reading while the
    /// session waits, so only a client that ignores that gets here.
    static let maxBufferedInput = 64 * 1024

    public init(configuration: ServerSessionConfiguration, clientAddress: String) {
        self.configuration = configuration
        self.clientAddress = clientAddress
    }

    /// Between 354 and the end of data, or reading a refused DATA's body.
    public var isReceivingData: Bool { phase == .data || phase == .discardingRefusedData }

    /// Waiting for the caller to finish a password check or a durable
    /// store: the caller should stop reading meanwhile. (Not during a TLS
    /// handshake, which the caller runs by reading.)
    public var isWaiting: Bool {
        phase == .waitingForAuthentication || phase == .waitingForStore
    }

    /// The caller should stop reading: the session waits (as `isWaiting`)
    /// and input has arrived behind the command it waits on. While nothing
    /// is buffered the caller may keep reading, so the common case — a
    /// client that waits for the 250 — costs no pause and resume of the
    /// socket's read source per message; the first pipelined bytes stop it,
    /// so the buffer stays far under `maxBufferedInput`.
    public var shouldHoldReads: Bool { isWaiting && !input.isEmpty }

    /// The start of a command line (or AUTH response) is buffered and its
    /// end has not arrived: the caller's command-line deadline runs.
    public var holdsPartialLine: Bool {
        switch phase {
        case .command, .authLoginUsername, .authLoginPassword, .authPlainResponse:
            return !input.isEmpty || discardingLine
        default:
            return false
        }
    }

    // MARK: events from the caller

    /// The greeting. For implicit TLS call `tlsEstablished` first.
    public mutating func start() -> [ServerAction] {
        [.send(Reply(220, nil, "\(configuration.hostname) ESMTP relayd"))]
    }

    public mutating func receive(_ bytes: [UInt8]) -> [ServerAction] {
        guard phase != .closed else { return [] }
        input.append(contentsOf: bytes)
        var actions = process()
        if phase != .closed && input.count > Self.maxBufferedInput {
            lastVerb = "(pipelined)"
            actions += closeWith(Reply(421, "4.7.0", "\(configuration.hostname) Error: too much pipelined input; closing connection"))
        }
        return actions
    }

    public mutating func tlsEstablished(_ state: TLSState) -> [ServerAction] {
        // RFC 3207 §4.2: forget everything learned before the handshake.
        tls = state
        heloName = nil
        esmtp = false
        authenticatedUser = nil
        envelope = nil
        if phase == .waitingForTLS { phase = .command }
        return process()
    }

    public mutating func authenticationFinished(username: String, success: Bool) -> [ServerAction] {
        guard phase == .waitingForAuthentication else { return [] }
        phase = .command
        var actions: [ServerAction]
        if success {
            authenticatedUser = username
            actions = [.send(Reply(235, "2.7.0", "Authentication successful"))]
        } else {
            authFailures += 1
            actions = [.send(Reply(535, "5.7.8", "Authentication credentials invalid"))]
            if authFailures >= configuration.maxAuthFailures {
                return actions + closeWith(Reply(421, "4.7.0", "\(configuration.hostname) Too many failed authentication attempts"))
            }
            actions += countError()
            if phase == .closed { return actions }
        }
        return actions + process()
    }

    public mutating func storeFinished(_ result: StoreResult) -> [ServerAction] {
        guard phase == .waitingForStore else { return [] }
        phase = .command
        envelope = nil
        let reply: Reply
        switch result {
        case .queued(let id): reply = Reply(250, "2.0.0", "Ok: queued as \(id)")
        case .failed: reply = Reply(451, "4.3.0", "Local error in processing; message not accepted, try again later")
        case .insufficientSpace: reply = Reply(452, "4.3.1", "Insufficient system storage; try again later")
        }
        if draining {
            return [.send(reply)] + closeWith(Reply(421, "4.3.2", "\(configuration.hostname) Service shutting down"))
        }
        return [.send(reply)] + process()
    }

    /// The caller's idle or DATA timer fired.
    public mutating func timedOut() -> [ServerAction] {
        guard phase != .closed else { return [] }
        return closeWith(Reply(421, "4.4.2", "\(configuration.hostname) Error: timeout exceeded"))
    }

    /// The server is shutting down: end the session at the next point
    /// where no message is half-received or waiting to be made durable.
    public mutating func shutdown() -> [ServerAction] {
        draining = true
        switch phase {
        case .closed: return []
        case .data, .waitingForStore, .waitingForAuthentication, .waitingForTLS: return []
        default: return closeWith(Reply(421, "4.3.2", "\(configuration.hostname) Service shutting down"))
        }
    }

    // MARK: input framing

    mutating func process() -> [ServerAction] {
        var actions: [ServerAction] = []
        loop: while true {
            switch phase {
            case .closed, .waitingForAuthentication, .waitingForStore, .waitingForTLS:
                break loop
            case .data:
                guard !input.isEmpty, var reader = dataReader else { break loop }
                // Taken out, so the local copy is the only owner of the body
                // buffer and appending to it never copies what came before
                // (with the stored copy still alive, each read copied the
                // whole body: quadratic in the message size).
                dataReader = nil
                let (consumed, outcome) = reader.consume(input[...])
                input.removeFirst(consumed)
                dataReader = reader
                switch outcome {
                case .needMore:
                    break loop
                case .complete(let body):
                    dataReader = nil
                    actions += finishData(body: body)
                case .failed(let failure):
                    dataReader = nil
                    actions += dataFailed(failure)
                }
            case .discardingRefusedData:
                guard !input.isEmpty else { break loop }
                actions += continueDiscarding()
            case .command, .authLoginUsername, .authLoginPassword, .authPlainResponse:
                guard let line = nextLine(&actions) else { break loop }
                actions += handleLine(line)
            }
        }
        return actions
    }

    /// Takes one LF-terminated line off the input (CR LF or, tolerated in
    /// commands as by Postfix, a lone LF), enforcing the length limits.
    mutating func nextLine(_ actions: inout [ServerAction]) -> [UInt8]? {
        while true {
            guard let lf = input.firstIndex(of: 10) else {
                if input.count > Self.extendedLineLimit {
                    input.removeAll(keepingCapacity: true)
                    if !discardingLine {
                        discardingLine = true
                        lastVerb = "(overlong)"
                        actions.append(.send(Reply(500, "5.5.2", "Line too long")))
                        actions += countError()
                    }
                }
                return nil
            }
            var line = Array(input[..<lf])
            input.removeFirst(lf + 1)
            if discardingLine {
                discardingLine = false
                continue
            }
            if line.last == 13 { line.removeLast() }
            if line.count + 2 > Self.extendedLineLimit {
                lastVerb = "(overlong)"
                actions.append(.send(Reply(500, "5.5.2", "Line too long")))
                actions += countError()
                if phase == .closed { return nil }
                continue
            }
            return line
        }
    }

    mutating func handleLine(_ line: [UInt8]) -> [ServerAction] {
        switch phase {
        case .authLoginUsername, .authLoginPassword, .authPlainResponse:
            return continueAuth(line)
        default:
            return handleCommandLine(line)
        }
    }

    // MARK: helpers shared by the command handlers

    mutating func closeWith(_ reply: Reply) -> [ServerAction] {
        phase = .closed
        input.removeAll()
        return [.send(reply), .close]
    }

    /// Every 4xx/5xx the client earns counts; past the limit the session
    /// ends (Postfix's smtpd_hard_error_limit).
    mutating func countError() -> [ServerAction] {
        errorCount += 1
        if errorCount >= configuration.maxErrors {
            return closeWith(Reply(421, "4.7.0", "\(configuration.hostname) Error: too many errors"))
        }
        return []
    }

    mutating func reject(_ reply: Reply) -> [ServerAction] {
        [.send(reply)] + countError()
    }
}
