// Delay notices (`[queue] delay_warning`) on a fake clock: exactly one once
// the message has waited that long with recipients pending, none before,
// none for NOTIFY=NEVER or a null sender, none once delivered, not again
// after a restart; and the state file keeps that it was sent while old
// state files (without the line) still read.
import Foundation
import Logging
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayPolicy
@testable import RelayQueue
@testable import RelayConfig
@testable import RelayDelivery
import RelayTestSupport

private let delivered = RecipientResult.delivered(Reply(250, "2.0.0", "ok"))
private let refused = RecipientResult.failed(DeliveryFailure(.transient, status: "4.4.1", reason: "connection refused", cause: .unreachable))
private let noTLS = RecipientResult.failed(DeliveryFailure(.transient, status: "4.7.5",
                                                           reason: "TLS required but mx.far.test does not offer STARTTLS", cause: .tlsPolicy))

@Suite(.serialized) struct DelayNotices {
    let t: TemporarySpool
    let clock = FakeClock(1_800_000_000)
    let deliveries = FakeDeliveries()

    init() throws { t = try TemporarySpool() }

    /// Retries every hour, warns after two, gives up after a day.
    func runner(_ queue: String = "retry_schedule = [\"1h\"]\nmax_lifetime = \"1d\"\ndelay_warning = \"2h\"") throws -> QueueRunner {
        let config = try configForTests("[queue]\n\(queue)\n", spool: t.dir)
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let env = try OutboundSettings.environment(config: config, resolver: FakeResolver(), logger: logger)
        let clock = clock, deliveries = deliveries
        return QueueRunner(spool: t.spool, environment: env, logger: logger, now: { clock.now }, jitter: { _ in 0 },
                           deliver: deliveries.record)
    }

