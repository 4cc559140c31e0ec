// A message's own controls over its domain's decision (MessagePolicy), as
// a table: escalation and a forwarded copy's floor only raise;
// `TLS-Required: No` drops the automatic layers but never the operator's
// entry or a tls-exclusive default, and is ignored with REQUIRETLS or when
// the operator turned it off.
import Testing
@testable import RelayConfig
@testable import RelayDelivery
@testable import RelayModel
@testable import RelayPolicy
import RelayTestSupport

/// An automatic layer with a fixed answer (the learned or MTA-STS layer as
/// the engine sees it).
private struct FixedLayer: PolicyUpgradeLayer {
    let layer: PolicyLayer
    let level: PolicyLevel
    func verdict(for domain: String) -> LayerVerdict? {
        domain == "far.test" ? LayerVerdict(layer: layer, level: level, detail: "fixed") : nil
    }
}

private func envelope(escalation: Envelope.Escalation? = nil, floor: PolicyLevel? = nil, requireTLS: Bool = false,
                      tlsRequiredNo: Bool = false) -> Envelope {
    var e = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<a@clinic.example>")!),
                     origin: Envelope.Origin(clientAddress: "192.0.2.1"))
    e.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u@far.test>")!, tlsFloor: floor)]
    e.escalation = escalation
    e.requireTLS = requireTLS
    e.tlsRequiredNo = tlsRequiredNo
    return e
}

private func decide(_ e: Envelope, sections: String = "", automatic: PolicyLayer? = nil, automaticLevel: PolicyLevel = .verify) throws -> MessagePolicy {
    let config = try configForTests(sections)
    let upgrades: [any PolicyUpgradeLayer] = automatic.map { [FixedLayer(layer: $0, level: automaticLevel)] } ?? []
    let engine = PolicyEngine(defaultPolicy: config.outbound.defaultPolicy, domains: config.outbound.domains, upgrades: upgrades)
    return MessagePolicy.decide(domain: "far.test", envelope: e, indexes: [0], engine: engine, config: config)
}

@Suite struct MessagePolicyTests {
    static let escalated = Envelope.Escalation(level: .verify, source: .subjectTag)

    @Test(arguments: [
        // (domain decision source, escalation, expected level, layer)
        ("", PolicyLevel.verify, PolicyLevel.verify, PolicyLayer.message),
        ("[outbound.domains]\n\"far.test\" = \"none\"", .verify, .verify, .message),
        ("[outbound.domains]\n\"far.test\" = \"tls-exclusive\"", .verify, .tlsExclusive, .operatorEntry),
        ("[outbound]\ndefault_level = \"forced\"", .forced, .forced, .defaultLevel),
    ])
    func escalationTakesTheMaximumNeverLower(sections: String, level: PolicyLevel, expected: PolicyLevel, layer: PolicyLayer) throws {
        let p = try decide(envelope(escalation: .init(level: level, source: .header)), sections: sections)
        #expect(p.decision.level == expected)
        #expect(p.decision.layer == layer)
        if layer == .message {
            #expect(p.decision.requiresVerification == (expected >= .verify))
            #expect(p.raisedBy == "escalated \(level.rawValue) by header")
        }
    }

    @Test func forwardedCopyFloorRaisesOpportunisticToForced() throws {
        let p = try decide(envelope(floor: .forced))
        #expect(p.decision.level == .forced && p.decision.layer == .message)
        #expect(p.raisedBy == "forwarded copy: tls_only forced")
        #expect(!p.decision.requiresVerification)
    }

