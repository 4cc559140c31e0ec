// The Received trace header relayd prepends to each accepted message
// (RFC 5321 §4.4), with the protocol keyword of RFC 3848 and, as SPEC asks,
// the TLS version and cipher. Every variable part was validated by the SMTP
// parser (HELO name, addresses, AUTH user names) or comes from the socket or
// OpenSSL; it is checked again here all the same, since an envelope can also
// come from a queue file, so that nothing can end the header or start another.
import RelayModel
import RelaySMTP
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
        let helo = !o.heloName.isEmpty && CommandParser.isValidHeloArgument(o.heloName) ? o.heloName : "unknown"
        let literal = IPAddress(o.clientAddress) == nil ? "unknown"
            : o.clientAddress.contains(":") ? "[IPv6:\(o.clientAddress)]" : "[\(o.clientAddress)]"
        var h = "Received: from \(helo) (\(literal))\r\n"
        h += "\tby \(hostname) (relayd) with \(proto) id \(queueID)"
        if let v = o.tlsVersion, let c = o.tlsCipher {
            h += "\r\n\t(using \(comment(v)) with cipher \(comment(c)) (\(o.tlsBits ?? 0) bits))"
        }
        if includeUser, let user = o.authenticatedUser {
            h += "\r\n\t(authenticated as \(comment(user)))"
        }
        if envelope.recipients.count == 1, let r = envelope.recipients.first {
            h += "\r\n\tfor <\(oneLine(r.mailbox.description))>"
        }
        h += "; \(RFC5322Date.format(unixTime))\r\n"
        return h
    }

    /// Text safe inside a header comment (RFC 5322 §3.2.2): parentheses and
    /// backslash quoted, control characters as in `oneLine`.
    static func comment(_ s: String) -> String {
        var out = ""
        for c in oneLine(s).unicodeScalars {
            if c == "(" || c == ")" || c == "\\" { out += "\\" }
            out.unicodeScalars.append(c)
        }
        return out
    }

    /// Every control character (C0, DEL, C1, the Unicode line and paragraph
    /// separators) replaced by "?": nothing can end the line.
    static func oneLine(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            let v = c.value
            let control = v < 0x20 || v == 0x7f || (0x80...0x9f).contains(v) || v == 0x2028 || v == 0x2029
            out.unicodeScalars.append(control ? "?" : c)
        }
        return out
    }
}
