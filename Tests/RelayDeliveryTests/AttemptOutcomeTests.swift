import Dispatch
import Foundation
import Logging
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayPolicy
@testable import RelayLog
@testable import RelayTLS
@testable import RelayDNS
@testable import RelayIO
@testable import RelayQueue
@testable import RelayConfig
@testable import RelayDelivery
import RelayTestSupport

/// The `outcome` of a `delivery attempt` line says what the queue then does
/// with the recipients: one word, one meaning.
@Suite struct AttemptOutcomeTests {
    static let nullMX = RecipientResult.failed(DeliveryFailure(.permanent, status: "5.1.10", reason: "null MX"))
    static let servfail = RecipientResult.failed(DeliveryFailure(.transient, status: "4.4.3", reason: "SERVFAIL"))
    static let greylisted = RecipientResult.failed(DeliveryFailure(.transient, status: "4.7.1", reason: "try later"))
    static let unknownUser = RecipientResult.failed(DeliveryFailure(.permanent, status: "5.1.1", reason: "no such user"))
    static let noStatus = RecipientResult.failed(DeliveryFailure(.transient, status: "", reason: "?"))
    static let accepted = RecipientResult.delivered(Reply(250, "2.0.0", "ok"))

    struct Row: Sendable, CustomTestStringConvertible {
        let results: [RecipientResult]
        let lifetimeExceeded: Bool
        let expected: AttemptOutcome
        var testDescription: String { "\(results.count) result(s), lifetime \(lifetimeExceeded ? "over" : "not over") → \(expected)" }
    }

    static let table: [Row] = [
        Row(results: [accepted, accepted], lifetimeExceeded: false, expected: .delivered),
        Row(results: [accepted], lifetimeExceeded: true, expected: .delivered),
        Row(results: [nullMX, nullMX], lifetimeExceeded: false, expected: .bounced(status: "5.1.10")),
        Row(results: [nullMX], lifetimeExceeded: true, expected: .bounced(status: "5.1.10")),
        Row(results: [servfail], lifetimeExceeded: false, expected: .deferred(status: "4.4.3")),
        // What the queue then does: a transient failure past max_lifetime bounces.
        Row(results: [servfail], lifetimeExceeded: true, expected: .bounced(status: "5.4.3")),
        Row(results: [noStatus], lifetimeExceeded: true, expected: .bounced(status: "5.4.7")),
        Row(results: [greylisted, servfail], lifetimeExceeded: false, expected: .deferred(status: "4.7.1")),
        Row(results: [.dropped("TLS could not be had")], lifetimeExceeded: false, expected: .dropped),
        Row(results: [accepted, greylisted, unknownUser], lifetimeExceeded: false,
            expected: .mixed(delivered: 1, deferred: 1, bounced: 1, dropped: 0)),
        Row(results: [accepted, greylisted, unknownUser], lifetimeExceeded: true,
            expected: .mixed(delivered: 1, deferred: 0, bounced: 2, dropped: 0)),
        Row(results: [greylisted, unknownUser], lifetimeExceeded: true, expected: .bounced(status: "5.7.1")),
    ]

    @Test(arguments: table)
    func conclusion(_ row: Row) {
        let outcome = AttemptOutcome.concluding(row.results, lifetimeExceeded: row.lifetimeExceeded)
        #expect(outcome == row.expected)
        #expect(outcome.isConclusion)
        #expect(!["deferred-or-bounced", "failed", "completed"].contains(outcome.name))
    }

    @Test func statusesBelongToOutcomesThatHaveOne() {
        #expect(AttemptOutcome.bounced(status: "5.1.10").status == "5.1.10")
        #expect(AttemptOutcome.deferred(status: "4.4.3").status == "4.4.3")
        #expect(AttemptOutcome.delivered.status == nil)
        #expect(!AttemptOutcome.nextAddress(status: "4.4.1").isConclusion)
        #expect(!AttemptOutcome.fallback(status: "4.7.10").isConclusion)
        #expect(!AttemptOutcome.plaintextRetry(status: "4.7.5").isConclusion)
        #expect(AttemptOutcome.mixed(delivered: 1, deferred: 0, bounced: 2, dropped: 0).split == "delivered:1,bounced:2")
        #expect(AttemptOutcome.delivered.split == nil)
    }

