// The `_mta-sts` TXT record (RFC 8461 §3.1, errata 6285): which records
// count, how many may, and what makes the one that counts invalid. Each
// row is a rule; the records are written as the character-strings the DNS
// answer holds.
import Testing
@testable import RelayModel
@testable import RelaySTS

/// What select answered, without the log text of .invalid.
enum RecordOutcome: Equatable, Sendable, CustomTestStringConvertible {
    case id(String), noRecord, multipleRecords, invalid

    init(_ result: Result<STSRecord, STSRecordError>) {
        switch result {
        case .success(let r): self = .id(r.id)
        case .failure(.noRecord): self = .noRecord
        case .failure(.multipleRecords): self = .multipleRecords
        case .failure(.invalid): self = .invalid
        }
    }

    var testDescription: String {
        switch self {
        case .id(let id): return "id \(id)"
        case .noRecord: return "no record"
        case .multipleRecords: return "multiple records"
        case .invalid: return "invalid"
        }
    }
}

struct RecordRule: Sendable, CustomTestStringConvertible {
    let rule: String
    let records: [[[UInt8]]]
    let expected: RecordOutcome
    var testDescription: String { rule }

    /// One TXT record per argument, each a single string.
    init(_ rule: String, _ records: [String], _ expected: RecordOutcome) {
        self.rule = rule
        self.records = records.map { [Array($0.utf8)] }
        self.expected = expected
    }

    /// Records given as their strings.
    init(_ rule: String, strings records: [[String]], _ expected: RecordOutcome) {
        self.rule = rule
        self.records = records.map { $0.map { Array($0.utf8) } }
        self.expected = expected
    }

    /// Records given as raw bytes (one string each).
    init(_ rule: String, bytes records: [[UInt8]], _ expected: RecordOutcome) {
        self.rule = rule
        self.records = records.map { [$0] }
        self.expected = expected
    }
}

let id32 = String(repeating: "a1", count: 16)
let id33 = id32 + "b"

@Suite struct STSRecordSelection {
    static let valid: [RecordRule] = [
        RecordRule("the RFC's example", ["v=STSv1; id=20160831085700Z;"], .id("20160831085700Z")),
        RecordRule("no final delimiter", ["v=STSv1; id=abc"], .id("abc")),
        RecordRule("final delimiter followed by whitespace", ["v=STSv1; id=abc; \t"], .id("abc")),
        RecordRule("no whitespace around ';'", ["v=STSv1;id=abc"], .id("abc")),
        RecordRule("tabs around ';'", ["v=STSv1\t;\tid=abc"], .id("abc")),
        RecordRule("erratum 6285 not applied: whitespace before ';' is in the published ABNF", ["v=STSv1 ; id=abc"], .id("abc")),
        RecordRule("an id of 1 character", ["v=STSv1; id=x"], .id("x")),
        RecordRule("an id of 32 characters", ["v=STSv1; id=\(id32)"], .id(id32)),
        RecordRule("an id of digits only", ["v=STSv1; id=0123456789"], .id("0123456789")),
        RecordRule("an id keeps its case", ["v=STSv1; id=AbC"], .id("AbC")),
        RecordRule("an unknown extension is ignored", ["v=STSv1; id=abc; foo=bar"], .id("abc")),
        RecordRule("an extension may come before the id", ["v=STSv1; ext.name-1_x=val; id=abc"], .id("abc")),
        RecordRule("an extension value may hold any visible ASCII but '=' and ';'",
                   ["v=STSv1; id=a; x=!\"#$%&'()*+,-./:<>?@[\\]^_`{|}~"], .id("a")),
        RecordRule("an extension name of 32 characters", ["v=STSv1; id=a; \(String(repeating: "n", count: 32))=v"], .id("a")),
        RecordRule("a repeated id: the first wins (§3.2)", ["v=STSv1; id=first; id=second"], .id("first")),
        RecordRule("a later v= is a well-formed extension and ignored", ["v=STSv1; id=abc; v=STSv2"], .id("abc")),
        RecordRule("field names are case-sensitive: ID= is an extension", ["v=STSv1; ID=abc; id=def"], .id("def")),
        RecordRule("other TXT records at the name are ignored", ["v=spf1 -all", "v=STSv1; id=abc", "google-site-verification=x"], .id("abc")),
        RecordRule("v=STSv10 is another version, not counted", ["v=STSv10; id=new", "v=STSv1; id=abc"], .id("abc")),
        RecordRule("the version tag is case-sensitive: v=stsv1 is not counted", ["v=stsv1; id=new", "v=STSv1; id=abc"], .id("abc")),
    ]

