// The shared-state backends against a real PostgreSQL (a server of its own
// per test, from the Debian package; skipped when it is not installed):
// hostile values in `by` and `reason` round-trip unchanged, an append is
// stored once however often it is replayed, and a forget's evidence stays
// out of the evidence pull.
import Dispatch
import Foundation
import Testing
import RelayTestSupport
import RelayModel
import RelayPostgres
import RelayLearned
import RelaySync
@testable import RelayCore

private let migrationsFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("migrations").path

private func await<T: Sendable>(_ call: (@escaping @Sendable (Result<T, any Error>) -> Void) -> Void) async throws -> T {
    try await withCheckedThrowingContinuation { c in call { c.resume(with: $0) } }
}

/// A migrated server and pool, or nil when the binaries are absent.
func sharedStateServer() async throws -> (PostgresServer, PGPool)? {
    guard PostgresServer.binaries != nil else {
        print("skipped: \(PostgresServer.skipReason)")
        return nil
    }
    let pg = try PostgresServer()
    let options = PGConnectOptions(url: pg.url(), sslMode: .disable, statementTimeoutMilliseconds: 5000,
                                   connectTimeoutSeconds: 5, applicationName: "relayd-tests")
    let pool = PGPool(PGPoolConfiguration(connect: options, size: 2))
    pool.start()
    let migrations = try PGMigrations.load(directory: migrationsFolder)
    let _: PGMigrationReport = try await withCheckedThrowingContinuation { c in
        PGMigrations.migrate(pool, migrations: migrations, on: .global()) { r in c.resume(with: r.mapError { $0 as any Error }) }
    }
    return (pg, pool)
}

@Suite(.serialized) struct PGSharedBackendsTests {
    static let hostile = [
        "O'Brien \"the op\"; DROP TABLE learned_actions; --",
        "e\u{301}\u{0301} 🏳️‍🌈 \u{202E}rtl\u{202C} \u{FEFF}bom \u{1F600} 日本語 \\ $1 %s",
        String(repeating: "long reason ", count: 400),   // above LearnedRecord's clip, as the table keeps it
    ]

    @Test func hostileActionsRoundTripAndReplaysAreStoredOnce() async throws {
        guard let (pg, pool) = try await sharedStateServer() else { return }
        defer { pool.shutdown(); pg.stop() }
        let a = PGActionsBackend(pool: pool, instance: "inst'a \"ü\"")
        var sent: [SharedAction] = []
        for (i, text) in Self.hostile.enumerated() {
            sent.append(SharedAction(change: .pin(domain: "o-brien.example", level: "verify", until: 4_070_908_800 + i,
                                                  reason: text, by: text), at: 1_700_000_000 + i, instance: "ignored"))
        }
        sent.append(SharedAction(change: .forget(domain: "o-brien.example", by: Self.hostile[1]), at: 1_700_000_100, instance: "x"))
        try await `await` { a.append(sent, completion: $0) }
        try await `await` { a.append(sent, completion: $0) }   // a replay after a lost answer
        let pull: SharedActionPull = try await `await` { a.actions(after: 0, completion: $0) }
        #expect(pull.actions.count == sent.count, "stored once")
        for (got, want) in zip(pull.actions, sent) {
            #expect(got.change == want.change)
            #expect(got.at == want.at)
            #expect(got.instance == "inst'a \"ü\"")
        }
        #expect(pull.cursor == pull.actions.last?.id)
        let later: SharedActionPull = try await `await` { a.actions(after: pull.cursor, completion: $0) }
        #expect(later.actions.isEmpty)
    }

