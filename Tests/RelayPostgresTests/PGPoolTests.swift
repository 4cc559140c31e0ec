// PGPool against a real PostgreSQL: bounded queue, outage and recovery.
import Dispatch
import Foundation
import Testing
import RelayTestSupport
@testable import RelayPostgres

extension PostgreSQLTests {
    @Suite struct PGPoolTests {
        @Test func queuedRequestsAreBoundedAndServedInTurn() async throws {
            guard let pg = try startServer() else { return }
            defer { pg.stop() }
            let pool = PGPool(PGPoolConfiguration(connect: options(pg), size: 1, queueLimit: 2, queryTimeout: .seconds(5)))
            pool.start()
            defer { pool.shutdown() }
            #expect(try await pool.run("SELECT 1 AS one").get().value(0, "one") == "1")
            let lease = try await pool.lease()  // the only connection, held
            let first = Task { await pool.run("SELECT $1::text AS v", ["first"]) }
            let second = Task { await pool.run("SELECT $1::text AS v", ["second"]) }
            try await Task.sleep(for: .milliseconds(200))
            // Two wait; the third is refused at once rather than queued.
            let start = DispatchTime.now()
            let third = await pool.run("SELECT 3")
            #expect(elapsed(since: start) < 0.5)
            #expect(throws: PGError.saturated(limit: 2)) { try third.get() }
            #expect(pool.stats.rejected == 1)
            lease.release()
            #expect(try await first.value.get().value(0, "v") == "first")
            #expect(try await second.value.get().value(0, "v") == "second")
            #expect(pool.stats.waiting == 0)
        }

        @Test func aDatabaseNeverReachedFailsRequestsFastAndShutdownClosesThem() async throws {
            guard let pg = try startServer() else { return }
            let dead = options(pg)
            pg.stop()
            let pool = PGPool(PGPoolConfiguration(connect: dead, size: 2, queryTimeout: .seconds(10),
                                                  reconnectMinimum: .milliseconds(100), reconnectMaximum: .milliseconds(400)))
            pool.start()
            // Queued before the first attempt failed: failed when it did, not after 10 s.
            var start = DispatchTime.now()
            let first = await pool.run("SELECT 1")
            guard case .failure(.unavailable(let why)) = first else { Issue.record("\(first)"); return }
            #expect(why.contains("Connection refused") || why.contains("connect"), "\(why)")
            #expect(elapsed(since: start) < 3)
            // Later ones fail at once while it stays down.
            start = DispatchTime.now()
            for _ in 0..<20 { if case .success = await pool.run("SELECT 1") { Issue.record("answered by a dead database") } }
            #expect(elapsed(since: start) < 1)
            let stats = pool.stats
            #expect(!stats.healthy)
            #expect(stats.connectFailures >= 2)
            #expect(stats.rejected >= 20)
            #expect(stats.lastError != nil)
            await withCheckedContinuation { c in pool.shutdown(on: replies) { c.resume() } }
            let closed = await pool.run("SELECT 1")
            #expect(throws: PGError.closed) { try closed.get() }
        }

        @Test func survivesTheServerStoppingAndStartingAgain() async throws {
            guard let pg = try startServer() else { return }
            defer { pg.stop() }
            let pool = PGPool(PGPoolConfiguration(connect: options(pg), size: 2, queueLimit: 50, queryTimeout: .seconds(3),
                                                  reconnectMinimum: .milliseconds(100), reconnectMaximum: .seconds(1)))
            pool.start()
            defer { pool.shutdown() }
            for i in 0..<5 {
                #expect(try await pool.run("SELECT $1::int * 2 AS v", [String(i)]).get().value(0, "v") == String(i * 2))
            }
            let lease = try await pool.lease()
            let held = Task { try await withCheckedThrowingContinuation { c in
                lease.query("SELECT pg_sleep(30)", timeout: .seconds(20), on: replies) { c.resume(with: $0) }
            } }
            try await Task.sleep(for: .milliseconds(200))
            pg.stop()
            // The query on the server when it went away fails, and does not hang.
            let start = DispatchTime.now()
            await #expect(throws: PGError.self) { _ = try await held.value }
            #expect(elapsed(since: start) < 5)
            lease.release()
            // While it is down every request ends, failed, within its timeout.
            var failed = 0
            for _ in 0..<10 {
                let t = DispatchTime.now()
                if case .failure = await pool.run("SELECT 1") { failed += 1 }
                #expect(elapsed(since: t) < 4)
            }
            #expect(failed == 10)
            #expect(pool.stats.healthy == false)
            #expect(pool.stats.disconnects >= 2)
            try pg.start()
            // Reconnected: requests succeed again.
            var back = false
            for _ in 0..<100 {
                if case .success(let r) = await pool.run("SELECT 'again' AS v"), r.value(0, "v") == "again" { back = true; break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(back)
            #expect(pool.stats.healthy)
            #expect(pool.stats.connects >= 3)
            // Many at once, all answered.
            let results = await withTaskGroup(of: Bool.self) { group in
                for i in 0..<40 {
                    group.addTask { (try? await pool.run("SELECT $1::int AS v", [String(i)]).get().value(0, "v")) == String(i) }
                }
                return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(results == 40)
        }
    }
}
