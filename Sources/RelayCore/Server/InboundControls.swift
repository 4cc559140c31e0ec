// The per-message controls applied as a message is accepted, before it is
// queued (so the queue file holds the result, and retries and restarts
// keep it):
//   - forwarding: a recipient in the alias table is replaced by its
//     targets, the Postfix way without SRS: the envelope sender stays the
//     original sender (a copy that cannot be delivered bounces to them),
//     and each copy's ORCPT names the alias. Under `tls_only` each copy
//     carries a TLS floor.
//   - escalation: a configured Subject tag or the escalate header, from a
//     sender allowed to use them, raises the message's level; the tag is
//     taken out of the Subject and the header removed before delivery. A
//     sender who may not escalate gets the message through unchanged (the
//     tag stays visible, nothing is raised) and a log line says so.
//   - `TLS-Required: No` (RFC 8689 §5) is noted; delivery decides whether
//     it is honoured.
// Pure: the caller logs what `notes` says.
import RelayConfig
import RelayModel
import RelaySMTP

struct InboundControls {
    var envelope: Envelope
    var body: [UInt8]
    /// What was done, for the `queued` log line's neighbours.
    var notes: [Note] = []

    enum Note: Equatable, CustomStringConvertible {
        case forwarded(alias: String, to: [String], tlsOnly: Bool)
        case escalated(Envelope.Escalation, tags: [String])
        case escalationRefused(tags: [String], header: Bool)
        case escalateHeaderValueUnknown(String)
        case tlsRequiredNo

        var description: String {
            switch self {
            case .forwarded(let alias, let to, let tlsOnly):
                return "forwarded <\(alias)> to \(to.map { "<\($0)>" }.joined(separator: ", "))\(tlsOnly ? " (tls_only)" : "")"
            case .escalated(let x, let tags):
                return "escalated=\(x)" + (tags.isEmpty ? "" : " tags=\(tags.joined(separator: ","))")
            case .escalationRefused(let tags, let header):
                return "escalation refused: sender may not escalate (tags=\(tags.joined(separator: ",")) header=\(header))"
            case .escalateHeaderValueUnknown(let v):
                return "escalate header value '\(v)' names no level; the configured level applies"
            case .tlsRequiredNo:
                return "TLS-Required: No"
            }
        }
    }

    static func apply(envelope: Envelope, body: [UInt8], config: Config) -> InboundControls {
        var out = InboundControls(envelope: envelope, body: body)
        out.forward(config.forwarding)
        out.escalate(config.escalation)
        return out
    }

    mutating func forward(_ table: Config.Forwarding) {
        guard !table.aliases.isEmpty else { return }
        var expanded: [Envelope.Recipient] = []
        func add(_ r: Envelope.Recipient) {
            if let i = expanded.firstIndex(where: { $0.mailbox == r.mailbox }) {
                // The same address twice (named and forwarded to): one copy,
                // at the stronger floor.
                if let f = r.tlsFloor, f > (expanded[i].tlsFloor ?? .none) { expanded[i].tlsFloor = f }
            } else {
                expanded.append(r)
            }
        }
        for r in envelope.recipients {
            guard let alias = table.alias(for: r.mailbox) else { add(r); continue }
            // RFC 3461 §4.2 (rfc822) or, for an address that needs SMTPUTF8,
            // RFC 6533's utf-8 address type.
            let orcpt = r.originalRecipient ?? (r.mailbox.needsSMTPUTF8 ? "utf-8;" : "rfc822;") + r.mailbox.description
            for target in alias.targets {
                add(Envelope.Recipient(mailbox: target, notify: r.notify, originalRecipient: orcpt, forwardedFrom: r.mailbox,
                                       tlsFloor: alias.tlsOnly ? table.level : nil))
            }
            notes.append(.forwarded(alias: r.mailbox.description, to: alias.targets.map(\.description), tlsOnly: alias.tlsOnly))
        }
        envelope.recipients = expanded
    }

    mutating func escalate(_ settings: Config.Escalation) {
        let matcher = SubjectTagMatcher(tags: settings.subjectTags)
        let scan = MessageControls.scan(body, tags: matcher, escalateHeader: settings.header)
        if scan.tlsRequiredNo {
            envelope.tlsRequiredNo = true
            notes.append(.tlsRequiredNo)
        }
        guard !scan.subjectTags.isEmpty || scan.escalateHeaderValue != nil else { return }
        guard settings.permits(authenticatedUser: envelope.origin.authenticatedUser, clientAddress: envelope.origin.clientAddress) else {
            notes.append(.escalationRefused(tags: scan.subjectTags, header: scan.escalateHeaderValue != nil))
            return
        }
        var level: PolicyLevel = scan.subjectTags.isEmpty ? .none : settings.level
        if let value = scan.escalateHeaderValue {
            let word = value.lowercased()
            if let named = PolicyLevel(rawValue: word), named >= .forced {
                level = max(level, named)
            } else {
                // "yes", or anything else: an unknown word never weakens a
                // request the sender meant to make.
                if !["yes", "true", "1", ""].contains(word) { notes.append(.escalateHeaderValueUnknown(value)) }
                level = max(level, settings.level)
            }
        }
        let x = Envelope.Escalation(level: level, source: scan.subjectTags.isEmpty ? .header : .subjectTag)
        envelope.escalation = x
        body = MessageControls.strip(body, tags: matcher, escalateHeader: settings.header)
        notes.append(.escalated(x, tags: scan.subjectTags))
    }
}
