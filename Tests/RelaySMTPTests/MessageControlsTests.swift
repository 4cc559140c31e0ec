// The per-message TLS controls in a header section: Subject tags (plain,
// encoded, folded), the escalate header, RFC 8689's TLS-Required: No, and
// strip, which must leave every byte it does not mean to change alone.
import Testing
@testable import RelaySMTP

private let matcher = SubjectTagMatcher(tags: ["[secure]", "encrypt"])
private let escalate = "X-Relayd-Escalate"

private func message(_ header: String, body: String = "Body line 1\r\nSubject: [secure] in the body\r\n") -> [UInt8] {
    Array((header + "\r\n" + body).utf8)
}

private func scan(_ header: String) -> MessageControlsScan {
    MessageControls.scan(message(header), tags: matcher, escalateHeader: escalate)
}

@Suite struct SubjectTagMatching {
    @Test func tagsAreBracketedOnce() {
        #expect(SubjectTagMatcher(tags: ["[secure]", "encrypt", " [x] ", "[SECURE]", "", "[]", "[y"]).tags
                == ["[secure]", "[encrypt]", "[x]", "[y]"])
    }

    static let subjects: [(String, String, [String])] = [
        ("at the start", "[secure] Lab results", ["[secure]"]),
        ("in the middle, upper case", "Lab [SECURE] results", ["[secure]"]),
        ("at the end", "Re: [secure]", ["[secure]"]),
        ("after a colon", "Re:[secure] x", ["[secure]"]),
        ("in parentheses", "([secure])", ["[secure]"]),
        ("inside a word", "x[secure]y", []),
        ("a letter after", "[secure]d", []),
        ("a digit before", "1[secure]", []),
        ("a non-ASCII letter before", "é[secure]", []),
        ("not bracketed", "secure mail", []),
        ("two tags, reported in configuration order", "[Encrypt] [secure] x", ["[secure]", "[encrypt]"]),
        ("adjacent tags", "[secure][encrypt]", ["[secure]", "[encrypt]"]),
        ("a tag twice, reported once", "[secure] a [secure]", ["[secure]"]),
        ("an unconfigured tag", "[private] x", []),
    ]

    @Test(arguments: subjects)
    func matchesWholeTokens(_ name: String, _ subject: String, _ expected: [String]) {
        #expect(matcher.matches(in: subject) == expected, "\(name)")
    }

    static let removals: [(String, String)] = [
        ("[secure] Lab results", "Lab results"),
        ("Lab [SECURE] results", "Lab results"),
        ("Re: [secure]", "Re:"),
        ("Lab [secure] [encrypt] results", "Lab results"),
        ("[secure][encrypt]Lab", "[encrypt]Lab"),  // "Lab" follows [encrypt]: not a tag
        ("Re:[secure] Lab", "Re: Lab"),
        ("([secure])", "()"),
        ("[secure]", ""),
        ("x[secure]y", "x[secure]y"),
        ("Lab  results", "Lab  results"),
    ]

    @Test(arguments: removals)
    func removesAndCollapses(_ subject: String, _ expected: String) {
        #expect(matcher.removing(from: subject) == expected)
    }
}

@Suite struct MessageControlsScanning {
    static let subjects: [(String, String, [String])] = [
        ("plain", "Subject: [secure] Lab results\r\n", ["[secure]"]),
        ("field name in another case", "SUBJECT: [secure] Lab\r\n", ["[secure]"]),
        ("B encoded", "Subject: =?UTF-8?B?W3NlY3VyZV0gTGFiIHLDqXN1bHRz?=\r\n", ["[secure]"]),
        ("Q encoded", "Subject: =?UTF-8?Q?Lab_r=C3=A9sults_[encrypt]?=\r\n", ["[encrypt]"]),
        ("ISO-8859-1", "Subject: =?ISO-8859-1?B?W3NlY3VyZV0gUulzdW3p?=\r\n", ["[secure]"]),
        ("tag split over two encoded words", "Subject: =?UTF-8?Q?[sec?= =?UTF-8?Q?ure]_x?=\r\n", ["[secure]"]),
        ("folded", "Subject: Lab results\r\n for you\r\n [secure]\r\n", ["[secure]"]),
        ("folded with a tab", "Subject: Lab\r\n\t[secure]\r\n", ["[secure]"]),
        ("several tags", "Subject: [encrypt] Lab [secure]\r\n", ["[secure]", "[encrypt]"]),
        ("inside a word", "Subject: x[secure]y\r\n", []),
        ("in another field only", "Comments: [secure]\r\nX-Subject: [secure]\r\nSubject: Lab\r\n", []),
        ("only the first Subject", "Subject: Lab\r\nSubject: [secure]\r\n", []),
        ("no Subject", "From: a@example.com\r\n", []),
        ("a bare CR after the tag", "Subject: L [SECURE]\rs\r\n", ["[secure]"]),
    ]

