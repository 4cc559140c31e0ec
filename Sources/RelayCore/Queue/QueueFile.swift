// The on-disk form of one queued message. Self-checking in Postfix's
// spirit: a magic line with a version, typed records, the body with its
// exact length, and an end record carrying a checksum of everything before
// it. A file that fails any check is never delivered; the spool moves it
// aside. Pure encoding and decoding, no I/O.
//
//   relayd-queue 1
//   id <queue id>
//   arrival <unix seconds>
//   client <ip>
//   helo <xtext>            esmtp <0|1>
//   auth <xtext>            (optional)
//   tls <version> <cipher> <bits>   (optional)
//   from <xtext address>    (empty for the null sender)
//   body-type 7BIT|8BITMIME     smtputf8 <0|1>
//   ret FULL|HDRS           envid <xtext>      (optional)
//   rcpt <xtext address> <notify|-> <xtext orcpt|-> [<floor|-> <xtext forwarded-from|->]
//                           (one per recipient; the last two only for a
//                           forwarded copy or a recipient with a TLS floor)
//   tls-report 1            (optional: a TLS-RPT report, Envelope.tlsReport)
//   requiretls 1            (optional: RFC 8689 REQUIRETLS)
//   tls-required-no 1       (optional: the header said TLS-Required: No)
//   escalated <level> <subject-tag|header>   (optional)
//   size <n>
//   <blank line>
//   <n body bytes>
//   end <16 hex digits: FNV-1a 64 of all bytes before this line>
import RelayModel
public struct QueuedMessage: Equatable, Sendable {
    public var id: String
    public var arrival: Int
    public var envelope: Envelope
    /// The message as it will be sent, Received header included, CRLF lines.
    public var body: [UInt8]

    public init(id: String, arrival: Int, envelope: Envelope, body: [UInt8]) {
        self.id = id
        self.arrival = arrival
        self.envelope = envelope
        self.body = body
    }
}

/// The header records of a queue file: everything but the body, and where
/// the body is.
public struct QueueFileHeader: Equatable, Sendable {
    public var id: String
    public var arrival: Int
    public var envelope: Envelope
    public var bodySize: Int
    /// Offset of the first body byte in the file.
    public var bodyOffset: Int
}

public enum QueueFileError: Error, Equatable, CustomStringConvertible {
    case badMagic
    case unsupportedVersion(String)
    case badRecord(String)
    case missing(String)
    case truncated
    case checksumMismatch

    public var description: String {
        switch self {
        case .badMagic: return "not a relayd queue file"
        case .unsupportedVersion(let v): return "unsupported queue file version \(v)"
        case .badRecord(let r): return "malformed record: \(r)"
        case .missing(let r): return "missing record: \(r)"
        case .truncated: return "truncated (no end record)"
        case .checksumMismatch: return "checksum mismatch"
        }
    }
}

public enum QueueFile {
    static let magic = "relayd-queue 1"

    /// The header records and the blank line: the file up to the body.
    public static func encodeHeader(_ m: QueuedMessage) -> [UInt8] {
        let e = m.envelope
        var h = magic + "\n"
        h += "id \(m.id)\n"
        h += "arrival \(m.arrival)\n"
        h += "client \(XText.encode(e.origin.clientAddress))\n"
        h += "helo \(XText.encode(e.origin.heloName))\n"
        h += "esmtp \(e.origin.esmtp ? 1 : 0)\n"
        if let a = e.origin.authenticatedUser { h += "auth \(XText.encode(a))\n" }
        if let v = e.origin.tlsVersion, let c = e.origin.tlsCipher {
            h += "tls \(XText.encode(v)) \(XText.encode(c)) \(e.origin.tlsBits ?? 0)\n"
        }
        h += "from \(XText.encode(e.sender.description))\n"
        h += "body-type \(e.bodyType.rawValue)\n"
        h += "smtputf8 \(e.smtpUTF8 ? 1 : 0)\n"
        if let r = e.ret { h += "ret \(r.rawValue)\n" }
        if let id = e.envelopeID { h += "envid \(XText.encode(id))\n" }
        for r in e.recipients {
            let notify = r.notify.map { $0.map(\.rawValue).joined(separator: ",") } ?? "-"
            let orcpt = r.originalRecipient.map(XText.encode) ?? "-"
            h += "rcpt \(XText.encode(r.mailbox.description)) \(notify) \(orcpt)"
            if r.tlsFloor != nil || r.forwardedFrom != nil {
                h += " \(r.tlsFloor?.rawValue ?? "-") \(r.forwardedFrom.map { XText.encode($0.description) } ?? "-")"
            }
            h += "\n"
        }
        if e.tlsReport { h += "tls-report 1\n" }
        if e.requireTLS { h += "requiretls 1\n" }
        if e.tlsRequiredNo { h += "tls-required-no 1\n" }
        if let x = e.escalation { h += "escalated \(x.level.rawValue) \(x.source.rawValue)\n" }
        h += "size \(m.body.count)\n\n"
        return Array(h.utf8)
    }

