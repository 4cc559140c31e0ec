// [state]: file by default; postgres needs a URL without a password, a
// passfile only the owner can read, and a CA for verify-full.
import Foundation
import Testing
@testable import RelayConfig
import RelayTestSupport

@Suite struct StateConfig {
    static func passfile(mode: mode_t) throws -> String {
        let path = NSTemporaryDirectory() + "relayd-pgpass-\(UUID().uuidString.prefix(8))"
        try "db.example:5432:relayd:relayd:secret\n".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, mode)
        return path
    }

    @Test func fileIsTheDefault() throws {
        let s = try configForTests("").state
        #expect(s.backend == .file)
        #expect(s.postgres == nil)
        #expect(s.poolSize == 4)
        #expect(s.statementTimeout == 5)
        #expect(s.sslMode == .verifyFull)
        #expect(!s.instance.isEmpty)
        #expect(try configForTests("[state]\nbackend = \"file\"").state.backend == .file)
    }

    @Test func aFullPostgresSection() throws {
        let pass = try Self.passfile(mode: 0o600)
        defer { unlink(pass) }
        let s = try configForTests("""
            [state]
            backend = "postgres"
            postgres = "postgresql://relayd@db.example:5432/relayd?connect_timeout=3"
            passfile = "\(pass)"
            pool_size = 8
            statement_timeout = "2s"
            sslmode = "verify-full"
            sslrootcert = "\(Fixtures.path("mx.pem"))"
            instance = "mx1.example"
            migrations = "/opt/relayd/migrations"
            """).state
        #expect(s.backend == .postgres)
        #expect(s.postgres == "postgresql://relayd@db.example:5432/relayd?connect_timeout=3")
        #expect(s.passfile == pass)
        #expect(s.poolSize == 8)
        #expect(s.statementTimeout == 2)
        #expect(s.sslRootCert == Fixtures.path("mx.pem"))
        #expect(s.instance == "mx1.example")
        #expect(s.migrations == "/opt/relayd/migrations")
        let plain = try configForTests("[state]\nbackend = \"postgres\"\npostgres = \"postgres://127.0.0.1/relayd\"\nsslmode = \"disable\"").state
        #expect(plain.sslMode == .disable)
    }

    @Test func passwordDetection() {
        #expect(Config.State.urlHasPassword("postgresql://u:secret@h/db"))
        #expect(Config.State.urlHasPassword("postgresql://u:@h/db"))
        #expect(Config.State.urlHasPassword("postgresql://h/db?sslmode=disable&password=x"))
        #expect(Config.State.urlHasPassword("postgresql://h/db?PASSWORD=x"))
        #expect(!Config.State.urlHasPassword("postgresql://u@h:5432/db"))
        #expect(!Config.State.urlHasPassword("postgresql://[::1]:5432/db"))
        #expect(!Config.State.urlHasPassword("postgresql://h/db?passfile=/x"))
    }

    @Test(arguments: [
        ("backend = \"mysql\"", "state.backend: unknown backend 'mysql' (file, postgres)"),
        ("backend = \"postgres\"\nsslmode = \"disable\"", "state.postgres: required when backend = \"postgres\""),
        ("postgres = \"host=db user=relayd\"", "state.postgres: expected a URL \"postgresql://"),
        ("postgres = \"postgresql://relayd:hunter2@db/relayd\"", "state.postgres: the URL holds a password; put it in a passfile"),
        ("postgres = \"postgresql://db/relayd?password=hunter2\"", "state.postgres: the URL holds a password"),
        ("postgres = \"postgresql://db/re layd\"", "state.postgres: the URL holds spaces"),
        ("passfile = \"/nonexistent/pgpass\"", "state.passfile: password file is missing or unreadable: /nonexistent/pgpass"),
        ("pool_size = 0", "state.pool_size: between 1 and 64, found 0"),
        ("pool_size = 65", "state.pool_size: between 1 and 64, found 65"),
        ("pool_size = \"4\"", "state.pool_size: expected an integer"),
        ("statement_timeout = \"2h\"", "state.statement_timeout: at most 1h"),
        ("statement_timeout = \"soon\"", "state.statement_timeout: expected a positive duration"),
        ("sslmode = \"prefer\"", "state.sslmode: unknown sslmode 'prefer' (disable, require, verify-full)"),
        ("sslrootcert = \"/nonexistent/ca.pem\"", "state.sslrootcert: CA certificate file is missing or unreadable"),
        ("backend = \"postgres\"\npostgres = \"postgresql://db/relayd\"", "state.sslrootcert: required with sslmode = \"verify-full\""),
        ("instance = \"mx 1\"", "state.instance: 'mx 1' is not an instance name"),
        ("instance = \"\"", "state.instance: '' is not an instance name"),
        ("migrations = \"\"", "state.migrations: must name the migrations folder"),
        ("pool = 4", "state.pool: unknown key"),
    ])
    func badValuesSayPreciselyWhat(_ line: String, _ message: String) {
        do {
            _ = try configForTests("[state]\n\(line)")
            Issue.record("accepted: \(line)")
        } catch let e as ConfigErrors {
            #expect(e.errors.contains { $0.description.contains(message) }, "\(e)")
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func aPassfileOthersCanReadIsRefused() throws {
        let pass = try Self.passfile(mode: 0o644)
        defer { unlink(pass) }
        do {
            _ = try configForTests("[state]\npassfile = \"\(pass)\"")
            Issue.record("accepted a 0644 passfile")
        } catch let e as ConfigErrors {
            #expect(e.description.contains("state.passfile: \(pass) is readable or writable by group or others (mode 644)"), "\(e)")
        }
    }

    @Test func aChangeNeedsARestart() throws {
        let a = try configForTests("[state]\ninstance = \"a\"")
        let b = try configForTests("[state]\ninstance = \"b\"")
        #expect(b.changesNeedingRestart(from: a) == ["state"])
    }
}
