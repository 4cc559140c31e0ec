import Testing
@testable import RelayModel
@testable import RelaySMTP
import RelayTestSupport

/// The listeners the session tests talk to (named so as not to shadow
/// RelayCore.Listener).
enum SessionListener: String, Sendable, CustomTestStringConvertible {
    /// Port 25 relaying for example.org.
    case mx
    /// Port 587: STARTTLS, then AUTH, before MAIL.
    case submission
    case mxWith100ByteLimit
    case mxWith2Recipients
    case mxRequiringTLSFromBank

    var testDescription: String { rawValue }

    var configuration: ServerSessionConfiguration {
        var cfg = ServerSessionConfiguration(hostname: "relay.test", relayDomains: ["example.org"])
        switch self {
        case .mx: break
        case .submission:
            cfg = ServerSessionConfiguration(hostname: "relay.test", requireTLS: true, requireAuth: true, authAvailable: true)
        case .mxWith100ByteLimit: cfg.maxMessageSize = 100
        case .mxWith2Recipients: cfg.maxRecipients = 2
        case .mxRequiringTLSFromBank: cfg.requireTLSSenderDomains = ["bank.example", ".health.example"]
        }
        return cfg
    }
}

@Suite struct ServerSessionTests {
    let mx = SessionListener.mx.configuration
    let submission = SessionListener.submission.configuration

