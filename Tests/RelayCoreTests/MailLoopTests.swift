// Mail loops (issue 18), the hop count: how many Received fields a message
// carries, the limit at the end of DATA and the queue runner's limit for
// mail already queued. (LoopBackTests: next hops that are relayd itself.)
import Foundation
import Logging
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

// MARK: counting Received fields

struct HopCountCase: CustomTestStringConvertible, Sendable {
    let name: String
    let message: String
    let received: Int
    var testDescription: String { name }
}

@Suite struct HopCounting {
    static let cases: [HopCountCase] = [
        .init(name: "no trace fields", message: "Subject: x\r\n\r\nbody\r\n", received: 0),
        .init(name: "two among others", message: "Received: a\r\nSubject: x\r\nReceived: b\r\n\r\nbody\r\n", received: 2),
        .init(name: "field names in any case", message: "received: a\r\nRECEIVED: b\r\nReCeIvEd: c\r\n\r\n", received: 3),
        .init(name: "a folded field is one field",
              message: "Received: from a ([192.0.2.1])\r\n\tby b (relayd) with ESMTPS id X\r\n\tfor <u@example.org>; date\r\nReceived: c\r\n\r\n",
              received: 2),
        .init(name: "a continuation that reads Received: is no field", message: "Subject: x\r\n Received: y\r\n\r\n", received: 0),
        .init(name: "Received: lines in the body do not count",
              message: "Subject: x\r\n\r\nReceived: y\r\nReceived: z\r\n", received: 0),
        .init(name: "a body that starts at once", message: "\r\nReceived: a\r\n", received: 0),
        .init(name: "obsolete blank before the colon", message: "Received : a\r\n\r\n", received: 1),
        .init(name: "a line that is no field ends the header",
              message: "Received: a\r\nthis is prose, not a header\r\nReceived: b\r\n", received: 1),
        .init(name: "other fields that start alike", message: "Received-SPF: pass\r\nX-Received: y\r\nReceivedx: z\r\n\r\n", received: 0),
        .init(name: "LF line ends", message: "Received: a\nReceived: b\n\nReceived: c\n", received: 2),
        .init(name: "no line end at all", message: "Received: a", received: 1),
        .init(name: "empty message", message: "", received: 0),
    ]

    @Test(arguments: cases)
    func receivedFields(_ c: HopCountCase) {
        #expect(HopCount.receivedFields(in: Array(c.message.utf8)) == c.received)
    }
}

// MARK: the limit at the end of DATA

/// A message with `received` Received fields ahead of a short header.
private func message(received: Int, bodyReceived: Int = 0) -> String {
    var m = ""
    for i in 0..<received { m += "Received: from hop\(i).example ([192.0.2.\(i % 250)])\r\n\tby next.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n" }
    m += "Subject: loop\r\n\r\n"
    for _ in 0..<bodyReceived { m += "Received: quoted in the body\r\n" }
    return m + "body\r\n"
}

struct HopLimitCase: CustomTestStringConvertible, Sendable {
    let received: Int
    let maxHops: Int
    let accepted: Bool
    var testDescription: String { "\(received) Received, max_hops \(maxHops): \(accepted ? "accepted" : "refused")" }
}

@Suite struct HopLimitAtDATA {
    // The header relayd prepends counts: at most max_hops - 1 arrive.
    static let cases: [HopLimitCase] = [
        .init(received: 0, maxHops: 50, accepted: true),
        .init(received: 49, maxHops: 50, accepted: true),
        .init(received: 50, maxHops: 50, accepted: false),
        .init(received: 60, maxHops: 50, accepted: false),
        .init(received: 0, maxHops: 1, accepted: true),
        .init(received: 1, maxHops: 1, accepted: false),
        .init(received: 3, maxHops: 5, accepted: true),
        .init(received: 5, maxHops: 5, accepted: false),
    ]

    @Test(arguments: cases, Segmentation.allCases)
    func limit(_ c: HopLimitCase, _ segmentation: Segmentation) {
        var h = SessionHarness(ServerSessionConfiguration(hostname: "relay.test", relayDomains: ["example.org"], maxHops: c.maxHops))
        segmentation.feed(&h, "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
        segmentation.feed(&h, message(received: c.received) + ".\r\n")
        if c.accepted {
            #expect(h.stored.count == 1)
            #expect(h.finalReplies.last?.hasPrefix("250 ") == true)
        } else {
            #expect(h.stored.isEmpty)
            #expect(h.finalReplies.last?.hasPrefix("554 5.4.6 Error: too many hops (\(c.received) Received headers") == true,
                    "\(h.finalReplies)")
            #expect(!h.closed)
            // The transaction is over; the next one works.
            segmentation.feed(&h, "MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nclean\r\n.\r\n")
            #expect(h.stored.count == 1)
        }
    }

