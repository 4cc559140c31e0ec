// A private PostgreSQL server for the tests: initdb and pg_ctl from the
// Debian package (/usr/lib/postgresql/*/bin) in a temp dir, listening on
// 127.0.0.1 only at a free port, no Unix socket, trust auth for one test
// role. Stopped by the postmaster's PID (from postmaster.pid): SIGINT, the
// fast shutdown. PostgreSQL refuses to run as root, so as root the
// binaries run as the `postgres` user (runuser) and the folder is theirs.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public final class PostgresServer: @unchecked Sendable {
    public let directory: String
    public let port: Int
    public let user = "relayd_test"
    private let bin: String
    private let runAs: String?
    public private(set) var pid: pid_t?

    /// The folder holding initdb, pg_ctl and postgres; nil when the server
    /// package is not installed (tests then skip, saying so).
    public static var binaries: String? {
        let root = "/usr/lib/postgresql"
        guard let versions = try? FileManager.default.contentsOfDirectory(atPath: root) else { return nil }
        for v in versions.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }) {
            let bin = "\(root)/\(v)/bin"
            if FileManager.default.isExecutableFile(atPath: bin + "/initdb"),
               FileManager.default.isExecutableFile(atPath: bin + "/pg_ctl") { return bin }
        }
        return nil
    }

    public static let skipReason = "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin — install the `postgresql` package (make test-deps) to run these tests"

    /// initdb and start; throws when either fails (with their output).
    public init() throws {
        guard let bin = Self.binaries else { throw Failure(message: Self.skipReason) }
        self.bin = bin
        runAs = getuid() == 0 ? "postgres" : nil
        directory = NSTemporaryDirectory() + "relayd-pg-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if let runAs, let pw = getpwnam(runAs) {
            chown(directory, pw.pointee.pw_uid, pw.pointee.pw_gid)
        }
        port = try Self.freePort()
        try run(bin + "/initdb", ["-D", dataDirectory, "-U", user, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8",
                                  "--no-sync"])
        try start()
    }

    deinit { stop(); try? FileManager.default.removeItem(atPath: directory) }

    public var dataDirectory: String { directory + "/data" }

    /// A connection URL for `database` (created with `createDatabase`).
    public func url(database: String = "postgres") -> String {
        "postgresql://\(user)@127.0.0.1:\(port)/\(database)"
    }

    public func start() throws {
        let options = "-c listen_addresses=127.0.0.1 -p \(port) -c unix_socket_directories='' -c fsync=off -c max_connections=60"
        try run(bin + "/pg_ctl", ["-D", dataDirectory, "-l", directory + "/server.log", "-o", options, "-w", "-t", "60", "start"])
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8),
              let first = text.split(separator: "\n").first, let p = pid_t(first) else {
            throw Failure(message: "postgres started but postmaster.pid is unreadable")
        }
        pid = p
    }

    /// Fast shutdown by PID; waits (up to 30 s) until the server is gone.
    public func stop() {
        guard let p = pid else { return }
        pid = nil
        kill(p, SIGINT)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if !FileManager.default.fileExists(atPath: dataDirectory + "/postmaster.pid"), kill(p, 0) != 0 || isZombie(p) { return }
            usleep(50_000)
        }
        kill(p, SIGKILL)
    }

    private func isZombie(_ p: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(p)/stat", encoding: .utf8) else { return true }
        return stat.split(separator: ")").last?.trimmingCharacters(in: .whitespaces).hasPrefix("Z") ?? false
    }

    /// CREATE DATABASE, through createdb (the tests' own SQL goes through
    /// PGConnection, whose SQL is literal).
    public func createDatabase(_ name: String) throws {
        try run(bin + "/createdb", ["-h", "127.0.0.1", "-p", String(port), "-U", user, name])
    }

    /// psql -c, for setting up what a test needs outside the API under test.
    @discardableResult
    public func psql(_ database: String, _ command: String) throws -> String {
        try run(bin + "/psql", ["-h", "127.0.0.1", "-p", String(port), "-U", user, "-d", database, "-X", "-A", "-t",
                                "-v", "ON_ERROR_STOP=1", "-c", command])
    }

    public struct Failure: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// Runs a tool (as the postgres user when root) with posix_spawn and
    /// waitpid, its output in a file: Foundation's Process can miss the
    /// exit of a runuser whose grandchild (the postmaster) lives on.
    @discardableResult
    private func run(_ tool: String, _ arguments: [String]) throws -> String {
        // In the server's folder (the postgres user may not enter the tests' own).
        let argv = ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", directory]
            + (runAs.map { ["/usr/sbin/runuser", "-u", $0, "--", tool] } ?? [tool]) + arguments
        let output = directory + "/tool-\(UUID().uuidString.prefix(8)).out"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, environ)
        guard rc == 0 else { throw Failure(message: "cannot run \(argv[0]): \(rc)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: output)
        let exited = status & 0x7f == 0, code = (status >> 8) & 0xff
        guard exited && code == 0 else {
            throw Failure(message: "\((tool as NSString).lastPathComponent) \(arguments.joined(separator: " ")) failed (status \(status)): \(text)")
        }
        return text
    }

    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(message: "socket: \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p -> Bool in
                bind(fd, p, len) == 0 && getsockname(fd, p, &len) == 0
            }
        }
        guard bound else { throw Failure(message: "bind: \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
