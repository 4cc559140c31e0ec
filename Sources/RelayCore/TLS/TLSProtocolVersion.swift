// TLS protocol versions relayd can be configured with. SSLv2 and SSLv3 are
// deliberately unrepresentable: no configuration can ask for them.
import COpenSSL

public enum TLSProtocolVersion: Int, Comparable, CaseIterable, Sendable {
    case tls1_0 = 10
    case tls1_1 = 11
    case tls1_2 = 12
    case tls1_3 = 13

    /// Accepts the spellings operators know from Postfix and OpenSSL:
    /// "TLSv1.2", "TLS1.2", "tls1.2", "1.2".
    public init?(configName: String) {
        var s = configName.lowercased()
        if s.hasPrefix("tlsv") { s.removeFirst(4) } else if s.hasPrefix("tls") { s.removeFirst(3) }
        switch s {
        case "1", "1.0": self = .tls1_0
        case "1.1": self = .tls1_1
        case "1.2": self = .tls1_2
        case "1.3": self = .tls1_3
        default: return nil
        }
    }

    /// The name OpenSSL's SSL_get_version uses, also used in logs and headers.
    public var name: String {
        switch self {
        case .tls1_0: return "TLSv1"
        case .tls1_1: return "TLSv1.1"
        case .tls1_2: return "TLSv1.2"
        case .tls1_3: return "TLSv1.3"
        }
    }

    init?(openSSLName: String) {
        switch openSSLName {
        case "TLSv1": self = .tls1_0
        case "TLSv1.1": self = .tls1_1
        case "TLSv1.2": self = .tls1_2
        case "TLSv1.3": self = .tls1_3
        default: return nil
        }
    }

    var openSSLValue: Int32 {
        switch self {
        case .tls1_0: return relayd_tls1_version()
        case .tls1_1: return relayd_tls1_1_version()
        case .tls1_2: return relayd_tls1_2_version()
        case .tls1_3: return relayd_tls1_3_version()
        }
    }

    public static func < (a: TLSProtocolVersion, b: TLSProtocolVersion) -> Bool { a.rawValue < b.rawValue }
}
