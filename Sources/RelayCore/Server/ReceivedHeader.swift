// The Received trace header relayd prepends to each accepted message
// (RFC 5321 §4.4), with the protocol keyword of RFC 3848 and, as SPEC asks,
// the TLS version and cipher. Every variable part was validated by the SMTP
// parser (HELO name, addresses) or comes from OpenSSL, so nothing here can
// break the header's syntax.
#if canImport(Glibc)
import Glibc
#endif

public enum ReceivedHeader {
    public static func make(envelope: Envelope, queueID: String, hostname: String,
                            includeUser: Bool, unixTime: Int) -> String {
        let o = envelope.origin
        var proto = o.esmtp ? "ESMTP" : "SMTP"
        if o.esmtp {
            if o.tlsVersion != nil { proto += "S" }
            if o.authenticatedUser != nil { proto += "A" }
        }
        let literal = o.clientAddress.contains(":") ? "IPv6:\(o.clientAddress)" : o.clientAddress
        var h = "Received: from \(o.heloName.isEmpty ? "unknown" : o.heloName) ([\(literal)])\r\n"
        h += "\tby \(hostname) (relayd) with \(proto) id \(queueID)"
        if let v = o.tlsVersion, let c = o.tlsCipher {
            h += "\r\n\t(using \(v) with cipher \(c) (\(o.tlsBits ?? 0) bits))"
        }
        if includeUser, let user = o.authenticatedUser {
            h += "\r\n\t(authenticated as \(user))"
        }
        if envelope.recipients.count == 1, let r = envelope.recipients.first {
            h += "\r\n\tfor <\(r.mailbox)>"
        }
        h += "; \(rfc5322Date(unixTime))\r\n"
        return h
    }

    /// "Sun, 29 Nov 2026 07:50:00 +0000"
    public static func rfc5322Date(_ unixTime: Int) -> String {
        var t = time_t(unixTime)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[Int(tmv.tm_wday)]), \(two(tmv.tm_mday)) \(months[Int(tmv.tm_mon)]) \(tmv.tm_year + 1900) "
            + "\(two(tmv.tm_hour)):\(two(tmv.tm_min)):\(two(tmv.tm_sec)) +0000"
    }
}
