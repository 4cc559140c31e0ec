// Migrations against a real PostgreSQL: once under racing starters, a
// changed file refused, --dry-run applying nothing; and the 0001 schema.
import Dispatch
import Foundation
import Testing
import RelayTestSupport
@testable import RelayPostgres

extension PostgreSQLTests {
    @Suite struct PGMigrationsTests {
        @Test func loadsOrderedFilesAndRefusesBadNames() throws {
            let dir = try migrationsCopy()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try "CREATE TABLE later (id integer);\n".write(toFile: dir + "/0002_later.sql", atomically: true, encoding: .utf8)
            try "not a migration".write(toFile: dir + "/README", atomically: true, encoding: .utf8)
            let loaded = try PGMigrations.load(directory: dir)
            #expect(loaded.map(\.version) == [1, 2])
            #expect(loaded.map(\.name) == ["initial", "later"])
            try "SELECT 1;".write(toFile: dir + "/0002_again.sql", atomically: true, encoding: .utf8)
            #expect(throws: PGError.self) { try PGMigrations.load(directory: dir) }
            try FileManager.default.removeItem(atPath: dir + "/0002_again.sql")
            try "SELECT 1;".write(toFile: dir + "/3_short.sql", atomically: true, encoding: .utf8)
            #expect(throws: PGError.self) { try PGMigrations.load(directory: dir) }
            #expect(throws: PGError.self) { try PGMigrations.load(directory: dir + "/missing") }
        }

        @Test func appliesOnceUnderConcurrentStarters() async throws {
            guard let pg = try startServer() else { return }
            defer { pg.stop() }
            let dir = try migrationsCopy()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            // A slow second file widens the race window.
            try "SELECT pg_sleep(0.5);\nCREATE TABLE slow_marker (id integer);\n"
                .write(toFile: dir + "/0002_slow.sql", atomically: true, encoding: .utf8)
            let migrations = try PGMigrations.load(directory: dir)
            let a = PGPool(PGPoolConfiguration(connect: options(pg), size: 2))
            let b = PGPool(PGPoolConfiguration(connect: options(pg), size: 2))
            a.start(); b.start()
            defer { a.shutdown(); b.shutdown() }
            async let ra = a.migrate(migrations)
            async let rb = b.migrate(migrations)
            let (x, y) = await (ra, rb)
            let reports = try [x.get(), y.get()]
            #expect(reports.map(\.applied.count).sorted() == [0, 2])
            #expect(try await a.run("SELECT count(*) AS n FROM relayd_schema_migrations").get().value(0, "n") == "2")
            let rows = try await a.run("SELECT version, name, checksum FROM relayd_schema_migrations ORDER BY version").get()
            #expect(rows.rows.map { $0[1] } == ["initial", "slow"])
            #expect(rows.rows.allSatisfy { ($0[2]?.count ?? 0) == 64 })
            // A third start finds nothing to do.
            let again = try await a.migrate(migrations).get()
            #expect(again.applied.isEmpty)
            #expect(again.alreadyApplied == [1, 2])
            // The advisory lock was given back.
            #expect(try await a.run("SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'").get().value(0, "n") == "0")
        }

        @Test func aChangedAppliedFileIsRefused() async throws {
            guard let pg = try startServer() else { return }
            defer { pg.stop() }
            let dir = try migrationsCopy()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let pool = PGPool(PGPoolConfiguration(connect: options(pg), size: 1))
            pool.start()
            defer { pool.shutdown() }
            _ = try await pool.migrate(try PGMigrations.load(directory: dir)).get()
            let path = dir + "/0001_initial.sql"
            try (try String(contentsOfFile: path, encoding: .utf8) + "\n-- an edit\n").write(toFile: path, atomically: true, encoding: .utf8)
            try "CREATE TABLE never (id integer);".write(toFile: dir + "/0002_next.sql", atomically: true, encoding: .utf8)
            let result = await pool.migrate(try PGMigrations.load(directory: dir))
            guard case .failure(.migration(let message)) = result else { Issue.record("accepted: \(result)"); return }
            #expect(message.contains("0001_initial.sql was changed"))
            // Nothing after the refusal ran.
            #expect(try await pool.run("SELECT to_regclass('never') IS NULL AS absent").get().value(0, "absent") == "t")
            // A failing new file rolls back entirely and is not recorded.
            let fresh = try migrationsCopy()
            defer { try? FileManager.default.removeItem(atPath: fresh) }
            try "CREATE TABLE half (id integer);\nSELECT no_such_function();\n".write(toFile: fresh + "/0002_broken.sql", atomically: true, encoding: .utf8)
            let broken = await pool.migrate(try PGMigrations.load(directory: fresh))
            guard case .failure(.migration(let m)) = broken else { Issue.record("accepted: \(broken)"); return }
            #expect(m.contains("0002_broken.sql failed"))
            #expect(try await pool.run("SELECT to_regclass('half') IS NULL AS absent").get().value(0, "absent") == "t")
            #expect(try await pool.run("SELECT count(*) AS n FROM relayd_schema_migrations").get().value(0, "n") == "1")
        }

