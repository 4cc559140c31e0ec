// The learned record as `relayd policy explain`, `relayd policy list
// --learned` and `relayd probe` show it: what was seen, what the layer
// answers, and why that answer does or does not decide the domain's level
// — as text for people and as JSON values for scripts. Pure: the caller
// gives the record, the decision and the time.
import Foundation
import RelayLearned
import RelayPolicy

public enum LearnedExplanation {
    /// Why the learned layer does or does not decide, in one sentence.
    public static func role(_ record: LearnedRecord?, decision d: PolicyDecision, settings: LearnedSettings, now: Int) -> String {
        guard settings.enabled else { return "learned TLS status is disabled ([learned] enabled = false)" }
        guard let record else { return "no record: no TLS session with this domain's MX hosts has been seen" }
        let (level, detail) = record.answer(at: now, settings: settings)
        if d.layer == .learned { return "decides: \(detail)" }
        guard let level else { return "does not decide: \(detail)" }
        if d.layer == .operatorEntry { return "does not decide: the operator's [outbound.domains] entry comes first" }
        if d.layer == .dane || d.layer == .mtaSTS { return "does not decide: \(d.layer.rawValue) comes first" }
        return "does not decide: its answer (\(level.rawValue)) is not above default_level (\(d.level.rawValue))"
    }

    static func utc(_ t: Int) -> String { LearnedClock.utc(t) }

    static func evidenceLine(_ e: LevelEvidence) -> String {
        "\(e.count) session\(e.count == 1 ? "" : "s") on \(e.days) day\(e.days == 1 ? "" : "s"), first \(utc(e.firstSeen)), last \(utc(e.lastSeen))"
    }

    /// When the record relaxes if nothing changes, or why it cannot.
    static func relaxState(_ r: LearnedRecord, protected: Bool, settings: LearnedSettings, now: Int) -> String {
        if r.activePin(at: now) != nil { return "never while pinned" }
        if protected { return "never while DANE or MTA-STS decides" }
        guard let since = r.probesBelowSince else { return "not due (no run of probes below the learned level)" }
        let need = LearnedSettings.minimumProbesToRelax
        return "\(r.probesBelow) probe\(r.probesBelow == 1 ? "" : "s") below since \(utc(since)); relaxes from \(utc(since + settings.relaxAfter))"
            + (r.probesBelow < need ? " once \(need) probes have found the same" : "") + " unless TLS is seen"
    }

    public static func text(_ r: LearnedRecord?, decision d: PolicyDecision, settings: LearnedSettings, now: Int) -> String {
        var out = ["Learned TLS status: " + role(r, decision: d, settings: settings, now: now)]
        guard let r, settings.enabled else { return out.joined(separator: "\n") }
        let protected = d.verdicts.contains { ($0.layer == .dane || $0.layer == .mtaSTS) && $0.level != nil }
        func add(_ key: String, _ value: String) { out.append("  " + key.padding(toLength: 12, withPad: " ", startingAt: 0) + value) }
        add("learned", r.learned.map { "\($0) (answers \($0.policyLevel!.rawValue))" } ?? "nothing (no TLS seen)")
        if let p = r.pin {
            let state = p.isActive(at: now) ? "" : " (ended)"
            add("pin", "\(p.level.rawValue) until \(p.until.map(utc) ?? "unpinned") by \(p.by) at \(utc(p.at))"
                + (p.reason.isEmpty ? "" : ": \(p.reason)") + state)
        }
        for level in TLSEvidence.allCases.reversed() {
            if let e = r.evidence[level] { add(level == .verified ? "verified" : "\(level)", evidenceLine(e)) }
        }
        for host in r.hosts.keys.sorted() {
            let levels = TLSEvidence.allCases.reversed().compactMap { l in r.hosts[host]![l].map { "\(l) \($0.count)" } }
            add("host", "\(host): " + levels.joined(separator: ", "))
        }
        if let a = r.lastAttempt { add("last", "\(utc(a.at)) \(a.seen) at \(a.host): \(a.reason)") }
        if let b = r.below { add("below", "\(b.sessions) session\(b.sessions == 1 ? "" : "s") below the learned level since \(utc(b.since))") }
        if let p = r.lastProbe {
            let offered = p.starttlsOffered.map { $0 ? "yes" : "no" } ?? "no answer"
            add("probe", "\(utc(p.at)) \(p.answered ? p.seen.description : "no answer")"
                + (p.host.isEmpty ? "" : " at \(p.host)")
                + " (STARTTLS \(offered), handshake \(p.handshake ? "yes" : "no"), verified \(p.verified ? "yes" : "no")"
                + (p.version.isEmpty ? "" : ", \(p.version)") + ")" + (p.detail.isEmpty ? "" : ": \(p.detail)"))
        } else {
            add("probe", "not probed yet (next: \(utc(ProbeSchedule.due(r, interval: settings.probeInterval, jitter: ProbeSchedule.jitter(r.domain, interval: settings.probeInterval)))))")
        }
        add("relax", relaxState(r, protected: protected, settings: settings, now: now))
        add("expires", r.activePin(at: now) != nil ? "never while pinned"
            : "\(utc(r.lastConfirmed + settings.expireAfter)) unless TLS is seen again")
        if !r.mx.isEmpty { add("mx", r.mx.joined(separator: ", ")) }
        for k in r.keys { add("key", "sha256 \(k)") }
        if let at = r.relaxedAt { add("relaxed", "\(r.relaxations) time\(r.relaxations == 1 ? "" : "s"), last \(utc(at))") }
        return out.joined(separator: "\n")
    }

