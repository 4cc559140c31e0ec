// Which MX hosts a policy allows (RFC 8461 §4.1), and the policy's text
// form for the cache (parse(text) gives the same policy back).
import Testing
@testable import RelayModel
@testable import RelaySTS

func parsed(_ body: String) -> STSPolicy {
    guard case .success(let p) = STSPolicy.parse(Array(body.utf8)) else { fatalError("not a valid policy: \(body)") }
    return p
}

struct MatchRule: Sendable, CustomTestStringConvertible {
    let rule: String
    let host: String
    let matches: Bool
    var testDescription: String { rule }
    init(_ rule: String, _ host: String, _ matches: Bool) {
        self.rule = rule
        self.host = host
        self.matches = matches
    }
}

@Suite struct STSMXMatching {
    /// The RFC's example patterns plus an A-label one.
    static let example = parsed(enforce("mx: mail.example.com", "mx: *.example.net", "mx: *.xn--mnchen-3ya.example"))

    static let rules: [MatchRule] = [
        MatchRule("an exact name", "mail.example.com", true),
        MatchRule("an exact name, any case", "MAIL.Example.COM", true),
        MatchRule("an exact name with a trailing dot", "mail.example.com.", true),
        MatchRule("an exact pattern does not match a subdomain", "x.mail.example.com", false),
        MatchRule("an exact pattern does not match its parent", "example.com", false),
        MatchRule("an exact pattern does not match a sibling", "mail2.example.com", false),
        MatchRule("a wildcard matches one left-most label", "mx1.example.net", true),
        MatchRule("a wildcard matches one label, any case, trailing dot", "MX1.EXAMPLE.NET.", true),
        MatchRule("a wildcard does not match two labels", "a.mx1.example.net", false),
        MatchRule("a wildcard does not match the bare domain", "example.net", false),
        MatchRule("a wildcard is not a suffix match on a label", "mxexample.net", false),
        MatchRule("a wildcard is not a prefix match", "mx1.example.net.evil.test", false),
        MatchRule("a wildcard with an A-label base", "mx.xn--mnchen-3ya.example", true),
        MatchRule("an A-label host under a wildcard", "xn--bcher-kva.example.net", true),
        MatchRule("a U-label host matches nothing", "m\u{fc}nchen.example.net", false),
        MatchRule("KELVIN SIGN is not 'k'", "\u{212A}.example.net", false),
        MatchRule("the literal pattern is not a host", "*.example.net", false),
        MatchRule("an empty host", "", false),
        MatchRule("a dot alone", ".", false),
        MatchRule("two trailing dots", "mail.example.com..", false),
        MatchRule("an empty left-most label", ".example.net", false),
        MatchRule("an underscore in the host", "mx_1.example.net", false),
        MatchRule("an unrelated host", "mail.example.org", false),
    ]

    @Test("MX host names against patterns", arguments: rules)
    func match(_ row: MatchRule) {
        #expect(Self.example.matches(mxHost: row.host) == row.matches)
    }

    @Test func aWildcardUnderATopLevelDomainMatchesOneLabelOnly() {
        let p = parsed(enforce("mx: *.com"))
        #expect(p.matches(mxHost: "example.com"))
        #expect(!p.matches(mxHost: "mail.example.com"))
        #expect(!p.matches(mxHost: "com"))
    }

    @Test func matchingDoesNotDependOnTheMode() {
        let none = parsed(policy("version: STSv1", "mode: none", "mx: mail.example.com", "max_age: 1"))
        #expect(none.matches(mxHost: "mail.example.com"))
        let noPatterns = parsed(policy("version: STSv1", "mode: none", "max_age: 1"))
        #expect(!noPatterns.matches(mxHost: "mail.example.com"))
    }
}

@Suite struct STSPolicyText {
    static let bodies: [String] = [
        policy("version: STSv1", "mode: enforce", "mx: mail.example.com", "mx: *.example.net", "max_age: 604800"),
        policy("version: STSv1", "mode: testing", "mx: A.Example.", "max_age: 0"),
        policy("version: STSv1", "mode: none", "max_age: 31557600"),
        policy("version: STSv1", "mode: none", "mx: a.example", "mx: a.example", "max_age: 1"),
        "max_age:0000086400\nmx:  *.XN--MNCHEN-3YA.example. \nfoo: bar\nmode: enforce\nversion: STSv1\nversion: STSv2",
    ]

    @Test("parse(text) gives the same policy", arguments: bodies)
    func roundTrip(_ body: String) {
        let p = parsed(body)
        #expect(STSPolicy.parse(Array(p.text.utf8)) == .success(p))
        #expect(parsed(p.text).text == p.text)
    }

    @Test func textForm() {
        let p = parsed(policy("mx: MAIL.example.com.", "max_age: 0604800", "mode: enforce", "x: y", "version: STSv1", "mx: *.example.net"))
        #expect(p.text == "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 604800\n")
    }
}