        @Test func dryRunAppliesNothing() async throws {
            guard let pg = try startServer() else { return }
            defer { pg.stop() }
            let pool = PGPool(PGPoolConfiguration(connect: options(pg), size: 1))
            pool.start()
            defer { pool.shutdown() }
            let migrations = try PGMigrations.load(directory: repositoryMigrations)
            let report = try await pool.migrate(migrations, dryRun: true).get()
            #expect(report.dryRun)
            #expect(report.applied.map(\.version) == migrations.map(\.version))
            let tables = try await pool.run("SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'").get()
            #expect(tables.value(0, "n") == "0")
            _ = try await pool.migrate(migrations).get()
            #expect(try await pool.migrate(migrations, dryRun: true).get().applied.isEmpty)
        }

        @Test func schema0001TakesWhatIssue17SharesAndCountsChanges() async throws {
            guard let pg = try startServer() else { return }
            defer { pg.stop() }
            let pool = PGPool(PGPoolConfiguration(connect: options(pg), size: 1))
            pool.start()
            defer { pool.shutdown() }
            _ = try await pool.migrate(try PGMigrations.load(directory: repositoryMigrations)).get()
            let domain = "o'brien.example"
            _ = try await pool.run("""
                INSERT INTO mta_sts_policies (domain, policy_id, policy_text, fetched_at, expires_at, fetched_by)
                VALUES ($1, $2, $3, now(), now() + interval '1 day', $4)
                """, [domain, "id1", "version: STSv1\nmode: enforce\n", "a"]).get()
            let before = try await pool.run("SELECT change_seq FROM mta_sts_policies WHERE domain = $1", [domain]).get()
            _ = try await pool.run("UPDATE mta_sts_policies SET policy_id = $2 WHERE domain = $1", [domain, "id2"]).get()
            let after = try await pool.run("SELECT change_seq FROM mta_sts_policies WHERE domain = $1", [domain]).get()
            #expect(Int(after.rows[0][0]!)! > Int(before.rows[0][0]!)!)
            let since = try await pool.run("SELECT domain FROM mta_sts_policies WHERE change_seq > $1::bigint", [before.rows[0][0]]).get()
            #expect(since.rows == [[domain]])
            // The checks hold: an uppercase domain, an unknown level are refused.
            let upper = await pool.run("INSERT INTO mta_sts_fetch_leases (domain, holder, until) VALUES ($1, $2, now())", ["A.EXAMPLE", "a"])
            #expect(throws: PGError.self) { try upper.get() }
            let level = await pool.run("""
                INSERT INTO learned_actions (domain, action, level, by, instance) VALUES ($1, 'pin', $2, 'op', 'a')
                """, ["a.example", "dane"])
            #expect(throws: PGError.self) { try level.get() }
            for table in ["mta_sts_fetch_leases", "learned_records", "learned_evidence", "learned_evidence_days", "learned_actions",
                          "tlsrpt_counts", "tlsrpt_report_leases", "tlsrpt_reports_sent", "tls_exclusive_drops"] {
                #expect(try await pool.run("SELECT to_regclass($1) IS NOT NULL AS present", [table]).get().value(0, "present") == "t")
            }
        }
    }
}
