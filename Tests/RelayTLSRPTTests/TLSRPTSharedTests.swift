// TLS-RPT counts shared between instances, with a fake backend that
// behaves like the shared tables (rows per instance kept with GREATEST,
// one lease per day, one claim per report) and the fake clock of the
// sender tests: pushes are idempotent, the outbox survives an outage and a
// restart and is replayed once, only the lease holder sends, a report sums
// every instance's counts, and no report is sent twice.
import Foundation
import Logging
import Testing
@testable import RelayModel
@testable import RelayQueue
@testable import RelaySync
@testable import RelayTLSRPT

final class FakeTLSRPTBackend: TLSRPTSharedBackend {
    struct Down: Error {}
    struct RowKey: Hashable { let day: TLSRPTDay; let domain: String; let instance: String; let policyType: String
        let strings: String; let result: String; let detail: String }
    final class Tables: Sendable {
        let counts = Locked<[RowKey: Int]>([:])
        let leases = Locked<[TLSRPTDay: (String, Int)]>([:])
        let sent = Locked<[String: String]>([:])
        let down = Locked(false)
        let pushes = Locked(0)
    }
    let instance: String
    let tables: Tables
    let now: @Sendable () -> Int

    init(instance: String, tables: Tables, now: @escaping @Sendable () -> Int) {
        self.instance = instance
        self.tables = tables
        self.now = now
    }

    var isDown: Bool { tables.down.withLock { $0 } }

    func push(_ snapshots: [TLSRPTCounts], completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        if isDown { return completion(.failure(Down())) }
        tables.pushes.withLock { $0 += 1 }
        for c in snapshots {
            for r in c.rows {
                let k = RowKey(day: c.day, domain: c.domain, instance: instance, policyType: r.policy.type.rawValue,
                               strings: r.policyStrings, result: r.resultType, detail: r.detail)
                tables.counts.withLock { $0[k] = max($0[k] ?? 0, r.count) }
            }
        }
        completion(.success(()))
    }

    func lease(day: TLSRPTDay, seconds: Int, completion: @escaping @Sendable (Result<String, any Error>) -> Void) {
        if isDown { return completion(.failure(Down())) }
        let t = now()
        let holder = tables.leases.withLock { l -> String in
            if let (h, until) = l[day], until >= t, h != instance { return h }
            l[day] = (instance, t + seconds)
            return instance
        }
        completion(.success(holder))
    }

    func domains(day: TLSRPTDay, completion: @escaping @Sendable (Result<[String], any Error>) -> Void) {
        if isDown { return completion(.failure(Down())) }
        completion(.success(Set(tables.counts.withLock { $0.keys.filter { $0.day == day }.map(\.domain) }).sorted()))
    }

    func counts(day: TLSRPTDay, domain: String, completion: @escaping @Sendable (Result<TLSRPTCounts, any Error>) -> Void) {
        if isDown { return completion(.failure(Down())) }
        var summed: [RowKey: Int] = [:]
        for (k, n) in tables.counts.withLock({ $0 }) where k.day == day && k.domain == domain {
            summed[RowKey(day: day, domain: domain, instance: "", policyType: k.policyType, strings: k.strings, result: k.result,
                          detail: k.detail), default: 0] += n
        }
        let rows = summed.sorted { "\($0.key)" < "\($1.key)" }.compactMap { k, n in
            TLSRPTCountRow(domain: domain, policyType: k.policyType, policyStrings: k.strings, resultType: k.result,
                           detail: k.detail, count: n)
        }
        completion(.success(TLSRPTCounts(day: day, domain: domain, summing: rows)))
    }

    func claim(day: TLSRPTDay, domain: String, reportID: String, completion: @escaping @Sendable (Result<String, any Error>) -> Void) {
        if isDown { return completion(.failure(Down())) }
        completion(.success(tables.sent.withLock { s in
            if let by = s["\(day)_\(domain)"] { return by }
            s["\(day)_\(domain)"] = instance
            return instance
        }))
    }
}

@Suite struct TLSRPTSharedTests {
    let submitter = TLSRPTSubmitter(organization: "Org", contact: "mailto:pm@relay.example", submitter: "relay.example")

    struct Instance {
        let dir: String
        let spool: Spool
        let ledger: TLSRPTLedger
        let backend: FakeTLSRPTBackend
        let sync: TLSRPTSync
        let sender: TLSRPTSender
    }

