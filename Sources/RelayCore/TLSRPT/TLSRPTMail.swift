// A report sent by mail (RFC 8460 §5.3): a multipart/report with
// report-type "tlsrpt", a short text/plain part and the gzipped JSON as an
// application/tlsrpt+gzip attachment named per §5.1. The Subject and the
// TLS-Report-Domain / TLS-Report-Submitter fields are the RFC's.
//
// The queued message carries `Envelope.tlsReport`, so delivery sends it
// opportunistically whatever the domain's TLS policy and does not count
// its sessions. Its envelope sender is the null path unless the operator
// configured one ([tlsrpt] from), so a report that cannot be delivered
// bounces to nobody.
import Foundation
import RelayModel
import RelayQueue

public enum TLSRPTMail {
    public static func message(counts: TLSRPTCounts, gzipped: [UInt8], to recipient: Mailbox,
                               submitter: TLSRPTSubmitter, from: Mailbox?, hostname: String,
                               id: String, now: Int) -> QueuedMessage {
        let reportID = TLSRPTReport.reportID(day: counts.day, domain: counts.domain, submitter: submitter.submitter)
        let fileName = TLSRPTReport.fileName(day: counts.day, domain: counts.domain, submitter: submitter.submitter)
        let boundary = "=_relayd_tlsrpt_\(id)"
        let headerFrom = from?.description ?? "MAILER-DAEMON@\(hostname)"
        var t = ""
        t += "From: TLS reporting <\(headerFrom)>\r\n"
        t += "To: <\(recipient)>\r\n"
        t += "Subject: Report Domain: \(counts.domain) Submitter: \(submitter.submitter) Report-ID: <\(reportID)>\r\n"
        t += "Date: \(RFC5322Date.format(now))\r\n"
        t += "Message-ID: <\(id).tlsrpt@\(hostname)>\r\n"
        t += "TLS-Report-Domain: \(counts.domain)\r\n"
        t += "TLS-Report-Submitter: \(submitter.submitter)\r\n"
        t += "Auto-Submitted: auto-generated\r\n"
        t += "MIME-Version: 1.0\r\n"
        t += "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n\tboundary=\"\(boundary)\"\r\n"
        t += "\r\nThis is a multipart message in MIME format.\r\n"
        t += "\r\n--\(boundary)\r\n"
        t += "Content-Type: text/plain; charset=\"us-ascii\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        t += "This is an aggregate TLS report (RFC 8460) from \(submitter.submitter)\r\n"
        t += "for \(counts.domain), \(counts.day.startDateTime) to \(counts.day.endDateTime).\r\n"
        t += "\r\n--\(boundary)\r\n"
        t += "Content-Type: application/tlsrpt+gzip; name=\"\(fileName)\"\r\n"
        t += "Content-Transfer-Encoding: base64\r\n"
        t += "Content-Disposition: attachment;\r\n\tfilename=\"\(fileName)\"\r\n\r\n"
        t += Data(gzipped).base64EncodedString(options: [.lineLength76Characters, .endLineWithCarriageReturn,
                                                         .endLineWithLineFeed])
        t += "\r\n\r\n--\(boundary)--\r\n"
        var env = Envelope(sender: from.map { .mailbox($0) } ?? .null,
                           recipients: [Envelope.Recipient(mailbox: recipient, notify: [.never])],
                           bodyType: .sevenBit, smtpUTF8: recipient.needsSMTPUTF8,
                           origin: Envelope.Origin(clientAddress: "127.0.0.1", heloName: hostname, esmtp: true))
        env.tlsReport = true
        return QueuedMessage(id: id, arrival: now, envelope: env, body: Array(t.utf8))
    }
}
