// The aggregate report (RFC 8460 §4.4): one JSON object per policy domain
// and UTC day, written with JSONSerialization (sorted keys, so the same
// counts always give the same bytes), then gzipped for sending (§5.3).
//
// Field names and nesting are the RFC's:
//   organization-name, date-range{start-datetime, end-datetime},
//   contact-info, report-id,
//   policies[{ policy{policy-type, policy-string[], policy-domain, mx-host[]},
//              summary{total-successful-session-count, total-failure-session-count},
//              failure-details[{result-type, sending-mta-ip, receiving-mx-hostname,
//                               receiving-ip, failed-session-count,
//                               additional-information, failure-reason-code}] }]
// policy-string and mx-host are left out when there are none (a
// no-policy-found policy); a failure detail's optional members are left
// out when unknown, never written as null or "".
import Foundation

/// Who sends the reports ([tlsrpt] in the config).
public struct TLSRPTSubmitter: Equatable, Sendable {
    /// organization-name.
    public var organization: String
    /// contact-info: an address or URL for questions about the reports.
    public var contact: String
    /// The submitter's domain (§5.1 file name, §5.3 header fields).
    public var submitter: String

    public init(organization: String, contact: String, submitter: String) {
        self.organization = organization
        self.contact = contact
        self.submitter = submitter
    }
}

public enum TLSRPTReport {
    /// Stable for a day, domain and submitter, so a retried report keeps
    /// its id and a receiver can discard a duplicate.
    public static func reportID(day: TLSRPTDay, domain: String, submitter: String) -> String {
        "\(day.startDateTime)_\(domain)_\(submitter)"
    }

    /// The report as a JSON value (for tests and --json); nil-free.
    public static func object(_ counts: TLSRPTCounts, from submitter: TLSRPTSubmitter) -> [String: Any] {
        var policies: [[String: Any]] = []
        for p in counts.policies {
            guard let c = counts.counts[p] else { continue }
            var policy: [String: Any] = ["policy-type": p.type.rawValue, "policy-domain": p.domain]
            if !p.strings.isEmpty { policy["policy-string"] = p.strings }
            if !p.mxHosts.isEmpty { policy["mx-host"] = p.mxHosts }
            var entry: [String: Any] = [
                "policy": policy,
                "summary": ["total-successful-session-count": c.successes,
                            "total-failure-session-count": c.failureTotal],
            ]
            let details = c.failures.sorted { TLSRPTCounts.order($0.key) < TLSRPTCounts.order($1.key) }.map { f, n in
                var d: [String: Any] = ["result-type": f.resultType.rawValue, "failed-session-count": n]
                if let v = f.sendingMTAIP { d["sending-mta-ip"] = v }
                if let v = f.receivingMXHostname { d["receiving-mx-hostname"] = v }
                if let v = f.receivingIP { d["receiving-ip"] = v }
                if let v = f.additionalInformation, !v.isEmpty { d["additional-information"] = v }
                if let v = f.failureReasonCode, !v.isEmpty { d["failure-reason-code"] = v }
                return d
            }
            if !details.isEmpty { entry["failure-details"] = details }
            policies.append(entry)
        }
        return [
            "organization-name": submitter.organization,
            "date-range": ["start-datetime": counts.day.startDateTime, "end-datetime": counts.day.endDateTime],
            "contact-info": submitter.contact,
            "report-id": reportID(day: counts.day, domain: counts.domain, submitter: submitter.submitter),
            "policies": policies,
        ]
    }

    public static func json(_ counts: TLSRPTCounts, from submitter: TLSRPTSubmitter) throws -> [UInt8] {
        let data = try JSONSerialization.data(withJSONObject: object(counts, from: submitter),
                                              options: [.sortedKeys, .withoutEscapingSlashes])
        return [UInt8](data)
    }

    public static func gzipped(_ counts: TLSRPTCounts, from submitter: TLSRPTSubmitter) throws -> [UInt8] {
        try Gzip.compress(json(counts, from: submitter))
    }

    /// §5.1: `<submitter>!<policy-domain>!<begin>!<end>.json.gz`, the
    /// timestamps in Unix seconds.
    public static func fileName(day: TLSRPTDay, domain: String, submitter: String) -> String {
        "\(submitter)!\(domain)!\(day.start)!\(day.end - 1).json.gz"
    }
}
