import Testing
import Foundation
import Logging
@testable import RelayModel
@testable import RelayQueue
@testable import RelaySync
@testable import RelayTLSRPT

let stsPolicy = TLSRPTPolicy(type: .sts, strings: ["version: STSv1", "mode: enforce", "mx: *.example.com", "max_age: 86400"],
                             domain: "example.com", mxHosts: ["*.example.com"])
let mismatch = TLSRPTFailure(resultType: .certificateHostMismatch, sendingMTAIP: "192.0.2.1",
                             receivingMXHostname: "mx1.example.com", receivingIP: "198.51.100.7",
                             failureReasonCode: "X509_V_ERR_HOSTNAME_MISMATCH", additionalInformation: "name: mx1.example.com")

@Suite struct TLSRPTDayTests {
    @Test func roundTrips() throws {
        let d = try #require(TLSRPTDay("2024-02-29"))
        #expect(d.description == "2024-02-29")
        #expect(d.start == 1_709_164_800)
        #expect(TLSRPTDay(containing: d.start + 86399) == d)
        #expect(TLSRPTDay(containing: d.end) == d.next)
        #expect(TLSRPTDay("1970-01-01")?.start == 0)
    }

    @Test func hostileDays() {
        for s in ["", "2023-02-29", "2024-13-01", "2024-00-10", "2024-1-01", "24-01-01", "2024-01-32", "2024/01/01",
                  "2024-01-0a", "+024-01-01", "1969-12-31", "2024-01-01 "] {
            #expect(TLSRPTDay(s) == nil, "\(s)")
        }
    }
}

@Suite struct TLSRPTCountsTests {
    let day = TLSRPTDay("2026-01-31")!

    @Test func countsAndRoundTrips() throws {
        var c = TLSRPTCounts(day: day, domain: "example.com")
        c.add(.success(stsPolicy))
        c.add(.success(stsPolicy))
        c.add(.failure(stsPolicy, mismatch))
        c.add(.failure(stsPolicy, mismatch))
        c.add(.failure(TLSRPTPolicy(type: .noPolicyFound, domain: "example.com"),
                       TLSRPTFailure(resultType: .starttlsNotSupported, receivingMXHostname: "-", additionalInformation: "")))
        #expect(c.counts[stsPolicy]?.successes == 2)
        #expect(c.counts[stsPolicy]?.failureTotal == 2)
        #expect(c.sessionTotal == 5)
        let back = try #require(TLSRPTCounts.decode(c.encode()))
        #expect(back == c)
    }

    @Test func boundedDetailsKeepTotals() {
        var c = TLSRPTCounts(day: day, domain: "example.com")
        for i in 0..<(TLSRPTCounts.maxDetails + 10) {
            c.add(.failure(stsPolicy, TLSRPTFailure(resultType: .validationFailure, receivingIP: "192.0.2.\(i % 250)",
                                                   additionalInformation: "\(i)")))
        }
        for i in 0..<(TLSRPTCounts.maxPolicies + 3) {
            c.add(.success(TLSRPTPolicy(type: .tlsa, strings: ["3 1 1 \(i)"], domain: "example.com")))
        }
        #expect(c.counts[stsPolicy]!.failures.count == TLSRPTCounts.maxDetails)
        #expect(c.counts[stsPolicy]!.failureTotal == TLSRPTCounts.maxDetails + 10)
        #expect(c.policies.count == TLSRPTCounts.maxPolicies)
        #expect(c.sessionTotal == TLSRPTCounts.maxDetails + 10 + TLSRPTCounts.maxPolicies + 3)
        #expect(TLSRPTCounts.decode(c.encode()) == c)
    }

    @Test func hostileFilesRefused() {
        var c = TLSRPTCounts(day: day, domain: "example.com")
        c.add(.failure(stsPolicy, mismatch))
        let good = String(decoding: c.encode(), as: UTF8.self)
        let bad = [
            "", "tlsrpt-counts 1\n", good.replacingOccurrences(of: "tlsrpt-counts 1", with: "tlsrpt-counts 2"),
            good.replacingOccurrences(of: "domain example.com", with: "domain ../etc"),
            good.replacingOccurrences(of: "policy sts", with: "policy dane"),
            good.replacingOccurrences(of: "policy sts 0", with: "policy sts -1"),
            good.replacingOccurrences(of: "failure certificate-host-mismatch 1", with: "failure certificate-host-mismatch 0"),
            good.replacingOccurrences(of: "failure certificate-host-mismatch", with: "failure tls-broken"),
            good + "failure validation-failure 1 - -\n",
            good + "bogus\n", good + "policy sts 1 0\n" + String(good.split(separator: "\n").filter { $0.hasPrefix("string") || $0.hasPrefix("mx") }.map { $0 + "\n" }.joined()),
            String(good.dropLast()), good + "string \u{7f}\n",
        ]
        for b in bad { #expect(TLSRPTCounts.decode(Array(b.utf8)) == nil, "\(b)") }
    }
}

@Suite struct TLSRPTLedgerTests {
    final class Clock: Sendable {
        let t = Locked(1_769_860_800) // 2026-01-31T12:00:00Z
        func advance(_ s: Int) { t.withLock { $0 += s } }
        var now: @Sendable () -> Int { { [t] in t.withLock { $0 } } }
    }

