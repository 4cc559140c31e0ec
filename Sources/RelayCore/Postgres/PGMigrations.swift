// Versioned schema migrations: `NNNN_name.sql` files in one folder (the
// top-level migrations/ of the source tree; `make install` copies it to
// $(PREFIX)/share/relayd/migrations and `[state] migrations` points at it),
// applied in version order under a session advisory lock so that many
// instances starting at once apply each file exactly once. Each file runs
// in its own transaction together with its row in relayd_schema_migrations
// (version, name, applied_at, checksum): a file is applied entirely and
// recorded, or not at all. The checksum is SHA-256 of the file's text,
// computed by the server (no crypto library in this role); an applied file
// whose text changed is an error, never re-run. A file must not hold its
// own BEGIN/COMMIT.
//
// Files rather than a SwiftPM resource: an operator or DBA can read and
// review the exact SQL before `relayd state migrate` runs it (--dry-run
// prints it), and a resource bundle would need Foundation's Bundle and a
// path beside the binary that installs do not keep.
import Dispatch
import RelaySync
#if canImport(Glibc)
import Glibc
#endif

public struct PGMigration: Sendable, Equatable {
    public let version: Int
    /// The file name without version and extension ("initial").
    public let name: String
    public let file: String
    public let sql: String
}

public struct PGMigrationReport: Sendable, Equatable {
    /// Applied by this run, in order (with dryRun: what would be applied).
    public var applied: [PGMigration] = []
    /// Versions recorded in the database before this run.
    public var alreadyApplied: [Int] = []
    /// Versions recorded in the database with no file here (a newer relayd migrated).
    public var unknownInDatabase: [Int] = []
    public var dryRun = false
}

public enum PGMigrations {
    /// The pg_advisory_lock key every relayd takes to migrate ("relayd" in ASCII).
    public static let lockKey = "125779858188644"

    /// The migrations in `directory`, by version. Other files than
    /// `*.sql` are ignored; a `.sql` file with a bad name, two files of one
    /// version, an empty file or one that is not UTF-8 is an error.
    public static func load(directory: String) throws(PGError) -> [PGMigration] {
        guard let dir = opendir(directory) else {
            throw .migration("cannot read the migrations folder \(directory): \(String(cString: strerror(errno)))")
        }
        defer { closedir(dir) }
        var found: [PGMigration] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            guard name.hasSuffix(".sql") else { continue }
            guard let (version, label) = parse(fileName: name) else {
                throw .migration("\(directory)/\(name): a migration is named NNNN_name.sql (four digits, then lowercase letters, digits, _)")
            }
            let path = directory + "/" + name
            guard let text = readText(path) else { throw .migration("\(path): unreadable or not UTF-8") }
            guard !text.utf8.contains(0) else { throw .migration("\(path): holds a NUL byte") }
            guard text.contains(where: { !$0.isWhitespace }) else { throw .migration("\(path): empty") }
            if let other = found.first(where: { $0.version == version }) {
                throw .migration("\(other.file) and \(name) have the same version \(version)")
            }
            found.append(PGMigration(version: version, name: label, file: name, sql: text))
        }
        return found.sorted { $0.version < $1.version }
    }

    static func parse(fileName: String) -> (Int, String)? {
        let base = fileName.dropLast(4)
        let parts = base.split(separator: "_", maxSplits: 1)
        guard parts.count == 2, parts[0].count == 4, parts[0].allSatisfy({ $0.isASCII && $0.isNumber }),
              let version = Int(parts[0]), version > 0,
              !parts[1].isEmpty, parts[1].allSatisfy({ ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "_" })
        else { return nil }
        return (version, String(parts[1]))
    }

    static func readText(_ path: String) -> String? {
        guard let f = fopen(path, "rb") else { return nil }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n > 0 { bytes.append(contentsOf: buffer[0..<n]) }
            if n < buffer.count { break }
        }
        guard ferror(f) == 0 else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }

    /// Applies what is not applied yet (with `dryRun`, only says what would
    /// be). Takes one connection from `pool` for the whole run; waits for
    /// the advisory lock at most `lockTimeout`. The report or the error
    /// arrives on `replyQueue`.
    public static func migrate(_ pool: PGPool, migrations: [PGMigration], dryRun: Bool = false,
                               lockTimeout: DispatchTimeInterval = .seconds(60), migrationTimeout: DispatchTimeInterval = .seconds(300),
                               on replyQueue: DispatchQueue,
                               completion: @escaping @Sendable (Result<PGMigrationReport, PGError>) -> Void) {
        pool.withConnection(on: MigrationRun.queue) { lease in
            switch lease {
            case .failure(let e): replyQueue.async { completion(.failure(e)) }
            case .success(let lease):
                MigrationRun(lease: lease, migrations: migrations, dryRun: dryRun, lockTimeout: lockTimeout,
                             migrationTimeout: migrationTimeout, replyQueue: replyQueue, completion: completion).begin()
            }
        }
    }
}

