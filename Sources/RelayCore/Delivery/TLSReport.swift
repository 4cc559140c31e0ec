// `relayd report tls`: the TLS tally summed per destination domain over a
// span of UTC days, as text for people ("what left in the clear, and
// why?") and as JSON with sorted, always-present keys for scripts. Pure:
// counts in, text out.
import Foundation

public struct TLSReport: Sendable {
    public let firstDay: Int
    public let lastDay: Int
    /// Per domain, summed over the days; sorted by domain.
    public let domains: [(domain: String, counts: TLSTallyCounts)]
    public let total: TLSTallyCounts

    /// The days from the one containing `now - since` to today.
    public static func days(since: Int, now: Int) -> ClosedRange<Int> {
        TLSTally.today(now - max(0, since))...TLSTally.today(now)
    }

    public init(_ records: [TLSTallyCounts], days: ClosedRange<Int>) {
        firstDay = days.lowerBound
        lastDay = days.upperBound
        var byDomain: [String: TLSTallyCounts] = [:]
        var total = TLSTallyCounts(day: days.upperBound, domain: "*")
        for r in records where days.contains(r.day) {
            byDomain[r.domain, default: TLSTallyCounts(day: days.upperBound, domain: r.domain)].merge(r)
            total.merge(r)
        }
        domains = byDomain.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        self.total = total
    }

    static func sum(_ m: [String: Int]) -> Int { m.values.reduce(0, +) }

    /// "3 TLSv1.3/verified, 1 plaintext": largest first, then by name.
    static func list(_ m: [String: Int]) -> String {
        m.isEmpty ? "none" : m.sorted { ($1.value, $0.key) < ($0.value, $1.key) }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
    }

    public var text: String {
        let span = "\(TLSTallyCounts.dayName(firstDay)) to \(TLSTallyCounts.dayName(lastDay)) (UTC)"
        var out = "TLS report, \(span): \(domains.count) destination domain\(domains.count == 1 ? "" : "s")\n"
        let clear = total.labels(.deliveries)["plaintext"] ?? 0
        out += "Left in the clear: \(clear) message\(clear == 1 ? "" : "s")"
        if clear > 0 {
            let who = domains.filter { $0.counts[.deliveries, "plaintext"] > 0 }.map { "\($0.domain) \($0.counts[.deliveries, "plaintext"])" }
            out += " (\(who.joined(separator: ", ")))"
        }
        out += "\n"
        for (domain, c) in domains {
            out += "\n\(domain)\n"
            out += "  messages:   \(Self.list(c.labels(.messages)))\n"
            out += "  delivered:  \(Self.list(c.labels(.deliveries)))\n"
            let plain = c[.deliveries, "plaintext"]
            if plain > 0 { out += "  PLAINTEXT:  \(plain), allowed by \(Self.list(c.labels(.plaintextLayers)))\n" }
            let dropped = c[.messages, "dropped"]
            if dropped > 0 { out += "  dropped:    \(dropped) (tls-exclusive: TLS could not be had)\n" }
            out += "  decided by: \(Self.list(c.labels(.layers)))\n"
            out += "  sessions:   \(Self.list(c.labels(.sessions)))\n"
            if !c.labels(.fallbacks).isEmpty { out += "  fallbacks:  \(Self.list(c.labels(.fallbacks)))\n" }
        }
        return out
    }

    static func object(_ c: TLSTallyCounts) -> [String: Any] {
        [
            "messages": c.labels(.messages),
            "messages_total": sum(c.labels(.messages)),
            "deliveries": c.labels(.deliveries),
            "plaintext_deliveries": c[.deliveries, "plaintext"],
            "plaintext_allowed_by": c.labels(.plaintextLayers),
            "dropped": c[.messages, "dropped"],
            "decided_by": c.labels(.layers),
            "sessions": c.labels(.sessions),
            "sessions_total": sum(c.labels(.sessions)),
            "fallbacks": c.labels(.fallbacks),
        ]
    }

    public var jsonObject: [String: Any] {
        [
            "first_day": TLSTallyCounts.dayName(firstDay),
            "last_day": TLSTallyCounts.dayName(lastDay),
            "domains": domains.map { d -> [String: Any] in
                var o = Self.object(d.counts)
                o["domain"] = d.domain
                return o
            },
            "total": Self.object(total),
        ]
    }

    public func json() throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: jsonObject, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self)
    }
}
