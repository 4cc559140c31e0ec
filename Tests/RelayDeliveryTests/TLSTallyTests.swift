// The TLS tally of `relayd report tls` on a fake clock: what each delivery
// attempt line counts, the counters across a flush, a restart and midnight,
// the record's file form (all or nothing), and the report's text and JSON.
import Foundation
import Logging
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayQueue
@testable import RelayTLS
@testable import RelayDelivery
import RelayTestSupport

private func session(_ version: String?, verification: TLSVerification = .trusted, failure: TLSFailure? = nil,
                     outcome: ClientOutcome = .completed([0: Reply(250, "2.0.0", "ok")])) -> ClientRunResult {
    let tls = version.map {
        TLSSessionInfo(protocolVersion: $0, cipher: "TLS_AES_256_GCM_SHA384", cipherBits: 256, forwardSecret: true,
                       peerChainLength: 1, verification: verification, resumed: false)
    }
    return ClientRunResult(outcome: outcome, tls: tls, tlsFailure: failure)
}

private let day0 = 20_424  // 2025-12-02
private let noon = day0 * 86400 + 43200

@Suite struct TLSTallyEvents {
    @Test func whatEachAttemptLineCounts() {
        let verified = DomainDelivery.tallyEvent(domain: "valid.test", outcome: .delivered, layer: "default", level: "opportunistic",
                                                 tried: true, run: session("TLSv1.3"))
        #expect(verified == TLSTallyEvent(domain: "valid.test", session: "TLSv1.3/verified", outcome: "delivered",
                                          delivery: "TLSv1.3/verified", layer: "default/opportunistic"))
        let untrusted = failureOf(.certificateUntrusted)
        let unverified = DomainDelivery.tallyEvent(domain: "selfsigned.test", outcome: .delivered, layer: "default", level: "forced",
                                                   tried: true, run: session("TLSv1.2", verification: .failed(untrusted)))
        #expect(unverified.delivery == "TLSv1.2/unverified" && unverified.session == "TLSv1.2/unverified")
        let plain = DomainDelivery.tallyEvent(domain: "plain.test", outcome: .delivered, layer: "operator", level: "none",
                                              tried: true, run: session(nil))
        #expect(plain.delivery == "plaintext" && plain.session == "plaintext" && plain.layer == "operator/none")
        let notOffered = DomainDelivery.tallyEvent(domain: "plain.test", outcome: .dropped, layer: "default", level: "tls-exclusive",
                                                   tried: true, run: session(nil, outcome: .failed(.tlsNotOffered)))
        #expect(notOffered == TLSTallyEvent(domain: "plain.test", session: "starttls-not-offered", outcome: "dropped",
                                            layer: "default/tls-exclusive"))
        let retry = DomainDelivery.tallyEvent(domain: "broken.test", outcome: .plaintextRetry(status: "4.7.5"), layer: "default",
                                              level: "opportunistic", tried: true,
                                              run: session(nil, failure: failureOf(.protocolError), outcome: .failed(.tls(failureOf(.protocolError)))))
        #expect(retry == TLSTallyEvent(domain: "broken.test", session: "tls-failed/protocol-error", layer: "default/opportunistic",
                                       fallback: "plaintext-retry"), "on the way: a session and a fallback, no message")
        let unreachable = DomainDelivery.tallyEvent(domain: "down.test", outcome: .deferred(status: "4.4.1"), layer: "default",
                                                    level: "opportunistic", tried: true, run: session(nil, outcome: .failed(.connectFailed("refused"))))
        #expect(unreachable.session == "unreachable" && unreachable.outcome == "deferred" && unreachable.delivery == nil)
        let dnsOnly = DomainDelivery.tallyEvent(domain: "servfail.test", outcome: .deferred(status: "4.4.3"), layer: "default",
                                                level: "opportunistic", tried: false, run: nil)
        #expect(dnsOnly.session == nil && dnsOnly.outcome == "deferred", "no address tried: a message, no session")
        #expect(TLSTallyEvent.sessionLabel(session(nil, outcome: .failed(.rejected(Reply(550, "5.1.1", "no"), stage: .rcpt)))) == "plaintext",
                "a refused recipient in a plaintext transaction: the envelope went in the clear")
        #expect(TLSTallyEvent.sessionLabel(session(nil, outcome: .failed(.greeting(Reply(421, nil, "busy"))))) == "no-transaction")
        #expect(TLSTallyEvent.sessionLabel(session(nil, outcome: .failed(.connectionLost(stage: .starttls)))) == "no-transaction")
    }

    private func failureOf(_ kind: TLSFailure.Kind) -> TLSFailure { TLSFailure(kind: kind, detail: "x") }
}

