// The counters of one policy domain for one UTC day: per policy, the
// successful sessions and the failures by their particulars. This is what
// the ledger keeps and writes, and what a report is made from.
//
// Bounded: at most `maxPolicies` policies and `maxDetails` failure
// entries per policy. A session over a bound is still counted in the
// summary (as a success or failure of the policy it would have had, or of
// the last policy kept), so the totals stay true while detail is dropped.
//
// The file form (one record per domain and day, sealed by the spool's
// record helpers), printable ASCII lines, every free text xtext-encoded:
//
//   tlsrpt-counts 1
//   day 2026-01-31
//   domain example.com
//   policy sts <successes> <failures beyond the detail bound>
//   string <xtext>                          (0 or more: the policy's strings)
//   mx <xtext>                              (0 or more: the mx patterns)
//   failure <result-type> <count> <sending-ip> <mx> <receiving-ip> <code> <info>   (each xtext or "-")
//
// `string`, `mx` and `failure` lines belong to the `policy` line above them.
// Decoding is all or nothing.
import RelayModel

public struct TLSRPTCounts: Equatable, Sendable {
    public struct PolicyCounts: Equatable, Sendable {
        public var successes = 0
        public var failures: [TLSRPTFailure: Int] = [:]
        /// Failures whose details were over the bound.
        public var undetailedFailures = 0

        public var failureTotal: Int { failures.values.reduce(undetailedFailures, +) }

        public init() {}
    }

    public static let maxPolicies = 16
    public static let maxDetails = 64

    public let day: TLSRPTDay
    public let domain: String
    /// In the order first seen.
    public private(set) var policies: [TLSRPTPolicy] = []
    public private(set) var counts: [TLSRPTPolicy: PolicyCounts] = [:]

    public init(day: TLSRPTDay, domain: String) {
        self.day = day
        self.domain = domain
    }

    public var sessionTotal: Int { counts.values.reduce(0) { $0 + $1.successes + $1.failureTotal } }

    /// Counts one session (or `count` sessions alike: summing instances).
    public mutating func add(_ event: TLSRPTEvent, count n: Int = 1) {
        var policy = event.policy
        if counts[policy] == nil {
            if policies.count >= Self.maxPolicies { policy = policies[policies.count - 1] } else {
                policies.append(policy)
                counts[policy] = PolicyCounts()
            }
        }
        switch event.result {
        case .success:
            counts[policy]!.successes += n
        case .failure(let f):
            if counts[policy]!.failures[f] != nil || counts[policy]!.failures.count < Self.maxDetails {
                counts[policy]!.failures[f, default: 0] += n
            } else {
                counts[policy]!.undetailedFailures += n
            }
        }
    }

    /// Adds failures counted without their particulars (over the bound on
    /// some instance).
    public mutating func addUndetailed(_ policy: TLSRPTPolicy, count n: Int) {
        var policy = policy
        if counts[policy] == nil {
            if policies.count >= Self.maxPolicies { policy = policies[policies.count - 1] } else {
                policies.append(policy)
                counts[policy] = PolicyCounts()
            }
        }
        counts[policy]!.undetailedFailures += n
    }

    // MARK: the file form

    public func encode() -> [UInt8] {
        var out = "tlsrpt-counts 1\nday \(day)\ndomain \(domain)\n"
        for p in policies {
            let c = counts[p]!
            out += "policy \(p.type.rawValue) \(c.successes) \(c.undetailedFailures)\n"
            for s in p.strings { out += "string \(XText.encode(s))\n" }
            for m in p.mxHosts { out += "mx \(XText.encode(m))\n" }
            let sorted = c.failures.sorted { Self.order($0.key) < Self.order($1.key) }
            for (f, n) in sorted {
                out += "failure \(f.resultType.rawValue) \(n) \(opt(f.sendingMTAIP)) \(opt(f.receivingMXHostname)) "
                    + "\(opt(f.receivingIP)) \(opt(f.failureReasonCode)) \(opt(f.additionalInformation))\n"
            }
        }
        return Array(out.utf8)
    }

    /// "-" for none, "=" for an empty text (xtext never produces either
    /// alone: "-" of a text is itself, so a text "-" is written "+2D").
    private func opt(_ s: String?) -> String {
        guard let s else { return "-" }
        return s.isEmpty ? "=" : s == "-" ? "+2D" : XText.encode(s)
    }

    static func order(_ f: TLSRPTFailure) -> String {
        [f.resultType.rawValue, f.receivingMXHostname ?? "", f.receivingIP ?? "", f.sendingMTAIP ?? "",
         f.failureReasonCode ?? "", f.additionalInformation ?? ""].joined(separator: "\u{1}")
    }

    public static func decode(_ data: [UInt8]) -> TLSRPTCounts? {
        guard data.allSatisfy({ ($0 >= 0x20 && $0 < 0x7f) || $0 == 10 }), data.last == 10 else { return nil }
        let lines = String(decoding: data.dropLast(), as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 3, lines[0] == "tlsrpt-counts 1", lines[1].hasPrefix("day "), lines[2].hasPrefix("domain "),
              let day = TLSRPTDay(String(lines[1].dropFirst(4))) else { return nil }
        let domain = String(lines[2].dropFirst(7))
        guard DomainRecordName.isValid(domain) else { return nil }
        var result = TLSRPTCounts(day: day, domain: domain)
        func text(_ s: Substring) -> String?? {
            if s == "-" { return .some(nil) }
            if s == "=" { return .some("") }
            guard let d = XText.decode(String(s)) else { return nil }
            return .some(d)
        }
        var current: (TLSRPTPolicy, PolicyCounts)?
        func close() -> Bool {
            guard let (p, c) = current else { return true }
            guard result.counts[p] == nil, result.policies.count < maxPolicies else { return false }
            result.policies.append(p)
            result.counts[p] = c
            current = nil
            return true
        }
        for line in lines.dropFirst(3) {
            let f = line.split(separator: " ", omittingEmptySubsequences: false)
            switch f.first {
            case "policy":
                guard close(), f.count == 4, let type = TLSRPTPolicyType(rawValue: String(f[1])),
                      let s = Int(f[2]), s >= 0, let u = Int(f[3]), u >= 0 else { return nil }
                var c = PolicyCounts()
                c.successes = s
                c.undetailedFailures = u
                current = (TLSRPTPolicy(type: type, domain: domain), c)
            case "string", "mx":
                guard current != nil, f.count == 2, let v = XText.decode(String(f[1])) else { return nil }
                if f[0] == "string" { current!.0.strings.append(v) } else { current!.0.mxHosts.append(v) }
            case "failure":
                guard current != nil, f.count == 8, let type = TLSRPTResultType(rawValue: String(f[1])),
                      let n = Int(f[2]), n > 0, let a = text(f[3]), let b = text(f[4]), let c = text(f[5]),
                      let d = text(f[6]), let e = text(f[7]) else { return nil }
                let failure = TLSRPTFailure(resultType: type, sendingMTAIP: a, receivingMXHostname: b, receivingIP: c,
                                            failureReasonCode: d, additionalInformation: e)
                guard current!.1.failures[failure] == nil, current!.1.failures.count < maxDetails else { return nil }
                current!.1.failures[failure] = n
            default:
                return nil
            }
        }
        guard close() else { return nil }
        return result
    }
}
