// What each `delivery attempt` line tells the TLS tally (`relayd report
// tls`): the session's TLS outcome when an address was tried, the
// fallback it led to, and on the concluding line the attempt's outcome,
// the transport a delivery went by and the layer that decided. Called from
// `log(...)`; TLSTally.record only counts in memory. Unlike TLS-RPT, every
// message counts, TLS-RPT report mail and relay hops included: the tally
// is about what left this host and how.
import RelaySMTP

extension DomainDelivery {
    func countForTLSTally(_ outcome: AttemptOutcome, hop: Hop?, run: ClientRunResult?) {
        guard let tally = env.tlsTally else { return }
        tally.record(Self.tallyEvent(domain: domain, outcome: outcome, layer: "\((hop?.layer ?? decision.layer).rawValue)",
                                     level: "\(hop?.level.rawValue ?? decision.level.rawValue)", tried: hop != nil, run: run))
    }

    /// The pure mapping, for the tests.
    static func tallyEvent(domain: String, outcome: AttemptOutcome, layer: String, level: String, tried: Bool,
                           run: ClientRunResult?) -> TLSTallyEvent {
        var e = TLSTallyEvent(domain: domain, layer: "\(layer)/\(level)")
        if tried { e.session = TLSTallyEvent.sessionLabel(run) }
        switch outcome {
        case .plaintextRetry: e.fallback = "plaintext-retry"
        case .fallback: e.fallback = "relay"
        case .nextAddress: break
        case .delivered, .mixed:
            e.outcome = outcome.name
            e.delivery = run?.tls.map(TLSTallyEvent.transport) ?? "plaintext"
        case .deferred, .bounced, .dropped:
            e.outcome = outcome.name
        }
        return e
    }
}
