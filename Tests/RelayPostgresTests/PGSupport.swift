// Async wrappers over the callback API, and a per-test server.
import Dispatch
import Foundation
import Testing
import RelayTestSupport
@testable import RelayPostgres

let replies = DispatchQueue(label: "relayd.pg.tests")

/// Every suite that starts a server, one test at a time: each test has its
/// own server, and several at once would only compete for the cores the
/// rest of the unit tests time themselves on.
@Suite(.serialized) enum PostgreSQLTests {}

/// A fresh server, or nil (with the reason recorded) when the binaries are absent.
func startServer() throws -> PostgresServer? {
    guard PostgresServer.binaries != nil else {
        print("skipped: \(PostgresServer.skipReason)")
        return nil
    }
    return try PostgresServer()
}

func options(_ pg: PostgresServer, database: String = "postgres", statementTimeoutMilliseconds: Int = 5000) -> PGConnectOptions {
    PGConnectOptions(url: pg.url(database: database), sslMode: .disable, statementTimeoutMilliseconds: statementTimeoutMilliseconds,
                     connectTimeoutSeconds: 5, applicationName: "relayd-tests")
}

func connect(_ options: PGConnectOptions) async throws -> PGConnection {
    try await withCheckedThrowingContinuation { c in
        PGConnection.connect(options, on: replies) { c.resume(with: $0) }
    }
}

extension PGConnection {
    func run(_ sql: StaticString, _ parameters: [String?] = [], timeout: DispatchTimeInterval = .seconds(10)) async throws -> PGResult {
        try await withCheckedThrowingContinuation { c in
            query(sql, parameters, timeout: timeout, on: replies) { c.resume(with: $0) }
        }
    }
}

extension PGPool {
    func run(_ sql: StaticString, _ parameters: [String?] = []) async -> Result<PGResult, PGError> {
        await withCheckedContinuation { c in
            query(sql, parameters, on: replies) { c.resume(returning: $0) }
        }
    }

    func lease() async throws -> PGLease {
        try await withCheckedThrowingContinuation { c in withConnection(on: replies) { c.resume(with: $0) } }
    }

    func migrate(_ migrations: [PGMigration], dryRun: Bool = false) async -> Result<PGMigrationReport, PGError> {
        await withCheckedContinuation { c in
            PGMigrations.migrate(self, migrations: migrations, dryRun: dryRun, on: replies) { c.resume(returning: $0) }
        }
    }
}

/// The repository's migrations folder.
let repositoryMigrations: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.appendingPathComponent("migrations").path
}()

/// A copy of the repository's schema 1 in a temp folder a test may change.
func migrationsCopy() throws -> String {
    let dir = NSTemporaryDirectory() + "relayd-migrations-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    // Only schema 1: the mechanism tests add their own `0002_…` file
    // (the repository's later files are exercised by the schema tests).
    for f in try FileManager.default.contentsOfDirectory(atPath: repositoryMigrations) where f.hasPrefix("0001_") {
        try FileManager.default.copyItem(atPath: repositoryMigrations + "/" + f, toPath: dir + "/" + f)
    }
    return dir
}

func elapsed(since start: DispatchTime) -> Double {
    Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
}