@Suite(.serialized) struct TLSTallyLedger {
    let t: TemporarySpool
    let clock = FakeClock(noon)
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    init() throws { t = try TemporarySpool() }

    func tally() -> TLSTally {
        let clock = clock
        return TLSTally(spool: t.spool, logger: logger, now: { clock.now })
    }

    static let delivered = TLSTallyEvent(domain: "valid.test", session: "TLSv1.3/verified", outcome: "delivered",
                                         delivery: "TLSv1.3/verified", layer: "default/opportunistic")
    static let plain = TLSTallyEvent(domain: "plain.test", session: "plaintext", outcome: "delivered", delivery: "plaintext",
                                     layer: "default/opportunistic")
    static let dropped = TLSTallyEvent(domain: "plain.test", session: "starttls-not-offered", outcome: "dropped",
                                       layer: "operator/tls-exclusive")

    @Test func countsSurviveAFlushAndARestartAndAddUp() throws {
        let a = tally()
        a.record(Self.delivered)
        a.record(Self.delivered)
        a.record(Self.plain)
        #expect(t.spool.recordNames(TLSTally.folder).isEmpty, "record never writes")
        #expect(a.hasUnwritten)
        a.flush()
        #expect(!a.hasUnwritten)
        #expect(t.spool.recordNames(TLSTally.folder) == ["2025-12-02_plain.test", "2025-12-02_valid.test"])
        // A restart: load, then add to what was on disk.
        let b = tally()
        b.load()
        b.record(Self.dropped)
        b.flush()
        let counts = tally().counts(days: day0...day0)
        #expect(counts.map(\.domain) == ["plain.test", "valid.test"])
        let plain = counts[0], valid = counts[1]
        #expect(valid[.messages, "delivered"] == 2 && valid[.deliveries, "TLSv1.3/verified"] == 2 && valid[.sessions, "TLSv1.3/verified"] == 2)
        #expect(plain[.messages, "delivered"] == 1 && plain[.messages, "dropped"] == 1)
        #expect(plain[.deliveries, "plaintext"] == 1 && plain[.plaintextLayers, "default/opportunistic"] == 1)
        #expect(plain[.layers, "operator/tls-exclusive"] == 1 && plain[.sessions, "starttls-not-offered"] == 1)
    }

    @Test func midnightStartsANewDay() throws {
        let a = tally()
        a.record(Self.plain)
        clock.advance(43200)  // 00:00 the next day
        a.record(Self.plain)
        a.flush()
        #expect(t.spool.recordNames(TLSTally.folder) == ["2025-12-02_plain.test", "2025-12-03_plain.test"])
        #expect(tally().counts(days: (day0 + 1)...(day0 + 1)).map { $0[.deliveries, "plaintext"] } == [1])
        #expect(tally().counts(days: day0...(day0 + 1)).count == 2)
    }

    @Test func aDamagedRecordIsSetAsideNotTrusted() throws {
        let a = tally()
        a.record(Self.plain)
        a.flush()
        let path = t.dir + "/" + TLSTally.folder + "/2025-12-02_plain.test"
        var data = try #require(FileManager.default.contents(atPath: path))
        data[data.count - 30] ^= 1
        try data.write(to: URL(fileURLWithPath: path))
        let clock = clock
        let reader = TLSTally(spool: t.spool, logger: logger, now: { clock.now }, setsAsideDamaged: false)
        #expect(reader.counts(days: day0...day0).isEmpty)
        #expect(t.spool.recordNames(TLSTally.folder) == ["2025-12-02_plain.test"], "the report only reads")
        #expect(tally().counts(days: day0...day0).isEmpty)
        #expect(t.spool.recordNames(TLSTally.folder).isEmpty, "the daemon sets it aside as .damaged-")
    }

    @Test func theFileFormIsAllOrNothing() throws {
        var c = TLSTallyCounts(day: day0, domain: "plain.test")
        c.add(Self.plain)
        c.add(Self.dropped)
        let text = String(decoding: c.encode(), as: UTF8.self)
        #expect(text.hasPrefix("relayd-tls-tally 1\nday 2025-12-02\ndomain plain.test\n"))
        #expect(text.contains("delivery plaintext 1\n") && text.contains("message dropped 1\n"))
        #expect(TLSTallyCounts.decode(c.encode()) == c)
        for bad in [text.replacingOccurrences(of: "message dropped 1", with: "message dropped -1"),
                    text.replacingOccurrences(of: "message dropped 1", with: "mystery dropped 1"),
                    text.replacingOccurrences(of: "day 2025-12-02", with: "day 2025-13-02"),
                    text + "message dropped 1\n",
                    String(text.dropLast())] {
            #expect(TLSTallyCounts.decode(Array(bad.utf8)) == nil, "\(bad)")
        }
        #expect(TLSTallyCounts.day(named: "2025-12-02") == day0 && TLSTallyCounts.dayName(day0) == "2025-12-02")
    }

