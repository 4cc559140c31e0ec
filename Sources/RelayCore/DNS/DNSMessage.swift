// DNS wire format (RFC 1035 §4, RFC 6891 EDNS0, RFC 6840 AD bit) for the
// queries relayd builds and the answers it reads. Answers come from the
// network, so the parser trusts nothing: every length is bounds-checked,
// compression pointers may only point backwards and at most 64 hops, names
// are at most 255 octets, and record counts are limited by what the
// message can actually hold. A malformed answer is an error, never a
// partial result.
import RelayModel
public enum DNSType: UInt16, Sendable {
    case a = 1, cname = 5, mx = 15, txt = 16, aaaa = 28, opt = 41, tlsa = 52
}

public enum DNSRCode: Equatable, Sendable, CustomStringConvertible {
    case noError, formErr, servFail, nxDomain, notImp, refused, other(UInt16)

    init(_ v: UInt16) {
        switch v {
        case 0: self = .noError
        case 1: self = .formErr
        case 2: self = .servFail
        case 3: self = .nxDomain
        case 4: self = .notImp
        case 5: self = .refused
        default: self = .other(v)
        }
    }

    public var description: String {
        switch self {
        case .noError: return "NOERROR"
        case .formErr: return "FORMERR"
        case .servFail: return "SERVFAIL"
        case .nxDomain: return "NXDOMAIN"
        case .notImp: return "NOTIMP"
        case .refused: return "REFUSED"
        case .other(let v): return "RCODE\(v)"
        }
    }
}

public enum DNSRecordData: Equatable, Sendable {
    case a(IPAddress)
    case aaaa(IPAddress)
    case cname(String)
    case mx(preference: UInt16, exchange: String)
    case txt([[UInt8]])
    case tlsa(usage: UInt8, selector: UInt8, matchingType: UInt8, data: [UInt8])
    case other(type: UInt16)
}

public struct DNSRecord: Equatable, Sendable {
    public let name: String
    public let type: UInt16
    public let ttl: UInt32
    public let data: DNSRecordData
}

public struct DNSResponse: Equatable, Sendable {
    public let id: UInt16
    public let rcode: DNSRCode
    /// AD: the resolver validated the answer with DNSSEC (RFC 4035 §3.2.3).
    public let authenticated: Bool
    public let truncated: Bool
    public let questionName: String
    public let questionType: UInt16
    public let answers: [DNSRecord]

    /// The names an answer may legitimately use for `name`: the name and
    /// the CNAME chain from it inside `answers` (a resolver may put the
    /// alias and its target's records in one answer). Records owned by any
    /// other name are not the answer to the question.
    public static func owners(of name: String, in answers: [DNSRecord]) -> Set<String> {
        var owners: Set<String> = [DNSName.normalize(name)]
        var grew = true
        while grew {
            grew = false
            for record in answers {
                if case .cname(let target) = record.data, owners.contains(DNSName.normalize(record.name)),
                   owners.insert(DNSName.normalize(target)).inserted {
                    grew = true
                }
            }
        }
        return owners
    }
}

public enum DNSParseError: Error, Equatable, Sendable {
    case truncated
    case badName
    case badRecord(UInt16)
    case notAResponse
}

public enum DNSMessage {
    /// A recursive query with the AD bit set (asking the resolver to say
    /// whether it validated, RFC 6840 §5.7) and an EDNS0 OPT record
    /// advertising 1232-octet UDP answers. CD is never set.
    public static func query(name: String, type: DNSType, id: UInt16) -> [UInt8]? {
        var out: [UInt8] = []
        out += [UInt8(id >> 8), UInt8(id & 0xff)]
        out += [0x01, 0x20]  // RD | AD
        out += [0, 1, 0, 0, 0, 0, 0, 1]  // QD=1, AN=0, NS=0, AR=1
        guard let encoded = encodeName(name) else { return nil }
        out += encoded
        out += [UInt8(type.rawValue >> 8), UInt8(type.rawValue & 0xff), 0, 1]
        // OPT: root name, type 41, class = UDP size 1232, TTL 0, RDLEN 0.
        out += [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]
        return out
    }

    static func encodeName(_ name: String) -> [UInt8]? {
        var n = Substring(name)
        if n.hasSuffix(".") { n = n.dropLast() }
        var out: [UInt8] = []
        if !n.isEmpty {
            for label in n.split(separator: ".", omittingEmptySubsequences: false) {
                let bytes = Array(label.utf8)
                guard (1...63).contains(bytes.count) else { return nil }
                out.append(UInt8(bytes.count))
                out += bytes
            }
        }
        out.append(0)
        return out.count <= 255 ? out : nil
    }