    /// What follows the body: the separating "\n" and the end record, given
    /// the checksum of the header and body.
    static func trailer(checksumOfHeaderAndBody sum: UInt64) -> [UInt8] {
        Array("\nend \(hex16(fnv1a64([10], from: sum)))\n".utf8)
    }

    /// Length of the trailer: "\n", "end ", 16 hex digits, "\n".
    static let trailerLength = 1 + 4 + 16 + 1

    public static func encode(_ m: QueuedMessage) -> [UInt8] {
        var out = encodeHeader(m)
        out.reserveCapacity(out.count + m.body.count + trailerLength)
        out.append(contentsOf: m.body)
        out.append(contentsOf: trailer(checksumOfHeaderAndBody: fnv1a64(out[...])))
        return out
    }

    public static func decode(_ data: [UInt8]) throws -> QueuedMessage {
        // End record first: a torn write is the common failure.
        let endLength = 4 + 16 + 1
        guard data.count > endLength, data.last == 10 else { throw QueueFileError.truncated }
        let endStart = data.count - endLength
        let endLine = String(decoding: data[endStart..<(data.count - 1)], as: UTF8.self)
        guard endLine.hasPrefix("end ") else { throw QueueFileError.truncated }
        // Compared as text, so the record has exactly one spelling.
        guard endLine.dropFirst(4) == hex16(fnv1a64(data[..<endStart])) else { throw QueueFileError.checksumMismatch }

        let header = try decodeHeader(data, end: endStart)
        let offset = header.bodyOffset, size = header.bodySize
        // Body, then the "\n" that separates it from the end record.
        guard offset + size + 1 == endStart, data[endStart - 1] == 10 else { throw QueueFileError.badRecord("size") }
        let body = Array(data[offset..<(offset + size)])
        return QueuedMessage(id: header.id, arrival: header.arrival, envelope: header.envelope, body: body)
    }