    @Test(arguments: subjects)
    func findsTags(_ name: String, _ header: String, _ expected: [String]) {
        #expect(scan("From: a@example.com\r\n" + header).subjectTags == expected, "\(name)")
    }

    @Test func aTagInTheBodyDoesNotCount() {
        #expect(scan("Subject: Lab\r\n").subjectTags == [])
    }

    static let escalations: [(String, String, String?)] = [
        ("plain", "X-Relayd-Escalate: verify\r\n", "verify"),
        ("name in another case, blanks trimmed", "x-relayd-escalate:   verify  \r\n", "verify"),
        ("folded", "X-Relayd-Escalate:\r\n verify\r\n", "verify"),
        ("folded inside the value", "X-Relayd-Escalate: dane\r\n  only\r\n", "dane  only"),
        ("the first of several", "X-Relayd-Escalate: verify\r\nX-Relayd-Escalate: dane\r\n", "verify"),
        ("empty value", "X-Relayd-Escalate:\r\n", ""),
        ("none", "X-Other: verify\r\n", nil),
        ("a longer name is another field", "X-Relayd-Escalate-Not: verify\r\n", nil),
    ]

    @Test(arguments: escalations)
    func readsTheEscalateHeader(_ name: String, _ header: String, _ expected: String?) {
        #expect(scan("Subject: x\r\n" + header).escalateHeaderValue == expected, "\(name)")
    }

    @Test func noEscalateHeaderConfigured() {
        let m = message("X-Relayd-Escalate: verify\r\n")
        #expect(MessageControls.scan(m, tags: matcher, escalateHeader: nil).escalateHeaderValue == nil)
        #expect(MessageControls.scan(m, tags: matcher, escalateHeader: "x-relayd-escalate:").escalateHeaderValue == "verify")
        #expect(MessageControls.scan(m, tags: matcher, escalateHeader: "bad name").escalateHeaderValue == nil)
    }

    static let tlsRequired: [(String, Bool)] = [
        ("TLS-Required: No\r\n", true),
        ("TLS-Required: no\r\n", true),
        ("tls-required:NO\r\n", true),
        ("TLS-Required:  no  \r\n", true),
        ("TLS-Required:\r\n No\r\n", true),
        ("TLS-Required: No (relaxed on purpose)\r\n", false),
        ("TLS-Required: Yes\r\n", false),
        ("TLS-Required: Nope\r\n", false),
        ("TLS-Required: N o\r\n", false),
        ("TLS-Required:\r\n", false),
        ("X-TLS-Required: No\r\n", false),
        ("TLS-Required: Yes\r\nTLS-Required: No\r\n", false),
    ]

    @Test(arguments: tlsRequired)
    func readsTLSRequired(_ header: String, _ expected: Bool) {
        #expect(scan("Subject: x\r\n" + header).tlsRequiredNo == expected, "\(header)")
    }

    @Test func tlsRequiredInTheBodyDoesNotCount() {
        let m = message("Subject: x\r\n", body: "TLS-Required: No\r\n")
        #expect(MessageControls.scan(m, tags: matcher, escalateHeader: escalate).tlsRequiredNo == false)
    }
}

@Suite struct MessageControlsStripping {
    static let body = "Hello,\r\n\r\nSubject: [secure] stays in the body\r\nX-Relayd-Escalate: stays\r\n.\r\n\u{0}\u{ff}"

    private func strip(_ header: String) -> (header: String, body: String) {
        let input = message(header, body: Self.body)
        let out = MessageControls.strip(input, tags: matcher, escalateHeader: escalate)
        let split = out.indices.first { i in out[i...].starts(with: [13, 10, 13, 10]) }.map { $0 + 2 } ?? out.count
        // The body, byte for byte.
        #expect(Array(out[(split + 2)...]) == Array(Self.body.utf8))
        return (String(decoding: out[..<split], as: UTF8.self), String(decoding: out[(split + 2)...], as: UTF8.self))
    }

