// Command handlers of ServerSession: the order rules of RFC 5321 §4.1.4,
// the STARTTLS rules of RFC 3207, AUTH (RFC 4954), relay control, and the
// MAIL/RCPT extension parameters. Every refusal carries an enhanced code.
import RelayModel
extension ServerSession {
    var isEncrypted: Bool { tls != nil }

    mutating func handleCommandLine(_ line: [UInt8]) -> [ServerAction] {
        let verb = String(decoding: line.prefix(while: { $0 != 32 }).prefix(16), as: UTF8.self).uppercased()
        lastVerb = verb.allSatisfy({ $0.isLetter }) && !verb.isEmpty ? verb : "(invalid)"
        let extended = verb == "MAIL" || verb == "RCPT" || verb == "AUTH"
        let tooLong = !extended && line.count + 2 > Self.commandLineLimit
        let parsed = CommandParser.parse(line)
        if bodyMayFollowRefusedDATA {
            bodyMayFollowRefusedDATA = false
            if tooLong { return discardBodyStartingWith(line) }
            if case .failure = parsed { return discardBodyStartingWith(line) }
        }
        if tooLong { return reject(Reply(500, "5.5.2", "Line too long")) }
        switch parsed {
        case .failure(let error):
            return reject(reply(for: error))
        case .success(let command):
            return handle(command)
        }
    }

    func reply(for error: CommandError) -> Reply {
        switch error {
        case .unknownCommand: return Reply(500, "5.5.2", "Error: command not recognized")
        case .syntax(let why): return Reply(501, "5.5.4", "Syntax error: \(why)")
        case .badSender(let why): return Reply(501, "5.1.7", "Bad sender address syntax: \(why)")
        case .badRecipient(let why): return Reply(501, "5.1.3", "Bad recipient address syntax: \(why)")
        case .badCharacters: return Reply(500, "5.5.2", "Error: invalid characters in command")
        }
    }

    mutating func handle(_ command: Command) -> [ServerAction] {
        switch command {
        case .ehlo(let name): return greet(name, extended: true)
        case .helo(let name): return greet(name, extended: false)
        case .mail(let path, let params): return mail(path, params)
        case .rcpt(let mailbox, let params): return rcpt(mailbox, params)
        case .data: return data()
        case .rset:
            envelope = nil
            return [.send(Reply(250, "2.0.0", "Ok"))]
        case .noop: return [.send(Reply(250, "2.0.0", "Ok"))]
        case .quit: return closeWith(Reply(221, "2.0.0", "Bye"))
        case .vrfy: return [.send(Reply(252, "2.5.0", "Cannot VRFY user; send mail and delivery will be attempted"))]
        case .expn: return reject(Reply(502, "5.5.1", "Error: EXPN not supported"))
        case .help: return [.send(Reply(214, "2.0.0", "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY STARTTLS AUTH"))]
        case .bdat: return reject(Reply(502, "5.5.1", "Error: BDAT (CHUNKING) not supported"))
        case .starttls: return startTLS()
        case .auth(let mechanism, let initial): return auth(mechanism, initial)
        }
    }

    // MARK: EHLO / HELO

