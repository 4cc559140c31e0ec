// RFC 2047 encoded-words in unstructured header values (a Subject), both
// ways, for the per-message TLS controls (MessageControls): a tag such as
// "[secure]" must be found in the text the user typed, which a mail client
// may have sent as =?UTF-8?B?…?=, and a Subject rewritten without the tag
// must go out encoded again.
//
// How the RFC is read here:
//  - encoded-word = "=?" charset ["*" language] "?" ("B" / "Q") "?" text "?="
//    (§2, RFC 2231 §5 for the language). The charset token stops at the
//    first "?", the text at the first "?" and neither may hold a space or a
//    control character, so a scan that fails gives up at the next "?" or
//    blank: every byte is looked at a bounded number of times, and decoding
//    is linear however hostile the value.
//  - A decoder is lenient where senders are sloppy: a word is recognised
//    wherever it stands (not only between blanks, §5 (1)), and may be longer
//    than the 75 characters of §2. A UTF-8 character split across two
//    adjacent words (forbidden by §5, still sent) comes out whole, because
//    decoded bytes are joined before they are read as UTF-8.
//  - §6.2: white space between two adjacent encoded-words is dropped.
//  - A word that is malformed (bad base64, a bad "=XX", an empty text) or in
//    a charset not known here stays as it was, literally.
//  - At most `maxWords` words are decoded per value; the rest stay literal.
//
// No Foundation: the charsets are UTF-8, US-ASCII, ISO-8859-1 and
// Windows-1252 (with their common aliases), and ISO-8859-15.
public enum EncodedWords {
    /// The most encoded-words decoded in one value; beyond it, literal text.
    public static let maxWords = 1000

    /// Decodes encoded-words in an unstructured header value.
    public static func decode(_ value: String) -> String {
        String(decoding: decodeBytes(Array(value.utf8)).bytes, as: UTF8.self)
    }

    /// Encodes text for an unstructured field's value (what follows "Name: "):
    /// printable ASCII text without "=?" stays as it is; anything else
    /// (non-ASCII, control characters such as CR or LF, "=?", or a line
    /// that would pass RFC 5322's 998 characters) becomes UTF-8 B
    /// encoded-words of at most 75 characters, folded with CRLF SP so that
    /// no line passes 78 characters (with the field name's length given).
    /// Words hold whole Unicode scalars (§5). With an absurdly long field
    /// name the first line may still pass 78: a word always carries at
    /// least one character.
    public static func encode(_ text: String, fieldNameLength: Int) -> String {
        let bytes = Array(text.utf8)
        if isPlain(bytes) && fieldNameLength + 2 + bytes.count <= 998 { return text }
        let prefix = "=?UTF-8?B?"
        let overhead = prefix.utf8.count + 2
        var words: [String] = []
        var scalars = text.unicodeScalars[...]
        while !scalars.isEmpty {
            // The first line holds "Name: "; each later one starts with a space.
            let room = words.isEmpty ? 78 - (max(fieldNameLength, 0) + 2) : 77
            let wordLength = min(75, max(room, overhead + 8))
            let capacity = (wordLength - overhead) / 4 * 3
            var chunk: [UInt8] = []
            while let s = scalars.first {
                let utf8 = Array(String(s).utf8)
                if !chunk.isEmpty && chunk.count + utf8.count > capacity { break }
                chunk += utf8
                scalars.removeFirst()
            }
            words.append(prefix + SASL.encodeBase64(chunk) + "?=")
        }
        return words.joined(separator: "\r\n ")
    }

    /// Printable ASCII, blanks, and no "=?" that a reader would decode.
    static func isPlain(_ bytes: [UInt8]) -> Bool {
        var previous: UInt8 = 0
        for b in bytes {
            guard (b >= 32 && b < 127) || b == 9 else { return false }
            if previous == UInt8(ascii: "=") && b == UInt8(ascii: "?") { return false }
            previous = b
        }
        return true
    }