    /// The record as JSON values (NSNull for what is absent, so every key
    /// is always there).
    public static func json(_ r: LearnedRecord?, decision d: PolicyDecision, settings: LearnedSettings, now: Int) -> [String: Any] {
        var root: [String: Any] = ["enabled": settings.enabled, "role": role(r, decision: d, settings: settings, now: now),
                                   "decides": d.layer == .learned]
        guard let r else {
            root["record"] = NSNull()
            return root
        }
        root["record"] = record(r, settings: settings, now: now)
        return root
    }

    public static func record(_ r: LearnedRecord, settings: LearnedSettings, now: Int) -> [String: Any] {
        func ev(_ e: LevelEvidence?) -> Any {
            guard let e else { return NSNull() }
            return ["first_seen": e.firstSeen, "last_seen": e.lastSeen, "count": e.count, "days": e.days]
        }
        func levels(_ m: EvidenceByLevel) -> [String: Any] {
            Dictionary(uniqueKeysWithValues: TLSEvidence.allCases.map { ($0.description, ev(m[$0])) })
        }
        let answer = r.answer(at: now, settings: settings)
        var o: [String: Any] = [
            "domain": r.domain, "created": r.created, "learned": r.learned?.description ?? NSNull(),
            "answer": answer.level?.rawValue ?? NSNull(), "detail": answer.detail,
            "evidence": levels(r.evidence),
            "hosts": Dictionary(uniqueKeysWithValues: r.hosts.map { ($0.key, levels($0.value)) }),
            "mx": r.mx, "keys": r.keys, "relaxations": r.relaxations, "relaxed_at": r.relaxedAt ?? NSNull(),
            "last_confirmed": r.lastConfirmed, "expired": r.isExpired(at: now, settings: settings),
            "probes_below": r.probesBelow, "probes_below_since": r.probesBelowSince ?? NSNull(),
        ]
        o["last_attempt"] = r.lastAttempt.map { ["at": $0.at, "seen": $0.seen.description, "host": $0.host, "reason": $0.reason] as [String: Any] } ?? NSNull()
        o["below"] = r.below.map { ["since": $0.since, "sessions": $0.sessions] as [String: Any] } ?? NSNull()
        o["last_probe"] = r.lastProbe.map { p -> [String: Any] in
            ["at": p.at, "seen": p.answered ? p.seen.description : NSNull(), "host": p.host,
             "starttls_offered": p.starttlsOffered ?? NSNull() as Any, "handshake": p.handshake, "verified": p.verified,
             "version": p.version, "detail": p.detail]
        } ?? NSNull()
        o["pin"] = r.pin.map { p -> [String: Any] in
            ["level": p.level.rawValue, "until": p.until ?? NSNull() as Any, "reason": p.reason, "by": p.by, "at": p.at,
             "active": p.isActive(at: now)]
        } ?? NSNull()
        return o
    }

    /// `relayd policy list --learned`: one line per record.
    public static func list(_ records: [LearnedRecord], settings: LearnedSettings, now: Int) -> String {
        var rows = [["DOMAIN", "LEARNED", "ANSWERS", "PIN", "LAST TLS", "LAST PROBE", "BELOW"]]
        for r in records {
            let lastTLS: Int? = [r.evidence[.tls]?.lastSeen, r.evidence[.verified]?.lastSeen].compactMap { $0 }.max()
            var pin = "-"
            if let p = r.activePin(at: now) {
                pin = p.level.rawValue
                if let until = p.until { pin += " until " + String(utc(until).prefix(10)) }
            }
            var probe = "-"
            if let p = r.lastProbe { probe = String(utc(p.at).prefix(16)) + " " + (p.answered ? p.seen.description : "no-answer") }
            let answers: String = r.answer(at: now, settings: settings).level?.rawValue ?? "-"
            let last: String = lastTLS.map { String(utc($0).prefix(16)) } ?? "-"
            let below: String = r.below.map { String($0.sessions) } ?? "-"
            rows.append([r.domain, r.learned?.description ?? "-", answers, pin, last, probe, below])
        }
        let widths = rows[0].indices.map { i in rows.map { $0[i].count }.max()! }
        return rows.map { row in
            row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
