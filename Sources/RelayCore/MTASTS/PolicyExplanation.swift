// `relayd policy explain`, rendered: each layer's answer, the winner, the
// route, and the cached MTA-STS policy with its age, expiry and last fetch —
// as text for people and as JSON for scripts. Pure: the caller gives the
// decision, the record and the time.
import Foundation
import RelayPolicy

/// The two renderings of `relayd policy explain`.
public enum PolicyExplanation {
    /// "2026-01-31 12:00:00 UTC": how relayd's reports print a time.
    public static func utc(_ t: Int) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss 'UTC'"
        return f.string(from: Date(timeIntervalSince1970: TimeInterval(t)))
    }

    public static func text(_ d: PolicyDecision, cached: CachedSTSPolicy?, enabled: Bool, relay: String?, now: Int) -> String {
        var out = ["\(d.domain): \(d.level.rawValue)\(d.requiresVerification ? " (verified)" : "") decided by \(d.layer.rawValue): \(d.reason)"]
        for v in d.verdicts {
            let level = v.level.map(\.rawValue) ?? "-"
            out.append("  \(v.layer.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) \(level.padding(toLength: 14, withPad: " ", startingAt: 0)) \(v.detail)")
        }
        if let relay {
            out.append("  route: relay \(relay) (MTA-STS does not apply to a relay, only to MX hosts)")
        }
        guard enabled else {
            out.append("MTA-STS: disabled ([mta_sts] enabled = false)")
            return out.joined(separator: "\n")
        }
        guard let c = cached else {
            out.append("MTA-STS: no cached policy (it is looked up on the next delivery, or with `relayd policy refresh`)")
            return out.joined(separator: "\n")
        }
        out.append("MTA-STS cached policy:")
        out.append("  mode        \(c.policy.mode.rawValue)")
        out.append("  mx          \(c.policy.mx.joined(separator: ", "))")
        out.append("  id          \(c.id)")
        out.append("  max_age     \(c.policy.maxAge) s")
        out.append("  fetched     \(utc(c.fetched)) (\(now - c.fetched) s ago)")
        out.append("  expires     \(utc(c.expires)) (\(c.isExpired(at: now) ? "expired, not applied" : "in \(c.expires - now) s"))")
        out.append("  last fetch  \(utc(c.lastAttempt)): \(c.lastResult)")
        return out.joined(separator: "\n")
    }

    /// `extra`: further top-level keys (the learned record, from the layer above).
    public static func json(_ d: PolicyDecision, cached: CachedSTSPolicy?, enabled: Bool, relay: String?, now: Int,
                            extra: [String: Any] = [:]) -> String {
        var root: [String: Any] = [
            "domain": d.domain, "level": d.level.rawValue, "layer": d.layer.rawValue, "reason": d.reason,
            "requires_verification": d.requiresVerification, "mta_sts_enabled": enabled,
            "verdicts": d.verdicts.map { v -> [String: Any] in
                ["layer": v.layer.rawValue, "level": v.level.map(\.rawValue) ?? NSNull(), "detail": v.detail]
            },
        ]
        root["relay"] = relay ?? NSNull()
        if let c = cached {
            root["mta_sts"] = [
                "mode": c.policy.mode.rawValue, "mx": c.policy.mx, "id": c.id, "max_age": c.policy.maxAge,
                "fetched": c.fetched, "age_seconds": now - c.fetched, "expires": c.expires, "expired": c.isExpired(at: now),
                "last_attempt": c.lastAttempt, "last_result": c.lastResult,
            ] as [String: Any]
        } else {
            root["mta_sts"] = NSNull()
        }
        root.merge(extra) { current, _ in current }
        let data = (try? JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
