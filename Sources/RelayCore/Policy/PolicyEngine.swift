// The outbound TLS policy engine. Each layer answers for a domain with a
// level and a reason, like swift-certificates' verifier policies; the engine
// combines them by SPEC's precedence:
//
//   operator entry  >  DANE  >  MTA-STS  >  learned status  >  default
//
// The operator's explicit entry is the escape hatch and may lower as well
// as raise. Every automatic layer can only raise: its answer never yields a
// level below the default. The decision keeps every layer's answer so
// `relayd policy explain` and the delivery log can say who decided.
//
// Policy/ is pure: no I/O, no clock. Layers that need fetched data (DANE
// TLSA, MTA-STS policies, the learned-status store) are given it already
// resolved; that is the seam for the upgrade layers still to come.
import RelayModel
import RelaySMTP
import RelaySTS
public enum PolicyLayer: String, CaseIterable, Sendable {
    case operatorEntry = "operator"
    case dane
    case mtaSTS = "mta-sts"
    case learned
    case defaultLevel = "default"
    /// Not a layer the engine asks: the message itself raised the level
    /// over whatever the others decided (an escalation tag or header, a
    /// forwarded copy's TLS floor, REQUIRETLS). It only ever raises.
    case message
}

public struct LayerVerdict: Equatable, Sendable {
    public let layer: PolicyLayer
    /// nil: this layer has nothing to say about the domain.
    public let level: PolicyLevel?
    public let detail: String
    public let requiresVerification: Bool
    /// MTA-STS: the policy the layer found (in any mode), with its id. An
    /// enforce policy limits which MX hosts may be contacted; a testing one
    /// says what to log.
    public let mtaSTS: STSDecision?

    public init(layer: PolicyLayer, level: PolicyLevel?, detail: String, requiresVerification: Bool? = nil,
                mtaSTS: STSDecision? = nil) {
        self.layer = layer
        self.level = level
        self.detail = detail
        self.requiresVerification = requiresVerification ?? (level == .verify)
        self.mtaSTS = mtaSTS
    }
}

/// What the MTA-STS layer found for a domain: the policy and the id it was
/// fetched under.
public struct STSDecision: Equatable, Sendable {
    public let policy: STSPolicy
    public let id: String
    public init(policy: STSPolicy, id: String) {
        self.policy = policy
        self.id = id
    }
}

public struct PolicyDecision: Equatable, Sendable, CustomStringConvertible {
    public let domain: String
    public let level: PolicyLevel
    /// Chain and MX host name must verify (verify, tls-exclusive at verify
    /// strength, or an upgrade that demands it).
    public let requiresVerification: Bool
    public let layer: PolicyLayer
    public let reason: String
    /// For forced/verify: the relay that takes the message when TLS fails.
    public let fallback: String?
    /// Every layer's answer, highest precedence first.
    public let verdicts: [LayerVerdict]

    public var tlsRequirement: TLSRequirement { level.tlsRequirement }

    public init(domain: String, level: PolicyLevel, requiresVerification: Bool, layer: PolicyLayer, reason: String,
                fallback: String?, verdicts: [LayerVerdict]) {
        self.domain = domain
        self.level = level
        self.requiresVerification = requiresVerification
        self.layer = layer
        self.reason = reason
        self.fallback = fallback
        self.verdicts = verdicts
    }

    /// An enforce MTA-STS policy that binds this delivery: only MX hosts it
    /// lists may be contacted, with verified TLS. It binds whether it
    /// decided the level or a stronger default did (a tls-exclusive default
    /// must not lose the MX binding that stops a forged MX with its own
    /// valid certificate); nil when the operator's entry or DANE decided,
    /// as they take precedence (SPEC).
    public var enforcedSTS: STSDecision? {
        guard layer != .operatorEntry, !verdicts.contains(where: { $0.layer == .dane && $0.level != nil }),
              let d = verdicts.first(where: { $0.layer == .mtaSTS })?.mtaSTS, d.policy.mode == .enforce else { return nil }
        return d
    }

    /// A testing-mode policy (RFC 8461 §5): delivery goes as the other
    /// layers decide, and what would have failed under enforce is logged.
    public var testingSTS: STSDecision? {
        guard layer != .operatorEntry, let d = verdicts.first(where: { $0.layer == .mtaSTS })?.mtaSTS,
              d.policy.mode == .testing else { return nil }
        return d
    }

