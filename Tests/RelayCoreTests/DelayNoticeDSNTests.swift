// The delay notice as a message: RFC 3464 fields for each delayed
// recipient, headers only whatever RET asked, a 4.x.x status whatever was
// recorded, only recipients whose NOTIFY allows DELAY, nothing for a null
// sender, and every value from outside escaped like the bounce's.
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayQueue

@Suite struct DelayNoticeDSN {
    func original(notify: [[Envelope.Notify]?] = [nil], sender: ReversePath? = nil, ret: Envelope.Return? = nil,
                  orcpt: String? = nil, envid: String? = nil) -> QueuedMessage {
        var env = Envelope(sender: sender ?? .mailbox(Mailbox.parseForwardPath("<s@example.test>")!),
                           ret: ret, envelopeID: envid, origin: Envelope.Origin(clientAddress: "192.0.2.1"))
        env.recipients = notify.enumerated().map {
            Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u\($0.offset)@far.example>")!, notify: $0.element, originalRecipient: orcpt)
        }
        return QueuedMessage(id: QueueID.make(microseconds: 5, random: 5), arrival: 1_000_000, envelope: env,
                             body: Array("Subject: s\r\n\r\nsecret body\r\n".utf8))
    }

    func notice(_ m: QueuedMessage, _ delays: [DSN.Delay]) -> String? {
        DSN.delayNotice(for: m, delays: delays, waited: 4 * 3600, retryUntil: m.arrival + 5 * 86400, hostname: "relay.test",
                        id: QueueID.make(microseconds: 6, random: 6), now: m.arrival + 4 * 3600)
            .map { String(decoding: $0.body, as: UTF8.self) }
    }

    @Test func fieldsForEachDelayedRecipientAndHeadersOnly() throws {
        let text = try #require(notice(original(notify: [nil, [.delay]], ret: .full, envid: "env-1"),
                                       [DSN.Delay(recipientIndex: 0, status: "4.4.1", diagnostic: "connection refused"),
                                        DSN.Delay(recipientIndex: 1, status: "5.1.1", diagnostic: "odd")]))
        #expect(text.contains("Subject: Delayed Mail (still being retried)\r\n"))
        #expect(text.contains("Original-Envelope-Id: env-1\r\n"))
        #expect(text.contains("Final-Recipient: rfc822; u0@far.example\r\nAction: delayed\r\nStatus: 4.4.1\r\n"))
        #expect(text.contains("Final-Recipient: rfc822; u1@far.example\r\nAction: delayed\r\nStatus: 4.0.0\r\n"),
                "a delayed recipient's status is 4.x.x, whatever was recorded")
        #expect(text.components(separatedBy: "Will-Retry-Until: \(RFC5322Date.format(1_000_000 + 5 * 86400))\r\n").count == 3)
        #expect(text.contains("after 4 hours in the queue"))
        #expect(text.contains("Content-Type: text/rfc822-headers\r\n") && !text.contains("secret body"), "RET=FULL or not: headers only")
        #expect(onlyCRLF(Array(text.utf8)))
    }

    @Test func onlyRecipientsThatAskedAndNeverForANullSender() throws {
        let m = original(notify: [[.never], [.failure], [.success, .delay]])
        let all = (0..<3).map { DSN.Delay(recipientIndex: $0, status: "4.4.1", diagnostic: "refused") }
        let text = try #require(notice(m, all))
        #expect(!text.contains("u0@far.example") && !text.contains("u1@far.example") && text.contains("u2@far.example"))
        #expect(notice(original(notify: [[.never]]), all.prefix(1).map { $0 }) == nil)
        #expect(notice(original(sender: .null), all.prefix(1).map { $0 }) == nil)
        let dsn = try #require(DSN.delayNotice(for: m, delays: all, waited: 1, retryUntil: 2, hostname: "relay.test",
                                               id: QueueID.make(microseconds: 7, random: 7), now: 3))
        #expect(dsn.envelope.sender == .null && dsn.envelope.recipients.map(\.notify) == [[.never]], "no DSN about a DSN")
    }

    @Test func theTLSReasonIsSaidAndEscaped() throws {
        let text = try #require(notice(original(orcpt: "rfc822;x\r\nInjected-Line: yes"),
                                       [DSN.Delay(recipientIndex: 0, status: "4.7.10", diagnostic: "TLS not offered\r\nInjected-Line: yes",
                                                  tlsReason: "TLS not offered by mx[192.0.2.9]:25\u{85}Injected-Line: yes")]))
        #expect(text.contains("The message is waiting for TLS"))
        #expect(text.contains("TLS could not be had: TLS not offered by mx[192.0.2.9]:25\\x{85}Injected-Line: yes\r\n"))
        #expect(!lenientLines(text).contains { $0.hasPrefix("Injected") }, "\(text)")
        #expect(text.contains("Status: 4.7.10\r\n"))
    }
}
