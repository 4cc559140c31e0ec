// [state]: backend, the PostgreSQL URL and passfile, pool, timeouts, TLS to
// the database, the instance name and the migrations folder.
import Foundation

extension ConfigBuilder {
    func buildState() -> Config.State? {
        var state = Config.State()
        guard let s = section("state", required: false) else { return root.table.contains(key: "state") ? nil : state }
        defer { s.finish() }
        var ok = true
        func bad(_ key: String, _ message: String) { diagnostics.report(s.keyPath(key), message); ok = false }

        if let b = s.string("backend") {
            if let backend = Config.State.Backend(rawValue: b) { state.backend = backend } else {
                bad("backend", "unknown backend '\(b)' (file, postgres)")
            }
        } else if s.table.contains(key: "backend") { ok = false }

        if let url = s.string("postgres") {
            if !(url.hasPrefix("postgresql://") || url.hasPrefix("postgres://")) {
                bad("postgres", "expected a URL \"postgresql://user@host:port/database\", found '\(url)'")
            } else if Config.State.urlHasPassword(url) {
                bad("postgres", "the URL holds a password; put it in a passfile (passfile = \"…\", lines host:port:database:user:password, mode 0600) so no password sits in the config")
            } else if url.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7f }) {
                bad("postgres", "the URL holds spaces or control characters (percent-encode them)")
            } else {
                state.postgres = url
            }
        } else if s.table.contains(key: "postgres") { ok = false }

        if let p = s.string("passfile") {
            let resolved = resolve(p)
            var st = stat()
            if p.isEmpty || stat(resolved, &st) != 0 || !FileManager.default.isReadableFile(atPath: resolved) {
                bad("passfile", "password file is missing or unreadable: \(resolved)")
            } else if st.st_mode & 0o077 != 0 {
                bad("passfile", "\(resolved) is readable or writable by group or others (mode \(String(st.st_mode & 0o777, radix: 8))); libpq ignores such a file: chmod 0600 it")
            } else {
                state.passfile = resolved
            }
        } else if s.table.contains(key: "passfile") { ok = false }

        if s.table.contains(key: "pool_size") {
            if let n = s.int("pool_size") {
                if (1...64).contains(n) { state.poolSize = n } else { bad("pool_size", "between 1 and 64, found \(n)") }
            } else { ok = false }
        }
        if s.table.contains(key: "statement_timeout") {
            if let d = duration(s, "statement_timeout") {
                if d <= 3600 { state.statementTimeout = d } else { bad("statement_timeout", "at most 1h") }
            } else { ok = false }
        }
        if s.table.contains(key: "sync_interval") {
            if let d = duration(s, "sync_interval") {
                if d <= 300 { state.syncInterval = d } else { bad("sync_interval", "at most 5m") }
            } else { ok = false }
        }
        if let m = s.string("sslmode") {
            if let mode = Config.State.SSLMode(rawValue: m) { state.sslMode = mode } else {
                bad("sslmode", "unknown sslmode '\(m)' (disable, require, verify-full)")
            }
        } else if s.table.contains(key: "sslmode") { ok = false }
        if let c = s.string("sslrootcert") {
            let resolved = resolve(c)
            if !c.isEmpty, FileManager.default.isReadableFile(atPath: resolved) { state.sslRootCert = resolved } else {
                bad("sslrootcert", "CA certificate file is missing or unreadable: \(resolved)")
            }
        } else if s.table.contains(key: "sslrootcert") { ok = false }
        if let i = s.string("instance") {
            if Config.State.isValidInstance(i) { state.instance = i } else {
                bad("instance", "'\(i)' is not an instance name (1 to 64 letters, digits, '.', '-', '_')")
            }
        } else if s.table.contains(key: "instance") { ok = false }
        if let m = s.string("migrations") {
            if m.isEmpty { bad("migrations", "must name the migrations folder") } else { state.migrations = resolve(m) }
        } else if s.table.contains(key: "migrations") { ok = false }

        guard ok else { return nil }
        if state.backend == .postgres {
            if state.postgres == nil {
                diagnostics.report(s.keyPath("postgres"), "required when backend = \"postgres\" (e.g. \"postgresql://relayd@db.example:5432/relayd\")")
                return nil
            }
            if state.sslMode == .verifyFull, state.sslRootCert == nil {
                diagnostics.report(s.keyPath("sslrootcert"),
                                   "required with sslmode = \"verify-full\" (the CA that signed the database's certificate); or set sslmode")
                return nil
            }
        }
        return state
    }
}
