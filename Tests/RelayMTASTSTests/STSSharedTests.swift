// MTA-STS policies shared between instances (STSShared.swift), with two
// discoveries on one fake table and one fake policy host: one fetch for
// both, the lease holder fetches while the other waits, a slow or broken
// table never stops an instance from fetching itself, a damaged row is no
// policy.
import Dispatch
import Foundation
import Logging
import Testing
@testable import RelayDNS
@testable import RelayHTTPS
@testable import RelayModel
@testable import RelayMTASTS
@testable import RelaySTS
import RelaySync
import RelayTestSupport

/// The shared table in memory; `instance` is who writes through this view.
final class FakeSTSTable: @unchecked Sendable {
    let lock = NSLock()
    var rows: [String: (SharedSTSPolicy, Int)] = [:]
    var leases: [String: (String, Int)] = [:]
    var broken = false
    var silent = false
    var clock: () -> Int = { 1_800_000_000 }

    func view(_ instance: String) -> FakeSTSView { FakeSTSView(table: self, instance: instance) }

    /// The rows, read under the lock (the discoveries write from their queues).
    var snapshot: [String: (SharedSTSPolicy, Int)] {
        lock.lock()
        defer { lock.unlock() }
        return rows
    }

    var leaseHolders: [String: String] {
        lock.lock()
        defer { lock.unlock() }
        return leases.mapValues(\.0)
    }

    func put(_ row: SharedSTSPolicy, expires: Int) {
        lock.lock()
        rows[row.domain] = (row, expires)
        lock.unlock()
    }
}

struct FakeSTSView: SharedSTSBackend {
    struct Broken: Error {}
    let table: FakeSTSTable
    let instance: String

    func lookup(domain: String, id: String, completion: @escaping @Sendable (Result<SharedSTSPolicy?, any Error>) -> Void) {
        table.lock.lock()
        let (broken, silent) = (table.broken, table.silent)
        let row = table.rows[domain].flatMap { $0.0.id == id && $0.1 > table.clock() ? $0.0 : nil }
        table.lock.unlock()
        if silent { return }
        DispatchQueue.global().async { completion(broken ? .failure(Broken()) : .success(row)) }
    }

    func lease(domain: String, seconds: Int, completion: @escaping @Sendable (Result<Bool, any Error>) -> Void) {
        table.lock.lock()
        let now = table.clock()
        var held = false
        if !table.broken, !table.silent {
            if let l = table.leases[domain], l.1 > now, l.0 != instance { held = false } else {
                table.leases[domain] = (instance, now + seconds)
                held = true
            }
        }
        let (broken, silent, answer) = (table.broken, table.silent, held)
        table.lock.unlock()
        if silent { return }
        DispatchQueue.global().async { completion(broken ? .failure(Broken()) : .success(answer)) }
    }

    func publish(_ policy: SharedSTSPolicy, expires: Int, completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        table.lock.lock()
        var p = policy
        p.fetchedBy = instance
        table.rows[policy.domain] = (p, expires)
        if table.leases[policy.domain]?.0 == instance { table.leases[policy.domain] = nil }
        table.lock.unlock()
        DispatchQueue.global().async { completion(.success(())) }
    }
}

private let enforce = "version: STSv1\nmode: enforce\nmx: mx.far.test\nmax_age: 86400\n"

private func discovery(_ bed: DiscoveryBed, _ view: FakeSTSView, wait: Int = 3) -> STSDiscovery {
    let clock = bed.clock
    return STSDiscovery(resolver: bed.dns, fetcher: bed.host, store: bed.store, policies: STSPolicies(),
                        logger: bed.lines.logger, now: { clock.now }, shared: view, sharedWait: wait)
}

private func prepare(_ d: STSDiscovery, _ domain: String) async {
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in d.prepare(domain) { done.resume() } }
}

@Suite struct STSSharedTests {
    @Test func theSecondInstanceTakesThePolicyWithoutFetching() async throws {
        let bed = try DiscoveryBed()
        bed.txt("far.test", ["v=STSv1; id=one;"])
        bed.host.serve("far.test", enforce)
        let table = FakeSTSTable()
        table.clock = { bed.clock.now }
        let a = discovery(bed, table.view("a")), b = discovery(bed, table.view("b"))
        await prepare(a, "far.test")
        #expect(bed.host.fetches == ["far.test"])
        // publishing is asynchronous; wait for the row
        for _ in 0..<100 where table.snapshot.isEmpty { try await Task.sleep(nanoseconds: 10_000_000) }
        await prepare(b, "far.test")
        #expect(bed.host.fetches == ["far.test"], "one fetch for both instances")
        #expect(b.policies.record("far.test")?.id == "one" && b.policies.record("far.test")?.policy.mode == .enforce)
        #expect(bed.lines.count("MTA-STS policy taken from shared state") == 1)
        #expect(table.snapshot["far.test"]?.0.fetchedBy == "a")
    }

