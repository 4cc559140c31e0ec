// Delivery status notifications (RFC 3464, multipart/report RFC 6522) for
// recipients that failed permanently or outlived the queue lifetime. The
// diagnostic names the TLS reason when TLS policy was the cause, so a
// sender learns "the destination does not offer TLS" rather than a bare
// "delivery failed". Never for a null sender (RFC 5321 §4.5.5: no bounce
// of a bounce), never for a recipient that asked NOTIFY=NEVER or a NOTIFY
// list without FAILURE. The original message is returned as headers only
// unless the sender asked RET=FULL: a bounce should not spread a body
// further than it was meant to go. Every value that came from outside (a
// client's ORCPT, an address, a server's reply text) passes `fieldText`,
// so none can end a line and start one of its own.
import RelayModel
public enum DSN {
    public struct Failure: Sendable {
        public let recipientIndex: Int
        public let status: String
        public let diagnostic: String
        public let remoteMTA: String?

        public init(recipientIndex: Int, status: String, diagnostic: String, remoteMTA: String? = nil) {
            self.recipientIndex = recipientIndex
            self.status = status
            self.diagnostic = diagnostic
            self.remoteMTA = remoteMTA
        }
    }

    /// Whether this recipient wants to hear about its failure.
    public static func wantsFailureNotice(_ r: Envelope.Recipient) -> Bool {
        guard let notify = r.notify else { return true }
        return notify.contains(.failure)
    }

    /// Whether the message demanded TLS of its own: REQUIRETLS, an
    /// escalation, or a TLS-only forwarded copy. Such a message is returned
    /// with its header section only, whatever RET asked: the bounce goes
    /// back at the sender domain's own level (RFC 8689 §4.4 for
    /// REQUIRETLS; the same reasoning for the others), and is sent without
    /// REQUIRETLS.
    static func carriesTLSDemand(_ e: Envelope) -> Bool {
        e.requireTLS || e.escalation != nil || e.recipients.contains { $0.tlsFloor != nil }
    }

    /// The bounce message, or nil when none may be sent.
    public static func bounce(for original: QueuedMessage, failures: [Failure], hostname: String,
                              id: String, now: Int) -> QueuedMessage? {
        guard case .mailbox(let sender) = original.envelope.sender else { return nil }
        let reportable = failures.filter { wantsFailureNotice(original.envelope.recipients[$0.recipientIndex]) }
        guard !reportable.isEmpty else { return nil }
        var human = "Your message could not be delivered to one or more recipients.\r\n"
        human += "It was not sent to them; the reasons follow.\r\n\r\n"
        for f in reportable {
            let mailbox = original.envelope.recipients[f.recipientIndex].mailbox.description
            human += "<\(fieldText(mailbox, unicode: true))>: \(fieldText(f.diagnostic))\r\n"
        }
        let fields = reportable.map { f -> (index: Int, fields: [String]) in
            var lines = ["Action: failed", "Status: \(statusCode(f.status))"]
            if let mta = f.remoteMTA { lines.append("Remote-MTA: dns; \(fieldText(mta))") }
            lines.append("Diagnostic-Code: x-relayd; \(fieldText(f.diagnostic))")
            return (f.recipientIndex, lines)
        }
        return report(for: original, to: sender, subject: "Undelivered Mail Returned to Sender", human: human,
                      recipients: fields, full: original.envelope.ret == .full && !carriesTLSDemand(original.envelope),
                      hostname: hostname, id: id, now: now)
    }