    /// Parses the header records of `data[..<end]`, up to the blank line.
    /// Checks nothing about the body or the checksum: callers do (decode
    /// at once, QueueFileReader as it reads the body).
    public static func decodeHeader(_ data: [UInt8], end: Int) throws -> QueueFileHeader {
        var records: [(String, [Substring])] = []
        var offset = 0
        var headerDone = false
        while offset < end {
            guard let lf = data[offset..<end].firstIndex(of: 10) else { throw QueueFileError.truncated }
            let line = String(decoding: data[offset..<lf], as: UTF8.self)
            offset = lf + 1
            if line.isEmpty { headerDone = true; break }
            let parts = line.split(separator: " ", omittingEmptySubsequences: false)
            records.append((String(parts[0]), Array(parts.dropFirst())))
        }
        guard headerDone else { throw QueueFileError.truncated }
        guard let first = records.first else { throw QueueFileError.badMagic }
        guard first.0 == "relayd-queue" else { throw QueueFileError.badMagic }
        guard first.1 == ["1"] else { throw QueueFileError.unsupportedVersion(first.1.joined(separator: " ")) }

        func one(_ key: String) throws -> [Substring] {
            let found = records.filter { $0.0 == key }
            guard found.count <= 1 else { throw QueueFileError.badRecord("\(key) repeated") }
            guard let r = found.first else { throw QueueFileError.missing(key) }
            return r.1
        }
        func optional(_ key: String) throws -> [Substring]? {
            records.contains { $0.0 == key } ? try one(key) : nil
        }
        func text(_ fields: [Substring], _ key: String) throws -> String {
            guard fields.count == 1, let s = XText.decode(String(fields[0])) ?? (fields[0].isEmpty ? "" : nil) else {
                throw QueueFileError.badRecord(key)
            }
            return s
        }
        /// A record that is either absent (false) or exactly "<key> 1".
        func flag(_ key: String) throws -> Bool {
            guard let f = try optional(key) else { return false }
            guard f == ["1"] else { throw QueueFileError.badRecord(key) }
            return true
        }
        func int(_ fields: [Substring], _ key: String) throws -> Int {
            guard fields.count == 1, let v = Int(fields[0]), v >= 0 else { throw QueueFileError.badRecord(key) }
            return v
        }

        let id = try text(one("id"), "id")
        guard QueueID.isValid(id) else { throw QueueFileError.badRecord("id") }
        let arrival = try int(one("arrival"), "arrival")
        var origin = Envelope.Origin(clientAddress: try text(one("client"), "client"),
                                     heloName: try text(one("helo"), "helo"),
                                     esmtp: try int(one("esmtp"), "esmtp") == 1)
        if let a = try optional("auth") { origin.authenticatedUser = try text(a, "auth") }
        if let t = try optional("tls") {
            guard t.count == 3, let v = XText.decode(String(t[0])), let c = XText.decode(String(t[1])), let b = Int(t[2]) else {
                throw QueueFileError.badRecord("tls")
            }
            origin.tlsVersion = v; origin.tlsCipher = c; origin.tlsBits = b
        }
        let fromText = try text(one("from"), "from")
        let sender: ReversePath
        if fromText.isEmpty { sender = .null } else {
            guard let m = Mailbox.parseForwardPath("<\(fromText)>") else { throw QueueFileError.badRecord("from") }
            sender = .mailbox(m)
        }
        let bodyTypeFields = try one("body-type")
        guard bodyTypeFields.count == 1, let bodyType = Envelope.BodyType(rawValue: String(bodyTypeFields[0])) else {
            throw QueueFileError.badRecord("body-type")
        }
        var envelope = Envelope(sender: sender, bodyType: bodyType,
                                smtpUTF8: try int(one("smtputf8"), "smtputf8") == 1, origin: origin)
        if let r = try optional("ret") {
            guard r.count == 1, let ret = Envelope.Return(rawValue: String(r[0])) else { throw QueueFileError.badRecord("ret") }
            envelope.ret = ret
        }
        if let e = try optional("envid") { envelope.envelopeID = try text(e, "envid") }
        for (key, fields) in records where key == "rcpt" {
            guard fields.count == 3 || fields.count == 5, let addr = XText.decode(String(fields[0])),
                  let mailbox = Mailbox.parseForwardPath("<\(addr)>") else { throw QueueFileError.badRecord("rcpt") }
            var notify: [Envelope.Notify]?
            if fields[1] != "-" {
                notify = try fields[1].split(separator: ",").map {
                    guard let n = Envelope.Notify(rawValue: String($0)) else { throw QueueFileError.badRecord("rcpt notify") }
                    return n
                }
            }
            var orcpt: String?
            if fields[2] != "-" {
                guard let o = XText.decode(String(fields[2])) else { throw QueueFileError.badRecord("rcpt orcpt") }
                orcpt = o
            }
            var recipient = Envelope.Recipient(mailbox: mailbox, notify: notify, originalRecipient: orcpt)
            if fields.count == 5 {
                if fields[3] != "-" {
                    guard let floor = PolicyLevel(rawValue: String(fields[3])) else { throw QueueFileError.badRecord("rcpt floor") }
                    recipient.tlsFloor = floor
                }
                if fields[4] != "-" {
                    guard let f = XText.decode(String(fields[4])), let m = Mailbox.parseForwardPath("<\(f)>") else {
                        throw QueueFileError.badRecord("rcpt forwarded-from")
                    }
                    recipient.forwardedFrom = m
                }
            }
            envelope.recipients.append(recipient)
        }
        guard !envelope.recipients.isEmpty else { throw QueueFileError.missing("rcpt") }
        envelope.tlsReport = try flag("tls-report")
        envelope.requireTLS = try flag("requiretls")
        envelope.tlsRequiredNo = try flag("tls-required-no")
        if let x = try optional("escalated") {
            guard x.count == 2, let level = PolicyLevel(rawValue: String(x[0])),
                  let source = Envelope.Escalation.Source(rawValue: String(x[1])) else { throw QueueFileError.badRecord("escalated") }
            envelope.escalation = Envelope.Escalation(level: level, source: source)
        }
        let size = try int(one("size"), "size")
        return QueueFileHeader(id: id, arrival: arrival, envelope: envelope, bodySize: size, bodyOffset: offset)
    }

    static let fnvOffsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325

    /// FNV-1a 64 of `bytes`, continuing from `h` (the hash of what came
    /// before), so a file can be checked in pieces.
    static func fnv1a64(_ bytes: ArraySlice<UInt8>, from h: UInt64 = fnvOffsetBasis) -> UInt64 {
        bytes.withUnsafeBufferPointer { buf in
            var h = h
            for b in buf {
                h ^= UInt64(b)
                h = h &* 0x0000_0100_0000_01b3
            }
            return h
        }
    }

    static func hex16(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}