    func store(sender: String = "<s@sender.test>", notify: [Envelope.Notify]? = nil) throws -> String {
        let id = QueueID.make(microseconds: 1, random: 1)
        let from: ReversePath = sender == "<>" ? .null : .mailbox(Mailbox.parseForwardPath(sender)!)
        var envelope = Envelope(sender: from, origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        envelope.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<user@far.test>")!, notify: notify)]
        try t.spool.store(QueuedMessage(id: id, arrival: clock.now, envelope: envelope,
                                        body: Array("Subject: waiting\r\n\r\nbody text\r\n".utf8)))
        return id
    }

    /// Runs attempts an hour apart (the first at once when one is already
    /// in delivery), each answered `result`; returns the ids of the
    /// messages the runner started that are not `id` (notices).
    func attempts(_ n: Int, of id: String, _ r: QueueRunner, answering result: RecipientResult) -> [String] {
        for _ in 0..<n {
            if !deliveries.inProgress.contains(id) { clock.advance(3600); r.runTimerWork() }
            deliveries.answer(id, result)
            r.settle()
        }
        return deliveries.started.filter { $0 != id }
    }

    func notice(_ nid: String) throws -> (QueuedMessage, String) {
        let m = try t.spool.read(.active, nid)
        return (m, String(decoding: m.body, as: UTF8.self))
    }

    @Test func exactlyOneNoticeOnceTheMessageHasWaitedLongEnough() throws {
        let id = try store()
        let arrival = clock.now
        let r = try runner()
        defer { r.stop() }
        r.scanWithoutTimer()
        #expect(attempts(2, of: id, r, answering: refused).isEmpty, "one hour in: no notice yet")
        #expect(try t.spool.readState(id)?.delayNoticeSent == 0)
        let notices = attempts(1, of: id, r, answering: refused)  // two hours in
        #expect(notices.count == 1)
        let (m, text) = try notice(try #require(notices.first))
        #expect(m.envelope.sender == .null)
        #expect(m.envelope.recipients.map(\.mailbox.description) == ["s@sender.test"])
        #expect(text.contains("Action: delayed\r\n"))
        #expect(text.contains("Status: 4.4.1\r\n"))
        #expect(text.contains("Diagnostic-Code: x-relayd; connection refused\r\n"))
        #expect(text.contains("Will-Retry-Until: \(RFC5322Date.format(arrival + 86400))\r\n"))
        #expect(text.contains("Final-Recipient: rfc822; user@far.test\r\n"))
        #expect(text.contains("after 2 hours in the queue"))
        #expect(text.contains("Subject: waiting\r\n"), "the original's headers")
        #expect(!text.contains("body text"), "never its body")
        #expect(!text.contains("waiting for TLS"), "TLS was not why it waits")
        #expect(try t.spool.readState(id)?.delayNoticeSent == clock.now)
        deliveries.answer(notices[0], delivered)
        r.settle()
        #expect(attempts(4, of: id, r, answering: refused).count == 1, "never a second one")
        clock.advance(3600)
        r.runTimerWork()
        deliveries.answer(id, delivered)
        r.settle()
        #expect(deliveries.started.filter { $0 != id }.count == 1)
        #expect(t.spool.list(.deferred).isEmpty)
    }

    @Test func aMessageWaitingForTLSSaysSo() throws {
        let id = try store()
        let r = try runner()
        defer { r.stop() }
        r.scanWithoutTimer()
        let notices = attempts(3, of: id, r, answering: noTLS)
        let (_, text) = try notice(try #require(notices.first))
        #expect(text.contains("The message is waiting for TLS"))
        #expect(text.contains("TLS could not be had: TLS required but mx.far.test does not offer STARTTLS"))
        #expect(text.contains("Status: 4.7.5\r\n"))
    }

    @Test func noneWithNotifyNeverOrWithoutDelay() throws {
        for notify: [Envelope.Notify] in [[.never], [.failure, .success]] {
            let t2 = try DelayNotices()
            let id = try t2.store(notify: notify)
            let r = try t2.runner()
            defer { r.stop() }
            r.scanWithoutTimer()
            #expect(t2.attempts(5, of: id, r, answering: refused).isEmpty, "NOTIFY=\(notify)")
            #expect(try t2.t.spool.readState(id)?.delayNoticeSent == 0, "the state says only what was sent")
        }
    }

    @Test func notifyDelayAloneGetsOne() throws {
        let id = try store(notify: [.delay])
        let r = try runner()
        defer { r.stop() }
        r.scanWithoutTimer()
        #expect(attempts(3, of: id, r, answering: refused).count == 1)
    }

    @Test func noneForANullSender() throws {
        let id = try store(sender: "<>")
        let r = try runner()
        defer { r.stop() }
        r.scanWithoutTimer()
        #expect(attempts(5, of: id, r, answering: refused).isEmpty)
    }

    @Test func noneOnceDelivered() throws {
        let id = try store()
        let r = try runner()
        defer { r.stop() }
        r.scanWithoutTimer()
        #expect(attempts(2, of: id, r, answering: refused).isEmpty)
        clock.advance(7200)  // past the mark, and this attempt delivers
        r.runTimerWork()
        deliveries.answer(id, delivered)
        r.settle()
        #expect(deliveries.started.allSatisfy { $0 == id })
        #expect(t.spool.list(.deferred).isEmpty && t.spool.list(.active).isEmpty && t.spool.list(.incoming).isEmpty)
    }

    @Test func offWithZero() throws {
        let id = try store()
        let r = try runner("retry_schedule = [\"1h\"]\nmax_lifetime = \"1d\"\ndelay_warning = \"0\"")
        defer { r.stop() }
        r.scanWithoutTimer()
        #expect(attempts(6, of: id, r, answering: refused).isEmpty)
    }

    @Test func notAgainAfterARestart() throws {
        let id = try store()
        let first = try runner()
        first.scanWithoutTimer()
        let notices = attempts(3, of: id, first, answering: refused)
        #expect(notices.count == 1)
        deliveries.answer(notices[0], delivered)
        first.settle()
        first.stop()
        // A new process: its view comes from the spool alone.
        let second = try runner()
        defer { second.stop() }
        clock.advance(3600)
        second.scanWithoutTimer()
        #expect(deliveries.inProgress == [id])
        deliveries.answer(id, refused)
        second.settle()
        #expect(deliveries.started.filter { $0 != id } == notices, "no second notice")
    }

    @Test func theStateKeepsTheNoticeAndOldFilesStillRead() throws {
        var state = DeliveryState(recipientCount: 2, nextAttempt: 42)
        state.attempts = 3
        state.recipients[0] = .init(status: .pending, detail: "connection refused", enhancedStatus: "4.4.1")
        let old = state.encode()
        #expect(!String(decoding: old, as: UTF8.self).contains("delay-notice"), "written as before while none was sent")
        #expect(try DeliveryState.decode(old) == state)
        state.delayNoticeSent = 1_800_007_200
        let new = state.encode()
        #expect(String(decoding: new, as: UTF8.self).contains("\ndelay-notice 1800007200\n"))
        #expect(try DeliveryState.decode(new) == state)
        // A file written before delay notices existed.
        let legacy = "relayd-state 1\nattempts 1\nnext 9\nrcpt 0 pending 4.4.1 connection+20refused -\n"
        let sealed = Array(legacy.utf8) + Array("end \(QueueFile.hex16(QueueFile.fnv1a64(Array(legacy.utf8)[...])))\n".utf8)
        let read = try DeliveryState.decode(sealed)
        #expect(read.delayNoticeSent == 0 && read.recipients[0].detail == "connection refused" && read.nextAttempt == 9)
    }

    @Test func theDelayWarningSetting() throws {
        #expect(try configForTests("", spool: t.dir).queue.delayWarning == 4 * 3600, "4h by default")
        #expect(try configForTests("[queue]\ndelay_warning = \"2s\"", spool: t.dir).queue.delayWarning == 2)
        #expect(try configForTests("[queue]\ndelay_warning = \"0\"", spool: t.dir).queue.delayWarning == 0)
        #expect(throws: (any Error).self) { try configForTests("[queue]\ndelay_warning = \"soon\"", spool: t.dir) }
        #expect(throws: (any Error).self) { try configForTests("[queue]\ndelay_warning = \"-5s\"", spool: t.dir) }
    }
}