    public var description: String {
        "\(domain): \(level.rawValue)\(requiresVerification ? "+verify" : "") by \(layer.rawValue) (\(reason))"
    }
}

/// A layer that can raise a domain's level (DANE, MTA-STS, learned status).
public protocol PolicyUpgradeLayer: Sendable {
    var layer: PolicyLayer { get }
    func verdict(for domain: String) -> LayerVerdict?
}

public struct PolicyEngine: Sendable {
    /// `[outbound] default_level`: a level, or a table like a per-domain
    /// entry (tls-exclusive strength, a fallback relay).
    public let defaultPolicy: DomainPolicy
    public var defaultLevel: PolicyLevel { defaultPolicy.level }
    public let domains: [String: DomainPolicy]
    public let upgrades: [any PolicyUpgradeLayer]

    public init(defaultLevel: PolicyLevel, domains: [String: DomainPolicy], upgrades: [any PolicyUpgradeLayer] = []) {
        self.init(defaultPolicy: DomainPolicy(level: defaultLevel), domains: domains, upgrades: upgrades)
    }

    public init(defaultPolicy: DomainPolicy, domains: [String: DomainPolicy], upgrades: [any PolicyUpgradeLayer] = []) {
        self.defaultPolicy = defaultPolicy
        self.domains = domains
        // Keep SPEC's order whatever order the caller passed.
        let order = PolicyLayer.allCases
        self.upgrades = upgrades.sorted { order.firstIndex(of: $0.layer)! < order.firstIndex(of: $1.layer)! }
    }

    /// The operator entry for a domain: exact name first, then ".parent"
    /// entries from the closest parent outwards.
    public func operatorEntry(for domain: String) -> (key: String, policy: DomainPolicy)? {
        for key in DNSName.lookupKeys(DNSName.normalize(domain)) {
            if let p = domains[key] { return (key, p) }
        }
        return nil
    }

    public func decide(_ domain: String) -> PolicyDecision {
        let d = DNSName.normalize(domain)
        var verdicts: [LayerVerdict] = []
        let entry = operatorEntry(for: d)
        verdicts.append(LayerVerdict(layer: .operatorEntry, level: entry?.policy.level,
                                     detail: entry.map { "[outbound.domains] \"\($0.key)\"" } ?? "no entry",
                                     requiresVerification: entry?.policy.requiresVerification ?? false))
        for u in upgrades {
            verdicts.append(u.verdict(for: d) ?? LayerVerdict(layer: u.layer, level: nil, detail: "no answer"))
        }
        verdicts.append(LayerVerdict(layer: .defaultLevel, level: defaultLevel, detail: "[outbound] default_level",
                                     requiresVerification: defaultPolicy.requiresVerification))

        if let entry {
            return PolicyDecision(domain: d, level: entry.policy.level,
                                  requiresVerification: entry.policy.requiresVerification, layer: .operatorEntry,
                                  reason: verdicts[0].detail, fallback: entry.policy.fallback, verdicts: verdicts)
        }
        // The highest-precedence automatic layer that answers decides,
        // but never below the default.
        if let winner = verdicts.dropFirst().first(where: { $0.level != nil && $0.layer != .defaultLevel }),
           let level = winner.level, level >= defaultLevel {
            let defaultVerify = defaultPolicy.requiresVerification
            return PolicyDecision(domain: d, level: level, requiresVerification: winner.requiresVerification || defaultVerify,
                                  layer: winner.layer, reason: winner.detail, fallback: nil, verdicts: verdicts)
        }
        // A default at or above an enforce MTA-STS policy's level still
        // owes the policy its verification (see enforcedSTS).
        let stsEnforce = verdicts.contains { $0.layer == .mtaSTS && $0.mtaSTS?.policy.mode == .enforce }
            && !verdicts.contains { $0.layer == .dane && $0.level != nil }
        return PolicyDecision(domain: d, level: defaultLevel,
                              requiresVerification: defaultPolicy.requiresVerification || stsEnforce,
                              layer: .defaultLevel, reason: "[outbound] default_level", fallback: defaultPolicy.fallback,
                              verdicts: verdicts)
    }
}
