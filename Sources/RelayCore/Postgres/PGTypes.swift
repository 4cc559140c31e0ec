// The vocabulary of RelayPostgres: what a query returns, how it fails, and
// how a connection is described. Plain values; no libpq here.

/// One result of a statement: column names, rows of text values (libpq's
/// text format; NULL is nil), the command status ("INSERT 0 1") and the
/// number of rows the command touched, when it says.
public struct PGResult: Sendable, Equatable {
    public let columns: [String]
    public let rows: [[String?]]
    public let commandStatus: String
    public let affectedRows: Int?

    public init(columns: [String], rows: [[String?]], commandStatus: String, affectedRows: Int?) {
        self.columns = columns
        self.rows = rows
        self.commandStatus = commandStatus
        self.affectedRows = affectedRows
    }

    /// The value of `column` in row `row`; nil for NULL or an unknown column.
    public func value(_ row: Int, _ column: String) -> String? {
        guard rows.indices.contains(row), let i = columns.firstIndex(of: column) else { return nil }
        return rows[row][i]
    }
}

public enum PGError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The connection could not be made (refused, authentication, TLS).
    case connectFailed(String)
    /// The connection broke while a request was on it.
    case connectionLost(String)
    /// The server refused the statement; `sqlState` is its SQLSTATE code.
    case server(sqlState: String, message: String)
    /// The query (or the wait for a connection) took longer than allowed.
    case timeout
    /// The pool's queue of waiting requests is full.
    case saturated(limit: Int)
    /// No connection is up and the last attempt failed: fail fast.
    case unavailable(String)
    /// A parameter libpq cannot carry (a NUL character), or a SQL text
    /// that is not a plain string literal.
    case invalidRequest(String)
    /// The connection or pool was closed.
    case closed
    /// A migration problem: a changed file, a bad file name, a failed script.
    case migration(String)

    public var description: String {
        switch self {
        case .connectFailed(let m): return "PostgreSQL connection failed: \(m)"
        case .connectionLost(let m): return "PostgreSQL connection lost: \(m)"
        case .server(let state, let m): return "PostgreSQL error \(state): \(m)"
        case .timeout: return "PostgreSQL request timed out"
        case .saturated(let limit): return "PostgreSQL pool queue full (\(limit) waiting)"
        case .unavailable(let m): return "PostgreSQL unavailable: \(m)"
        case .invalidRequest(let m): return "invalid PostgreSQL request: \(m)"
        case .closed: return "PostgreSQL connection closed"
        case .migration(let m): return "migration: \(m)"
        }
    }

    /// SQLSTATE 57014: the statement was cancelled (statement_timeout or PQcancel).
    public var isCancelled: Bool {
        if case .server(let s, _) = self { return s == "57014" }
        return false
    }
}

public enum PGSSLMode: String, Sendable, CaseIterable {
    case disable
    case require
    case verifyFull = "verify-full"
}

/// How to reach the database: libpq connection keywords, built from the
/// operator's URL plus the settings relayd owns. No password field on
/// purpose: passwords come from a passfile (or the URL, which the config
/// refuses when it holds one).
public struct PGConnectOptions: Sendable, Equatable {
    /// "postgresql://user@host:port/db?…" (libpq expands it).
    public var url: String
    public var passfile: String?
    public var sslMode: PGSSLMode
    public var sslRootCert: String?
    /// Sent as `options=-c statement_timeout=…`: the server cancels any
    /// statement running longer, so no query holds a connection forever.
    public var statementTimeoutMilliseconds: Int
    public var connectTimeoutSeconds: Int
    public var applicationName: String

    public init(url: String, passfile: String? = nil, sslMode: PGSSLMode = .verifyFull, sslRootCert: String? = nil,
                statementTimeoutMilliseconds: Int = 5000, connectTimeoutSeconds: Int = 5, applicationName: String = "relayd") {
        self.url = url
        self.passfile = passfile
        self.sslMode = sslMode
        self.sslRootCert = sslRootCert
        self.statementTimeoutMilliseconds = statementTimeoutMilliseconds
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.applicationName = applicationName
    }

    /// The keyword/value pairs for PQconnectStartParams, `dbname` (the URL,
    /// expanded) first so the ones after it override what the URL says.
    public var keywords: [(String, String)] {
        var k: [(String, String)] = [("dbname", url)]
        if let passfile { k.append(("passfile", passfile)) }
        k.append(("sslmode", sslMode.rawValue))
        if let sslRootCert { k.append(("sslrootcert", sslRootCert)) }
        k.append(("options", "-c statement_timeout=\(statementTimeoutMilliseconds)"))
        k.append(("connect_timeout", String(connectTimeoutSeconds)))
        k.append(("application_name", applicationName))
        k.append(("client_encoding", "UTF8"))
        return k
    }

    public static func == (a: PGConnectOptions, b: PGConnectOptions) -> Bool {
        a.keywords.map { "\($0.0)=\($0.1)" } == b.keywords.map { "\($0.0)=\($0.1)" }
    }
}