    /// The value with its encoded-words decoded (as UTF-8 bytes, not yet
    /// checked), and whether any word was decoded at all.
    static func decodeBytes(_ v: [UInt8]) -> (bytes: [UInt8], decodedAny: Bool) {
        var out: [UInt8] = []
        out.reserveCapacity(v.count)
        var words = 0
        var i = 0
        // Where the last decoded word ended, in the input and in the output.
        var lastWordEnd = -1
        var outAtLastWord = 0
        while i < v.count {
            if v[i] == UInt8(ascii: "="), i + 1 < v.count, v[i + 1] == UInt8(ascii: "?"), words < maxWords {
                switch word(v, at: i) {
                case let (bytes, end)?:
                    if lastWordEnd >= 0 && v[lastWordEnd..<i].allSatisfy(isBlank) {
                        out.removeSubrange(outAtLastWord...)  // §6.2
                    }
                    out += bytes
                    words += 1
                    i = end
                    lastWordEnd = end
                    outAtLastWord = out.count
                    continue
                case nil:
                    break  // not a word: its "=" is plain text
                }
            }
            out.append(v[i])
            i += 1
        }
        return (out, words > 0)
    }

    static func isBlank(_ b: UInt8) -> Bool { b == 32 || b == 9 || b == 13 || b == 10 }

    /// One encoded-word starting at `start` (which holds "=?"): its bytes
    /// as UTF-8 and where it ends, or nil when there is none. A failed look
    /// stops at the first "?" or blank, and the caller moves on by one byte:
    /// a text (or charset) run is only ever scanned by the one candidate
    /// whose "?" precedes it, so all the looks together stay linear.
    static func word(_ v: [UInt8], at start: Int) -> (bytes: [UInt8], end: Int)? {
        // charset: up to the next "?", no blanks or controls.
        var i = start + 2
        let charsetStart = i
        while i < v.count, v[i] != UInt8(ascii: "?"), v[i] > 32, v[i] < 127 { i += 1 }
        guard i < v.count, v[i] == UInt8(ascii: "?"), i > charsetStart else { return nil }
        let charsetEnd = i
        guard i + 2 < v.count, v[i + 2] == UInt8(ascii: "?") else { return nil }
        let encoding = v[i + 1] | 0x20
        guard encoding == UInt8(ascii: "b") || encoding == UInt8(ascii: "q") else { return nil }
        i += 3
        let textStart = i
        while i < v.count, v[i] != UInt8(ascii: "?"), v[i] > 32, v[i] < 127 { i += 1 }
        let textEnd = i
        guard i + 1 < v.count, v[i] == UInt8(ascii: "?"), v[i + 1] == UInt8(ascii: "="), textEnd > textStart else {
            return nil
        }
        let end = i + 2
        guard let charset = Charset(Array(v[charsetStart..<charsetEnd])) else { return nil }
        let text = v[textStart..<textEnd]
        let raw = encoding == UInt8(ascii: "b") ? base64(text) : quoted(text)
        guard let raw else { return nil }
        return (charset.utf8(raw), end)
    }

    /// B: base64 with correct or missing padding; any other byte is an error.
    static func base64(_ t: ArraySlice<UInt8>) -> [UInt8]? {
        var text = t
        var padding = 0
        while text.last == UInt8(ascii: "=") && padding < 2 { text.removeLast(); padding += 1 }
        guard text.count % 4 != 1 else { return nil }
        if padding > 0 { guard (text.count + padding) % 4 == 0 else { return nil } }
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 4 * 3 + 2)
        var acc: UInt32 = 0
        var bits = 0
        for c in text {
            guard let v = SASL.value(c) else { return nil }
            acc = (acc << 6) | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        return out
    }

    /// Q (§4.2): "_" is a space, "=XX" a byte (lower-case hex accepted).
    static func quoted(_ t: ArraySlice<UInt8>) -> [UInt8]? {
        var out: [UInt8] = []
        var i = t.startIndex
        while i < t.endIndex {
            let c = t[i]
            if c == UInt8(ascii: "_") {
                out.append(32)
                i += 1
            } else if c == UInt8(ascii: "=") {
                guard i + 2 < t.endIndex, let h = hex(t[i + 1]), let l = hex(t[i + 2]) else { return nil }
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(c)
                i += 1
            }
        }
        return out
    }

    static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        default: return nil
        }
    }
}