    static let split: [RecordRule] = [
        RecordRule("strings are joined without spaces", strings: [["v=STSv1; id=ab", "cd"]], .id("abcd")),
        RecordRule("split inside the version tag", strings: [["v=ST", "Sv1; id=x"]], .id("x")),
        RecordRule("split right after the version tag", strings: [["v=STSv1", "; id=x"]], .id("x")),
        RecordRule("split after ';', the second string starting with a space", strings: [["v=STSv1;", " id=x"]], .id("x")),
        RecordRule("split inside 'id='", strings: [["v=STSv1; i", "d", "=x"]], .id("x")),
        RecordRule("empty strings around the pieces", strings: [["", "v=STSv1;", "", "id=x", ""]], .id("x")),
        RecordRule("one string per character", strings: ["v=STSv1; id=abc".map { String($0) }], .id("abc")),
        RecordRule("a space at a string boundary stays in the id", strings: [["v=STSv1; id=ab", " cd"]], .invalid),
        RecordRule("a record without strings is no STS record", strings: [[]], .noRecord),
    ]

    static let counting: [RecordRule] = [
        RecordRule("no TXT records at all", [], .noRecord),
        RecordRule("only non-STS records", ["v=spf1 -all"], .noRecord),
        RecordRule("leading whitespace: does not begin with v=STSv1", [" v=STSv1; id=abc"], .noRecord),
        RecordRule("the quoted zone-file form is not the record", ["\"v=STSv1; id=abc;\""], .noRecord),
        RecordRule("v=STSv1x is not v=STSv1", ["v=STSv1x; id=abc"], .noRecord),
        RecordRule("V=STSv1 is not v=STSv1", ["V=STSv1; id=abc"], .noRecord),
        RecordRule("id before v: does not begin with v=STSv1", ["id=abc; v=STSv1"], .noRecord),
        RecordRule("a comma is not a delimiter (not counted)", ["v=STSv1, id=abc"], .noRecord),
        RecordRule("two valid records", ["v=STSv1; id=a", "v=STSv1; id=b"], .multipleRecords),
        RecordRule("two records with the same id", ["v=STSv1; id=a", "v=STSv1;id=a"], .multipleRecords),
        RecordRule("a valid and an invalid record: counted before validity", ["v=STSv1; id=a", "v=STSv1; id=a-b"], .multipleRecords),
        RecordRule("a valid record and a bare version tag", ["v=STSv1", "v=STSv1; id=a"], .multipleRecords),
    ]

    static let invalid: [RecordRule] = [
        RecordRule("the version tag alone: the id is required", ["v=STSv1"], .invalid),
        RecordRule("a delimiter but no field", ["v=STSv1;"], .invalid),
        RecordRule("an extension but no id", ["v=STSv1; foo=bar"], .invalid),
        RecordRule("an id of 33 characters", ["v=STSv1; id=\(id33)"], .invalid),
        RecordRule("an id with '-'", ["v=STSv1; id=abc-def"], .invalid),
        RecordRule("an id with '_'", ["v=STSv1; id=abc_def"], .invalid),
        RecordRule("an id with '.'", ["v=STSv1; id=2024.01.01"], .invalid),
        RecordRule("an empty id", ["v=STSv1; id="], .invalid),
        RecordRule("a malformed id is never re-read as an extension named id", ["v=STSv1; id=a-b; id=abc"], .invalid),
        RecordRule("a later id must still be a well-formed id", ["v=STSv1; id=abc; id=a-b"], .invalid),
        RecordRule("a space inside the id", ["v=STSv1; id=ab cd"], .invalid),
        RecordRule("whitespace after the last field without ';'", ["v=STSv1; id=abc "], .invalid),
        RecordRule("whitespace after the version tag alone", ["v=STSv1 "], .invalid),
        RecordRule("an empty field", ["v=STSv1;; id=abc"], .invalid),
        RecordRule("an empty field at the end", ["v=STSv1; id=abc;;"], .invalid),
        RecordRule("a field without '='", ["v=STSv1; id=abc; foo"], .invalid),
        RecordRule("an extension with an empty value", ["v=STSv1; id=abc; foo="], .invalid),
        RecordRule("an extension value with '='", ["v=STSv1; id=abc; foo=b=c"], .invalid),
        RecordRule("an extension name starting with '_'", ["v=STSv1; id=abc; _foo=b"], .invalid),
        RecordRule("an extension name of 33 characters", ["v=STSv1; id=a; \(String(repeating: "n", count: 33))=v"], .invalid),
        RecordRule("an empty extension name", ["v=STSv1; id=abc; =b"], .invalid),
        RecordRule("'id' uppercase is an extension, leaving no id", ["v=STSv1; ID=abc"], .invalid),
        RecordRule("CR LF is not whitespace", ["v=STSv1;\r\nid=abc"], .invalid),
    ]

