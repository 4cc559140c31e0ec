// The outbound TLS policy levels of SPEC.md, ordered by strength so "an
// upgrade can only raise" is a comparison, not a convention. In Model
// rather than Policy because a queued message carries one: an escalated
// message (a subject tag) and a forwarded copy under `tls_only` keep their
// floor in the queue file, which the queue reads without the engine.
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
}