    @Test func anInvalidDomainOrTooManyAreNotCounted() {
        let clock = clock
        let small = TLSTally(spool: t.spool, logger: logger, now: { clock.now }, maxDomainsPerDay: 1)
        small.record(Self.plain)
        small.record(Self.delivered)  // a second domain: over the limit
        small.record(TLSTallyEvent(domain: "../etc", outcome: "delivered", delivery: "plaintext", layer: "default/none"))
        small.flush()
        #expect(t.spool.recordNames(TLSTally.folder) == ["2025-12-02_plain.test"])
    }
}

@Suite struct TLSReportRendering {
    func mix() -> [TLSTallyCounts] {
        var plain = TLSTallyCounts(day: day0, domain: "plain.test")
        plain.add(TLSTallyLedger.plain)
        plain.add(TLSTallyLedger.dropped)
        var valid = TLSTallyCounts(day: day0 - 1, domain: "valid.test")
        valid.add(TLSTallyLedger.delivered)
        var validToday = TLSTallyCounts(day: day0, domain: "valid.test")
        validToday.add(TLSTallyLedger.delivered)
        var old = TLSTallyCounts(day: day0 - 30, domain: "old.test")
        old.add(TLSTallyLedger.plain)
        return [plain, valid, validToday, old]
    }

    @Test func theDaysOfSince() {
        #expect(TLSReport.days(since: 86400, now: noon) == (day0 - 1)...day0)
        #expect(TLSReport.days(since: 7 * 86400, now: noon) == (day0 - 7)...day0)
        #expect(TLSReport.days(since: 3600, now: noon) == day0...day0)
    }

    @Test func text() {
        let r = TLSReport(mix(), days: TLSReport.days(since: 86400, now: noon))
        #expect(r.text == """
            TLS report, 2025-12-01 to 2025-12-02 (UTC): 2 destination domains
            Left in the clear: 1 message (plain.test 1)

            plain.test
              messages:   1 delivered, 1 dropped
              delivered:  1 plaintext
              PLAINTEXT:  1, allowed by 1 default/opportunistic
              dropped:    1 (tls-exclusive: TLS could not be had)
              decided by: 1 default/opportunistic, 1 operator/tls-exclusive
              sessions:   1 plaintext, 1 starttls-not-offered

            valid.test
              messages:   2 delivered
              delivered:  2 TLSv1.3/verified
              decided by: 2 default/opportunistic
              sessions:   2 TLSv1.3/verified

            """)
    }

    @Test func json() throws {
        let r = TLSReport(mix(), days: TLSReport.days(since: 86400, now: noon))
        let o = try #require(try JSONSerialization.jsonObject(with: Data(r.json().utf8)) as? [String: Any])
        #expect(o["first_day"] as? String == "2025-12-01" && o["last_day"] as? String == "2025-12-02")
        let domains = try #require(o["domains"] as? [[String: Any]])
        #expect(domains.map { $0["domain"] as? String } == ["plain.test", "valid.test"], "old.test is outside the span")
        let keys: Set<String> = ["domain", "messages", "messages_total", "deliveries", "plaintext_deliveries", "plaintext_allowed_by",
                                 "dropped", "decided_by", "sessions", "sessions_total", "fallbacks"]
        #expect(domains.allSatisfy { Set($0.keys) == keys }, "every key, always")
        #expect(domains[0]["plaintext_deliveries"] as? Int == 1 && domains[0]["dropped"] as? Int == 1)
        #expect(domains[1]["deliveries"] as? [String: Int] == ["TLSv1.3/verified": 2])
        let total = try #require(o["total"] as? [String: Any])
        #expect(total["messages_total"] as? Int == 4 && total["plaintext_deliveries"] as? Int == 1)
    }

    @Test func nothingToReport() {
        let r = TLSReport([], days: day0...day0)
        #expect(r.text == "TLS report, 2025-12-02 to 2025-12-02 (UTC): 0 destination domains\nLeft in the clear: 0 messages\n")
    }
}