    /// The multipart/report (RFC 6522) both notices share: the headers,
    /// the human-readable part, the message/delivery-status part with one
    /// block per recipient (`recipients`: index and the fields after
    /// Final-Recipient), and the original (whole, or headers only), sent
    /// from the null sender to `sender` with NOTIFY=NEVER.
    static func report(for original: QueuedMessage, to sender: Mailbox, subject: String, human: String,
                       recipients: [(index: Int, fields: [String])], full: Bool,
                       hostname: String, id: String, now: Int) -> QueuedMessage {
        let boundary = "=_relayd_\(id)"
        var text = ""
        text += "From: Mail Delivery System <MAILER-DAEMON@\(hostname)>\r\n"
        text += "To: <\(fieldText(sender.description, unicode: true))>\r\n"
        text += "Subject: \(subject)\r\n"
        text += "Date: \(RFC5322Date.format(now))\r\n"
        text += "Message-ID: <\(id)@\(hostname)>\r\n"
        text += "Auto-Submitted: auto-replied\r\n"
        text += "MIME-Version: 1.0\r\n"
        text += "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"\(boundary)\"\r\n"
        text += "\r\nThis is a MIME-encapsulated delivery status notification.\r\n"

        text += "\r\n--\(boundary)\r\n"
        text += "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        text += "This is relayd at \(hostname).\r\n\r\n"
        text += human

        text += "\r\n--\(boundary)\r\n"
        text += "Content-Type: message/delivery-status\r\n\r\n"
        text += "Reporting-MTA: dns; \(hostname)\r\n"
        text += "X-Relayd-Queue-ID: \(original.id)\r\n"
        if let envid = original.envelope.envelopeID { text += "Original-Envelope-Id: \(XText.encode(envid))\r\n" }
        text += "Arrival-Date: \(RFC5322Date.format(original.arrival))\r\n"
        for (index, fields) in recipients {
            let r = original.envelope.recipients[index]
            text += "\r\n"
            if let orcpt = r.originalRecipient { text += "Original-Recipient: \(fieldText(orcpt))\r\n" }
            text += "Final-Recipient: rfc822; \(fieldText(r.mailbox.description, unicode: true))\r\n"
            for line in fields { text += line + "\r\n" }
        }

        text += "\r\n--\(boundary)\r\n"
        text += full ? "Content-Type: message/rfc822\r\n\r\n" : "Content-Type: text/rfc822-headers\r\n\r\n"
        var body = Array(text.utf8)
        body += full ? original.body : headers(of: original.body)
        if body.last != 10 { body += [13, 10] }
        body += Array("\r\n--\(boundary)--\r\n".utf8)

        let env = Envelope(sender: .null, recipients: [Envelope.Recipient(mailbox: sender, notify: [.never])],
                           bodyType: original.envelope.bodyType, smtpUTF8: sender.needsSMTPUTF8,
                           origin: Envelope.Origin(clientAddress: "127.0.0.1", heloName: hostname, esmtp: true))
        return QueuedMessage(id: id, arrival: now, envelope: env, body: body)
    }

    /// A recipient still waiting, for a delay notice.
    public struct Delay: Sendable {
        public let recipientIndex: Int
        /// The last attempt's RFC 3463 status (a 4.x.x; anything else is
        /// written as 4.0.0).
        public let status: String
        /// The last error.
        public let diagnostic: String
        /// Why TLS could not be had, when the last failure was a TLS-policy
        /// one: the notice says the message waits for TLS.
        public let tlsReason: String?

        public init(recipientIndex: Int, status: String, diagnostic: String, tlsReason: String? = nil) {
            self.recipientIndex = recipientIndex
            self.status = status
            self.diagnostic = diagnostic
            self.tlsReason = tlsReason
        }
    }

    /// Whether this recipient wants to hear that its delivery is delayed.
    /// RFC 3461 §4.1 leaves the default (no NOTIFY) to the implementation,
    /// "FAILURE" or "FAILURE,DELAY"; relayd takes the latter, as Postfix
    /// does with delay_warning_time set. NOTIFY=NEVER, or a list without
    /// DELAY, means no notice.
    public static func wantsDelayNotice(_ r: Envelope.Recipient) -> Bool {
        guard let notify = r.notify else { return true }
        return notify.contains(.delay)
    }