    func instance(_ name: String, _ world: FakeWorld, _ tables: FakeTLSRPTBackend.Tables, dir: String? = nil) throws -> Instance {
        let dir = dir ?? NSTemporaryDirectory() + "relayd-tlsrpt-shared-\(UUID().uuidString)"
        let spool = try Spool(root: dir, reserveBytes: 0, fsyncEnabled: false)
        let ledger = TLSRPTLedger(store: TLSRPTStore(spool: spool, now: world.now), logger: Logger(label: "t"), now: world.now)
        ledger.load()
        let backend = FakeTLSRPTBackend(instance: name, tables: tables, now: world.now)
        let sync = TLSRPTSync(ledger: ledger, backend: backend, spool: spool, logger: Logger(label: "t"))
        sync.load()
        let sender = TLSRPTSender(ledger: ledger, submitter: submitter, from: nil, hostname: "relay.example",
                                  transport: world.transport, logger: Logger(label: "t"), now: world.now,
                                  random: { _ in 600 },
                                  shared: TLSRPTSharedSending(backend: backend, instance: name, sync: sync))
        return Instance(dir: dir, spool: spool, ledger: ledger, backend: backend, sync: sync, sender: sender)
    }

    func total(_ tables: FakeTLSRPTBackend.Tables, _ instance: String) -> Int {
        tables.counts.withLock { $0.filter { $0.key.instance == instance }.values.reduce(0, +) }
    }

    @Test func rowsRoundTripHostileValuesAndSumLikeTheLedger() {
        let day = TLSRPTDay(containing: 1_769_860_800)
        let odd = TLSRPTPolicy(type: .sts, strings: ["mode: enforce", "quote ' \" \\ ; DROP TABLE x; --", "ünïcödé \u{10FFFF}", "",
                                                    "-", "="],
                               domain: "example.com", mxHosts: ["*.example.com", String(repeating: "a", count: 3000)])
        let weird = TLSRPTFailure(resultType: .validationFailure, sendingMTAIP: "", receivingMXHostname: "-",
                                  receivingIP: nil, failureReasonCode: "a b\nc", additionalInformation: "=")
        var c = TLSRPTCounts(day: day, domain: "example.com")
        c.add(.success(odd), count: 3)
        c.add(.failure(odd, weird), count: 2)
        c.add(.failure(stsPolicy, mismatch))
        c.addUndetailed(stsPolicy, count: 4)
        let back = c.rows.map { r in
            TLSRPTCountRow(domain: "example.com", policyType: r.policy.type.rawValue, policyStrings: r.policyStrings,
                           resultType: r.resultType, detail: r.detail, count: r.count)
        }
        #expect(back == c.rows.map { Optional($0) })
        #expect(TLSRPTCounts(day: day, domain: "example.com", summing: c.rows) == c)
        // Two instances' rows sum.
        let twice = TLSRPTCounts(day: day, domain: "example.com", summing: c.rows + c.rows)
        #expect(twice.sessionTotal == 2 * c.sessionTotal)
        #expect(twice.counts[odd]?.successes == 6 && twice.counts[odd]?.failures[weird] == 4)
        #expect(twice.counts[stsPolicy]?.undetailedFailures == 8)
    }

    @Test func pushIsIdempotent() throws {
        let world = FakeWorld()
        let tables = FakeTLSRPTBackend.Tables()
        let a = try instance("a", world, tables)
        defer { try? FileManager.default.removeItem(atPath: a.dir) }
        for _ in 0..<3 { a.ledger.record(.success(stsPolicy)) }
        a.ledger.record(.failure(stsPolicy, mismatch))
        a.sync.tick()
        #expect(total(tables, "a") == 4)
        // The same snapshot again (a replay after an outage, a restart's
        // re-push): nothing counted twice.
        let day = TLSRPTDay(containing: world.now())
        let snapshot = try #require(a.ledger.counts(day: day, domain: "example.com"))
        a.backend.push([snapshot, snapshot]) { _ in }
        a.sync.tick()
        #expect(total(tables, "a") == 4)
        a.ledger.record(.success(stsPolicy))
        a.sync.tick()
        #expect(total(tables, "a") == 5)
        // A restart loads the ledger and pushes it again: still 5.
        a.ledger.flush()
        let again = try instance("a", world, tables, dir: a.dir)
        again.sync.tick()
        #expect(total(tables, "a") == 5)
    }

