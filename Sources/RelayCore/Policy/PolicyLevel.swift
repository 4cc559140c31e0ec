// The outbound TLS policy vocabulary of SPEC.md. Levels are ordered by
// strength so "an upgrade can only raise" is a comparison, not a convention.
import RelaySMTP
public enum PolicyLevel: String, CaseIterable, Comparable, Sendable {
    case none
    case opportunistic
    case forced
    case verify
    case tlsExclusive = "tls-exclusive"

    public init?(configName: String) { self.init(rawValue: configName) }

    public static var configNames: String { allCases.map(\.rawValue).joined(separator: ", ") }

    var strength: Int {
        switch self {
        case .none: return 0
        case .opportunistic: return 1
        case .forced: return 2
        case .verify: return 3
        case .tlsExclusive: return 4
        }
    }

    public static func < (a: PolicyLevel, b: PolicyLevel) -> Bool { a.strength < b.strength }

    /// What the SMTP client must do about STARTTLS at this level.
    public var tlsRequirement: TLSRequirement {
        switch self {
        case .none: return .never
        case .opportunistic: return .opportunistic
        case .forced, .verify, .tlsExclusive: return .required
        }
    }
}

/// A per-domain entry: the level and, for tls-exclusive, how strictly the
/// certificate is checked (SPEC: "as configured (forced or verify strength)").
public struct DomainPolicy: Equatable, Sendable {
    public enum Strength: String, Sendable { case forced, verify }

    public let level: PolicyLevel
    public let exclusiveStrength: Strength
    /// Name of an [[outbound.relay]] that receives the message when TLS to
    /// the destination cannot be had (forced and verify only).
    public let fallback: String?

    public init(level: PolicyLevel, exclusiveStrength: Strength = .verify, fallback: String? = nil) {
        self.level = level
        self.exclusiveStrength = exclusiveStrength
        self.fallback = fallback
    }

    /// Whether the MX certificate chain and name must verify.
    public var requiresVerification: Bool {
        level == .verify || (level == .tlsExclusive && exclusiveStrength == .verify)
    }
}