    /// The delay notice (RFC 3464 `Action: delayed`), or nil when none may
    /// be sent: a null sender, or no delayed recipient asked for one.
    /// `retryUntil` is when relayd stops trying (arrival + max_lifetime).
    public static func delayNotice(for original: QueuedMessage, delays: [Delay], waited: Int, retryUntil: Int,
                                   hostname: String, id: String, now: Int) -> QueuedMessage? {
        guard case .mailbox(let sender) = original.envelope.sender else { return nil }
        let reportable = delays.filter { wantsDelayNotice(original.envelope.recipients[$0.recipientIndex]) }
        guard !reportable.isEmpty else { return nil }
        var human = "Your message has not yet been delivered to one or more recipients\r\n"
        human += "after \(durationText(waited)) in the queue. This is a warning only; you do not\r\n"
        human += "need to send the message again. Delivery will be retried until\r\n"
        human += "\(RFC5322Date.format(retryUntil)); you will be told if it fails.\r\n\r\n"
        for d in reportable {
            let mailbox = original.envelope.recipients[d.recipientIndex].mailbox.description
            human += "<\(fieldText(mailbox, unicode: true))>: \(fieldText(d.diagnostic))\r\n"
            if let tls = d.tlsReason {
                human += "    The message is waiting for TLS: relayd's TLS policy for this\r\n"
                human += "    destination forbids sending it unencrypted or unverified, and\r\n"
                human += "    TLS could not be had: \(fieldText(tls))\r\n"
            }
        }
        let fields = reportable.map { d -> (index: Int, fields: [String]) in
            (d.recipientIndex, ["Action: delayed", "Status: \(transientStatusCode(d.status))",
                                "Diagnostic-Code: x-relayd; \(fieldText(d.diagnostic))",
                                "Will-Retry-Until: \(RFC5322Date.format(retryUntil))"])
        }
        // Headers only, whatever RET asked: the message is still on its way.
        return report(for: original, to: sender, subject: "Delayed Mail (still being retried)", human: human,
                      recipients: fields, full: false, hostname: hostname, id: id, now: now)
    }

    /// "4 hours", "2 seconds", for the human-readable part.
    static func durationText(_ seconds: Int) -> String {
        func unit(_ n: Int, _ name: String) -> String { "\(n) \(name)\(n == 1 ? "" : "s")" }
        if seconds >= 86400 && seconds % 86400 == 0 { return unit(seconds / 86400, "day") }
        if seconds >= 3600 { return unit(seconds / 3600, "hour") }
        if seconds >= 60 { return unit(seconds / 60, "minute") }
        return unit(seconds, "second")
    }

    /// A 4.x.x status for a delayed recipient: a recorded status that is
    /// not a transient RFC 3463 code becomes 4.0.0.
    static func transientStatusCode(_ s: String) -> String {
        let code = statusCode(s)
        return code.hasPrefix("4.") ? code : "4.0.0"
    }

    /// The header section of a message, up to and including the blank line.
    static func headers(of body: [UInt8]) -> [UInt8] {
        var i = 0
        while i + 3 < body.count {
            if body[i] == 13, body[i + 1] == 10, body[i + 2] == 13, body[i + 3] == 10 { return Array(body[..<(i + 2)]) }
            i += 1
        }
        return body
    }

    /// A value from outside made safe for one header line, at most `limit`
    /// octets: a control character (C0, DEL, C1, the Unicode line and
    /// paragraph separators) — and, unless `unicode`, any non-ASCII one —
    /// is written as \x{HH}, RFC 6533's notation. Values are checked where
    /// they enter (ORCPT, ENVID, reply parser); this is the second wall, for
    /// queue files written before those checks and paths not yet thought of.
    static func fieldText(_ s: String, unicode: Bool = false, limit: Int = 900) -> String {
        var out = ""
        var octets = 0
        for c in s.unicodeScalars {
            let v = c.value
            let plain = (v >= 0x20 && v < 0x7f) || (unicode && v > 0x9f && v != 0x2028 && v != 0x2029)
            let piece = plain ? String(c) : "\\x{\(String(v, radix: 16, uppercase: true))}"
            octets += piece.utf8.count
            if octets > limit { break }
            out += piece
        }
        return out
    }

    /// An RFC 3463 status code, or 5.0.0 when what was recorded is not one.
    static func statusCode(_ s: String) -> String {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, ["2", "4", "5"].contains(parts[0]),
              parts.dropFirst().allSatisfy({ (1...3).contains($0.utf8.count) && $0.utf8.allSatisfy { $0 >= 48 && $0 <= 57 } })
        else { return "5.0.0" }
        return s
    }
}
