// The hop count that stops mail loops (RFC 5321 §6.3): how many Received:
// trace fields (RFC 5321 §4.4) a message carries, as Postfix's
// hopcount_limit counts them. Only the header section counts — up to the
// first empty line, or the first line that is neither a field nor a folded
// continuation — so a "Received:" line quoted in a body never does, and a
// folded field is one field however many lines it takes.
public enum HopCount {
    public static func receivedFields(in message: [UInt8]) -> Int {
        var count = 0
        var start = 0
        var inField = false
        while start < message.count {
            let lf = message[start...].firstIndex(of: 10) ?? message.count
            var end = lf
            if end > start && message[end - 1] == 13 { end -= 1 }
            if end == start { break }  // the empty line that ends the header
            let first = message[start]
            if first == 32 || first == 9 {
                // A continuation belongs to the field before it; with no
                // field before it, this is no header at all.
                guard inField else { break }
            } else {
                guard let nameEnd = fieldNameEnd(message, start, end) else { break }
                inField = true
                if isReceived(message, start, nameEnd) { count += 1 }
            }
            start = lf + 1
        }
        return count
    }

    /// Where the field name of a header line ends (RFC 5322 §3.6.8: printable
    /// US-ASCII but the colon; obsolete syntax allows blanks before the
    /// colon), or nil when the line is not a header field.
    static func fieldNameEnd(_ m: [UInt8], _ start: Int, _ end: Int) -> Int? {
        var i = start
        while i < end, m[i] >= 33, m[i] <= 126, m[i] != 58 { i += 1 }
        let nameEnd = i
        while i < end, m[i] == 32 || m[i] == 9 { i += 1 }
        guard nameEnd > start, i < end, m[i] == 58 else { return nil }
        return nameEnd
    }

    static func isReceived(_ m: [UInt8], _ start: Int, _ end: Int) -> Bool {
        let name = Array("received".utf8)
        guard end - start == name.count else { return false }
        for k in 0..<name.count where m[start + k] | 0x20 != name[k] { return false }
        return true
    }
}
