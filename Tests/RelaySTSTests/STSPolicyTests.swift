// The MTA-STS policy file (RFC 8461 §3.2, errata 6253 and 7282): each row
// is a rule and the body that shows it. A policy is valid whole or not at
// all: no row may produce a policy with a line left out.
import Testing
@testable import RelayModel
@testable import RelaySTS

/// What parse answered, without the log text of .malformed.
enum PolicyOutcome: Equatable, Sendable, CustomTestStringConvertible {
    case policy(STSPolicy.Mode, maxAge: Int, mx: [String])
    case malformed, version, mode, maxAge, noMX, badMX(String), tooLarge

    init(_ result: Result<STSPolicy, STSPolicyError>) {
        switch result {
        case .success(let p): self = .policy(p.mode, maxAge: p.maxAge, mx: p.mx)
        case .failure(.malformed): self = .malformed
        case .failure(.version): self = .version
        case .failure(.mode): self = .mode
        case .failure(.maxAge): self = .maxAge
        case .failure(.noMX): self = .noMX
        case .failure(.badMX(let v)): self = .badMX(v)
        case .failure(.tooLarge): self = .tooLarge
        }
    }

    var testDescription: String {
        switch self {
        case .policy(let m, let a, let mx): return "\(m.rawValue) \(a) \(mx)"
        case .malformed: return "malformed"
        case .version: return "version"
        case .mode: return "mode"
        case .maxAge: return "maxAge"
        case .noMX: return "noMX"
        case .badMX(let v): return "badMX(\(v))"
        case .tooLarge: return "tooLarge"
        }
    }
}

struct PolicyRule: Sendable, CustomTestStringConvertible {
    let rule: String
    let body: [UInt8]
    let expected: PolicyOutcome
    var testDescription: String { rule }

    init(_ rule: String, _ body: String, _ expected: PolicyOutcome) {
        self.init(rule, bytes: Array(body.utf8), expected)
    }

    init(_ rule: String, bytes: [UInt8], _ expected: PolicyOutcome) {
        self.rule = rule
        self.body = bytes
        self.expected = expected
    }
}

/// A policy body from lines, each ended by `end`.
func policy(_ lines: String..., end: String = "\r\n") -> String {
    lines.map { $0 + end }.joined()
}

/// version, mode and max_age in place, so a row can vary the rest.
func enforce(_ extra: String..., end: String = "\n") -> String {
    (["version: STSv1", "mode: enforce", "max_age: 86400"] + extra).map { $0 + end }.joined()
}

