// Hostile input the inbound session must refuse without losing step: NUL
// bytes in content, message bodies pipelined behind a refused DATA, and the
// deadlines that cut off clients trickling a command a byte at a time. Each
// case runs with the input in one segment and one byte at a time.
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayPolicy
@testable import RelayLog
@testable import RelayTLS
@testable import RelayDNS
@testable import RelayAuth
@testable import RelayIO
@testable import RelayQueue
@testable import RelayConfig
@testable import RelayDelivery
@testable import RelayCore
import RelayTestSupport

private let mx = ServerSessionConfiguration(hostname: "relay.test", relayDomains: ["example.org"])
private let submission = ServerSessionConfiguration(hostname: "relay.test", requireTLS: true, requireAuth: true,
                                                    authAvailable: true)

enum Segmentation: String, CaseIterable, CustomTestStringConvertible {
    case oneSegment, byteAtATime
    var testDescription: String { rawValue }

    func feed(_ h: inout SessionHarness, _ text: String) {
        switch self {
        case .oneSegment: h.send(text)
        case .byteAtATime: h.sendOneByteAtATime(text)
        }
    }

    func feed(_ h: inout SessionHarness, _ bytes: [UInt8]) {
        switch self {
        case .oneSegment: h.sendBytes(bytes)
        case .byteAtATime: for b in bytes { h.sendBytes([b]) }
        }
    }
}

@Suite struct NULInContent {
    static let bodies: [(String, [UInt8])] = [
        ("smuggled end marker CR LF NUL . CR LF",
         Array("Subject: a\r\n\r\nfirst\r\n".utf8) + [0] + Array(".\r\nMAIL FROM:<ceo@corp.test>\r\n".utf8)),
        ("NUL inside a line", Array("Subject: b\r\n\r\nab".utf8) + [0] + Array("cd\r\n".utf8)),
        ("NUL as the first byte", [0] + Array("Subject: c\r\n\r\nx\r\n".utf8)),
    ]

    @Test("a message with a NUL byte is refused with 554 5.6.0, nothing is queued, the session stays in step",
          arguments: bodies.map(\.0), Segmentation.allCases)
    func refused(_ name: String, _ segmentation: Segmentation) {
        let body = Self.bodies.first { $0.0 == name }!.1
        var h = SessionHarness(mx)
        segmentation.feed(&h, "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
        segmentation.feed(&h, body + Array(".\r\n".utf8))
        #expect(h.finalReplies.last == "554 5.6.0 Error: message content contains a NUL byte")
        #expect(h.stored.isEmpty)
        #expect(!h.closed)
        // The transaction is over and the next one works.
        segmentation.feed(&h, "MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nclean\r\n.\r\n")
        #expect(h.stored.count == 1)
        #expect(h.stored.first.map { String(decoding: $0.1, as: UTF8.self) } == "clean\r\n")
    }

    @Test func dataReaderReportsNULOnlyAtTheEndMarker() {
        var reader = DataReader(maxSize: 1000)
        let (consumed, outcome) = reader.consume(ArraySlice([120, 0, 13, 10, 46, 13, 10, 81]))
        #expect(outcome == .failed(.nulByte))
        #expect(consumed == 7, "the byte after the end marker belongs to the next command")
    }
}

@Suite struct PipelinedAfterRefusedDATA {
    /// The attack: every RCPT refused, DATA refused, and the body
    /// behind it holds a RCPT for an accepted domain, a DATA and a message.
    static let attack = "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.example>\r\nDATA\r\n"
        + "RCPT TO:<victim@example.org>\r\nDATA\r\nSubject: injected\r\n\r\nowned\r\n.\r\n"

