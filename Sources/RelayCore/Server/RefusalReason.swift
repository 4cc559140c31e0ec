// Which `relayd_messages_refused_total{reason}` a refusal sent to an SMTP
// client counts under: only refusals of a message — its MAIL, a RCPT, its
// DATA or the message itself (the reply after the end of data) — plus the
// connections turned away at the connection limits (rate_limited).
// Refusals of other commands (a bad AUTH, an unknown verb, STARTTLS twice)
// are no message refused. Judged from the reply relayd sent, so the
// reasons follow ServerSession's replies without it knowing about metrics.
import RelayMetrics
import RelaySMTP

extension RelayMetrics.RefusalReason {
    static let messageVerbs: Set<String> = ["MAIL", "RCPT", "DATA"]

    /// nil: not a message refusal (a success, or another command's).
    static func of(_ reply: Reply, verb: String) -> Self? {
        guard reply.code >= 400, messageVerbs.contains(verb.uppercased()) else { return nil }
        let text = reply.lines.joined(separator: " ")
        switch (reply.code, reply.enhanced ?? "") {
        case (_, "5.7.1"):
            return .relayDenied
        case (530, _) where text.contains("STARTTLS"):
            return .tlsRequired
        case (530, _) where text.contains("Authentication required"):
            return .authRequired
        case (_, "5.3.4"):
            return .size
        case (_, "4.3.0"), (_, "4.3.1"):
            return .storage
        case (_, let e) where e.hasPrefix("5.5.") || e == "5.1.3" || e == "5.1.7" || e == "5.6.0" || e == "5.6.7":
            return .syntax
        default:
            return .other
        }
    }
}
