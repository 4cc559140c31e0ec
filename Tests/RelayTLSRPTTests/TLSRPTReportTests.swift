import Testing
import Foundation
import RelayModel
@testable import RelayTLSRPT

/// RFC 8460 §4.4's members as a table: where each sits, its JSON type, and
/// whether the report must carry it.
enum JSONKind { case string, integer, object, array, stringArray }
struct Member { let path: String; let kind: JSONKind; let required: Bool }

let reportSchema: [Member] = [
    Member(path: "organization-name", kind: .string, required: true),
    Member(path: "date-range", kind: .object, required: true),
    Member(path: "date-range.start-datetime", kind: .string, required: true),
    Member(path: "date-range.end-datetime", kind: .string, required: true),
    Member(path: "contact-info", kind: .string, required: true),
    Member(path: "report-id", kind: .string, required: true),
    Member(path: "policies", kind: .array, required: true),
]
let policySchema: [Member] = [
    Member(path: "policy", kind: .object, required: true),
    Member(path: "policy.policy-type", kind: .string, required: true),
    Member(path: "policy.policy-string", kind: .stringArray, required: false),
    Member(path: "policy.policy-domain", kind: .string, required: true),
    Member(path: "policy.mx-host", kind: .stringArray, required: false),
    Member(path: "summary", kind: .object, required: true),
    Member(path: "summary.total-successful-session-count", kind: .integer, required: true),
    Member(path: "summary.total-failure-session-count", kind: .integer, required: true),
    Member(path: "failure-details", kind: .array, required: false),
]
let detailSchema: [Member] = [
    Member(path: "result-type", kind: .string, required: true),
    Member(path: "sending-mta-ip", kind: .string, required: false),
    Member(path: "receiving-mx-hostname", kind: .string, required: false),
    Member(path: "receiving-ip", kind: .string, required: false),
    Member(path: "failed-session-count", kind: .integer, required: true),
    Member(path: "additional-information", kind: .string, required: false),
    Member(path: "failure-reason-code", kind: .string, required: false),
]

func lookup(_ object: [String: Any], _ path: String) -> Any? {
    var cur: Any? = object
    for part in path.split(separator: ".") { cur = (cur as? [String: Any])?[String(part)] }
    return cur
}