    func spool() throws -> (String, Spool) {
        let dir = NSTemporaryDirectory() + "relayd-tlsrpt-\(UUID().uuidString)"
        return (dir, try Spool(root: dir, reserveBytes: 0, fsyncEnabled: false))
    }

    @Test func recordsFlushesAndSurvivesRestart() throws {
        let (dir, s) = try spool()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clock = Clock()
        let store = TLSRPTStore(spool: s, now: clock.now)
        let ledger = TLSRPTLedger(store: store, logger: Logger(label: "t"), now: clock.now)
        ledger.record(.success(stsPolicy))
        ledger.record(.failure(stsPolicy, mismatch))
        let day = TLSRPTDay(containing: clock.now())
        #expect(try store.get(day: day, domain: "example.com") == nil, "nothing written before the flush")
        #expect(ledger.hasUnwritten)
        ledger.flush()
        #expect(!ledger.hasUnwritten)
        #expect(try store.get(day: day, domain: "example.com")?.sessionTotal == 2)

        // A new process: counts add to what was on disk.
        let again = TLSRPTLedger(store: store, logger: Logger(label: "t"), now: clock.now)
        again.load()
        again.record(.success(stsPolicy))
        again.flush()
        let c = try #require(try store.get(day: day, domain: "example.com"))
        #expect(c.counts[stsPolicy]?.successes == 2)
        #expect(c.counts[stsPolicy]?.failureTotal == 1)
        #expect(again.domains(day: day) == ["example.com"])
    }

    @Test func eventsFallOnTheirUTCDayAndOldDaysLeaveMemory() throws {
        let (dir, s) = try spool()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clock = Clock()
        let ledger = TLSRPTLedger(store: TLSRPTStore(spool: s, now: clock.now), logger: Logger(label: "t"), now: clock.now)
        let first = TLSRPTDay(containing: clock.now())
        ledger.record(.success(stsPolicy))
        clock.advance(86400)
        ledger.record(.success(stsPolicy))
        ledger.record(.success(stsPolicy))
        ledger.flush()
        #expect(ledger.counts(day: first, domain: "example.com")?.sessionTotal == 1)
        #expect(ledger.counts(day: first.next, domain: "example.com")?.sessionTotal == 2)
        clock.advance(2 * 86400)
        ledger.flush()
        // Gone from memory, still read from disk.
        #expect(ledger.counts(day: first, domain: "example.com")?.sessionTotal == 1)
    }

    @Test func boundedDomainsAndBadNames() throws {
        let (dir, s) = try spool()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clock = Clock()
        let ledger = TLSRPTLedger(store: TLSRPTStore(spool: s, now: clock.now), logger: Logger(label: "t"), now: clock.now,
                                  maxDomainsPerDay: 3)
        for i in 0..<5 { ledger.record(.success(TLSRPTPolicy(type: .noPolicyFound, domain: "d\(i).example"))) }
        ledger.record(.success(TLSRPTPolicy(type: .noPolicyFound, domain: "../../etc")))
        ledger.flush()
        #expect(ledger.domains(day: TLSRPTDay(containing: clock.now())) == ["d0.example", "d1.example", "d2.example"])
    }

    @Test func damagedRecordSetAside() throws {
        let (dir, s) = try spool()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clock = Clock()
        let damaged = Locked<[String]>([])
        let store = TLSRPTStore(spool: s, now: clock.now, onDamaged: { n, _ in damaged.withLock { $0.append(n) } })
        let day = TLSRPTDay(containing: clock.now())
        try s.writeRecord("tlsrpt", "\(day)_example.com", Array("tlsrpt-counts 1\nnonsense\n".utf8))
        #expect(try store.get(day: day, domain: "example.com") == nil)
        #expect(damaged.withLock { $0 } == ["tlsrpt/\(day)_example.com"])
        #expect(store.domains(day: day).isEmpty)
    }

    @Test func concurrentRecordsAllCounted() throws {
        let (dir, s) = try spool()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clock = Clock()
        let ledger = TLSRPTLedger(store: TLSRPTStore(spool: s, now: clock.now), logger: Logger(label: "t"), now: clock.now)
        DispatchQueue.concurrentPerform(iterations: 1000) { i in
            ledger.record(i % 2 == 0 ? .success(stsPolicy) : .failure(stsPolicy, mismatch))
            if i % 100 == 0 { ledger.flush() }
        }
        ledger.flush()
        #expect(ledger.counts(day: TLSRPTDay(containing: clock.now()), domain: "example.com")?.sessionTotal == 1000)
    }
}
