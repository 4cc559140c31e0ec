// `[state]`: where the state instances may share lives. The embedded
// default is the spool's files; "postgres" names a PostgreSQL database
// (RelayPostgres). Plain values here: Config does not import the client.
#if canImport(Glibc)
import Glibc
#endif

extension Config {
    public struct State: Equatable, Sendable {
        public enum Backend: String, CaseIterable, Sendable {
            case file
            case postgres
        }

        /// How the connection to PostgreSQL is protected (libpq's sslmode).
        public enum SSLMode: String, CaseIterable, Sendable {
            case disable
            case require
            case verifyFull = "verify-full"
        }

        public var backend = Backend.file
        /// "postgresql://user@host:port/db?…", never with a password.
        public var postgres: String?
        /// A libpq password file (host:port:db:user:password), mode 0600.
        public var passfile: String?
        public var poolSize = 4
        /// Seconds; the server cancels a statement running longer.
        public var statementTimeout = 5
        /// Seconds between pushes and pulls of shared learned evidence.
        public var syncInterval = 5
        public var sslMode = SSLMode.verifyFull
        public var sslRootCert: String?
        /// The name this relayd records in shared rows (default: the host name).
        public var instance = State.hostName()
        /// The folder of NNNN_name.sql migrations.
        public var migrations = "/usr/local/share/relayd/migrations"

        public init() {}

        public static func hostName() -> String {
            var buffer = [UInt8](repeating: 0, count: 256)
            guard gethostname(&buffer, buffer.count - 1) == 0 else { return "relayd" }
            let name = String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
            return name.isEmpty ? "relayd" : name
        }

        /// The instance names shared rows accept: 1–64 of letters, digits, '.', '-', '_'.
        public static func isValidInstance(_ name: String) -> Bool {
            (1...64).contains(name.utf8.count)
                && name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || ".-_".unicodeScalars.contains($0)) }
        }

        /// Whether a postgresql:// URL carries a password (user:password@ in
        /// its authority, or a password= parameter).
        public static func urlHasPassword(_ url: String) -> Bool {
            guard let scheme = url.range(of: "://") else { return false }
            let rest = url[scheme.upperBound...]
            let authority = rest.prefix { $0 != "/" && $0 != "?" }
            if let at = authority.lastIndex(of: "@"), authority[..<at].contains(":") { return true }
            if let q = rest.firstIndex(of: "?") {
                return rest[rest.index(after: q)...].split(separator: "&").contains { $0.lowercased().hasPrefix("password=") }
            }
            return false
        }
    }
}