@Suite struct STSPolicyParsing {
    static let valid: [PolicyRule] = [
        PolicyRule("the RFC's example, CRLF",
                   policy("version: STSv1", "mode: enforce", "mx: mail.example.com", "mx: *.example.net", "mx: backupmx.example.com", "max_age: 604800"),
                   .policy(.enforce, maxAge: 604800, mx: ["mail.example.com", "*.example.net", "backupmx.example.com"])),
        PolicyRule("LF line ends (erratum 6253)",
                   policy("version: STSv1", "mode: enforce", "mx: mail.example.com", "max_age: 604800", end: "\n"),
                   .policy(.enforce, maxAge: 604800, mx: ["mail.example.com"])),
        PolicyRule("LF and CRLF mixed", "version: STSv1\nmode: testing\r\nmx: a.example\nmax_age: 1\r\n",
                   .policy(.testing, maxAge: 1, mx: ["a.example"])),
        PolicyRule("no line end after the last line", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 86400",
                   .policy(.enforce, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("mode none needs no mx", policy("version: STSv1", "mode: none", "max_age: 86400"),
                   .policy(.none, maxAge: 86400, mx: [])),
        PolicyRule("mode none keeps its mx", policy("version: STSv1", "mode: none", "mx: a.example", "max_age: 86400"),
                   .policy(.none, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("fields in any order", policy("max_age: 5", "mx: a.example", "mode: testing", "version: STSv1"),
                   .policy(.testing, maxAge: 5, mx: ["a.example"])),
        PolicyRule("no space after the colon", "version:STSv1\nmode:enforce\nmx:a.example\nmax_age:86400\n",
                   .policy(.enforce, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("tabs and spaces after the colon and after the value",
                   "version:\t STSv1 \t\nmode: \tenforce\t\nmx:  a.example  \r\nmax_age:\t86400 \n",
                   .policy(.enforce, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("an unknown field is ignored", enforce("mx: a.example", "foo: bar baz"),
                   .policy(.enforce, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("an unknown field may hold UTF-8", enforce("mx: a.example", "comment: caf\u{e9} \u{1F4EC}"),
                   .policy(.enforce, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("an unknown field named like the extension grammar allows", enforce("mx: a.example", "x-9_y.z: 1"),
                   .policy(.enforce, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("field names are case-sensitive: MX is an unknown field", enforce("mx: a.example", "MX: b.example"),
                   .policy(.enforce, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("a repeated version: the first wins", "version: STSv1\nversion: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
                   .policy(.enforce, maxAge: 1, mx: ["a.example"])),
        PolicyRule("a repeated mode: the first wins", enforce("mode: testing", "mx: a.example"),
                   .policy(.enforce, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("a repeated mode with a bogus later value: ignored", enforce("mode: bogus", "mx: a.example"),
                   .policy(.enforce, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("a repeated max_age: the first wins", enforce("max_age: 999999999999", "mx: a.example"),
                   .policy(.enforce, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("mx lines accumulate in order", enforce("mx: c.example", "mx: a.example", "mx: b.example"),
                   .policy(.enforce, maxAge: 86400, mx: ["c.example", "a.example", "b.example"])),
        PolicyRule("a repeated mx is kept as written", enforce("mx: a.example", "mx: a.example"),
                   .policy(.enforce, maxAge: 86400, mx: ["a.example", "a.example"])),
        PolicyRule("mx patterns are lower-cased", enforce("mx: MAIL.Example.COM", "mx: *.EXAMPLE.net"),
                   .policy(.enforce, maxAge: 86400, mx: ["mail.example.com", "*.example.net"])),
        PolicyRule("one trailing dot on an mx is dropped", enforce("mx: mail.example.com.", "mx: *.example.net."),
                   .policy(.enforce, maxAge: 86400, mx: ["mail.example.com", "*.example.net"])),
        PolicyRule("an IDNA A-label mx", enforce("mx: xn--bcher-kva.example", "mx: *.xn--mnchen-3ya.example"),
                   .policy(.enforce, maxAge: 86400, mx: ["xn--bcher-kva.example", "*.xn--mnchen-3ya.example"])),
        PolicyRule("a single-label mx", enforce("mx: localhost"), .policy(.enforce, maxAge: 86400, mx: ["localhost"])),
        PolicyRule("labels of 63 octets", enforce("mx: \(String(repeating: "a", count: 63)).example"),
                   .policy(.enforce, maxAge: 86400, mx: ["\(String(repeating: "a", count: 63)).example"])),
        PolicyRule("max_age 0", policy("version: STSv1", "mode: enforce", "mx: a.example", "max_age: 0"),
                   .policy(.enforce, maxAge: 0, mx: ["a.example"])),
        PolicyRule("max_age 31557600, the maximum", policy("version: STSv1", "mode: enforce", "mx: a.example", "max_age: 31557600"),
                   .policy(.enforce, maxAge: 31_557_600, mx: ["a.example"])),
        PolicyRule("max_age of 10 digits with leading zeros (ABNF 1*10DIGIT; erratum 7282 changes nothing here)",
                   policy("version: STSv1", "mode: enforce", "mx: a.example", "max_age: 0000086400"),
                   .policy(.enforce, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("empty lines are skipped", "\nversion: STSv1\n\nmode: enforce\r\n\r\nmx: a.example\nmax_age: 1\n\n\n",
                   .policy(.enforce, maxAge: 1, mx: ["a.example"])),
        PolicyRule("whitespace-only lines are skipped", "version: STSv1\n \t \nmode: enforce\nmx: a.example\nmax_age: 1\n  \n",
                   .policy(.enforce, maxAge: 1, mx: ["a.example"])),
    ]

    static let required: [PolicyRule] = [
        PolicyRule("an empty body", "", .version),
        PolicyRule("no version", policy("mode: enforce", "mx: a.example", "max_age: 1"), .version),
        PolicyRule("version STSv2", policy("version: STSv2", "mode: enforce", "mx: a.example", "max_age: 1"), .version),
        PolicyRule("version values are case-sensitive", policy("version: stsv1", "mode: enforce", "mx: a.example", "max_age: 1"), .version),
        PolicyRule("field names are case-sensitive: Version is unknown", policy("Version: STSv1", "mode: enforce", "mx: a.example", "max_age: 1"), .version),
        PolicyRule("an empty version", policy("version:", "mode: enforce", "mx: a.example", "max_age: 1"), .version),
        PolicyRule("a bad first version is not saved by a good second", policy("version: 1", "version: STSv1", "mode: enforce", "mx: a.example", "max_age: 1"), .version),
        PolicyRule("no mode", policy("version: STSv1", "mx: a.example", "max_age: 1"), .mode),
        PolicyRule("mode values are case-sensitive", policy("version: STSv1", "mode: Enforce", "mx: a.example", "max_age: 1"), .mode),
        PolicyRule("mode reject does not exist", policy("version: STSv1", "mode: reject", "mx: a.example", "max_age: 1"), .mode),
        PolicyRule("mode report (an old draft's) does not exist", policy("version: STSv1", "mode: report", "mx: a.example", "max_age: 1"), .mode),
        PolicyRule("an empty mode", policy("version: STSv1", "mode:", "mx: a.example", "max_age: 1"), .mode),
        PolicyRule("field names are case-sensitive: Mode is unknown", policy("version: STSv1", "Mode: enforce", "mx: a.example", "max_age: 1"), .mode),
        PolicyRule("a bad first mode is not saved by a good second", policy("version: STSv1", "mode: strict", "mode: enforce", "mx: a.example", "max_age: 1"), .mode),
        PolicyRule("two words in mode", policy("version: STSv1", "mode: enforce testing", "mx: a.example", "max_age: 1"), .mode),
        PolicyRule("enforce without mx", policy("version: STSv1", "mode: enforce", "max_age: 1"), .noMX),
        PolicyRule("testing without mx", policy("version: STSv1", "mode: testing", "max_age: 1"), .noMX),
    ]

    static let maxAges: [PolicyRule] = ["", "-1", "+5", "1e3", "0x10", "86400s", "1 000", "31557601", "9999999999", "99999999999",
                                        "00000000001", "\u{661}\u{662}"]
        .map { PolicyRule("max_age '\($0)'", policy("version: STSv1", "mode: enforce", "mx: a.example", "max_age: \($0)"), .maxAge) }
        + [PolicyRule("no max_age", policy("version: STSv1", "mode: enforce", "mx: a.example"), .maxAge)]

    static let badMXValues: [(String, String)] = [
        ("an underscore", "mail_host.example"),
        ("'*.' alone", "*."),
        ("'*' alone", "*"),
        ("two wildcards", "*.*.example.com"),
        ("a wildcard not left-most", "mail.*.example.com"),
        ("a wildcard inside a label", "*mail.example.com"),
        ("a partial wildcard label", "mx*.example.com"),
        ("a label starting with '-'", "-mail.example.com"),
        ("a label ending with '-'", "mail-.example.com"),
        ("an empty label", "mail..example.com"),
        ("two trailing dots", "mail.example.com.."),
        ("a dot alone", "."),
        ("a leading dot", ".example.com"),
        ("a U-label (§3.2: A-labels only)", "b\u{fc}cher.example"),
        ("a label of 64 octets", String(repeating: "a", count: 64) + ".example"),
        ("a name over 253 octets", Array(repeating: String(repeating: "a", count: 60), count: 5).joined(separator: ".")),
        ("a port", "mail.example.com:25"),
        ("a URL", "https://mail.example.com"),
        ("two names on one line", "a.example b.example"),
        ("an address literal", "[192.0.2.1]"),
        ("an empty mx", ""),
    ]
    static let badMX: [PolicyRule] = badMXValues.map { PolicyRule("mx with \($0.0)", enforce("mx: a.example", "mx: \($0.1)"), .badMX($0.1)) }

    static let wholeOrNothing: [PolicyRule] = [
        PolicyRule("one bad mx among good ones invalidates the whole policy", enforce("mx: a.example", "mx: bad_one.example", "mx: b.example"),
                   .badMX("bad_one.example")),
        PolicyRule("a bad mx in testing mode invalidates", policy("version: STSv1", "mode: testing", "mx: *.", "max_age: 1"), .badMX("*.")),
        PolicyRule("a bad mx in mode none invalidates", policy("version: STSv1", "mode: none", "mx: *.", "max_age: 1"), .badMX("*.")),
        PolicyRule("the first bad mx is named", enforce("mx: one_", "mx: two_"), .badMX("one_")),
        PolicyRule("a bad mx and no good one is still a bad mx, not 'no mx'", enforce("mx: a b"), .badMX("a b")),
        PolicyRule("one malformed line invalidates the whole policy", enforce("mx: a.example", "this is not a field"), .malformed),
    ]

    static let malformed: [PolicyRule] = [
        PolicyRule("a line without ':'", enforce("mx a.example"), .malformed),
        PolicyRule("leading whitespace (would be a folded line in RFC 5322)", enforce("mx: a.example", " mx: b.example"), .malformed),
        PolicyRule("a leading tab", enforce("mx: a.example", "\tfoo: bar"), .malformed),
        PolicyRule("a space before the colon", enforce("mx : a.example"), .malformed),
        PolicyRule("an empty field name", enforce("mx: a.example", ": value"), .malformed),
        PolicyRule("a field name starting with '_'", enforce("mx: a.example", "_foo: bar"), .malformed),
        PolicyRule("a field name with a space", enforce("mx: a.example", "fo o: bar"), .malformed),
        PolicyRule("a field name of 33 characters", enforce("mx: a.example", String(repeating: "n", count: 33) + ": v"), .malformed),
        PolicyRule("a field name of 32 characters is fine", enforce("mx: a.example", String(repeating: "n", count: 32) + ": v"),
                   .policy(.enforce, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("an unknown field with an empty value", enforce("mx: a.example", "foo:"), .malformed),
        PolicyRule("an unknown field with only whitespace", enforce("mx: a.example", "foo: \t "), .malformed),
        PolicyRule("a tab inside a value", enforce("mx: a.example", "foo: a\tb"), .malformed),
        PolicyRule("a tab inside an mx value", enforce("mx: a.example\tb.example"), .malformed),
        PolicyRule("CR without LF splitting one line in two", enforce("mx: a.example\rmx: evil.example"), .malformed),
        PolicyRule("CR without LF at the end", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\r", .malformed),
        PolicyRule("CR CR LF", "version: STSv1\r\r\nmode: enforce\nmx: a.example\nmax_age: 1\n", .malformed),
        PolicyRule("LF CR: the CR starts the next line", "version: STSv1\n\rmode: enforce\nmx: a.example\nmax_age: 1\n", .malformed),
        PolicyRule("a byte-order mark before the first field", "\u{FEFF}" + enforce("mx: a.example"), .malformed),
        PolicyRule("a double colon is a value starting with ':'", enforce("mx: a.example", "foo:: bar"),
                   .policy(.enforce, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("a colon inside an mx value", enforce("mx:: a.example"), .badMX(": a.example")),
    ]

    static let hostile: [PolicyRule] = [
        PolicyRule("NUL inside a value", bytes: Array(enforce("mx: a.example", "foo: a").utf8) + [0] + Array("b\n".utf8), .malformed),
        PolicyRule("NUL inside an mx", bytes: Array(enforce().utf8) + Array("mx: a.exa".utf8) + [0] + Array("mple\n".utf8), .malformed),
        PolicyRule("NUL in a field name", bytes: Array(enforce("mx: a.example").utf8) + Array("f".utf8) + [0] + Array("o: b\n".utf8), .malformed),
        PolicyRule("a NUL line", bytes: Array(enforce("mx: a.example").utf8) + [0, 10], .malformed),
        PolicyRule("DEL in a value", bytes: Array(enforce("mx: a.example", "foo: a").utf8) + [0x7f, 10], .malformed),
        PolicyRule("a form feed in a value", enforce("mx: a.example", "foo: a\u{0C}b"), .malformed),
        PolicyRule("a raw 0xFF byte", bytes: Array(enforce("mx: a.example").utf8) + Array("foo: ".utf8) + [0xff, 10], .malformed),
        PolicyRule("an overlong UTF-8 '/'", bytes: Array(enforce("mx: a.example").utf8) + Array("foo: ".utf8) + [0xc0, 0xaf, 10], .malformed),
        PolicyRule("a UTF-8 surrogate", bytes: Array(enforce("mx: a.example").utf8) + Array("foo: ".utf8) + [0xed, 0xa0, 0x80, 10], .malformed),
        PolicyRule("a truncated UTF-8 sequence at the end", bytes: Array(enforce("mx: a.example").utf8) + Array("foo: ".utf8) + [0xe2, 0x82], .malformed),
        PolicyRule("Latin-1 instead of UTF-8", bytes: Array(enforce("mx: a.example").utf8) + Array("foo: caf".utf8) + [0xe9, 10], .malformed),
        PolicyRule("a huge unknown line is fine", enforce("mx: a.example", "foo: " + String(repeating: "x", count: 60_000)),
                   .policy(.enforce, maxAge: 86400, mx: ["a.example"])),
        PolicyRule("a huge mx is a bad mx", enforce("mx: " + String(repeating: "a", count: 60_000)), .badMX(String(repeating: "a", count: 60_000))),
        PolicyRule("thousands of mx lines", enforce(Array(repeating: "mx: a.example", count: 3000).joined(separator: "\n")),
                   .policy(.enforce, maxAge: 86400, mx: Array(repeating: "a.example", count: 3000))),
        PolicyRule("HTML instead of a policy", "<html><body>mta-sts</body></html>\n", .malformed),
        PolicyRule("a JSON policy", "{\"version\": \"STSv1\", \"mode\": \"enforce\"}", .malformed),
    ]

    @Test("valid policies", arguments: valid)
    func validPolicies(_ row: PolicyRule) {
        #expect(PolicyOutcome(STSPolicy.parse(row.body)) == row.expected)
    }

    @Test("version, mode and mx are required", arguments: required)
    func requiredFields(_ row: PolicyRule) {
        #expect(PolicyOutcome(STSPolicy.parse(row.body)) == row.expected)
    }

    @Test("max_age is 0...31557600 in plain digits", arguments: maxAges)
    func maxAgeRange(_ row: PolicyRule) {
        #expect(PolicyOutcome(STSPolicy.parse(row.body)) == row.expected)
    }

    @Test("mx is [\"*.\"] Domain", arguments: badMX)
    func badMXPatterns(_ row: PolicyRule) {
        #expect(PolicyOutcome(STSPolicy.parse(row.body)) == row.expected)
    }

    @Test("an invalid line invalidates the whole policy", arguments: wholeOrNothing)
    func invalidatesTheWholePolicy(_ row: PolicyRule) {
        #expect(PolicyOutcome(STSPolicy.parse(row.body)) == row.expected)
    }

    @Test("lines that are not fields", arguments: malformed)
    func malformedLines(_ row: PolicyRule) {
        #expect(PolicyOutcome(STSPolicy.parse(row.body)) == row.expected)
    }

    @Test("hostile bytes", arguments: hostile)
    func hostileBodies(_ row: PolicyRule) {
        #expect(PolicyOutcome(STSPolicy.parse(row.body)) == row.expected)
    }

    @Test("LF and CRLF give the same answer", arguments: valid + required + maxAges + badMX + wholeOrNothing)
    func lineEndsAreEquivalent(_ row: PolicyRule) {
        var lf: [UInt8] = []
        for (i, b) in row.body.enumerated() where !(b == 13 && i + 1 < row.body.count && row.body[i + 1] == 10) { lf.append(b) }
        let crlf = lf.flatMap { $0 == 10 ? [13, 10] : [$0] }
        #expect(PolicyOutcome(STSPolicy.parse(lf)) == row.expected)
        #expect(PolicyOutcome(STSPolicy.parse(crlf)) == row.expected)
    }

    @Test("the body is capped at 64 KiB")
    func sizeCap() {
        let head = Array(enforce("mx: a.example", "pad: ").utf8.dropLast())  // "pad: " with its line end removed
        let exact = head + Array(repeating: UInt8(ascii: "x"), count: STSPolicy.maxBodySize - head.count)
        #expect(exact.count == 65536)
        #expect(PolicyOutcome(STSPolicy.parse(exact)) == .policy(.enforce, maxAge: 86400, mx: ["a.example"]))
        #expect(STSPolicy.parse(exact + [UInt8(ascii: "x")]) == .failure(.tooLarge))
        // Checked before anything else: a body of garbage is still "too large".
        #expect(STSPolicy.parse(Array(repeating: 0xff, count: 70_000)) == .failure(.tooLarge))
    }

    @Test func malformedCarriesTheLine() {
        guard case .failure(.malformed(let why)) = STSPolicy.parse(Array("version: STSv1\nmode: enforce\n mx: a\n".utf8)) else {
            Issue.record("expected .malformed")
            return
        }
        #expect(why.contains("line 3"))
    }
}