    public static func parse(_ msg: [UInt8]) throws -> DNSResponse {
        var p = Parser(msg: msg)
        let id = try p.u16()
        let flags = try p.u16()
        guard flags & 0x8000 != 0 else { throw DNSParseError.notAResponse }
        let qd = Int(try p.u16()), an = Int(try p.u16())
        _ = try p.u16(); _ = try p.u16()  // NS, AR: not needed
        guard qd == 1 else { throw DNSParseError.notAResponse }
        let qname = try p.name()
        let qtype = try p.u16()
        _ = try p.u16()
        // Each RR takes at least 11 octets: a count past that is a lie.
        guard an <= (msg.count - p.offset) / 11 else { throw DNSParseError.truncated }
        var answers: [DNSRecord] = []
        answers.reserveCapacity(an)
        for _ in 0..<an { answers.append(try p.record()) }
        return DNSResponse(id: id, rcode: DNSRCode(flags & 0x000f), authenticated: flags & 0x0020 != 0,
                           truncated: flags & 0x0200 != 0, questionName: qname, questionType: qtype, answers: answers)
    }

    struct Parser {
        let msg: [UInt8]
        var offset = 0

        mutating func u8() throws -> UInt8 {
            guard offset < msg.count else { throw DNSParseError.truncated }
            defer { offset += 1 }
            return msg[offset]
        }

        mutating func u16() throws -> UInt16 {
            guard offset + 2 <= msg.count else { throw DNSParseError.truncated }
            defer { offset += 2 }
            return UInt16(msg[offset]) << 8 | UInt16(msg[offset + 1])
        }

        mutating func u32() throws -> UInt32 {
            let hi = UInt32(try u16()), lo = UInt32(try u16())
            return hi << 16 | lo
        }

        mutating func bytes(_ n: Int) throws -> [UInt8] {
            guard n >= 0, offset + n <= msg.count else { throw DNSParseError.truncated }
            defer { offset += n }
            return Array(msg[offset..<(offset + n)])
        }

        /// A possibly compressed name, lower-cased, without the final dot.
        mutating func name() throws -> String {
            var labels: [String] = []
            var total = 0
            var pos = offset
            var jumped = false
            var hops = 0
            while true {
                guard pos < msg.count else { throw DNSParseError.truncated }
                let len = Int(msg[pos])
                if len & 0xc0 == 0xc0 {
                    guard pos + 1 < msg.count else { throw DNSParseError.truncated }
                    let target = (len & 0x3f) << 8 | Int(msg[pos + 1])
                    // Only backwards, and not forever: no loops.
                    guard target < pos, hops < 64 else { throw DNSParseError.badName }
                    hops += 1
                    if !jumped { offset = pos + 2; jumped = true }
                    pos = target
                    continue
                }
                guard len & 0xc0 == 0 else { throw DNSParseError.badName }
                if len == 0 {
                    if !jumped { offset = pos + 1 }
                    break
                }
                guard pos + 1 + len <= msg.count else { throw DNSParseError.truncated }
                total += len + 1
                guard total <= 255 else { throw DNSParseError.badName }
                let raw = msg[(pos + 1)...(pos + len)]
                // Host names are LDH, but TXT/_mta-sts owners may hold '_';
                // anything outside printable ASCII, or a dot inside a
                // label, cannot be represented and is refused.
                guard raw.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: ".") }) else { throw DNSParseError.badName }
                labels.append(String(decoding: raw, as: UTF8.self).lowercased())
                pos += 1 + len
            }
            return labels.joined(separator: ".")
        }

        mutating func record() throws -> DNSRecord {
            let owner = try name()
            let type = try u16()
            _ = try u16()  // class
            let ttl = try u32()
            let rdlength = Int(try u16())
            guard offset + rdlength <= msg.count else { throw DNSParseError.truncated }
            let end = offset + rdlength
            let data: DNSRecordData
            switch type {
            case DNSType.a.rawValue:
                guard rdlength == 4 else { throw DNSParseError.badRecord(type) }
                data = .a(.v4(try bytes(4)))
            case DNSType.aaaa.rawValue:
                guard rdlength == 16 else { throw DNSParseError.badRecord(type) }
                data = .aaaa(.v6(try bytes(16)))
            case DNSType.cname.rawValue:
                data = .cname(try name())
            case DNSType.mx.rawValue:
                guard rdlength >= 3 else { throw DNSParseError.badRecord(type) }
                let pref = try u16()
                data = .mx(preference: pref, exchange: try name())
            case DNSType.txt.rawValue:
                var strings: [[UInt8]] = []
                while offset < end {
                    let n = Int(try u8())
                    guard offset + n <= end else { throw DNSParseError.badRecord(type) }
                    strings.append(try bytes(n))
                }
                data = .txt(strings)
            case DNSType.tlsa.rawValue:
                guard rdlength >= 3 else { throw DNSParseError.badRecord(type) }
                let usage = try u8(), selector = try u8(), mtype = try u8()
                data = .tlsa(usage: usage, selector: selector, matchingType: mtype, data: try bytes(rdlength - 3))
            default:
                data = .other(type: type)
            }
            // The RDATA must be consumed exactly: a name that ran past it
            // or left bytes behind means the record lies about its length.
            if case .other = data { offset = end }
            guard offset == end else { throw DNSParseError.badRecord(type) }
            return DNSRecord(name: owner, type: type, ttl: ttl, data: data)
        }
    }
}
