import Testing
@testable import RelayModel
@testable import RelayTLSRPT

@Suite struct TLSRPTRecordTests {
    @Test func mailtoAndHTTPS() throws {
        let r = try #require(TLSRPTRecord.select([["v=TLSRPTv1; rua=mailto:tlsrpt@example.com,https://reports.example.com:8443/v1/x"]]))
        #expect(r.destinations == [.mailto(Mailbox.parseForwardPath("<tlsrpt@example.com>")!),
                                   .https(host: "reports.example.com", port: 8443, path: "/v1/x")])
        #expect(r.ignored.isEmpty)
    }

    @Test func stringsAreJoinedWithoutSpace() throws {
        let r = try #require(TLSRPTRecord.select([["v=TLSRPTv1;rua=mailto:a@", "example.com"]]))
        #expect(r.destinations.map(\.description) == ["mailto:a@example.com"])
    }

    @Test func otherRecordsAtTheNameAreIgnored() throws {
        let r = try #require(TLSRPTRecord.select([["v=spf1 -all"], ["v=TLSRPTv1; rua=mailto:a@example.com"], ["hello"]]))
        #expect(r.destinations.count == 1)
    }

    @Test func severalRecordsMeanNone() {
        #expect(TLSRPTRecord.select([["v=TLSRPTv1; rua=mailto:a@example.com"], ["v=TLSRPTv1; rua=mailto:b@example.com"]]) == nil)
        // Even two identical ones.
        #expect(TLSRPTRecord.select([["v=TLSRPTv1; rua=mailto:a@example.com"], ["v=TLSRPTv1; rua=mailto:a@example.com"]]) == nil)
    }

    @Test func emptyAndMissing() {
        #expect(TLSRPTRecord.select([]) == nil)
        #expect(TLSRPTRecord.select([[""]]) == nil)
        #expect(TLSRPTRecord.parse("") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1;") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=") == nil)
        #expect(TLSRPTRecord.parse("rua=mailto:a@example.com; v=TLSRPTv1") == nil)
    }

    @Test func versionMustBeExact() {
        #expect(TLSRPTRecord.select([["v=TLSRPTv10; rua=mailto:a@example.com"]]) == nil)
        #expect(TLSRPTRecord.select([["v=tlsrptv1; rua=mailto:a@example.com"]]) == nil)
        #expect(TLSRPTRecord.select([[" v=TLSRPTv1; rua=mailto:a@example.com"]]) == nil)
    }

    @Test func spacesAroundDelimitersAndTrailingSemicolon() throws {
        let r = try #require(TLSRPTRecord.parse("v=TLSRPTv1 ;\trua=mailto:a@example.com , https://r.example.com ;"))
        #expect(r.destinations.map(\.description) == ["mailto:a@example.com", "https://r.example.com/"])
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua = mailto:a@example.com") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1;; rua=mailto:a@example.com") == nil)
    }

    @Test func duplicateRuaIsInvalidDuplicateURIsKeptOnce() throws {
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com") == nil)
        let r = try #require(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:a@example.com,mailto:a@example.com"))
        #expect(r.destinations.count == 1)
    }

    @Test func unknownFieldsIgnoredMalformedOnesNot() throws {
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; x-future=1.2; rua=mailto:a@example.com")?.destinations.count == 1)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:a@example.com; =x") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:a@example.com; _x=1") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:a@example.com; junk") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:a@example.com; x=a=b") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:a@example.com; \(String(repeating: "n", count: 33))=1") == nil)
    }

    @Test func otherSchemesIgnored() throws {
        let r = try #require(TLSRPTRecord.parse("v=TLSRPTv1; rua=http://r.example.com/x,ftp://x,https://r.example.com/y"))
        #expect(r.destinations.map(\.description) == ["https://r.example.com/y"])
        #expect(r.ignored == ["http://r.example.com/x", "ftp://x"])
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=http://r.example.com/x") == nil)
    }

    @Test func malformedURIs() {
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:not-an-address") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=https://user@r.example.com/") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=https://r.example.com:0/") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=https://r.example.com:99999/") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=https://bad_host!/") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:a%0D%0A@example.com") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:a%2@example.com") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:a@example.com,,mailto:b@example.com") == nil)
    }

    @Test func percentEncodedCommaAndQueryInMailto() throws {
        let r = try #require(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:tls%2Brpt@example.com?subject=x"))
        #expect(r.destinations.map(\.description) == ["mailto:tls+rpt@example.com"])
    }

    @Test func nonASCIIAndControlsRefused() {
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:ä@example.com") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:a@example.com\r\nx") == nil)
        #expect(TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:a@example.com\u{0}") == nil)
    }

    @Test func overlongRefused() {
        let long = "v=TLSRPTv1; rua=mailto:a@example.com; x=" + String(repeating: "a", count: TLSRPTRecord.maxLength)
        #expect(TLSRPTRecord.parse(long) == nil)
        let many = "v=TLSRPTv1; rua=" + Array(repeating: "mailto:a@example.com", count: 250).joined(separator: ",")
        #expect(many.utf8.count > TLSRPTRecord.maxLength)
        #expect(TLSRPTRecord.select([[many]]) == nil)
    }
}