    static let cases: [(String, String, String)] = [
        ("tag at the start", "From: a\r\nSubject: [secure] Lab results\r\nTo: b\r\n", "From: a\r\nSubject: Lab results\r\nTo: b\r\n"),
        ("tag in the middle", "Subject: Lab [SECURE] results\r\n", "Subject: Lab results\r\n"),
        ("tag at the end", "Subject: Re: [secure]\r\n", "Subject: Re:\r\n"),
        ("only a tag", "Subject: [secure]\r\n", "Subject: \r\n"),
        ("two tags", "Subject: [encrypt] Lab [secure] results\r\n", "Subject: Lab results\r\n"),
        ("name case kept", "SUBJECT:  [secure] x\r\n", "SUBJECT:  x\r\n"),
        ("a fold next to the tag is unfolded",
         "Subject: Lab results\r\n [secure]\r\n for you\r\n", "Subject: Lab results for you\r\n"),
        ("a fold elsewhere is kept",
         "Subject: Lab\r\n results [secure]\r\n", "Subject: Lab\r\n results\r\n"),
        ("raw 8-bit text kept", "Subject: r\u{e9}sultats [secure]\r\n", "Subject: r\u{e9}sultats\r\n"),
        ("encoded, ASCII left", "Subject: =?UTF-8?B?W3NlY3VyZV0gTGFiIHJlc3VsdHM=?=\r\n", "Subject: Lab results\r\n"),
        ("encoded, non-ASCII left",
         "Subject: =?UTF-8?B?W3NlY3VyZV0gTGFiIHLDqXN1bHRz?=\r\n", "Subject: =?UTF-8?B?TGFiIHLDqXN1bHRz?=\r\n"),
        ("encoded, only a tag", "Subject: =?UTF-8?Q?[secure]?=\r\n", "Subject: \r\n"),
        ("escalate header removed", "From: a\r\nX-Relayd-Escalate: verify\r\nTo: b\r\n", "From: a\r\nTo: b\r\n"),
        ("every escalate header removed, folds too",
         "x-relayd-escalate: a\r\n b\r\nFrom: a\r\nX-RELAYD-ESCALATE: c\r\n", "From: a\r\n"),
        ("both", "Subject: [secure] x\r\nX-Relayd-Escalate: verify\r\n", "Subject: x\r\n"),
        ("only the first Subject", "Subject: x\r\nSubject: [secure] y\r\n", "Subject: x\r\nSubject: [secure] y\r\n"),
        ("TLS-Required kept", "TLS-Required: No\r\nSubject: [secure] x\r\n", "TLS-Required: No\r\nSubject: x\r\n"),
        ("literal text that would become an encoded-word",
         "Subject: =?UTF-8?B?QUJD+[secure]+QUJD?=\r\n", "Subject: =?UTF-8?B?PT9VVEYtOD9CP1FVSkQrK1FVSkQ/PQ==?=\r\n"),
        ("a bare CR next to a tag is a blank, not a fold", "Subject: Lab [secure]\rs\r\n", "Subject: Lab s\r\n"),
        ("tag in another field kept", "Comments: [secure]\r\nSubject: x\r\n", "Comments: [secure]\r\nSubject: x\r\n"),
    ]

    @Test(arguments: cases)
    func strips(_ name: String, _ header: String, _ expected: String) {
        #expect(strip(header).header == expected, "\(name)")
    }

    @Test func nothingMatchedReturnsTheInput() {
        let input: [UInt8] = Array("Subject: Lab\nX: y\r\n\r\n[secure]".utf8) + [0, 255]
        #expect(MessageControls.strip(input, tags: matcher, escalateHeader: escalate) == input)
    }

