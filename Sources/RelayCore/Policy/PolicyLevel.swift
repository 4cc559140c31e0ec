// The outbound TLS policy vocabulary of SPEC.md: what each level (Model
// holds the ordered levels) asks of the SMTP client, and a per-domain entry.
import RelayModel
import RelaySMTP
extension PolicyLevel {
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
    /// `channel = "smime"`: when TLS to the destination cannot be had,
    /// relayd encrypts the message to each recipient's certificate and
    /// delivers it at the domain's level without this entry's demand (the
    /// relay channel is `fallback`).
    public let smime: Bool

    public init(level: PolicyLevel, exclusiveStrength: Strength = .verify, fallback: String? = nil, smime: Bool = false) {
        self.level = level
        self.exclusiveStrength = exclusiveStrength
        self.fallback = fallback
        self.smime = smime
    }

    /// Whether the MX certificate chain and name must verify.
    public var requiresVerification: Bool {
        level == .verify || (level == .tlsExclusive && exclusiveStrength == .verify)
    }
}