    @Test func escalationChannelNamesTheRelayOrSMIME() throws {
        let relay = """
            [[outbound.relay]]
            name = "portal"
            address = "127.0.0.9:25"
            level = "verify"
            [escalation]
            subject_tags = ["[secure]"]
            channel = "relay:portal"
            """
        let viaRelay = try decide(envelope(escalation: Self.escalated), sections: relay)
        #expect(viaRelay.decision.fallback == "portal" && !viaRelay.smimeChannel)
        let smime = """
            [smime]
            certificate_directory = "/nonexistent/certs"
            [escalation]
            subject_tags = ["[secure]"]
            channel = "smime"
            """
        let viaSMIME = try decide(envelope(escalation: Self.escalated), sections: smime)
        #expect(viaSMIME.smimeChannel && viaSMIME.decision.fallback == nil)
        #expect(try !decide(envelope(), sections: smime).smimeChannel, "an unescalated message has no escalation channel")
        #expect(try !decide(envelope(escalation: Self.escalated, requireTLS: true), sections: smime).smimeChannel,
                "REQUIRETLS is answered by 5.7.30, never by a channel")
    }

    /// The escalation's channel serves an escalated message even when the
    /// domain was already at the escalated level (its verify may fail too).
    @Test func escalationChannelAppliesWhenTheDomainIsAlreadyAtTheLevel() throws {
        let sections = """
            [outbound.domains]
            "far.test" = "verify"
            [smime]
            certificate_directory = "/nonexistent/certs"
            [escalation]
            subject_tags = ["[secure]"]
            channel = "smime"
            """
        let p = try decide(envelope(escalation: Self.escalated), sections: sections)
        #expect(p.decision.layer == .operatorEntry && p.decision.level == .verify && p.raisedBy == nil)
        #expect(p.smimeChannel)
    }

    /// The S/MIME leg drops the escalation (what could not be had) but keeps
    /// a forwarded copy's floor: an encrypted TLS-only copy still needs TLS,
    /// even where the operator's entry would send the copy opportunistically.
    @Test func channelLegKeepsTheForwardedFloor() throws {
        let config = try configForTests("""
            [outbound.domains]
            "far.test" = { level = "verify", channel = "smime" }
            [smime]
            certificate_directory = "/nonexistent/certs"
            """)
        let engine = PolicyEngine(defaultPolicy: config.outbound.defaultPolicy, domains: config.outbound.domains)
        let forwarded = DomainDelivery.channelLegPolicy(domain: "far.test", envelope: envelope(floor: .forced), indexes: [0],
                                                        engine: engine, config: config)
        #expect(forwarded.decision.level == .forced && forwarded.decision.layer == .message && !forwarded.smimeChannel)
        let direct = DomainDelivery.channelLegPolicy(domain: "far.test", envelope: envelope(escalation: Self.escalated),
                                                     indexes: [0], engine: engine, config: config)
        #expect(direct.decision.level == .opportunistic && direct.decision.layer == .operatorEntry && !direct.smimeChannel)
    }

    @Test(arguments: [PolicyLayer.learned, .mtaSTS])
    func tlsRequiredNoRelaxesAnAutomaticLayer(layer: PolicyLayer) throws {
        let strict = try decide(envelope(), automatic: layer)
        #expect(strict.decision.level == .verify && strict.decision.layer == layer && strict.automaticLayers)
        let relaxed = try decide(envelope(tlsRequiredNo: true), automatic: layer)
        #expect(relaxed.relaxed && !relaxed.automaticLayers)
        #expect(relaxed.decision.level == .opportunistic && relaxed.decision.layer == .defaultLevel)
    }

    @Test(arguments: [
        ("[outbound.domains]\n\"far.test\" = \"verify\"", PolicyLevel.verify, PolicyLayer.operatorEntry),
        ("[outbound.domains]\n\"far.test\" = \"none\"", .none, .operatorEntry),
        ("[outbound]\ndefault_level = \"tls-exclusive\"", .tlsExclusive, .defaultLevel),
        ("[outbound]\ndefault_level = \"none\"", .opportunistic, .defaultLevel),
    ])
    func tlsRequiredNoNeverOverridesTheOperator(sections: String, level: PolicyLevel, layer: PolicyLayer) throws {
        let p = try decide(envelope(tlsRequiredNo: true), sections: sections, automatic: .learned)
        #expect(p.decision.level == level)
        #expect(p.decision.layer == layer)
    }

    @Test func tlsRequiredNoIgnoredWithRequireTLSOrWhenTurnedOff() throws {
        let withRequireTLS = try decide(envelope(requireTLS: true, tlsRequiredNo: true), automatic: .learned)
        #expect(!withRequireTLS.relaxed && withRequireTLS.decision.level == .verify && withRequireTLS.requireTLS)
        let off = try decide(envelope(tlsRequiredNo: true), sections: "[relay]\nhonor_tls_required_no = false", automatic: .learned)
        #expect(!off.relaxed && off.decision.layer == .learned)
    }

    @Test func tlsReportKeepsItsOwnRule() throws {
        var e = envelope(escalation: Self.escalated, tlsRequiredNo: true)
        e.tlsReport = true
        let p = try decide(e, automatic: .learned)
        #expect(p.decision.level == .opportunistic && !p.automaticLayers && p.raisedBy == nil)
    }
}