    @Test func aLongEncodedSubjectIsFolded() {
        let text = "[secure] " + String(repeating: "ü", count: 100)
        let words = Array(text.utf8)
        let header = "Subject: =?UTF-8?B?" + base64(words) + "?=\r\n"
        let out = strip(header).header
        #expect(out.hasPrefix("Subject: =?UTF-8?B?"))
        for line in out.split(separator: "\r\n") { #expect(line.utf8.count <= 78) }
        let value = String(out.dropFirst("Subject: ".count).dropLast(1))  // "\r\n" is one Character
        #expect(EncodedWords.decode(value) == String(repeating: "ü", count: 100))
    }

    @Test func scanAndStripAgree() {
        let m = message("Subject: =?UTF-8?Q?[secure]_x?=\r\nX-Relayd-Escalate: verify\r\n")
        let stripped = MessageControls.strip(m, tags: matcher, escalateHeader: escalate)
        #expect(MessageControls.scan(m, tags: matcher, escalateHeader: escalate)
                == MessageControlsScan(subjectTags: ["[secure]"], escalateHeaderValue: "verify", tlsRequiredNo: false))
        #expect(MessageControls.scan(stripped, tags: matcher, escalateHeader: escalate) == MessageControlsScan())
    }
}

private func base64(_ bytes: [UInt8]) -> String { SASL.encodeBase64(bytes) }

@Suite struct MessageControlsHostileInput {
    /// Built on demand by name, so a failing case prints its name, not a mebibyte.
    static func input(_ name: String) -> [UInt8] {
        switch name {
        case "empty": return []
        case "no blank line": return Array("Subject: [secure] x\r\nX-Relayd-Escalate: v".utf8)
        case "bare LF": return Array("Subject: [secure]\nX-Relayd-Escalate: v\n\nbody\n".utf8)
        case "bare CR": return Array("Subject: [secure]\rX: y\r\r\n".utf8)
        case "NUL": return Array("Sub\u{0}ject: x\r\nSubject: [secure]\u{0}\r\n\u{0}: y\r\n\r\n\u{0}".utf8)
        case "continuation first": return Array(" Subject: [secure]\r\n".utf8)
        case "invalid UTF-8":
            return Array("Subject: ".utf8) + [0xC3] + Array("[secure]".utf8) + [0xFF, 0xF0, 0x9F, 13, 10]
        case "1 MiB Subject": return Array(("Subject: " + String(repeating: "[secure]x", count: 1 << 17) + "\r\n\r\n").utf8)
        case "1 MiB of brackets": return Array(("Subject: " + String(repeating: "[", count: 1 << 20) + "\r\n").utf8)
        case "1 MiB of tags": return Array(("Subject: " + String(repeating: "[secure] ", count: 1 << 17) + "\r\n").utf8)
        case "10000 encoded words":
            return Array(("Subject: " + String(repeating: "=?UTF-8?Q?[secure]?= ", count: 10_000) + "\r\n").utf8)
        case "10000 broken words": return Array(("Subject: " + String(repeating: "=?UTF-8?B?@@@?= ", count: 10_000) + "\r\n").utf8)
        case "broken base64": return Array("Subject: =?UTF-8?B?W3NlY3VyZV0=x?=\r\n".utf8)
        case "unterminated word": return Array(("Subject: =?UTF-8?Q?" + String(repeating: "a", count: 1 << 20)).utf8)
        case "many unterminated words": return Array(("Subject: " + String(repeating: "=?UTF-8?Q?a", count: 100_000)).utf8)
        case "many =?": return Array(("Subject: " + String(repeating: "=?", count: 500_000)).utf8)
        case "100000 fields": return Array((String(repeating: "X-Relayd-Escalate: v\r\n", count: 100_000) + "\r\n").utf8)
        case "100000 folds": return Array(("Subject: [secure]" + String(repeating: "\r\n x", count: 100_000) + "\r\n\r\n").utf8)
        default: preconditionFailure(name)
        }
    }

    static let names = [
        "empty", "no blank line", "bare LF", "bare CR", "NUL", "continuation first", "invalid UTF-8",
        "1 MiB Subject", "1 MiB of brackets", "1 MiB of tags", "10000 encoded words", "10000 broken words",
        "broken base64", "unterminated word", "many unterminated words", "many =?", "100000 fields", "100000 folds",
    ]

    @Test(arguments: names)
    func finishes(_ name: String) {
        let input = Self.input(name)
        let s = MessageControls.scan(input, tags: matcher, escalateHeader: escalate)
        let out = MessageControls.strip(input, tags: matcher, escalateHeader: escalate)
        // Whatever was found is gone after strip (but for words past the
        // decoding limit, which strip writes back encoded).
        let again = MessageControls.scan(out, tags: matcher, escalateHeader: escalate)
        #expect(again.escalateHeaderValue == nil)
        if !s.subjectTags.isEmpty && name != "10000 encoded words" { #expect(again.subjectTags.isEmpty) }
    }
}