    // MARK: DomainDelivery's own line, with DNS faked (no sockets)

    final class Lines: @unchecked Sendable {
        private let lock = NSLock()
        private var list: [String] = []
        func append(_ s: String) { lock.lock(); list.append(s); lock.unlock() }
        var all: [String] { lock.lock(); defer { lock.unlock() }; return list }
    }

    /// Runs one attempt for user@`domain` of a message that arrived `age`
    /// seconds ago (the queue lifetime is 1 day); returns the report and the
    /// `delivery attempt` lines.
    func attempt(_ domain: String, age: Int, dns: FakeResolver) async throws -> (DomainDeliveryReport, [String]) {
        let config = try configForTests("""
            [queue]
            max_lifetime = "1d"
            [outbound]
            default_level = "opportunistic"
            """, spool: "spool")
        let lines = Lines()
        let logger = Logger(label: "test") { label in
            LogfmtHandler(label: label, level: .debug, timestamps: false, sink: { lines.append($0) })
        }
        let now = 1_800_000_000
        let env = DeliveryEnvironment(config: config, engine: OutboundSettings.engine(config), mx: MXResolver(resolver: dns),
                                      dns: dns, tlsContext: try makeClientContext(), logger: logger,
                                      queue: DispatchQueue(label: "test.attempt"), now: { now })
        var envelope = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<s@example.test>")!),
                                origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        envelope.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<user@\(domain)>")!)]
        let message = QueuedMessage(id: "TESTID", arrival: now - age, envelope: envelope, body: Array("x\r\n".utf8))
        let report = await withCheckedContinuation { done in
            DomainDelivery(env: env, message: SpooledMessage(message), domain: domain, recipientIndexes: [0]).run { done.resume(returning: $0) }
        }
        return (report, lines.all.filter { $0.contains("msg=\"delivery attempt\"") })
    }

    @Test func nullMXLogsBouncedWithItsPermanentStatus() async throws {
        let dns = FakeResolver()
        dns.set("nullmx.test", .mx, [.mx(preference: 0, exchange: "")])
        let (report, lines) = try await attempt("nullmx.test", age: 10, dns: dns)
        #expect(report.results[0] == Self.nullMXResult)
        #expect(lines.count == 1)
        #expect(lines.first?.contains(" outcome=bounced ") == true, "\(lines)")
        #expect(lines.first?.contains(" status=5.1.10 ") == true, "\(lines)")
    }

    static let nullMXResult = RecipientResult.failed(DeliveryFailure(.permanent, status: "5.1.10",
                                                                     reason: "nullmx.test does not accept mail (null MX, RFC 7505)"))

    @Test(arguments: [(10, "deferred", "4.4.3", false), (2 * 86400, "bounced", "5.4.3", true)])
    func servfailLogsWhatTheQueueWillDo(age: Int, outcome: String, status: String, expired: Bool) async throws {
        let dns = FakeResolver()
        dns.setRcode("servfail.test", .mx, .servFail)
        let (report, lines) = try await attempt("servfail.test", age: age, dns: dns)
        #expect(report.lifetimeExceeded == expired)
        guard case .failed(let f)? = report.results[0] else {
            Issue.record("\(report.results)")
            return
        }
        #expect(f.kind == .transient && f.status == "4.4.3", "the queue turns it into the bounce itself")
        #expect(lines.count == 1)
        #expect(lines.first?.contains(" outcome=\(outcome) ") == true, "\(lines)")
        #expect(lines.first?.contains(" status=\(status) ") == true, "\(lines)")
    }
}
