// TLSA answers (RFC 6698 §2.1) read strictly: a record too short for its
// three fixed octets, or whose length runs past the message, is an error
// for the whole answer, never a partial record; what parses keeps every
// octet, and the SMTP filter (RFC 7672) then decides what is usable.
import Testing
@testable import RelayDNS
@testable import RelayModel

@Suite struct TLSAParsingTests {
    static let q = DNSMessage.query(name: "_25._tcp.mx.x.test", type: .tlsa, id: 7)!
    static let owner = DNSBuilder.name("_25._tcp.mx.x.test")

    static func answer(_ rdata: [UInt8], ad: Bool = true) -> [UInt8] {
        DNSBuilder.response(to: q, ad: ad, answers: [DNSBuilder.rr(owner, type: 52, rdata: rdata)])
    }

    @Test(arguments: [
        ("empty", [UInt8]()),
        ("usage only", [3]),
        ("no matching type", [3, 1]),
    ])
    func tooShortIsAnError(what: String, rdata: [UInt8]) {
        #expect(throws: (any Error).self, "\(what)") { try DNSMessage.parse(Self.answer(rdata)) }
    }

    @Test func aLengthPastTheMessageIsAnError() {
        var bytes = Self.answer([3, 1, 1] + Array(repeating: 0xab, count: 32))
        bytes.removeLast(5)
        #expect(throws: (any Error).self) { try DNSMessage.parse(bytes) }
    }

    @Test func recordsKeepEveryOctetAndTheADBit() throws {
        let data = (0..<64).map { UInt8($0) }
        let r = try DNSMessage.parse(Self.answer([2, 0, 2] + data))
        #expect(r.authenticated)
        guard case .tlsa(let u, let s, let m, let d) = r.answers.first?.data else { Issue.record("no TLSA"); return }
        #expect(TLSARecord(usage: u, selector: s, matchingType: m, data: d).isUsableForSMTP)
        #expect(d == data)
        #expect(try !DNSMessage.parse(Self.answer([3, 1, 1] + data.prefix(32), ad: false)).authenticated)
    }

    @Test(arguments: [
        ([3, 1, 1] + Array(repeating: UInt8(1), count: 33), false),  // SHA-256 one octet long
        ([3, 1, 0], false),                                            // no data at all
        ([255, 255, 255] + Array(repeating: UInt8(1), count: 32), false),
        ([3, 0, 0, 0x30], true),                                       // full data: any length
    ])
    func parsedThenFiltered(rdata: [UInt8], usable: Bool) throws {
        let r = try DNSMessage.parse(Self.answer(rdata))
        guard case .tlsa(let u, let s, let m, let d) = r.answers.first?.data else { Issue.record("no TLSA"); return }
        #expect(TLSARecord(usage: u, selector: s, matchingType: m, data: d).isUsableForSMTP == usable)
    }
}
