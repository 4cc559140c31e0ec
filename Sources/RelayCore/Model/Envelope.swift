// What the queue stores beside a message body: the SMTP envelope, the DSN
// requests (RFC 3461) to honour at delivery, and how the message arrived.
public struct Envelope: Equatable, Sendable {
    public enum BodyType: String, Sendable { case sevenBit = "7BIT", eightBitMIME = "8BITMIME" }
    public enum Return: String, Sendable { case full = "FULL", headers = "HDRS" }
    public enum Notify: String, CaseIterable, Sendable { case never = "NEVER", success = "SUCCESS", failure = "FAILURE", delay = "DELAY" }

    public struct Recipient: Equatable, Sendable {
        public let mailbox: Mailbox
        /// nil: the client said nothing (default: FAILURE, DELAY).
        public let notify: [Notify]?
        /// ORCPT as received: "rfc822;user@example.com" (xtext-decoded).
        public let originalRecipient: String?
        /// A copy made by the forwarding table: the address it was sent to
        /// (nil: the client named this recipient itself).
        public var forwardedFrom: Mailbox? = nil
        /// The least TLS level this recipient's copy may travel at, whatever
        /// the domain's policy says (`[forwarding] tls_only`); nil: none.
        public var tlsFloor: PolicyLevel? = nil

        public init(mailbox: Mailbox, notify: [Notify]? = nil, originalRecipient: String? = nil,
                    forwardedFrom: Mailbox? = nil, tlsFloor: PolicyLevel? = nil) {
            self.mailbox = mailbox
            self.notify = notify
            self.originalRecipient = originalRecipient
            self.forwardedFrom = forwardedFrom
            self.tlsFloor = tlsFloor
        }
    }

    /// A message whose sender asked for stronger handling (a subject tag or
    /// the escalate header, `[escalation]`): every recipient's level is at
    /// least `level`. Persisted, so retries and restarts keep it.
    public struct Escalation: Equatable, Sendable, CustomStringConvertible {
        public enum Source: String, Sendable {
            case subjectTag = "subject-tag"
            case header
        }
        public var level: PolicyLevel
        public var source: Source

        public init(level: PolicyLevel, source: Source) {
            self.level = level
            self.source = source
        }

        /// "verify by subject-tag", as the log and `relayd queue show` say it.
        public var description: String { "\(level.rawValue) by \(source.rawValue)" }
    }

    /// How the message reached relayd, for the Received header and logs.
    public struct Origin: Equatable, Sendable {
        public var clientAddress: String
        public var heloName: String
        public var esmtp: Bool
        public var authenticatedUser: String?
        public var tlsVersion: String?
        public var tlsCipher: String?
        public var tlsBits: Int?

        public init(clientAddress: String, heloName: String = "", esmtp: Bool = false,
                    authenticatedUser: String? = nil, tlsVersion: String? = nil,
                    tlsCipher: String? = nil, tlsBits: Int? = nil) {
            self.clientAddress = clientAddress
            self.heloName = heloName
            self.esmtp = esmtp
            self.authenticatedUser = authenticatedUser
            self.tlsVersion = tlsVersion
            self.tlsCipher = tlsCipher
            self.tlsBits = tlsBits
        }
    }

    public var sender: ReversePath
    public var recipients: [Recipient]
    public var bodyType: BodyType
    public var smtpUTF8: Bool
    public var ret: Return?
    public var envelopeID: String?
    public var origin: Origin
    /// This message carries a TLS-RPT report (RFC 8460 §5.3), which may be
    /// about TLS failing on the very path it takes. Delivery must send it
    /// with opportunistic TLS whatever the domain's policy (DANE, MTA-STS,
    /// learned status, operator entry: none may defer or drop it for TLS),
    /// and must not count its sessions in TLS-RPT (§5.4: a report about
    /// the reports would never settle). Persisted as the queue file's
    /// `tls-report 1` record; absent in files written before it: false.
    public var tlsReport: Bool = false
    /// RFC 8689: the client sent `MAIL FROM:<…> REQUIRETLS`. Every hop must
    /// then be found securely, authenticated and itself offer REQUIRETLS,
    /// or the message is returned (5.7.30). Record `requiretls 1`.
    public var requireTLS: Bool = false
    /// RFC 8689 §5: the header section carries `TLS-Required: No`. Whether
    /// it is honoured is decided at delivery (`[relay]
    /// honor_tls_required_no`, and never with REQUIRETLS). Record
    /// `tls-required-no 1`.
    public var tlsRequiredNo: Bool = false
    /// Record `escalated <level> <source>`; nil: not escalated.
    public var escalation: Escalation? = nil

    public init(sender: ReversePath, recipients: [Recipient] = [], bodyType: BodyType = .sevenBit,
                smtpUTF8: Bool = false, ret: Return? = nil, envelopeID: String? = nil, origin: Origin) {
        self.sender = sender
        self.recipients = recipients
        self.bodyType = bodyType
        self.smtpUTF8 = smtpUTF8
        self.ret = ret
        self.envelopeID = envelopeID
        self.origin = origin
    }
}

/// RFC 3461 §4 xtext: "+" followed by two upper-case hex digits encodes a
/// byte; every other byte must be printable ASCII other than "+" and "=".
public enum XText {
    public static func decode(_ s: String) -> String? {
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "+") {
                guard i + 2 < b.count, let h = hex(b[i + 1]), let l = hex(b[i + 2]) else { return nil }
                out.append(h << 4 | l)
                i += 3
            } else {
                guard c >= 33, c <= 126, c != UInt8(ascii: "=") else { return nil }
                out.append(c)
                i += 1
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    /// `decode`, refusing a value that decodes to anything but printable
    /// ASCII (SP to "~"), as ENVID and ORCPT must (RFC 3461 §4.2, §4.4).
    /// Both are written into DSN header fields, where a decoded CR LF
    /// would start a line of the client's choosing.
    public static func decodePrintable(_ s: String) -> String? {
        guard let d = decode(s), d.utf8.allSatisfy({ $0 >= 0x20 && $0 <= 0x7e }) else { return nil }
        return d
    }

    public static func encode(_ s: String) -> String {
        var out = ""
        for c in s.utf8 {
            if c >= 33, c <= 126, c != UInt8(ascii: "+"), c != UInt8(ascii: "=") {
                out.unicodeScalars.append(Unicode.Scalar(c))
            } else {
                let digits = Array("0123456789ABCDEF")
                out += "+" + String(digits[Int(c >> 4)]) + String(digits[Int(c & 15)])
            }
        }
        return out
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - 48
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - 55
        default: return nil
        }
    }
}