    var extensions: [String] {
        var ext = ["PIPELINING", "SIZE \(configuration.maxMessageSize)", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN"]
        if configuration.startTLSAvailable && !isEncrypted { ext.append("STARTTLS") }
        // RFC 8689 §4.1: offered only where the session is protected by
        // TLS (after STARTTLS, or from the first byte on 465).
        if isEncrypted { ext.append("REQUIRETLS") }
        // RFC 4954 §4 and SPEC: AUTH only inside TLS, never offered in plaintext.
        if configuration.authAvailable && isEncrypted && authenticatedUser == nil { ext.append("AUTH PLAIN LOGIN") }
        return ext
    }

    mutating func greet(_ name: String, extended: Bool) -> [ServerAction] {
        heloName = name
        esmtp = extended
        envelope = nil
        let first = "\(configuration.hostname) Hello \(name) [\(clientAddress)]"
        return [.send(Reply(250, nil, extended ? [first] + extensions : [first]))]
    }

    // MARK: STARTTLS

    mutating func startTLS() -> [ServerAction] {
        guard configuration.startTLSAvailable else { return reject(Reply(502, "5.5.1", "Error: STARTTLS not available")) }
        guard !isEncrypted else { return reject(Reply(503, "5.5.1", "Error: TLS already active")) }
        guard envelope == nil else { return reject(Reply(503, "5.5.1", "Error: MAIL transaction in progress")) }
        // RFC 3207 §5 / CVE-2011-0411: anything the client pipelined after
        // STARTTLS was sent in plaintext and must never be executed inside
        // the TLS session. It is dropped here, before the handshake.
        discardedAtSTARTTLS += input.count
        input.removeAll()
        phase = .waitingForTLS
        return [.send(Reply(220, "2.0.0", "Ready to start TLS")), .startTLS]
    }

    // MARK: AUTH

    mutating func auth(_ mechanismName: String, _ initial: String?) -> [ServerAction] {
        guard configuration.authAvailable else { return reject(Reply(502, "5.5.1", "Error: authentication not enabled")) }
        guard isEncrypted else { return reject(Reply(530, "5.7.0", "Must issue a STARTTLS command first")) }
        guard heloName != nil else { return reject(Reply(503, "5.5.1", "Error: send EHLO first")) }
        guard authenticatedUser == nil else { return reject(Reply(503, "5.5.1", "Error: already authenticated")) }
        guard envelope == nil else { return reject(Reply(503, "5.5.1", "Error: MAIL transaction in progress")) }
        guard let mechanism = SASL.Mechanism(rawValue: mechanismName) else {
            return reject(Reply(504, "5.5.4", "Unrecognized authentication type"))
        }
        switch mechanism {
        case .plain:
            guard let initial else {
                phase = .authPlainResponse
                return [.send(Reply(334, nil, ""))]
            }
            return finishPlain(initial)
        case .login:
            if let initial {
                // RFC 4954 allows the username as an initial response.
                guard let bytes = SASL.decodeBase64(initial), let user = SASL.parseLoginUsername(bytes) else {
                    return reject(Reply(501, "5.5.2", "Cannot decode AUTH parameter"))
                }
                phase = .authLoginPassword(user)
                return [.send(Reply(334, nil, "UGFzc3dvcmQ6"))]
            }
            phase = .authLoginUsername
            return [.send(Reply(334, nil, "VXNlcm5hbWU6"))]
        }
    }

    mutating func finishPlain(_ text: String) -> [ServerAction] {
        if text == "=" { phase = .command; return reject(Reply(535, "5.7.8", "Authentication credentials invalid")) }
        guard let bytes = SASL.decodeBase64(text) else {
            phase = .command
            return reject(Reply(501, "5.5.2", "Cannot decode AUTH parameter"))
        }
        guard let credentials = SASL.parsePlain(bytes) else {
            phase = .command
            return reject(Reply(535, "5.7.8", "Authentication credentials invalid"))
        }
        phase = .waitingForAuthentication
        return [.authenticate(credentials, .plain)]
    }

    mutating func continueAuth(_ line: [UInt8]) -> [ServerAction] {
        lastVerb = "AUTH"
        let text = String(decoding: line, as: UTF8.self).trimmingSpaces
        if text == "*" {
            phase = .command
            return reject(Reply(501, "5.7.0", "Authentication aborted"))
        }
        switch phase {
        case .authPlainResponse:
            return finishPlain(text)
        case .authLoginUsername:
            guard let bytes = SASL.decodeBase64(text), let user = SASL.parseLoginUsername(bytes) else {
                phase = .command
                return reject(Reply(501, "5.5.2", "Cannot decode AUTH response"))
            }
            phase = .authLoginPassword(user)
            return [.send(Reply(334, nil, "UGFzc3dvcmQ6"))]
        case .authLoginPassword(let user):
            guard let password = SASL.decodeBase64(text), !password.isEmpty, password.count <= 1024 else {
                phase = .command
                return reject(Reply(501, "5.5.2", "Cannot decode AUTH response"))
            }
            phase = .waitingForAuthentication
            return [.authenticate(Credentials(username: user, password: password), .login)]
        default:
            return []
        }
    }

    // MARK: MAIL

    mutating func mail(_ path: ReversePath, _ params: [MailParameter]) -> [ServerAction] {
        guard heloName != nil else { return reject(Reply(503, "5.5.1", "Error: send HELO/EHLO first")) }
        guard envelope == nil else { return reject(Reply(503, "5.5.1", "Error: nested MAIL command")) }
        if configuration.requireTLS && !isEncrypted {
            return reject(Reply(530, "5.7.0", "Must issue a STARTTLS command first"))
        }
        if configuration.requireAuth && authenticatedUser == nil {
            return reject(Reply(530, "5.7.0", "Authentication required"))
        }
        if !isEncrypted, let domain = path.mailbox?.domain, matches(domain, configuration.requireTLSSenderDomains) {
            return reject(Reply(530, "5.7.0", "Must issue a STARTTLS command first"))
        }
        var env = Envelope(sender: path, origin: origin())
        for p in params {
            if !esmtp { return reject(Reply(555, "5.5.4", "MAIL parameters need EHLO")) }
            switch (p.keyword, p.value) {
            case ("SIZE", let v?):
                guard let size = Int(v), v.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                    return reject(Reply(501, "5.5.4", "Bad SIZE parameter"))
                }
                if size > configuration.maxMessageSize {
                    return reject(Reply(552, "5.3.4", "Message size exceeds fixed limit"))
                }
            case ("BODY", let v?):
                switch v.uppercased() {
                case "7BIT": env.bodyType = .sevenBit
                case "8BITMIME": env.bodyType = .eightBitMIME
                default: return reject(Reply(501, "5.5.4", "Unsupported BODY type"))
                }
            case ("SMTPUTF8", nil):
                env.smtpUTF8 = true
            case ("RET", let v?):
                guard let r = Envelope.Return(rawValue: v.uppercased()), env.ret == nil else {
                    return reject(Reply(501, "5.5.4", "Bad RET parameter"))
                }
                env.ret = r
            case ("ENVID", let v?):
                // Printable ASCII only (RFC 3461 §4.4): the value goes into DSNs.
                guard env.envelopeID == nil, v.utf8.count <= 100, let id = XText.decodePrintable(v) else {
                    return reject(Reply(501, "5.5.4", "Bad ENVID parameter"))
                }
                env.envelopeID = id
            case ("REQUIRETLS", nil):
                // RFC 8689 §4.1: only on a TLS session, where it was offered.
                guard isEncrypted else {
                    return reject(Reply(530, "5.7.10", "REQUIRETLS needs a TLS session: issue STARTTLS first"))
                }
                guard !env.requireTLS else { return reject(Reply(501, "5.5.4", "REQUIRETLS given twice")) }
                env.requireTLS = true
            case ("AUTH", _):
                continue  // RFC 4954 §5: accepted; relayd does not propagate it
            default:
                return reject(Reply(555, "5.5.4", "Unsupported parameter \(p.keyword)"))
            }
        }
        if path.mailbox?.needsSMTPUTF8 == true && !env.smtpUTF8 {
            return reject(Reply(553, "5.6.7", "Non-ASCII sender address needs SMTPUTF8"))
        }
        envelope = env
        return [.send(Reply(250, "2.1.0", "Ok"))]
    }