    @Test func happyPathQueuesExactBody() {
        var h = SessionHarness(mx)
        h.send("EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
        h.send("Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\nQUIT\r\n")
        #expect(h.codes == [220, 250, 250, 250, 354, 250, 221])
        #expect(h.stored.count == 1)
        #expect(String(decoding: h.stored[0].1, as: UTF8.self) == "Subject: hi\r\n\r\n.leading dot\r\nbody\r\n")
        #expect(h.stored[0].0.recipients.map(\.mailbox.description) == ["u@example.org"])
        #expect(h.finalReplies[5].hasPrefix("250 2.0.0 Ok: queued as Q1"))
        #expect(h.closed)
    }

    /// AUTH and MAIL before STARTTLS: see RepliesToBadInput.
    @Test func ehloAdvertisesExtensionsButNoAuthBeforeTLS() {
        var h = SessionHarness(submission)
        h.send("EHLO c\r\n")
        let ehlo = h.replies.joined(separator: "\n")
        for ext in ["PIPELINING", "SIZE 36700160", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN", "STARTTLS"] {
            #expect(ehlo.contains(ext), "\(ext)")
        }
        #expect(!ehlo.contains("AUTH"))
    }

    @Test func submissionFlowWithSTARTTLSAndAuthPlain() {
        var h = SessionHarness(submission)
        h.send("EHLO c\r\nSTARTTLS\r\n")
        #expect(h.tlsStarted == 1)
        h.send("MAIL FROM:<a@b.test>\r\n")
        #expect(h.finalReplies.last == "503 5.5.1 Error: send HELO/EHLO first", "EHLO state must reset after TLS")
        h.send("EHLO c\r\n")
        #expect(h.replies.contains("250 AUTH PLAIN LOGIN"), "\(h.replies)")
        #expect(!h.replies.suffix(8).contains("250-STARTTLS"))
        h.send("MAIL FROM:<a@b.test>\r\n")
        #expect(h.finalReplies.last == "530 5.7.0 Authentication required")
        // "\0alice\0secret"
        h.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
        #expect(h.finalReplies.last == "235 2.7.0 Authentication successful")
        h.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<anyone@far.example>\r\nDATA\r\nhi\r\n.\r\n")
        #expect(h.stored.count == 1)
        #expect(h.stored[0].0.origin.authenticatedUser == "alice")
        #expect(h.stored[0].0.origin.tlsVersion == "TLSv1.3")
    }

    @Test func authLoginAndFailuresCloseAfterLimit() {
        var h = SessionHarness(submission)
        h.send("EHLO c\r\nSTARTTLS\r\n")
        h.send("EHLO c\r\nAUTH LOGIN\r\n")
        #expect(h.finalReplies.last == "334 VXNlcm5hbWU6")
        h.send("YWxpY2U=\r\n")
        #expect(h.finalReplies.last == "334 UGFzc3dvcmQ6")
        h.send("d3Jvbmc=\r\n")  // "wrong"
        #expect(h.finalReplies.last == "535 5.7.8 Authentication credentials invalid")
        h.send("AUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\n")
        #expect(h.closed)
        #expect(h.finalReplies.last!.hasPrefix("421 4.7.0"))
        #expect(h.authAttempts.count == 3)
    }

    /// Each foreign recipient on its own: RepliesToBadInput. Here, all in
    /// one transaction, and what is left of it.
    @Test func relayDomainsMatchExactlyAndRefusedRecipientsAreLeftOut() {
        var h = SessionHarness(mx)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\n")
        for (_, rcpt) in RepliesToBadInput.foreignRecipients { h.send("RCPT TO:\(rcpt)\r\n") }
        h.send("RCPT TO:<u@example.org>\r\nRCPT TO:<u@sub.example.org>\r\n")
        #expect(h.finalReplies.suffix(2) == ["250 2.1.5 Ok", "554 5.7.1 <u@sub.example.org>: Relay access denied"])
        h.send("DATA\r\nx\r\n.\r\n")
        #expect(h.stored.first?.0.recipients.count == 1)
    }

    @Test func trustedNetworkMayRelay() {
        var cfg = mx
        cfg.clientIsTrusted = true
        var h = SessionHarness(cfg)
        h.send("HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.example>\r\n")
        #expect(h.codes.last == 250)
    }

    @Test func startTLSInjectionIsDiscarded() {
        var h = SessionHarness(mx)
        h.send("EHLO c\r\n")
        let before = h.finalReplies.count
        h.send("STARTTLS\r\nNOOP\r\nMAIL FROM:<evil@x.test>\r\n")
        #expect(h.finalReplies.count == before + 1, "only the 220 for STARTTLS: \(h.finalReplies)")
        #expect(h.finalReplies.last == "220 2.0.0 Ready to start TLS")
        #expect(h.session.discardedAtSTARTTLS == Array("NOOP\r\nMAIL FROM:<evil@x.test>\r\n".utf8).count)
        // Inside TLS the injected command never runs: a NOOP now is the first.
        h.send("NOOP\r\n")
        #expect(h.finalReplies.count == before + 2)
    }

    static let separators: [Separator] = ["\n.\r\n", "\r\n.\n", "\r.\r\n", "\r\n.\r", "\n.\n", "\r\n\r.\r\n", "\n\r\n.\r\n"]
        .map { Separator(bytes: $0) }

    @Test("a bare CR or LF around the end of DATA is refused and never yields a second message",
          arguments: separators)
    func smugglingVariantsNeverYieldTwoMessages(_ separator: Separator) {
        let smuggled = "MAIL FROM:<evil@x.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nsmuggled\r\n.\r\n"
        var h = SessionHarness(mx)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nfirst" + separator.bytes + smuggled + "tail\r\n.\r\n")
        #expect(h.stored.count <= 1, "separator \(separator.testDescription)")
        #expect(!h.stored.contains { $0.0.sender.description == "evil@x.test" }, "\(separator.testDescription)")
        #expect(h.stored.isEmpty, "a message with bare CR/LF was accepted: \(separator.testDescription)")
        #expect(h.closed)
        #expect(h.finalReplies.last!.hasPrefix("554 5.5.2"), "\(h.finalReplies.last!)")
    }

    struct Separator: CustomTestStringConvertible, Sendable {
        let bytes: String
        var testDescription: String { bytes.debugDescription }
    }

    /// The 552 replies themselves: RepliesToBadInput.
    @Test func oversizeMessageLeavesTheSessionInStep() {
        var h = SessionHarness(SessionListener.mxWith100ByteLimit.configuration)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test> SIZE=101\r\n")
        h.send("MAIL FROM:<a@b.test> SIZE=50\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
        h.send(String(repeating: "0123456789\r\n", count: 20) + ".\r\nNOOP\r\n")
        #expect(h.finalReplies.suffix(2) == ["552 5.3.4 Error: message size exceeds fixed limit", "250 2.0.0 Ok"])
        #expect(h.stored.isEmpty)
    }

    /// The 500 replies themselves: RepliesToBadInput.
    @Test func overlongCommandLineResynchronisesAtTheNextLine() {
        var h = SessionHarness(mx)
        h.send("NOOP " + String(repeating: "x", count: 600) + "\r\n")
        h.send(String(repeating: "y", count: 5000))
        h.send(String(repeating: "y", count: 5000) + "\r\nNOOP\r\n")
        #expect(h.finalReplies.last == "250 2.0.0 Ok", "resynchronises at the next line")
    }

    @Test func dsnAndUTF8ParametersAreKept() {
        var h = SessionHarness(mx)
        h.send("EHLO c\r\nMAIL FROM:<ü@b.test> SMTPUTF8 BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef\r\n")
        h.send("RCPT TO:<u@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40example.org\r\nDATA\r\nx\r\n.\r\n")
        let env = h.stored.first?.0
        #expect(env?.smtpUTF8 == true)
        #expect(env?.bodyType == .eightBitMIME)
        #expect(env?.ret == .headers)
        #expect(env?.envelopeID == "abc+def")
        #expect(env?.recipients.first?.notify == [.success, .failure])
        #expect(env?.recipients.first?.originalRecipient == "rfc822;u@example.org")
    }

    @Test func tooManyErrorsCloses() {
        var h = SessionHarness(mx)
        for _ in 0..<10 { h.send("FROB\r\n") }
        #expect(h.closed)
        #expect(h.finalReplies.last == "421 4.7.0 relay.test Error: too many errors")
        h.send("NOOP\r\n")
        #expect(h.finalReplies.last == "421 4.7.0 relay.test Error: too many errors", "nothing after close")
    }

    /// The sender domains that must use TLS get 530: RepliesToBadInput.
    @Test func aPlainSenderDomainEntryMatchesOnlyItself() {
        var h = SessionHarness(SessionListener.mxRequiringTLSFromBank.configuration)
        h.send("EHLO c\r\nMAIL FROM:<x@mail.bank.example>\r\n")
        #expect(h.finalReplies.last == "250 2.1.0 Ok", "a plain entry matches only itself, as in Postfix")
    }

    // Each script is a list of client turns; a turn after STARTTLS is
    // only sent once the handshake is done, as a real client would.
    static let scripts: [[String]] = [
        ["EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n.x\r\n..\r\nend\r\n.\r\nRSET\r\nQUIT\r\n"],
        ["EHLO c\r\nSTARTTLS\r\n",
         "EHLO again\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@far.example>\r\nDATA\r\nhi\r\n.\r\n"],
        ["HELO c\nMAIL FROM:<a@b.test>\nRCPT TO:<u@example.org>\nDATA\nbad\n.\n"],
        ["EHLO c\r\nAUTH PLAIN\r\n" + String(repeating: "A", count: 3000) + "\r\nNOOP\r\n\0\r\nQUIT\r\n"],
        ["EHLO c\r\nSTARTTLS\r\n", "EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n\r\n.\r\n"],
    ]

    /// The same conversation whole and one byte at a time must give
    /// byte-identical replies and the same queued messages.
    @Test(arguments: [SessionListener.mx, .submission], scripts.indices)
    func byteAtATimeMatchesWholeInput(_ listener: SessionListener, _ script: Int) {
        var whole = SessionHarness(listener.configuration)
        var bytewise = SessionHarness(listener.configuration)
        for turn in Self.scripts[script] {
            whole.send(turn)
            bytewise.sendOneByteAtATime(turn)
        }
        #expect(whole.stored.map(\.1) == bytewise.stored.map(\.1))
        if !whole.discarded.isEmpty {
            // The one deliberate difference: what arrives in the same
            // segment as a refused DATA is dropped whole, while a
            // byte-wise client is read line by line (see refuseData).
            return
        }
        #expect(whole.replies == bytewise.replies, "\(Self.scripts[script].debugDescription)")
        #expect(whole.stored.map(\.1) == bytewise.stored.map(\.1))
        #expect(whole.closed == bytewise.closed)
    }

    @Test func theScriptedSubmissionByteAtATimeReallyQueues() {
        var h = SessionHarness(submission)
        for turn in Self.scripts[1] { h.sendOneByteAtATime(turn) }
        #expect(h.stored.count == 1, "the scripted submission really queues")
    }

    @Test func pipelinedGroupRepliesInOrder() {
        var h = SessionHarness(mx)
        h.send("EHLO c\r\n")
        h.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nRCPT TO:<v@far.example>\r\nRCPT TO:<w@example.org>\r\nDATA\r\n")
        #expect(h.codes.suffix(5) == [250, 250, 554, 250, 354])
    }
}

// MARK: SPEC: every bad input gets a clear answer

/// Where in the dialogue the bad input arrives.
enum DialoguePhase: String, Sendable {
    case command, data, auth, storage
}

/// A row of the bad-input table: on this listener, after these client
/// turns, this input gets this reply code and enhanced status (and, where
/// the text is pinned, this text).
struct BadInput: CustomTestStringConvertible, Sendable {
    let phase: DialoguePhase
    let what: String
    let listener: SessionListener
    let before: [String]
    let input: [UInt8]
    let store: StoreResult?
    let reply: String
    let text: String?

    init(_ phase: DialoguePhase, _ what: String, on listener: SessionListener = .mx, after before: [String],
         send input: String, store: StoreResult? = nil, reply: String, _ text: String? = nil) {
        self.init(phase, what, on: listener, after: before, sendBytes: Array(input.utf8), store: store, reply: reply, text)
    }

    init(_ phase: DialoguePhase, _ what: String, on listener: SessionListener = .mx, after before: [String],
         sendBytes input: [UInt8], store: StoreResult? = nil, reply: String, _ text: String? = nil) {
        self.phase = phase
        self.what = what
        self.listener = listener
        self.before = before
        self.input = input
        self.store = store
        self.reply = reply
        self.text = text
    }

    var testDescription: String { "\(phase.rawValue): \(what) → \(reply)" }
}

@Suite struct RepliesToBadInput {
    static let greeted = ["EHLO c\r\n"]
    static let inTransaction = ["EHLO c\r\nMAIL FROM:<a@b.test>\r\n"]
    static let inNullSenderTransaction = ["EHLO c\r\nMAIL FROM:<>\r\n"]
    static let inData = ["EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n"]
    static let afterTLS = ["EHLO c\r\nSTARTTLS\r\n", "EHLO c\r\n"]
    static let message = "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nx\r\n.\r\n"

    /// Never an open relay: each of these is refused on port 25.
    static let foreignRecipients: [(String, String)] = [
        ("a foreign domain", "<victim@far.example>"),
        ("a %-hack through a relay domain", "<u%far.example@example.org>"),
        ("a bang path through a relay domain", "<far.example!u@example.org>"),
        ("a quoted local part holding a foreign address", "<\"u@far.example\"@example.org>"),
        ("a source route through a relay domain", "<@example.org:u@far.example>"),
        ("an address literal", "<u@[192.0.2.1]>"),
        ("a foreign domain that starts with a relay domain", "<u@example.org.far.example>"),
    ]

    static let rows: [BadInput] = [
        // Commands out of order
        .init(.command, "MAIL before EHLO", after: [], send: "MAIL FROM:<a@b.test>\r\n",
              reply: "503 5.5.1", "Error: send HELO/EHLO first"),
        .init(.command, "RCPT before MAIL", after: greeted, send: "RCPT TO:<u@example.org>\r\n",
              reply: "503 5.5.1", "Error: need MAIL command"),
        .init(.command, "DATA before MAIL", after: greeted, send: "DATA\r\n",
              reply: "503 5.5.1", "Error: need MAIL command"),
        .init(.command, "a second MAIL in a transaction", after: inTransaction, send: "MAIL FROM:<a@b.test>\r\n",
              reply: "503 5.5.1", "Error: nested MAIL command"),
        .init(.command, "DATA without a valid recipient", after: inTransaction, send: "DATA\r\n",
              reply: "554 5.5.1", "Error: no valid recipients"),
        .init(.command, "BDAT (no CHUNKING)", after: inTransaction, send: "BDAT 10 LAST\r\n", reply: "502 5.5.1"),
        .init(.command, "an unknown command", after: inTransaction, send: "FROB\r\n", reply: "500 5.5.2"),
        // Malformed commands
        .init(.command, "a command line over 512 octets", after: [], send: "NOOP " + String(repeating: "x", count: 600) + "\r\n",
              reply: "500 5.5.2", "Line too long"),
        .init(.command, "5000 octets and no line end yet", after: [], send: String(repeating: "y", count: 5000),
              reply: "500 5.5.2", "Line too long"),
        .init(.command, "a NUL in a command", after: [], sendBytes: Array("EHLO c\0evil\r\n".utf8),
              reply: "500 5.5.2", "Error: invalid characters in command"),
        .init(.command, "non-ASCII bytes in a command", after: [], sendBytes: [0x4d, 0x41, 0x49, 0x4c, 0xff, 0xfe, 13, 10],
              reply: "500 5.5.2", "Error: invalid characters in command"),
        // Bad paths and parameters
        .init(.command, "MAIL FROM without angle brackets", after: greeted, send: "MAIL FROM:a@b.test\r\n", reply: "501 5.1.7"),
        .init(.command, "MAIL FROM with an empty label", after: greeted, send: "MAIL FROM:<a..b@b.test>\r\n", reply: "501 5.1.7"),
        .init(.command, "RCPT TO:<>", after: inNullSenderTransaction, send: "RCPT TO:<>\r\n", reply: "501 5.1.3"),
        .init(.command, "RCPT TO a malformed domain", after: inNullSenderTransaction, send: "RCPT TO:<u@-bad-.example>\r\n",
              reply: "501 5.1.3"),
        .init(.command, "an unknown RCPT parameter", after: inNullSenderTransaction, send: "RCPT TO:<u@example.org> FOO=bar\r\n",
              reply: "555 5.5.4", "Unsupported parameter FOO"),
        .init(.command, "a non-ASCII recipient without SMTPUTF8", after: inNullSenderTransaction, send: "RCPT TO:<ü@example.org>\r\n",
              reply: "553 5.6.7", "Non-ASCII recipient address needs SMTPUTF8"),
        // Limits
        .init(.command, "MAIL with SIZE over the limit", on: .mxWith100ByteLimit, after: greeted,
              send: "MAIL FROM:<a@b.test> SIZE=101\r\n", reply: "552 5.3.4", "Message size exceeds fixed limit"),
        .init(.command, "a recipient over the limit", on: .mxWith2Recipients,
              after: inTransaction + [String(repeating: "RCPT TO:<u@example.org>\r\n", count: 2)],
              send: "RCPT TO:<u@example.org>\r\n", reply: "452 4.5.3", "Error: too many recipients"),
        // Policy
        .init(.command, "MAIL before STARTTLS on submission", on: .submission, after: greeted, send: "MAIL FROM:<a@b.test>\r\n",
              reply: "530 5.7.0", "Must issue a STARTTLS command first"),
        .init(.command, "MAIL after STARTTLS before a new EHLO", on: .submission, after: ["EHLO c\r\nSTARTTLS\r\n"],
              send: "MAIL FROM:<a@b.test>\r\n", reply: "503 5.5.1", "Error: send HELO/EHLO first"),
        .init(.command, "MAIL before AUTH on submission", on: .submission, after: afterTLS, send: "MAIL FROM:<a@b.test>\r\n",
              reply: "530 5.7.0", "Authentication required"),
        .init(.command, "MAIL from a sender domain that must use TLS", on: .mxRequiringTLSFromBank, after: greeted,
              send: "MAIL FROM:<x@bank.example>\r\n", reply: "530 5.7.0", "Must issue a STARTTLS command first"),
        .init(.command, "MAIL from under a .parent sender domain that must use TLS", on: .mxRequiringTLSFromBank, after: greeted,
              send: "MAIL FROM:<x@mail.health.example>\r\n", reply: "530 5.7.0", "Must issue a STARTTLS command first"),
    ] + foreignRecipients.map { what, rcpt in
        .init(.command, "RCPT to \(what)", after: inTransaction, send: "RCPT TO:\(rcpt)\r\n", reply: "554 5.7.1")
    } + [
        // DATA
        .init(.data, "a message over the size limit", on: .mxWith100ByteLimit,
              after: ["EHLO c\r\nMAIL FROM:<a@b.test> SIZE=50\r\nRCPT TO:<u@example.org>\r\nDATA\r\n"],
              send: String(repeating: "0123456789\r\n", count: 20) + ".\r\n",
              reply: "552 5.3.4", "Error: message size exceeds fixed limit"),
        .init(.data, "a line over 1000 octets", after: inData, send: String(repeating: "z", count: 1001) + "\r\n.\r\n",
              reply: "554 5.6.0", "Error: message line longer than 1000 octets (RFC 5321 4.5.3.1.6)"),
        // AUTH
        .init(.auth, "AUTH before STARTTLS", on: .submission, after: greeted, send: "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
              reply: "530 5.7.0", "Must issue a STARTTLS command first"),
        .init(.auth, "AUTH PLAIN with bad base64", on: .submission, after: afterTLS, send: "AUTH PLAIN !!!notbase64\r\n",
              reply: "501 5.5.2", "Cannot decode AUTH parameter"),
        .init(.auth, "AUTH PLAIN without a password", on: .submission, after: afterTLS, send: "AUTH PLAIN AGFsaWNl\r\n",
              reply: "535 5.7.8", "Authentication credentials invalid"),
        .init(.auth, "AUTH PLAIN for another identity (authzid bob, authcid alice)", on: .submission, after: afterTLS,
              send: "AUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\n", reply: "535 5.7.8", "Authentication credentials invalid"),
        .init(.auth, "an unknown mechanism", on: .submission, after: afterTLS, send: "AUTH CRAM-MD5\r\n",
              reply: "504 5.5.4", "Unrecognized authentication type"),
        .init(.auth, "AUTH LOGIN cancelled with *", on: .submission, after: afterTLS, send: "AUTH LOGIN\r\n*\r\n",
              reply: "501 5.7.0", "Authentication aborted"),
        // The spool fails after DATA
        .init(.storage, "the spool cannot write (EIO)", after: [], send: message, store: .failed(reason: "EIO"), reply: "451 4.3.0"),
        .init(.storage, "the disk is full", after: [], send: message, store: .insufficientSpace, reply: "452 4.3.1"),
    ]

    @Test(arguments: rows)
    func reply(_ row: BadInput) {
        var h = SessionHarness(row.listener.configuration)
        h.storeResult = row.store
        for turn in row.before { h.send(turn) }
        h.sendBytes(row.input)
        let last = h.finalReplies.last ?? "<no reply>"
        if let text = row.text {
            #expect(last == "\(row.reply) \(text)")
        } else {
            #expect(last.hasPrefix("\(row.reply) "), "\(last)")
        }
        #expect(!h.closed, "a bad input is answered, not hung up on")
        switch row.phase {
        case .data: #expect(h.stored.isEmpty, "nothing of a refused message is queued")
        case .auth: #expect(h.authAttempts.isEmpty, "the credentials never reached the verifier")
        case .command, .storage: break
        }
    }
}

/// ORCPT and ENVID are written into DSN header fields: a value that decodes
/// to anything but printable ASCII (issue 18: CR LF added a line of the
/// client's choosing to the bounce) is refused with 501 5.5.4.
@Suite struct DSNParameterTests {
    static let mx = ServerSessionConfiguration(hostname: "relay.test", relayDomains: ["example.org"])

    @Test(arguments: [
        "rfc822;x+0D+0A+0D+0AInjected-Line:+20yes",  // CR LF
        "rfc822;x+0AInjected-Line:+20yes",            // bare LF
        "rfc822;x+0DInjected-Line:+20yes",            // bare CR
        "rfc822;x+00y@example.org",                   // NUL
        "rfc822;x+09y@example.org",                   // TAB
        "rfc822;x+7Fy@example.org",                   // DEL
        "rfc822;x+C2+85Injected-Line:+20yes",         // NEL, as UTF-8
        "rfc822;+C3+A9@example.org",                  // non-ASCII
        "rfc822\u{e9};u+40example.org",              // addr-type not an atom
        "(rfc822);u+40example.org",
        ";u+40example.org",
    ])
    func hostileORCPTIsRefused(_ value: String) {
        var h = SessionHarness(Self.mx)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org> ORCPT=\(value)\r\n")
        #expect(h.finalReplies.last == "501 5.5.4 Bad ORCPT parameter")
        h.send("DATA\r\nx\r\n.\r\n")
        #expect(h.stored.isEmpty)
    }

    @Test(arguments: [
        "a+0D+0AInjected-Line:+20yes",
        "a+0Ab",
        "a+00b",
        "a+09b",
        "a+C3+A9",
    ])
    func hostileENVIDIsRefused(_ value: String) {
        var h = SessionHarness(Self.mx)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test> ENVID=\(value)\r\n")
        #expect(h.finalReplies.last == "501 5.5.4 Bad ENVID parameter")
    }

    @Test(arguments: [
        ("rfc822;u+40example.org", "rfc822;u@example.org"),
        ("rfc822;+22odd+20user+22@example.org", "rfc822;\"odd user\"@example.org"),
        ("utf-8;u+40example.org", "utf-8;u@example.org"),
    ])
    func printableORCPTIsKept(_ value: String, _ kept: String) {
        var h = SessionHarness(Self.mx)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test> ENVID=id+20with+20space\r\n")
        h.send("RCPT TO:<u@example.org> ORCPT=\(value)\r\nDATA\r\nx\r\n.\r\n")
        #expect(h.stored.first?.0.recipients.first?.originalRecipient == kept)
        #expect(h.stored.first?.0.envelopeID == "id with space")
    }
}