    @Test("a refused DATA runs nothing that followed it and queues nothing", arguments: Segmentation.allCases)
    func nothingRuns(_ segmentation: Segmentation) {
        var h = SessionHarness(mx)
        segmentation.feed(&h, Self.attack)
        #expect(h.stored.isEmpty)
        #expect(!h.replies.contains { $0.hasPrefix("354") }, "a DATA line of the body was answered 354: \(h.replies)")
        #expect(!h.replies.contains("250 2.1.5 Ok"), "a RCPT line of the body joined a transaction")
        #expect(h.finalReplies.contains("554 5.5.1 Error: no valid recipients"))
        // After the body the session is back in command mode and clean.
        segmentation.feed(&h, "MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nok\r\n.\r\n")
        #expect(h.stored.count == 1)
        #expect(h.stored.first?.0.recipients.map(\.mailbox.description) == ["u@example.org"])
    }

    @Test func inOneSegmentEverythingBehindTheDATAIsDiscardedAndReported() {
        var h = SessionHarness(mx)
        h.send(Self.attack + "NOOP\r\n")
        #expect(h.codes == [220, 250, 250, 554, 554], "\(h.replies)")
        let behind = Self.attack.utf8.count - Self.attack.range(of: "DATA\r\n")!.upperBound.utf16Offset(in: Self.attack)
        #expect(h.discarded == [behind + "NOOP\r\n".utf8.count])
    }

    @Test("a body that starts with a header line is discarded to its end marker even byte by byte")
    func headerFirstBodyByteByByte() {
        var h = SessionHarness(mx)
        h.sendOneByteAtATime("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.example>\r\nDATA\r\n"
            + "Subject: hi\r\nMAIL FROM:<ceo@corp.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nx\r\n.\r\n")
        #expect(h.codes == [220, 250, 250, 554, 554], "\(h.replies)")
        #expect(h.stored.isEmpty)
        #expect(h.discarded.count == 1)
    }

    @Test("a client that waits for the refusal carries on normally")
    func waitingClient() {
        var h = SessionHarness(mx)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.example>\r\n")
        h.send("DATA\r\n")
        h.send("RSET\r\n")
        #expect(h.finalReplies.last == "250 2.0.0 Ok")
        #expect(h.discarded.isEmpty)
    }

    @Test("a refused DATA ends the transaction as RSET does")
    func refusedDataEndsTransaction() {
        var h = SessionHarness(mx)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.example>\r\n")
        h.send("DATA\r\n")
        h.send("RCPT TO:<victim@example.org>\r\n")
        #expect(h.finalReplies.last == "503 5.5.1 Error: need MAIL command")
    }

    @Test("DATA without MAIL, pipelined with a body, on authenticated submission")
    func dataWithoutMailOnSubmission() {
        var h = SessionHarness(submission)
        h.send("EHLO c\r\nSTARTTLS\r\n")
        h.send("EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
        h.send("DATA\r\nMAIL FROM:<alice@corp.test>\r\nRCPT TO:<victim@far.example>\r\nDATA\r\nevil\r\n.\r\n")
        #expect(h.stored.isEmpty)
        #expect(h.finalReplies.last == "503 5.5.1 Error: need MAIL command")
    }

    @Test("a bare LF in a discarded body still closes the connection")
    func bareLFInDiscardedBody() {
        var h = SessionHarness(mx)
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.example>\r\nDATA\r\nline\n.\r\n")
        #expect(h.closed)
        #expect(h.stored.isEmpty)
    }
}

@Suite struct InboundDeadlineRules {
    typealias Limit = InboundDeadlines.Limit

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        /// (time, partial line held, in DATA) for each read.
        let reads: [(Double, Bool, Bool)]
        let messageAt: Double?
        let expectedAt: Double
        let expectedLimit: Limit
        var testDescription: String { name }
    }