    @Test func outboxKeptWhileDownSurvivesARestartAndIsReplayedOnce() throws {
        let world = FakeWorld()
        let tables = FakeTLSRPTBackend.Tables()
        let a = try instance("a", world, tables)
        defer { try? FileManager.default.removeItem(atPath: a.dir) }
        tables.down.withLock { $0 = true }
        a.ledger.record(.success(stsPolicy))
        a.sync.tick()
        #expect(!a.sync.isReachable && a.sync.counters.failures == 1)
        a.ledger.record(.success(stsPolicy))
        a.sync.tick()
        let day = TLSRPTDay(containing: world.now())
        #expect(a.spool.recordNames(TLSRPTSync.folder) == ["\(day)_example.com"])
        let stored = try #require(try a.spool.readRecord(TLSRPTSync.folder, "\(day)_example.com"))
        #expect(TLSRPTCounts.decode(stored)?.sessionTotal == 2, "the outbox has the latest snapshot")
        #expect(total(tables, "a") == 0)

        // A restart while down (the ledger's last minute lost: the outbox
        // still has both sessions), then the database is back.
        let b = try instance("a", world, tables, dir: a.dir)
        #expect(b.sync.pendingKeys == ["\(day)_example.com"] && !b.sync.isReachable)
        tables.down.withLock { $0 = false }
        b.sync.tick()
        #expect(b.sync.isReachable && b.sync.pendingKeys.isEmpty)
        #expect(total(tables, "a") == 2)
        #expect(b.spool.recordNames(TLSRPTSync.folder).isEmpty, "the outbox is emptied once replayed")
        b.sync.tick()
        #expect(total(tables, "a") == 2, "replayed once, not added again")
    }