    func origin() -> Envelope.Origin {
        Envelope.Origin(clientAddress: clientAddress, heloName: heloName ?? "", esmtp: esmtp,
                        authenticatedUser: authenticatedUser, tlsVersion: tls?.version,
                        tlsCipher: tls?.cipher, tlsBits: tls?.bits)
    }

    func matches(_ domain: String, _ set: Set<String>) -> Bool {
        DNSName.lookupKeys(domain).contains(where: set.contains)
    }

    // MARK: RCPT

    mutating func rcpt(_ mailbox: Mailbox, _ params: [MailParameter]) -> [ServerAction] {
        guard var env = envelope else { return reject(Reply(503, "5.5.1", "Error: need MAIL command")) }
        if env.recipients.count >= configuration.maxRecipients {
            return reject(Reply(452, "4.5.3", "Error: too many recipients"))
        }
        if mailbox.needsSMTPUTF8 && !env.smtpUTF8 {
            return reject(Reply(553, "5.6.7", "Non-ASCII recipient address needs SMTPUTF8"))
        }
        let authorized = authenticatedUser != nil || configuration.clientIsTrusted
        if !authorized {
            // Only mail for the configured relay domains, with a plain local
            // part; everything else is relaying and needs AUTH or a trusted
            // network. This is the open-relay gate.
            guard !mailbox.isAddressLiteral, matches(mailbox.domain, configuration.relayDomains),
                  !mailbox.localPartHasRouting else {
                return reject(Reply(554, "5.7.1", "<\(mailbox)>: Relay access denied"))
            }
        }
        var notify: [Envelope.Notify]?
        var orcpt: String?
        for p in params {
            if !esmtp { return reject(Reply(555, "5.5.4", "RCPT parameters need EHLO")) }
            switch (p.keyword, p.value) {
            case ("NOTIFY", let v?):
                guard notify == nil else { return reject(Reply(501, "5.5.4", "Bad NOTIFY parameter")) }
                var list: [Envelope.Notify] = []
                for word in v.uppercased().split(separator: ",", omittingEmptySubsequences: false) {
                    guard let n = Envelope.Notify(rawValue: String(word)), !list.contains(n) else {
                        return reject(Reply(501, "5.5.4", "Bad NOTIFY parameter"))
                    }
                    list.append(n)
                }
                if list.contains(.never) && list.count > 1 { return reject(Reply(501, "5.5.4", "NOTIFY=NEVER stands alone")) }
                notify = list
            case ("ORCPT", let v?):
                // addr-type is an atom, the address printable ASCII once
                // decoded: both are written into DSN header fields, where a
                // decoded CR LF would add lines of the client's choosing.
                guard orcpt == nil, v.utf8.count <= 500, let semi = v.firstIndex(of: ";"),
                      !v[..<semi].isEmpty, v[..<semi].unicodeScalars.allSatisfy({ $0.isASCII && Mailbox.isAtext($0) }),
                      let decoded = XText.decodePrintable(String(v[v.index(after: semi)...])), !decoded.isEmpty else {
                    return reject(Reply(501, "5.5.4", "Bad ORCPT parameter"))
                }
                orcpt = String(v[..<semi]) + ";" + decoded
            default:
                return reject(Reply(555, "5.5.4", "Unsupported parameter \(p.keyword)"))
            }
        }
        env.recipients.append(Envelope.Recipient(mailbox: mailbox, notify: notify, originalRecipient: orcpt))
        envelope = env
        return [.send(Reply(250, "2.1.5", "Ok"))]
    }

