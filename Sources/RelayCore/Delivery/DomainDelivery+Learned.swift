// What each session to a domain's MX hosts tells learned TLS status, and
// the warning when a domain that learned TLS suddenly offers none.
//
// Only MX sessions teach (a smarthost or transport relay is the operator's
// hop, not the domain's), and only sessions that tried TLS: at `none`
// relayd never asks, and the plaintext retry after a failed handshake
// already reported the failure it follows.
import Logging
import RelayLearned
import RelayModel
import RelayPolicy
import RelaySMTP
import RelayTLS

extension DomainDelivery {
    /// What a session showed of the MX's TLS; nil when it says nothing
    /// (TLS not tried, or the session failed before the question came up).
    static func evidence(_ result: ClientRunResult, tls: TLSRequirement) -> (seen: TLSEvidence, reason: String, missing: String)? {
        if let info = result.tls {
            // DANE authentication is not the chain-and-name verification
            // `verify` would later demand of the host: it teaches "TLS".
            if info.daneMatch != nil { return (.tls, "TLS, DANE-authenticated", "") }
            if info.verification == .trusted { return (.verified, "verified TLS", "") }
            return (.tls, "TLS, \(info.verification)", "verification")
        }
        guard tls != .never else { return nil }
        switch result.outcome {
        case .completed:
            // Opportunistic, and the EHLO reply had no STARTTLS.
            return (.plaintext, "STARTTLS not offered", "starttls-not-offered")
        case .failed(.tlsNotOffered):
            return (.plaintext, "STARTTLS not offered", "starttls-not-offered")
        case .failed(.tlsRefused(let r)):
            return (.plaintext, "STARTTLS refused: \(r)", "starttls-refused")
        case .failed(.tls(let f)) where f.kind == .certificateUntrusted || f.kind == .hostnameMismatch || f.kind == .daneNoMatch:
            // The handshake stopped at verification: the host does TLS.
            return (.tls, "TLS, \(f.kind.rawValue)", "verification")
        case .failed(.tls(let f)):
            return (.plaintext, "TLS handshake failed: \(f.kind.rawValue)", "handshake-failed")
        default:
            return nil
        }
    }

    func learn(_ hop: Hop, tls: TLSRequirement, _ result: ClientRunResult) {
        guard let learned = env.learned, hop.via == "mx",
              let (seen, reason, missing) = Self.evidence(result, tls: tls) else { return }
        let before = learned.record(domain)
        learned.observeSession(domain: domain, host: hop.host, seen: seen, reason: reason, key: result.leafKey)
        // The downgrade warning: the learned layer decided this attempt and
        // the host showed less than it learned, so the session was refused
        // rather than sent below it.
        guard decision.layer == .learned, decision.level.tlsRequirement == .required,
              let record = before, let level = record.learned,
              seen < (decision.requiresVerification ? .verified : .tls) else { return }
        learned.countDowngradeDeferred()
        env.metrics?.downgradeSuspected()
        env.logger.warning("suspected TLS downgrade; not sent below the learned level, deferred", metadata: [
            "id": "\(message.id)", "domain": "\(domain)", "mx": "\(hop.host)", "ip": "\(hop.address)",
            "missing": "\(missing)", "seen": "\(reason)", "learned": "\(record.summary(of: level))",
            "level": "\(decision.level.rawValue)"])
    }
}
