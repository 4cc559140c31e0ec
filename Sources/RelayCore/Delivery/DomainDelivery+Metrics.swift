// What an attempt tells the Prometheus metrics (RelayMetrics, reached as
// `DeliveryEnvironment.metrics`; nil: not counted):
//
// - relayd_delivery_attempts_total{result}: one per concluding attempt (its
//   outcome; a mixed attempt counts once under each disposition it had),
//   and `fallback` per hand-over to the fallback relay;
// - relayd_outbound_tls_sessions_total{layer,outcome}: one per MX or relay
//   session, i.e. per `delivery attempt` line whose connection was made;
// - relayd_tls_failures_total{result_type}: the RFC 8460 failure of each
//   session TLS-RPT would count, with its mapping, whether or not
//   [tlsrpt] is on;
// - relayd_tls_exclusive_drops_total: recipients dropped under tls-exclusive;
// - relayd_delivery_duration_seconds: start of the attempt to its conclusion.
import RelayMetrics
import RelayPolicy
import RelaySMTP
import RelayTLS
import RelayTLSRPT

extension DomainDelivery {
    /// The results an attempt's outcome counts under.
    static func attemptResults(_ outcome: AttemptOutcome) -> [RelayMetrics.AttemptResult] {
        switch outcome {
        case .delivered: return [.delivered]
        case .deferred: return [.deferred]
        case .bounced: return [.bounced]
        case .dropped: return [.dropped]
        case .fallback: return [.fallback]
        case .mixed(let delivered, let deferred, let bounced, let dropped):
            let parts: [(Int, RelayMetrics.AttemptResult)] = [(delivered, .delivered), (deferred, .deferred),
                                                              (bounced, .bounced), (dropped, .dropped)]
            return parts.filter { $0.0 > 0 }.map(\.1)
        case .nextAddress, .plaintextRetry:
            // Not a conclusion: the attempt goes on.
            return []
        }
    }

    static func metricsLayer(_ layer: PolicyLayer) -> RelayMetrics.Layer {
        switch layer {
        case .operatorEntry: return .operator
        case .dane: return .dane
        case .mtaSTS: return .mtaSTS
        case .learned: return .learned
        case .defaultLevel: return .default
        case .message: return .message
        }
    }

    /// What one session showed of TLS; nil when there was no session (the
    /// connection was never made, or a kept one was found dead).
    static func tlsOutcome(_ run: ClientRunResult) -> RelayMetrics.TLSOutcome? {
        if let info = run.tls {
            if info.daneMatch != nil { return .daneVerified }
            if info.verification == .trusted { return .pkixVerified }
            return .unauthenticated
        }
        switch run.outcome {
        case .failed(.connectFailed), .failed(.keptConnectionLost): return nil
        case .failed(.tls): return .failed
        default: return .plaintext
        }
    }

    func countSession(hop: Hop?, run: ClientRunResult?) {
        guard let metrics = env.metrics, let hop, let run, let outcome = Self.tlsOutcome(run) else { return }
        metrics.outboundSession(layer: Self.metricsLayer(hop.layer ?? decision.layer), outcome: outcome)
    }

    func countConclusion(_ outcome: AttemptOutcome, results: [Int: RecipientResult]) {
        guard let metrics = env.metrics else { return }
        for r in Self.attemptResults(outcome) { metrics.deliveryAttempt(r) }
        let dropped = indexes.filter { if case .dropped = results[$0] { return true } else { return false } }.count
        if dropped > 0 { metrics.tlsExclusiveDropped(recipients: dropped) }
        metrics.deliveryFinished(seconds: RelayMetrics.monotonicSeconds() - startedAt)
    }
}