    @Test("Received lines in the body never count")
    func bodyDoesNotCount() {
        var h = SessionHarness(ServerSessionConfiguration(hostname: "relay.test", relayDomains: ["example.org"]))
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
        h.send(message(received: 2, bodyReceived: 100) + ".\r\n")
        #expect(h.stored.count == 1)
    }

    @Test("folded and lower-case trace fields count, one each: two plus ours", arguments: [(2, false), (3, true)])
    func foldedAndLowerCase(maxHops: Int, accepted: Bool) {
        var h = SessionHarness(ServerSessionConfiguration(hostname: "relay.test", relayDomains: ["example.org"], maxHops: maxHops))
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
        h.send("received: from a\r\n\tby b\r\n\tfor <u@example.org>; date\r\nRECEIVED: from c\r\n by d\r\nSubject: s\r\n\r\nbody\r\n.\r\n")
        #expect(h.stored.count == (accepted ? 1 : 0))
    }

    /// What DATA accepts, the queue runner never bounces for its hop count:
    /// the stored message (relayd's own Received header first) is within
    /// max_hops exactly when the session accepted it.
    @Test("accepted at DATA exactly when the stored message is within max_hops", arguments: [0, 1, 9, 10, 11, 12])
    func consistentWithTheQueue(received: Int) {
        let maxHops = 11
        var h = SessionHarness(ServerSessionConfiguration(hostname: "relay.test", relayDomains: ["example.org"], maxHops: maxHops))
        h.send("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
        let body = Array(message(received: received).utf8)
        h.sendBytes(body + Array(".\r\n".utf8))
        let env = Envelope(sender: .null, recipients: [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u@example.org>")!)],
                           origin: Envelope.Origin(clientAddress: "192.0.2.10", heloName: "c", esmtp: true))
        let stored = Array(ReceivedHeader.make(envelope: env, queueID: "Q1", hostname: "relay.test", includeUser: false,
                                               unixTime: 0).utf8) + body
        #expect((h.stored.count == 1) == (HopCount.receivedFields(in: stored) <= maxHops))
    }
}

// MARK: the setting

@Suite struct MaxHopsSetting {
    @Test("[limits] max_hops: 50 unless set, and more than 0", arguments: [("", 50), ("max_hops = 7", 7)])
    func read(line: String, value: Int) throws {
        #expect(try loopConfig(bind: "127.0.0.1:2525", outbound: "", limits: line).limits.maxHops == value)
    }

    @Test func zeroIsRefused() {
        #expect(throws: ConfigErrors.self) { try loopConfig(bind: "127.0.0.1:2525", outbound: "", limits: "max_hops = 0") }
    }
}

// MARK: mail already queued

@Suite struct HopLimitInTheQueue {
    @Test("mail queued with too many Received headers bounces with 5.4.6 and is never attempted")
    func queuedLoopBounces() throws {
        let root = NSTemporaryDirectory() + "relayd-hops-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let spool = try Spool(root: root, reserveBytes: 0, fsyncEnabled: false)
        let config = try loopConfig(bind: "127.0.0.1:\(unusedPort())", outbound: "", relayDomains: [])
        let dns = FakeResolver()
        let log = LogLines()
        var body = ""
        for i in 0...config.limits.maxHops { body += "Received: from hop\(i); Mon, 1 Jan 2024 00:00:00 +0000\r\n" }
        body += "Subject: looping\r\n\r\nReceived: in the body\r\n"
        var envelope = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<s@sender.test>")!),
                                origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        envelope.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u@far.example>")!)]
        let id = QueueID.generate()
        try spool.store(QueuedMessage(id: id, arrival: Int(time(nil)), envelope: envelope, body: Array(body.utf8)))
        let env = DeliveryEnvironment(config: config, engine: OutboundSettings.engine(config),
                                      mx: MXResolver(resolver: dns), dns: dns,
                                      tlsContext: try OutboundSettings.clientTLSContext(config),
                                      logger: log.logger, queue: DispatchQueue(label: "test.delivery"))
        let runner = QueueRunner(spool: spool, environment: env, logger: log.logger)
        runner.start()
        defer { runner.stop() }
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline && !log.all.contains(where: { $0.contains("msg=removed") && $0.contains("id=\(id)") }) {
            Thread.sleep(forTimeInterval: 0.05)
        }
        let lines = log.all
        #expect(lines.contains { $0.contains("too many hops") && $0.contains("id=\(id)") && $0.contains("received=\(config.limits.maxHops + 1)") },
                "\(lines)")
        #expect(lines.contains { $0.contains("msg=removed") && $0.contains("id=\(id)") && $0.contains("bounced=1") }, "\(lines)")
        #expect(lines.contains { $0.contains("msg=\"bounce queued\"") && $0.contains("original=\(id)") }, "\(lines)")
        #expect(!lines.contains { $0.contains("delivery attempt") && $0.contains("id=\(id)") })
        #expect(!dns.asked.contains { $0.hasPrefix("far.example") }, "not even looked up")
    }
}

// MARK: helpers shared with LoopBackTests