func check(_ object: [String: Any], against schema: [Member], allowed extra: Set<String> = []) {
    for m in schema {
        guard let v = lookup(object, m.path) else {
            #expect(!m.required, "missing \(m.path)")
            continue
        }
        switch m.kind {
        case .string: #expect(v is String, "\(m.path) is not a string")
        case .integer: #expect(v as? Int != nil, "\(m.path) is not an integer")
        case .object: #expect(v is [String: Any], "\(m.path) is not an object")
        case .array: #expect(v is [Any], "\(m.path) is not an array")
        case .stringArray: #expect((v as? [Any])?.allSatisfy { $0 is String } ?? false, "\(m.path) is not an array of strings")
        }
    }
    // Nothing the schema does not name, at the top of this object.
    let known = Set(schema.map { String($0.path.split(separator: ".")[0]) })
    for key in object.keys { #expect(known.contains(key) || extra.contains(key), "unexpected member \(key)") }
}

@Suite struct TLSRPTReportTests {
    let day = TLSRPTDay("2026-01-31")!
    let submitter = TLSRPTSubmitter(organization: "Example Relay Org", contact: "mailto:postmaster@relay.example",
                                    submitter: "relay.example")

    func sample() -> TLSRPTCounts {
        var c = TLSRPTCounts(day: day, domain: "example.com")
        for _ in 0..<3 { c.add(.success(stsPolicy)) }
        c.add(.failure(stsPolicy, mismatch))
        c.add(.failure(stsPolicy, mismatch))
        c.add(.failure(stsPolicy, TLSRPTFailure(resultType: .starttlsNotSupported, receivingMXHostname: "mx2.example.com",
                                                receivingIP: "2001:db8::25")))
        c.add(.success(TLSRPTPolicy(type: .noPolicyFound, domain: "example.com")))
        return c
    }

    @Test func reportParsesBackToTheRFCSchema() throws {
        let gz = try TLSRPTReport.gzipped(sample(), from: submitter)
        #expect(gz.prefix(2) == [0x1f, 0x8b])
        let json = try Gzip.decompress(gz)
        #expect(json == (try TLSRPTReport.json(sample(), from: submitter)))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json)) as? [String: Any])
        check(object, against: reportSchema)
        #expect(object["organization-name"] as? String == "Example Relay Org")
        #expect(object["contact-info"] as? String == "mailto:postmaster@relay.example")
        #expect(object["report-id"] as? String == "2026-01-31T00:00:00Z_example.com_relay.example")
        #expect(lookup(object, "date-range.start-datetime") as? String == "2026-01-31T00:00:00Z")
        #expect(lookup(object, "date-range.end-datetime") as? String == "2026-01-31T23:59:59Z")
        let policies = try #require(object["policies"] as? [[String: Any]])
        #expect(policies.count == 2)
        for p in policies {
            check(p, against: policySchema)
            for d in (p["failure-details"] as? [[String: Any]]) ?? [] { check(d, against: detailSchema) }
        }
        let sts = policies[0]
        #expect(lookup(sts, "policy.policy-type") as? String == "sts")
        #expect(lookup(sts, "policy.policy-domain") as? String == "example.com")
        #expect(lookup(sts, "policy.policy-string") as? [String] == stsPolicy.strings)
        #expect(lookup(sts, "policy.mx-host") as? [String] == ["*.example.com"])
        #expect(lookup(sts, "summary.total-successful-session-count") as? Int == 3)
        #expect(lookup(sts, "summary.total-failure-session-count") as? Int == 3)
        let details = try #require(sts["failure-details"] as? [[String: Any]])
        #expect(details.count == 2)
        let hm = try #require(details.first { $0["result-type"] as? String == "certificate-host-mismatch" })
        #expect(hm["failed-session-count"] as? Int == 2)
        #expect(hm["sending-mta-ip"] as? String == "192.0.2.1")
        #expect(hm["receiving-mx-hostname"] as? String == "mx1.example.com")
        #expect(hm["receiving-ip"] as? String == "198.51.100.7")
        #expect(hm["failure-reason-code"] as? String == "X509_V_ERR_HOSTNAME_MISMATCH")
        #expect(hm["additional-information"] as? String == "name: mx1.example.com")
        let none = policies[1]
        #expect(lookup(none, "policy.policy-type") as? String == "no-policy-found")
        #expect(lookup(none, "policy.policy-string") == nil)
        #expect(none["failure-details"] == nil)
        #expect(lookup(none, "summary.total-failure-session-count") as? Int == 0)
    }

    @Test func sameCountsSameBytes() throws {
        #expect(try TLSRPTReport.json(sample(), from: submitter) == TLSRPTReport.json(sample(), from: submitter))
        let text = String(decoding: try TLSRPTReport.json(sample(), from: submitter), as: UTF8.self)
        #expect(!text.contains("true") && !text.contains("false") && text.contains("\"total-failure-session-count\":0"),
                "counts are JSON numbers, never booleans")
        #expect(text.hasPrefix("{\"contact-info\":\"mailto:postmaster@relay.example\""), "sorted keys, slashes unescaped")
    }

    @Test func fileNameIsSection51() {
        #expect(TLSRPTReport.fileName(day: day, domain: "example.com", submitter: "relay.example")
                == "relay.example!example.com!1769817600!1769903999.json.gz")
    }

    @Test func resultTypesAreExactlyTheRFCs() {
        #expect(TLSRPTResultType.allCases.map(\.rawValue) == [
            "starttls-not-supported", "certificate-host-mismatch", "certificate-expired", "certificate-not-trusted",
            "validation-failure", "tlsa-invalid", "dnssec-invalid", "dane-required", "sts-policy-fetch-error",
            "sts-policy-invalid", "sts-webpki-invalid"])
        #expect(TLSRPTPolicyType.allCases.map(\.rawValue) == ["sts", "tlsa", "no-policy-found"])
    }
}

@Suite struct GzipTests {
    @Test func roundTrips() throws {
        for input in [[UInt8](), Array("x".utf8), (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 7) }] {
            #expect(try Gzip.decompress(Gzip.compress(input)) == input)
        }
    }

    @Test func hostileInput() throws {
        let gz = try Gzip.compress(Array(repeating: 0x41, count: 100_000))
        #expect(throws: Gzip.Failure.self) { try Gzip.decompress(Array(gz.prefix(gz.count / 2))) }
        #expect(throws: Gzip.Failure.self) { try Gzip.decompress(Array("not gzip at all".utf8)) }
        #expect(throws: Gzip.Failure.tooLarge) { try Gzip.decompress(gz, limit: 1000) }
        var flipped = gz
        flipped[flipped.count - 5] ^= 0xff // the CRC/length trailer
        #expect(throws: Gzip.Failure.self) { try Gzip.decompress(flipped) }
        #expect(throws: Gzip.Failure.self) { try Gzip.decompress([]) }
    }
}
