// What one message's own controls do to a domain's policy decision, pure:
// the engine decides per domain (operator entry, DANE, MTA-STS, learned,
// default); then the message may
//   - relax it: `TLS-Required: No` (RFC 8689 §5) drops the automatic layers
//     (MTA-STS, DANE, learned) and leaves the operator's own settings —
//     the domain's entry, or default_level with opportunistic as its floor.
//     Ignored with REQUIRETLS, and when `[relay] honor_tls_required_no` is
//     off. DANE is dropped too (the RFC lets a sender waive it; relayd
//     does not even look the TLSA records up).
//   - raise it: an escalation (a subject tag or the escalate header) and a
//     forwarded copy's `tls_only` floor set the least level for every
//     recipient; the result is the maximum, never lower (layer "message").
//   - require REQUIRETLS's conditions on every hop (DeliveryAttempt).
// A TLS-RPT report keeps its own rule (DomainDelivery.reportDecision).
// Also says which stronger channel takes the message when the raised level
// cannot be had: the escalation's, else the domain's own.
import RelayConfig
import RelayModel
import RelayPolicy

public struct MessagePolicy: Equatable, Sendable {
    public let decision: PolicyDecision
    /// MTA-STS, DANE and learned status apply (false: a TLS-RPT report, or
    /// an honoured `TLS-Required: No`).
    public let automaticLayers: Bool
    public let requireTLS: Bool
    /// `TLS-Required: No` was honoured for this delivery.
    public let relaxed: Bool
    /// The floor the message set and where it came from ("escalated
    /// verify by subject-tag", "forwarded copy: tls_only forced"); nil when
    /// it set none above the domain's decision.
    public let raisedBy: String?
    /// S/MIME encryption replaces failure when the level cannot be had.
    public let smimeChannel: Bool

    /// The same policy with no channel left to try (the channel's own leg).
    public var withoutChannel: MessagePolicy {
        MessagePolicy(decision: decision, automaticLayers: automaticLayers, requireTLS: requireTLS, relaxed: relaxed,
                      raisedBy: raisedBy, smimeChannel: false)
    }

    /// `indexes`: the recipients of this delivery (their floors count).
    public static func decide(domain: String, envelope: Envelope, indexes: [Int], engine: PolicyEngine,
                              config: Config) -> MessagePolicy {
        let operatorOnly = PolicyEngine(defaultPolicy: config.outbound.defaultPolicy, domains: config.outbound.domains)
        if envelope.tlsReport {
            return MessagePolicy(decision: operatorOnly.decide(domain), automaticLayers: false, requireTLS: false,
                                 relaxed: false, raisedBy: nil, smimeChannel: false)
        }
        let relaxed = envelope.tlsRequiredNo && config.relay.honorTLSRequiredNo && !envelope.requireTLS
        var base = relaxed ? operatorOnly.decide(domain) : engine.decide(domain)
        if relaxed, base.layer != .operatorEntry, base.level < .opportunistic {
            base = PolicyDecision(domain: base.domain, level: .opportunistic, requiresVerification: false, layer: base.layer,
                                  reason: "TLS-Required: No (floor opportunistic)", fallback: base.fallback, verdicts: base.verdicts)
        }
        let entry = operatorOnly.operatorEntry(for: domain)?.policy
        let domainSMIME = entry?.smime ?? config.outbound.defaultPolicy.smime

        var floor: (level: PolicyLevel, why: String)?
        if let x = envelope.escalation { floor = (x.level, "escalated \(x)") }
        for i in indexes {
            if let f = envelope.recipients[i].tlsFloor, f > (floor?.level ?? .none) {
                floor = (f, "forwarded copy: tls_only \(f.rawValue)")
            }
        }
        // An escalation's channel is the one that serves it, whether or not
        // the escalation raised the level (a domain already at verify may
        // still fail it); without one, the domain's own (its fallback
        // relay, or S/MIME).
        var fallback = base.fallback
        var smime = domainSMIME
        if envelope.escalation != nil, let channel = config.escalation.channel {
            switch channel {
            case .relay(let name): fallback = name; smime = false
            case .smime: fallback = nil; smime = true
            }
        }
        guard let floor, floor.level > base.level || (floor.level >= .verify && !base.requiresVerification) else {
            let decision = fallback == base.fallback ? base
                : PolicyDecision(domain: base.domain, level: base.level, requiresVerification: base.requiresVerification,
                                 layer: base.layer, reason: base.reason, fallback: fallback, verdicts: base.verdicts)
            return MessagePolicy(decision: decision, automaticLayers: !relaxed, requireTLS: envelope.requireTLS,
                                 relaxed: relaxed, raisedBy: nil, smimeChannel: smime && !envelope.requireTLS)
        }
        let level = max(floor.level, base.level)
        let raised = PolicyDecision(domain: base.domain, level: level,
                                    requiresVerification: base.requiresVerification || level >= .verify,
                                    layer: .message, reason: floor.why, fallback: fallback, verdicts: base.verdicts)
        return MessagePolicy(decision: raised, automaticLayers: !relaxed, requireTLS: envelope.requireTLS, relaxed: relaxed,
                             raisedBy: floor.why, smimeChannel: smime && !envelope.requireTLS)
    }
}