    // MARK: DATA

    mutating func data() -> [ServerAction] {
        guard let env = envelope else { return refuseData(Reply(503, "5.5.1", "Error: need MAIL command")) }
        guard !env.recipients.isEmpty else { return refuseData(Reply(554, "5.5.1", "Error: no valid recipients")) }
        phase = .data
        dataReader = DataReader(maxSize: configuration.maxMessageSize)
        return [.send(Reply(354, nil, "End data with <CR><LF>.<CR><LF>"))]
    }

    /// A refused DATA ends the transaction, as RSET does, so no line of a
    /// body the client sent anyway can add a recipient to it. Whatever is
    /// already buffered behind the DATA is that body (RFC 2920 §3.1: DATA
    /// ends a pipelined group) and is read to its end marker and dropped,
    /// the rule STARTTLS follows for the same reason. With nothing
    /// buffered, the client may have waited for the reply as it should;
    /// if its next line is no command, it did not, and that line starts
    /// the body. A body trickled in slower than it is read and starting
    /// with a complete MAIL/RCPT/DATA is indistinguishable from a client
    /// that waited; ending the transaction is what still holds then.
    mutating func refuseData(_ reply: Reply) -> [ServerAction] {
        envelope = nil
        let actions = reject(reply)
        if phase == .closed { return actions }
        if input.isEmpty {
            bodyMayFollowRefusedDATA = true
            return actions
        }
        phase = .discardingRefusedData
        dataReader = DataReader(maxSize: 0, maxLineLength: Int.max)
        discardedBytes = 0
        return actions + continueDiscarding(wholeBuffer: true)
    }

