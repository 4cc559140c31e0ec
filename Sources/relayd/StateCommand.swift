import ArgumentParser
import Dispatch
import Foundation
import Logging
import RelayCore
import RelaySync

/// `relayd state …`: the shared-state database.
struct StateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state",
        abstract: "The shared state on PostgreSQL ([state] backend = \"postgres\").",
        subcommands: [Migrate.self])

    /// `relayd state migrate [--dry-run]`: applies the migrations folder's
    /// files not yet applied, in order, under the advisory lock; with
    /// --dry-run prints what would run and changes nothing.
    struct Migrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "migrate",
            abstract: "Apply the schema migrations not yet applied (--dry-run: print them).")
        @OptionGroup var options: ConfigOption
        @Flag(help: "Print what would run; apply nothing.") var dryRun = false
        @Option(help: "How long to wait for another instance's migration (seconds).") var lockTimeout: Int = 60

        func run() throws {
            let config: Config
            do { config = try ConfigLoader.load(path: options.config) } catch let e as ConfigErrors {
                for error in e.errors { printError(error.description) }
                throw ExitCode(1)
            }
            guard var pool = PGPoolConfiguration(state: config.state, applicationName: "relayd-migrate") else {
                printError("\(options.config): [state] backend is \"file\": there is no database to migrate")
                throw ExitCode(1)
            }
            pool.size = 1
            let migrations: [PGMigration]
            do { migrations = try PGMigrations.load(directory: config.state.migrations) } catch {
                printError("\(config.state.migrations): \(error)")
                throw ExitCode(1)
            }
            let logger = Logger(label: "relayd.state") { _ in StreamLogHandler.standardError(label: "relayd.state") }
            let pg = PGPool(pool, logger: logger)
            pg.start()
            defer { pg.shutdown() }
            let outcome = Locked<Result<PGMigrationReport, PGError>?>(nil)
            let done = DispatchSemaphore(value: 0)
            PGMigrations.migrate(pg, migrations: migrations, dryRun: dryRun, lockTimeout: .seconds(max(1, lockTimeout)),
                                 on: .global()) { result in
                outcome.withLock { $0 = result }
                done.signal()
            }
            // The run's own timeouts bound it; this only guards the CLI.
            guard done.wait(timeout: .now() + .seconds(lockTimeout + 600)) == .success,
                  let result = outcome.withLock({ $0 }) else {
                printError("migration did not finish")
                throw ExitCode(1)
            }
            switch result {
            case .failure(let e):
                printError("\(e)")
                throw ExitCode(1)
            case .success(let report):
                if !report.unknownInDatabase.isEmpty {
                    printError("warning: the database has migrations this relayd does not know: \(report.unknownInDatabase.map(String.init).joined(separator: ", ")) (a newer relayd migrated it)")
                }
                if report.applied.isEmpty {
                    print("schema up to date (\(report.alreadyApplied.count) migration\(report.alreadyApplied.count == 1 ? "" : "s") applied)")
                }
                for m in report.applied {
                    if dryRun {
                        print("would apply \(m.file) (version \(m.version)):")
                        print(m.sql.split(separator: "\n", omittingEmptySubsequences: false).map { "    " + $0 }.joined(separator: "\n"))
                    } else {
                        print("applied \(m.file) (version \(m.version))")
                    }
                }
            }
        }
    }
}

/// One read from the shared state for a command: a pool of one, the query,
/// a bounded wait (the statement timeout bounds the query itself).
enum SharedStateQuery {
    static func run<T: Sendable>(_ configuration: PGPoolConfiguration,
                                 _ query: (PGPool, @escaping @Sendable (Result<T, any Error>) -> Void) -> Void) throws -> T {
        let logger = Logger(label: "relayd.state") { _ in SwiftLogNoOpLogHandler() }
        let pg = PGPool(configuration, logger: logger)
        pg.start()
        defer { pg.shutdown() }
        let outcome = Locked<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        query(pg) { result in
            outcome.withLock { $0 = result }
            done.signal()
        }
        guard done.wait(timeout: .now() + .seconds(60)) == .success, let result = outcome.withLock({ $0 }) else {
            throw SharedStateTimeout()
        }
        return try result.get()
    }

    struct SharedStateTimeout: Error, CustomStringConvertible {
        var description: String { "the shared-state database did not answer within 60 s" }
    }
}
