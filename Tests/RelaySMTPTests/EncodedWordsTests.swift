// RFC 2047 encoded-words: what decodes, what stays literal, and that an
// encoded Subject fits the line limits and reads back to the same text.
import Testing
@testable import RelaySMTP

@Suite struct EncodedWordsDecoding {
    static let cases: [(String, String, String)] = [
        ("plain text", "Lab results", "Lab results"),
        ("B, UTF-8", "=?UTF-8?B?W3NlY3VyZV0gTGFiIHLDqXN1bHRz?=", "[secure] Lab résults"),
        ("B, lower-case charset and encoding", "=?utf-8?b?TGFiIFtzZWN1cmVd?=", "Lab [secure]"),
        ("Q, UTF-8, underscores are spaces", "=?UTF-8?Q?[secure]_Lab_r=C3=A9sults?=", "[secure] Lab résults"),
        ("Q, lower-case hex", "=?UTF-8?Q?r=c3=a9sum=c3=a9?=", "résumé"),
        ("ISO-8859-1, B", "=?ISO-8859-1?B?W3NlY3VyZV0gUulzdW3p?=", "[secure] Résumé"),
        ("ISO-8859-1, Q", "=?iso-8859-1?Q?caf=E9?=", "café"),
        ("Windows-1252 euro", "=?windows-1252?B?gCBbc2VjdXJlXQ==?=", "€ [secure]"),
        ("ISO-8859-15 euro", "=?ISO-8859-15?Q?=A4?=", "€"),
        ("US-ASCII", "=?US-ASCII?Q?Lab?=", "Lab"),
        ("US-ASCII with an 8-bit byte", "=?US-ASCII?Q?a=E9?=", "a\u{FFFD}"),
        ("RFC 2231 language", "=?UTF-8*en?Q?Lab?=", "Lab"),
        ("§6.2: blanks between words dropped", "=?UTF-8?Q?Lab?= \t =?UTF-8?Q?_results?=", "Lab results"),
        ("blanks between a word and text kept", "=?UTF-8?Q?Lab?= results", "Lab results"),
        ("text between words kept", "=?UTF-8?Q?a?= and =?UTF-8?Q?b?=", "a and b"),
        ("UTF-8 split across two words", "=?UTF-8?B?w6k=?= =?UTF-8?Q?=C3?= =?UTF-8?Q?=A9?=", "éé"),
        ("missing base64 padding accepted", "=?UTF-8?B?TGFi?= =?UTF-8?B?w6k?=", "Labé"),
        ("broken base64 stays literal", "=?UTF-8?B?TG@i?=", "=?UTF-8?B?TG@i?="),
        ("one extra base64 character stays literal", "=?UTF-8?B?TGFiA?=", "=?UTF-8?B?TGFiA?="),
        ("bad Q escape stays literal", "=?UTF-8?Q?a=ZZ?=", "=?UTF-8?Q?a=ZZ?="),
        ("Q escape cut short stays literal", "=?UTF-8?Q?a=C?=", "=?UTF-8?Q?a=C?="),
        ("unknown charset stays literal", "=?KOI8-R?Q?abc?=", "=?KOI8-R?Q?abc?="),
        ("unknown encoding stays literal", "=?UTF-8?X?abc?=", "=?UTF-8?X?abc?="),
        ("unterminated word stays literal", "=?UTF-8?Q?abc", "=?UTF-8?Q?abc"),
        ("a space inside ends the word", "=?UTF-8?Q?a b?=", "=?UTF-8?Q?a b?="),
        ("empty text stays literal", "=?UTF-8?Q??=", "=?UTF-8?Q??="),
        ("a failed word, then a good one", "=?UTF-8?Q?a=Z?= =?UTF-8?Q?ok?=", "=?UTF-8?Q?a=Z?= ok"),
        ("=? inside a failed charset", "=?=?UTF-8?Q?ok?=", "=?ok"),
        ("lone =?", "=?", "=?"),
    ]

    @Test(arguments: cases)
    func decodes(_ name: String, _ value: String, _ expected: String) {
        #expect(EncodedWords.decode(value) == expected, "\(name)")
    }

    @Test func decodesAtMostMaxWords() {
        let word = "=?UTF-8?Q?a?="
        let value = Array(repeating: word, count: EncodedWords.maxWords + 5).joined()
        let decoded = EncodedWords.decode(value)
        #expect(decoded == String(repeating: "a", count: EncodedWords.maxWords) + String(repeating: word, count: 5))
    }
}

@Suite struct EncodedWordsEncoding {
    static let plain: [String] = ["", "Lab results", "Re: x\ty", String(repeating: "a", count: 900)]

    @Test(arguments: plain)
    func printableASCIIStaysAsIs(_ text: String) {
        #expect(EncodedWords.encode(text, fieldNameLength: 7) == text)
    }

    static let encoded: [(String, Int)] = [
        ("Lab résults", 7),
        ("a =? b", 7),
        ("line\r\nBcc: injected", 7),
        ("nul\u{0}", 7),
        (String(repeating: "é", count: 200), 7),
        (String(repeating: "😀", count: 60), 7),
        (String(repeating: "ab", count: 600), 7),  // longer than 998 on one line
        ("Lab résults " + String(repeating: "x", count: 100), 40),
        ("é", 200),
    ]

    @Test(arguments: encoded)
    func encodesAndReadsBack(_ text: String, _ nameLength: Int) {
        let value = EncodedWords.encode(text, fieldNameLength: nameLength)
        #expect(value.hasPrefix("=?UTF-8?B?"))
        let lines = value.split(separator: "\r\n", omittingEmptySubsequences: false)
        for (n, line) in lines.enumerated() {
            let length = line.utf8.count + (n == 0 ? nameLength + 2 : 0)
            if nameLength + 2 + 20 <= 78 || n > 0 { #expect(length <= 78, "line \(n): \(line)") }
            if n > 0 { #expect(line.hasPrefix(" ")) }
            for word in line.split(separator: " ") { #expect(word.utf8.count <= 75) }
        }
        // No bare CR or LF but the folds, so nothing can start a new field.
        let unfolded: String = value.replacingAll("\r\n ", with: "")
        let breaks = unfolded.unicodeScalars.filter { (s: Unicode.Scalar) -> Bool in s == "\r" || s == "\n" }
        #expect(breaks.isEmpty)
        #expect(EncodedWords.decode(value) == text)
    }
}

extension String {
    /// A stdlib-only replace (no Foundation in these tests).
    func replacingAll(_ target: String, with replacement: String) -> String {
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}