    @Test func whileOneInstanceHoldsTheLeaseTheOtherWaitsForItsResult() async throws {
        let bed = try DiscoveryBed()
        bed.txt("far.test", ["v=STSv1; id=one;"])
        bed.host.serve("far.test", enforce)
        let table = FakeSTSTable()
        table.clock = { bed.clock.now }
        let a = discovery(bed, table.view("a")), b = discovery(bed, table.view("b"), wait: 5)
        bed.host.hold()
        async let first: Void = prepare(a, "far.test")
        for _ in 0..<200 where bed.host.fetches.isEmpty { try await Task.sleep(nanoseconds: 10_000_000) }
        #expect(table.leaseHolders["far.test"] == "a")
        async let second: Void = prepare(b, "far.test")
        try await Task.sleep(nanoseconds: 300_000_000)
        bed.host.release()
        _ = await (first, second)
        #expect(bed.host.fetches == ["far.test"], "b waited for a's fetch instead of fetching")
        #expect(b.policies.record("far.test")?.id == "one")
    }

    @Test(arguments: ["broken", "silent"])
    func aBrokenOrSilentTableNeverStopsAFetch(mode: String) async throws {
        let bed = try DiscoveryBed()
        bed.txt("far.test", ["v=STSv1; id=one;"])
        bed.host.serve("far.test", enforce)
        let table = FakeSTSTable()
        if mode == "broken" { table.broken = true } else { table.silent = true }
        let a = discovery(bed, table.view("a"))
        let started = Date()
        await prepare(a, "far.test")
        #expect(bed.host.fetches == ["far.test"])
        #expect(a.policies.record("far.test")?.policy.mode == .enforce)
        // Each table answer is awaited about a second (two of them here);
        // the bound is loose because the whole suite shares two cores.
        #expect(Date().timeIntervalSince(started) < 30, "the fetch is not held by the table")
    }

    /// A proactive refresh takes a copy another instance refreshed since
    /// this one fetched, instead of fetching again; its own old copy in the
    /// table does not count as a refresh.
    @Test func aProactiveRefreshTakesAnotherInstancesNewerCopy() async throws {
        let bed = try DiscoveryBed()
        bed.txt("far.test", ["v=STSv1; id=one;"])
        bed.host.serve("far.test", enforce)
        let table = FakeSTSTable()
        table.clock = { bed.clock.now }
        let a = discovery(bed, table.view("a"))
        await prepare(a, "far.test")
        for _ in 0..<100 where table.snapshot.isEmpty { try await Task.sleep(nanoseconds: 10_000_000) }
        #expect(bed.host.fetches.count == 1)
        bed.clock.advance(90_000)
        table.put(SharedSTSPolicy(domain: "far.test", id: "one", text: enforce, fetched: bed.clock.now - 60, fetchedBy: "b"),
                  expires: bed.clock.now + 86_000)
        a.refreshStale(jitter: { _ in 0 })
        for _ in 0..<300 where a.policies.record("far.test")?.fetched != bed.clock.now - 60 {
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        #expect(a.policies.record("far.test")?.fetched == bed.clock.now - 60, "b's refresh taken")
        #expect(bed.host.fetches.count == 1, "no second fetch")
    }

    @Test func aDamagedRowIsNoPolicy() async throws {
        let bed = try DiscoveryBed()
        bed.txt("far.test", ["v=STSv1; id=one;"])
        bed.host.serve("far.test", enforce)
        let table = FakeSTSTable()
        table.clock = { bed.clock.now }
        table.put(SharedSTSPolicy(domain: "far.test", id: "one", text: "mode: enforce\n'; DROP TABLE x; --",
                                  fetched: bed.clock.now, fetchedBy: "evil"), expires: bed.clock.now + 3600)
        let a = discovery(bed, table.view("a"))
        await prepare(a, "far.test")
        #expect(bed.host.fetches == ["far.test"], "a row that does not parse is ignored and the policy fetched")
        #expect(a.policies.record("far.test")?.policy.mx == ["mx.far.test"])
    }
}