/// One migration run on one leased connection, step by step.
/// Confinement (hence @unchecked Sendable): every step runs on
/// `MigrationRun.queue`, the queue every query of the run replies on.
private final class MigrationRun: @unchecked Sendable {
    static let queue = DispatchQueue(label: "relayd.pg.migrations")
    let lease: PGLease
    let migrations: [PGMigration]
    let dryRun: Bool
    let lockTimeout: DispatchTimeInterval
    let migrationTimeout: DispatchTimeInterval
    let replyQueue: DispatchQueue
    let completion: @Sendable (Result<PGMigrationReport, PGError>) -> Void
    var report = PGMigrationReport()
    var recorded: [Int: (name: String, checksum: String)] = [:]
    var checksums: [Int: String] = [:]
    var locked = false

    init(lease: PGLease, migrations: [PGMigration], dryRun: Bool, lockTimeout: DispatchTimeInterval,
         migrationTimeout: DispatchTimeInterval, replyQueue: DispatchQueue,
         completion: @escaping @Sendable (Result<PGMigrationReport, PGError>) -> Void) {
        self.lease = lease
        self.migrations = migrations
        self.dryRun = dryRun
        self.lockTimeout = lockTimeout
        self.migrationTimeout = migrationTimeout
        self.replyQueue = replyQueue
        self.completion = completion
        report.dryRun = dryRun
    }

    /// Runs one statement; on failure the run ends with that error.
    func step(_ sql: StaticString, _ parameters: [String?] = [], timeout: DispatchTimeInterval? = nil,
              then next: @escaping @Sendable (PGResult) -> Void) {
        lease.query(sql, parameters, timeout: timeout, on: Self.queue) { result in
            switch result {
            case .success(let r): next(r)
            case .failure(let e): self.finish(.failure(e))
            }
        }
    }

    func begin() {
        dispatchPrecondition(condition: .onQueue(Self.queue))
        step("SELECT pg_advisory_lock($1::bigint)", [PGMigrations.lockKey], timeout: lockTimeout) { _ in
            self.locked = true
            self.step("SELECT to_regclass('relayd_schema_migrations') IS NOT NULL AS present") { r in
                let present = r.value(0, "present") == "t"
                if present { return self.readRecorded() }
                if self.dryRun { return self.checksum(0) }
                self.step("""
                    CREATE TABLE relayd_schema_migrations (
                        version integer PRIMARY KEY,
                        name text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now(),
                        checksum text NOT NULL
                    )
                    """) { _ in self.checksum(0) }
            }
        }
    }

    func readRecorded() {
        step("SELECT version, name, checksum FROM relayd_schema_migrations ORDER BY version") { r in
            for row in r.rows {
                guard let v = row[0].flatMap({ Int($0) }) else { continue }
                self.recorded[v] = (row[1] ?? "", row[2] ?? "")
            }
            self.report.alreadyApplied = self.recorded.keys.sorted()
            let known = Set(self.migrations.map(\.version))
            self.report.unknownInDatabase = self.recorded.keys.filter { !known.contains($0) }.sorted()
            self.checksum(0)
        }
    }

    func checksum(_ index: Int) {
        guard index < migrations.count else { return compare() }
        let m = migrations[index]
        step("SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex') AS sum", [m.sql]) { r in
            self.checksums[m.version] = r.value(0, "sum") ?? ""
            self.checksum(index + 1)
        }
    }

    func compare() {
        for m in migrations {
            guard let (_, sum) = recorded[m.version] else { continue }
            if sum != checksums[m.version] {
                return finish(.failure(.migration(
                    "\(m.file) was changed after it was applied (recorded checksum \(sum), file \(checksums[m.version] ?? "?")); restore the applied text and put changes in a new migration")))
            }
        }
        let pending = migrations.filter { recorded[$0.version] == nil }
        if dryRun {
            report.applied = pending
            return finish(.success(report))
        }
        apply(pending, 0)
    }

    func apply(_ pending: [PGMigration], _ index: Int) {
        guard index < pending.count else { return finish(.success(report)) }
        let m = pending[index]
        step("BEGIN") { _ in
            self.lease.run(PGScript(text: m.sql), timeout: self.migrationTimeout, on: Self.queue) { result in
                if case .failure(let e) = result {
                    return self.rollback(.migration("\(m.file) failed: \(e)"))
                }
                self.lease.query("INSERT INTO relayd_schema_migrations (version, name, checksum) VALUES ($1::integer, $2, $3)",
                                 [String(m.version), m.name, self.checksums[m.version] ?? ""], on: Self.queue) { result in
                    if case .failure(let e) = result { return self.rollback(.migration("recording \(m.file) failed: \(e)")) }
                    self.step("COMMIT") { _ in
                        self.report.applied.append(m)
                        self.apply(pending, index + 1)
                    }
                }
            }
        }
    }

    func rollback(_ error: PGError) {
        lease.query("ROLLBACK", on: Self.queue) { _ in self.finish(.failure(error)) }
    }

    func finish(_ result: Result<PGMigrationReport, PGError>) {
        dispatchPrecondition(condition: .onQueue(Self.queue))
        let done: @Sendable () -> Void = { [lease, replyQueue, completion] in
            lease.release()
            replyQueue.async { completion(result) }
        }
        guard locked else { return done() }
        locked = false
        lease.query("SELECT pg_advisory_unlock($1::bigint)", [PGMigrations.lockKey], on: Self.queue) { _ in done() }
    }
}