    static let hostile: [RecordRule] = [
        RecordRule("NUL inside the id", bytes: [Array("v=STSv1; id=ab".utf8) + [0] + Array("cd".utf8)], .invalid),
        RecordRule("NUL after the record", bytes: [Array("v=STSv1; id=abcd".utf8) + [0]], .invalid),
        RecordRule("NUL right after the version tag: not counted", bytes: [Array("v=STSv1".utf8) + [0] + Array("; id=a".utf8)], .noRecord),
        RecordRule("a UTF-8 letter in an extension value (US-ASCII only)", ["v=STSv1; id=abc; x=caf\u{e9}"], .invalid),
        RecordRule("a raw 0xFF byte", bytes: [Array("v=STSv1; id=abc; x=".utf8) + [0xff]], .invalid),
        RecordRule("DEL in an extension value", bytes: [Array("v=STSv1; id=abc; x=a".utf8) + [0x7f]], .invalid),
        RecordRule("a very long extension value is fine", ["v=STSv1; id=abc; x=\(String(repeating: "y", count: 60_000))"], .id("abc")),
        RecordRule("thousands of fields", ["v=STSv1" + String(repeating: "; x=1", count: 5000) + "; id=last"], .id("last")),
    ]

    @Test("valid records and their ids", arguments: valid)
    func validRecords(_ row: RecordRule) {
        #expect(RecordOutcome(STSRecord.select(row.records)) == row.expected)
    }

    @Test("records split into several strings", arguments: split)
    func splitRecords(_ row: RecordRule) {
        #expect(RecordOutcome(STSRecord.select(row.records)) == row.expected)
    }

    @Test("which records count, and how many may", arguments: counting)
    func countingRecords(_ row: RecordRule) {
        #expect(RecordOutcome(STSRecord.select(row.records)) == row.expected)
    }

    @Test("syntax errors in the one record", arguments: invalid)
    func invalidRecords(_ row: RecordRule) {
        #expect(RecordOutcome(STSRecord.select(row.records)) == row.expected)
    }

    @Test("hostile bytes", arguments: hostile)
    func hostileRecords(_ row: RecordRule) {
        #expect(RecordOutcome(STSRecord.select(row.records)) == row.expected)
    }

    @Test("the record order never matters", arguments: valid + counting + invalid)
    func orderIsIrrelevant(_ row: RecordRule) {
        #expect(RecordOutcome(STSRecord.select(Array(row.records.reversed()))) == row.expected)
    }

    @Test("any split of a record's strings gives the same answer", arguments: valid + counting + invalid)
    func anySplit(_ row: RecordRule) {
        for cut in 0..<40 {
            let resplit = row.records.map { strings -> [[UInt8]] in
                let whole = Array(strings.joined())
                let at = min(cut, whole.count)
                return [Array(whole[..<at]), Array(whole[at...])]
            }
            #expect(RecordOutcome(STSRecord.select(resplit)) == row.expected, "cut at \(cut)")
        }
    }

    @Test func invalidCarriesAReason() {
        guard case .failure(.invalid(let why)) = STSRecord.select([[Array("v=STSv1; id=abc-def".utf8)]]) else {
            Issue.record("expected .invalid")
            return
        }
        #expect(why.contains("id"))
    }
}