    /// The first line after a refused DATA was not a command: it and what
    /// follows are the body, discarded through its end marker.
    mutating func discardBodyStartingWith(_ line: [UInt8]) -> [ServerAction] {
        phase = .discardingRefusedData
        dataReader = DataReader(maxSize: 0, maxLineLength: Int.max)
        discardedBytes = 0
        input.insert(contentsOf: line + [13, 10], at: 0)
        return continueDiscarding()
    }

    /// Feeds buffered input to the discarding reader. `wholeBuffer`: what
    /// arrived together with the refused DATA is dropped even past the end
    /// marker, since none of it was sent after the client saw the reply.
    mutating func continueDiscarding(wholeBuffer: Bool = false) -> [ServerAction] {
        guard var reader = dataReader else { phase = .command; return [] }
        let (consumed, outcome) = reader.consume(input[...])
        dataReader = reader
        let dropped = wholeBuffer ? input.count : consumed
        input.removeFirst(dropped)
        discardedBytes += dropped
        switch outcome {
        case .needMore:
            return []
        case .failed(.bareLineEnding):
            dataReader = nil
            lastVerb = "DATA"
            return [.discarded(bytes: discardedBytes, reason: .pipelinedAfterRefusedDATA)]
                + closeWith(Reply(554, "5.5.2", "Error: bare CR or LF in message data; closing connection"))
        case .complete, .failed:
            dataReader = nil
            phase = .command
            return [.discarded(bytes: discardedBytes, reason: .pipelinedAfterRefusedDATA)]
        }
    }

    mutating func finishData(body: [UInt8]) -> [ServerAction] {
        guard let env = envelope else { phase = .command; return [] }
        lastVerb = "DATA"
        // The Received field the caller prepends when storing counts too, as
        // in Postfix's cleanup: a message accepted here is within the limit
        // the queue runner applies to the stored message, never bounced by it.
        let received = HopCount.receivedFields(in: body)
        if received + 1 > configuration.maxHops {
            envelope = nil
            phase = .command
            return reject(Reply(554, "5.4.6", "Error: too many hops (\(received) Received headers plus ours exceed \(configuration.maxHops)); mail loop?"))
        }
        phase = .waitingForStore
        return [.store(env, body: body)]
    }

    mutating func dataFailed(_ failure: DataReader.Failure) -> [ServerAction] {
        lastVerb = "DATA"
        envelope = nil
        phase = .command
        switch failure {
        case .bareLineEnding:
            // Nothing after the bad byte can be trusted to be a command.
            return closeWith(Reply(554, "5.5.2", "Error: bare CR or LF in message data; closing connection"))
        case .lineTooLong:
            return reject(Reply(554, "5.6.0", "Error: message line longer than 1000 octets (RFC 5321 4.5.3.1.6)"))
        case .tooLarge:
            return reject(Reply(552, "5.3.4", "Error: message size exceeds fixed limit"))
        case .nulByte:
            return reject(Reply(554, "5.6.0", "Error: message content contains a NUL byte"))
        }
    }
}