    @Test func onlyTheLeaseHolderSendsOneReportSummedOverInstancesAndNeverTwice() throws {
        let world = FakeWorld()
        world.txt.withLock { $0["_smtp._tls.example.com"] = .success([["v=TLSRPTv1; rua=mailto:rpt@example.com"]]) }
        let tables = FakeTLSRPTBackend.Tables()
        let a = try instance("a", world, tables)
        let b = try instance("b", world, tables)
        defer { for i in [a, b] { try? FileManager.default.removeItem(atPath: i.dir) } }
        let day = TLSRPTDay(containing: world.now())
        a.ledger.record(.success(stsPolicy))
        a.ledger.record(.success(stsPolicy))
        b.ledger.record(.success(stsPolicy))
        b.ledger.record(.failure(stsPolicy, mismatch))
        // Only B saw this domain: the holder reports it too.
        let other = TLSRPTPolicy(type: .noPolicyFound, domain: "other.example")
        b.ledger.record(.success(other))
        world.txt.withLock { $0["_smtp._tls.other.example"] = .success([["v=TLSRPTv1; rua=https://rpt.other.example/in"]]) }
        a.sync.tick()
        b.sync.tick()

        world.advance(12 * 3600 + TLSRPTSchedule.settle)  // past midnight
        a.sender.tick()   // A takes the lease and schedules the reports
        b.sender.tick()   // B does not hold it
        #expect(tables.leases.withLock { $0[day]?.0 } == "a")
        world.advance(600)
        b.sender.tick()
        a.sender.tick()
        let mails = world.queued.withLock { $0 }
        #expect(mails.count == 1, "one report by mail, from A")
        #expect(world.posts.withLock { $0.count } == 1, "B's domain reported by A over HTTPS")
        #expect(tables.sent.withLock { $0 } == ["\(day)_example.com": "a", "\(day)_other.example": "a"])
        // The report is the sum over both instances.
        let body = String(decoding: try #require(mails.first).body, as: UTF8.self)
        let b64 = try #require(body.components(separatedBy: "filename=").last?.components(separatedBy: "\r\n\r\n")[1])
        let gz = try #require(Data(base64Encoded: b64, options: .ignoreUnknownCharacters))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(try Gzip.decompress([UInt8](gz)))) as? [String: Any])
        let policies = try #require(json["policies"] as? [[String: Any]])
        let summary = try #require(policies.first?["summary"] as? [String: Int])
        #expect(summary == ["total-successful-session-count": 3, "total-failure-session-count": 1])

        // A goes away; its lease runs out; B takes it and sends nothing:
        // each report is claimed by A already.
        world.advance(3600)
        b.sender.tick()
        #expect(tables.leases.withLock { $0[day]?.0 } == "b")
        world.advance(3600)
        b.sender.tick()
        // Forced by hand on B too: still one report.
        let lines = Locked<[String]>([])
        b.sender.sendNow(day: day, dryRun: false, includeJSON: false) { l in lines.withLock { $0 = l } }
        #expect(lines.withLock { $0 }.contains("example.com: already sent by a"), "\(lines.withLock { $0 })")
        #expect(world.queued.withLock { $0.count } == 1 && world.posts.withLock { $0.count } == 1)
        // A restarted sends nothing again either.
        let a2 = try instance("a", world, tables, dir: a.dir)
        world.advance(11 * 60)
        a2.sender.tick()
        world.advance(3600)
        a2.sender.tick()
        #expect(world.queued.withLock { $0.count } == 1 && world.posts.withLock { $0.count } == 1)
    }

    @Test func aDryRunShowsTheSumWithoutTakingTheLease() throws {
        let world = FakeWorld()
        world.txt.withLock { $0["_smtp._tls.example.com"] = .success([["v=TLSRPTv1; rua=mailto:rpt@example.com"]]) }
        let tables = FakeTLSRPTBackend.Tables()
        let a = try instance("a", world, tables)
        let b = try instance("b", world, tables)
        defer { for i in [a, b] { try? FileManager.default.removeItem(atPath: i.dir) } }
        a.ledger.record(.success(stsPolicy))
        b.ledger.record(.success(stsPolicy))
        b.sync.tick()
        let lines = Locked<[String]>([])
        a.sender.sendNow(day: TLSRPTDay(containing: world.now()), dryRun: true, includeJSON: false) { l in lines.withLock { $0 = l } }
        #expect(lines.withLock { $0 }.first?.hasPrefix("example.com: 2 sessions;") == true, "\(lines.withLock { $0 })")
        #expect(tables.leases.withLock { $0.isEmpty } && tables.sent.withLock { $0.isEmpty })
        #expect(world.queued.withLock { $0.isEmpty })
    }

    @Test func databaseDownWhenDueWaitsAndNeverSendsPartialCounts() throws {
        let world = FakeWorld()
        world.txt.withLock { $0["_smtp._tls.example.com"] = .success([["v=TLSRPTv1; rua=mailto:rpt@example.com"]]) }
        let tables = FakeTLSRPTBackend.Tables()
        let a = try instance("a", world, tables)
        let b = try instance("b", world, tables)
        defer { for i in [a, b] { try? FileManager.default.removeItem(atPath: i.dir) } }
        a.ledger.record(.success(stsPolicy))
        b.ledger.record(.success(stsPolicy))
        b.sync.tick()
        tables.down.withLock { $0 = true }
        world.advance(12 * 3600)
        for _ in 0..<120 {   // two hours of ticks with the database down
            world.advance(60)
            a.sender.tick()
        }
        #expect(world.queued.withLock { $0 }.isEmpty, "no report from A's counts alone")
        let lines = Locked<[String]>([])
        a.sender.sendNow(day: TLSRPTDay(containing: world.now()).previous, dryRun: false, includeJSON: false) { l in
            lines.withLock { $0 = l }
        }
        #expect(lines.withLock { $0 }.first?.contains("shared state unreachable") == true)
        #expect(world.queued.withLock { $0 }.isEmpty)

        tables.down.withLock { $0 = false }
        for _ in 0..<15 {
            world.advance(60)
            a.sender.tick()
        }
        let mail = try #require(world.queued.withLock { $0 }.first)
        #expect(world.queued.withLock { $0.count } == 1)
        #expect(String(decoding: mail.body, as: UTF8.self).contains("TLS-Report-Domain: example.com"))
        let day = TLSRPTDay(containing: world.now()).previous
        let summed = Locked<TLSRPTCounts?>(nil)
        a.backend.counts(day: day, domain: "example.com") { r in summed.withLock { $0 = try? r.get() } }
        #expect(summed.withLock { $0 }?.sessionTotal == 2, "A's queued counts were pushed before the report")
    }
}