    // idle 300 s, DATA 600 s, session 900 s, session opened at t = 0.
    static let cases: [Case] = [
        Case(name: "silence after a complete command: idle", reads: [(10, false, false)], messageAt: nil,
             expectedAt: 310, expectedLimit: .idle),
        Case(name: "a byte every 5 s never completing a line: 300 s after its first byte",
             reads: stride(from: 10.0, through: 300, by: 5).map { ($0, true, false) }, messageAt: nil,
             expectedAt: 310, expectedLimit: .commandLine),
        Case(name: "a completed line resets the line deadline",
             reads: [(10, true, false), (200, false, false), (250, true, false)], messageAt: nil,
             expectedAt: 550, expectedLimit: .commandLine),
        Case(name: "DATA trickled a byte every 100 s: 600 s after it began",
             reads: stride(from: 100.0, through: 700, by: 100).map { ($0, false, true) }, messageAt: nil,
             expectedAt: 700, expectedLimit: .dataPhase),
        Case(name: "NOOPs every 100 s forever: the session limit",
             reads: stride(from: 100.0, through: 800, by: 100).map { ($0, false, false) }, messageAt: nil,
             expectedAt: 900, expectedLimit: .session),
        Case(name: "a queued message restarts the session clock",
             reads: stride(from: 100.0, through: 800, by: 100).map { ($0, false, false) }, messageAt: 500,
             expectedAt: 1100, expectedLimit: .idle),
    ]

    @Test(arguments: cases)
    func nextDeadline(_ c: Case) {
        var d = InboundDeadlines(idle: 300, data: 600, session: 900, now: 0)
        for (t, partial, inData) in c.reads {
            if let m = c.messageAt, m <= t, d.sessionClock < m { d.messageCompleted(at: m) }
            d.received(at: t, partialLine: partial, inData: inData)
        }
        #expect(d.next.at == c.expectedAt)
        #expect(d.next.limit == c.expectedLimit)
    }

    @Test("the session reports a partial command line only while one is buffered")
    func partialLine() {
        var h = SessionHarness(mx)
        #expect(!h.session.holdsPartialLine)
        h.sendBytes(Array("EH".utf8))
        #expect(h.session.holdsPartialLine)
        h.send("LO c\r\n")
        #expect(!h.session.holdsPartialLine)
        h.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\npartial")
        #expect(!h.session.holdsPartialLine, "inside DATA the DATA deadline applies")
        #expect(h.session.isReceivingData)
    }
}

@Suite struct PipelinedInputBound {
    @Test("while a store is pending the session says it waits, and input past 64 KiB ends the session")
    func boundWhileWaiting() {
        var session = ServerSession(configuration: mx, clientAddress: "192.0.2.10")
        _ = session.start()
        let actions = session.receive(Array("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nhi\r\n.\r\n".utf8))
        #expect(actions.contains { if case .store = $0 { return true } else { return false } })
        #expect(session.isWaiting)
        var closed = false
        var last: Reply?
        let group = Array(String(repeating: "NOOP\r\n", count: 1000).utf8)
        for _ in 0..<20 where !closed {
            for a in session.receive(group) {
                if case .close = a { closed = true }
                if case .send(let r) = a { last = r }
            }
        }
        #expect(closed)
        #expect(last?.code == 421 && last?.enhanced == "4.7.0")
    }

    @Test("reads go on while a store is pending with nothing buffered, and stop at the first pipelined byte")
    func holdReadsOnlyWithBufferedInput() {
        var session = ServerSession(configuration: mx, clientAddress: "192.0.2.10")
        _ = session.start()
        _ = session.receive(Array("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nhi\r\n.\r\n".utf8))
        #expect(session.isWaiting)
        #expect(!session.shouldHoldReads, "a client waiting for its 250 sends nothing: no need to pause the socket")
        _ = session.receive(Array("QU".utf8))
        #expect(session.shouldHoldReads)
        let after = session.storeFinished(.queued(id: "X"))
        #expect(!session.isWaiting)
        #expect(!session.shouldHoldReads)
        #expect(after.contains { if case .send(let r) = $0 { return r.code == 250 } else { return false } })
        // A store ended with "QU" still buffered, so the session waits for the rest of the line.
        #expect(session.holdsPartialLine)
    }

    @Test("a big body in one piece is not mistaken for buffered input")
    func bigBodyInOnePiece() {
        var h = SessionHarness(mx)
        let line = String(repeating: "x", count: 900) + "\r\n"
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n"
               + String(repeating: line, count: 300) + ".\r\n")
        #expect(h.stored.count == 1)
        #expect(!h.closed)
    }
}
