// The header section of a message about to be encrypted, read only far
// enough to choose which field lines may also stand outside the envelope.
//
// Defensive by construction, because the message is whatever a client
// sent: lines end at LF, with one CR before it dropped (so bare-LF messages
// read the same as CRLF ones); the section ends at the first empty line,
// and a message without one is all header; a line starting with SP or HT
// continues the field before it (folding kept, line for line); a line with
// no colon, or a continuation with no field before it, belongs to no field.
// Nothing here indexes past a bound or recurses, so a 0-byte message or a
// 1 MiB line only costs a linear scan. The message itself is never altered:
// it goes inside the envelope byte for byte.
struct SMIMEHeaderSection {
    struct Field {
        /// The field name, ASCII lower-cased, whitespace before the colon dropped.
        let name: String
        /// The field's lines without their line ends: the first, then each
        /// continuation.
        let lines: [ArraySlice<UInt8>]
    }

    let fields: [Field]

    init(_ message: [UInt8]) {
        var fields: [Field] = []
        var current: (name: String, lines: [ArraySlice<UInt8>])?
        var start = message.startIndex
        while start < message.endIndex {
            let lf = message[start...].firstIndex(of: UInt8(ascii: "\n"))
            var end = lf ?? message.endIndex
            if end > start, message[end - 1] == UInt8(ascii: "\r"), lf != nil { end -= 1 }
            let line = message[start..<end]
            start = lf.map { $0 + 1 } ?? message.endIndex
            if line.isEmpty { break }
            if line.first == UInt8(ascii: " ") || line.first == UInt8(ascii: "\t") {
                current?.lines.append(line)
                continue
            }
            if let c = current { fields.append(Field(name: c.name, lines: c.lines)) }
            current = nil
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
            var nameEnd = colon
            while nameEnd > line.startIndex, line[nameEnd - 1] == UInt8(ascii: " ") || line[nameEnd - 1] == UInt8(ascii: "\t") {
                nameEnd -= 1
            }
            let name = String(decoding: line[line.startIndex..<nameEnd].map(Self.asciiLower), as: UTF8.self)
            current = (name, [line])
        }
        if let c = current { fields.append(Field(name: c.name, lines: c.lines)) }
        self.fields = fields
    }

    /// The lines, CRLF-terminated, of every field named in `names`, in the
    /// message's order — except a field with a line longer than RFC 5322's
    /// 998 octets or holding a NUL or a bare CR: such a field is left to
    /// the inside, so the outer header is always well-formed.
    func lines(of names: Set<String>) -> [UInt8] {
        var out: [UInt8] = []
        for field in fields where names.contains(field.name) {
            let clean = field.lines.allSatisfy { line in
                line.count <= 998 && !line.contains(0) && !line.contains(UInt8(ascii: "\r"))
            }
            guard clean else { continue }
            for line in field.lines {
                out += line
                out += [13, 10]
            }
        }
        return out
    }

    static func asciiLower(_ b: UInt8) -> UInt8 {
        b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") ? b + 32 : b
    }
}

/// Base64 (RFC 4648 §4) in CRLF-terminated lines of 76 characters, the
/// RFC 2045 §6.8 body form.
enum MIMEBase64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func lines(_ data: [UInt8], width: Int = 76) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(data.count / 3 * 4 + data.count / 57 * 2 + 8)
        var column = 0
        func put(_ c: UInt8) {
            out.append(c)
            column += 1
            if column == width {
                out += [13, 10]
                column = 0
            }
        }
        var i = 0
        while i < data.count {
            let b0 = data[i]
            let b1 = i + 1 < data.count ? data[i + 1] : 0
            let b2 = i + 2 < data.count ? data[i + 2] : 0
            put(alphabet[Int(b0 >> 2)])
            put(alphabet[Int((b0 & 0x03) << 4 | b1 >> 4)])
            put(i + 1 < data.count ? alphabet[Int((b1 & 0x0f) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            put(i + 2 < data.count ? alphabet[Int(b2 & 0x3f)] : UInt8(ascii: "="))
            i += 3
        }
        if column > 0 { out += [13, 10] }
        return out
    }
}