    @Test func aForgetDeletesOlderEvidenceAndKeepsLatePushesOut() async throws {
        guard let (pg, pool) = try await sharedStateServer() else { return }
        defer { pool.shutdown(); pg.stop() }
        let evidence = PGLearnedBackend(pool: pool, instance: "b")
        let actions = PGActionsBackend(pool: pool, instance: "a")
        let old = LevelEvidence(firstSeen: 1_700_000_000, lastSeen: 1_700_000_500, count: 3, days: 1)
        try await `await` { evidence.push([SharedEvidence(domain: "partner.example", evidence: [.tls: old])], completion: $0) }
        try await `await` { actions.append([SharedAction(change: .forget(domain: "partner.example", by: "op"), at: 1_700_001_000,
                                                         instance: "a")], completion: $0) }
        var pull: SharedEvidencePull = try await `await` { evidence.pull(since: 0, completion: $0) }
        #expect(pull.merged.isEmpty, "the row was deleted")
        // b pushes its old snapshot late: it stays out of every pull.
        try await `await` { evidence.push([SharedEvidence(domain: "partner.example", evidence: [.tls: old])], completion: $0) }
        pull = try await `await` { evidence.pull(since: 0, completion: $0) }
        #expect(pull.merged.isEmpty)
        // Evidence seen after the forget counts.
        let newer = LevelEvidence(firstSeen: 1_700_002_000, lastSeen: 1_700_002_000, count: 1, days: 1)
        try await `await` { evidence.push([SharedEvidence(domain: "partner.example", evidence: [.verified: newer])], completion: $0) }
        pull = try await `await` { evidence.pull(since: 0, completion: $0) }
        #expect(pull.merged.map(\.domain) == ["partner.example"] && pull.merged.first?.evidence.keys.sorted() == [.verified])
    }

    @Test func hostileDropsRoundTripAndAreStoredOnce() async throws {
        guard let (pg, pool) = try await sharedStateServer() else { return }
        defer { pool.shutdown(); pg.stop() }
        let backend = PGDropsBackend(pool: pool, instance: "inst-\u{1F600}")
        let drops = Self.hostile.enumerated().map { i, text in
            SharedDrop(at: 1_700_000_000 + i, queueID: text, domain: "o'brien.example", reason: text)
        }
        try await `await` { backend.append(drops, completion: $0) }
        try await `await` { backend.append(drops, completion: $0) }
        let rows: [SharedDropRow] = try await `await` { backend.list(since: 1_700_000_000, completion: $0) }
        #expect(rows.map(\.drop) == drops)
        #expect(rows.allSatisfy { $0.instance == "inst-\u{1F600}" })
        let later: [SharedDropRow] = try await `await` { backend.list(since: 1_700_000_002, completion: $0) }
        #expect(later.map(\.drop) == [drops[2]])
    }

    @Test func theHistoryShowsWhichInstanceSawWhatAndTheActions() async throws {
        guard let (pg, pool) = try await sharedStateServer() else { return }
        defer { pool.shutdown(); pg.stop() }
        let e = LevelEvidence(firstSeen: 1_700_000_000, lastSeen: 1_700_090_000, count: 4, days: 2)
        for inst in ["a", "b\u{301}"] {
            try await `await` { PGLearnedBackend(pool: pool, instance: inst).push([SharedEvidence(domain: "partner.example", evidence: [.tls: e])],
                                                                                 completion: $0) }
        }
        let pin = SharedAction(change: .pin(domain: "partner.example", level: "verify", until: nil, reason: Self.hostile[1], by: Self.hostile[0]),
                               at: 1_700_100_000, instance: "a")
        try await `await` { PGActionsBackend(pool: pool, instance: "a").append([pin], completion: $0) }
        let history: SharedLearnedHistory = try await `await` { PGLearnedHistory.read(pool, domain: "partner.example", completion: $0) }
        #expect(history.evidence.map(\.instance) == ["a", "b\u{301}"])
        #expect(history.evidence.allSatisfy { $0.firstSeen == e.firstSeen && $0.lastSeen == e.lastSeen && $0.count == 4 && $0.days == 2 })
        #expect(history.actions.map(\.change) == [pin.change])
        let text = history.text("partner.example")
        #expect(text.contains("b\u{301}  tls  first 2023-11-14 22:13:20 UTC") && text.contains("by \(Self.hostile[0])"))
        let other: SharedLearnedHistory = try await `await` { PGLearnedHistory.read(pool, domain: "other.example", completion: $0) }
        #expect(other.evidence.isEmpty && other.actions.isEmpty)
    }
}
