// `relayd probe`, rendered: the MX hosts, what each address showed (the
// posttls-finger part), MTA-STS cached and live, DANE, the decision relayd
// takes now and what every level would do, and the level the domain is fit
// for — as text for people and as JSON (sorted keys) for scripts. Pure: the
// caller gives the findings, the decision and the time.
//
// Both renderings are lists of sections, each a function of the report;
// a new layer (learned status) is one more entry in each list.
import Foundation
import RelayLearned
import RelayModel
import RelayMTASTS
import RelayPolicy
import RelaySMTP
import RelaySTS
import RelayTLS

public struct ProbeReport: Sendable {
    /// MTA-STS as the probe saw it.
    public struct MTASTS: Sendable {
        public let enabled: Bool
        /// The daemon's cached record (read only).
        public let cached: CachedSTSPolicy?
        /// What the domain publishes now (nil when disabled).
        public let live: STSCheck.Finding?

        public init(enabled: Bool, cached: CachedSTSPolicy?, live: STSCheck.Finding?) {
            self.enabled = enabled
            self.cached = cached
            self.live = live
        }
    }

    public let result: DomainProbeResult
    public let decision: PolicyDecision
    public let mtaSTS: MTASTS
    /// The transport or smarthost relay mail for the domain goes to, if any.
    public let relay: String?
    public let now: Int

    /// The domain's learned TLS record (nil: none) and the windows it is
    /// judged by.
    public let learned: LearnedRecord?
    public let learnedSettings: LearnedSettings

    public init(result: DomainProbeResult, decision: PolicyDecision, mtaSTS: MTASTS, relay: String?, now: Int,
                learned: LearnedRecord? = nil, learnedSettings: LearnedSettings = LearnedSettings()) {
        self.learned = learned
        self.learnedSettings = learnedSettings
        self.result = result
        self.decision = decision
        self.mtaSTS = mtaSTS
        self.relay = relay
        self.now = now
    }

    /// Said when no TLSA lookup was made.
    public static let daneNote = "not checked: [dns] dnssec is off (no validating resolver declared), or no MX host was looked up"

    // MARK: what the findings mean

    public var classes: [ProbeVerdict.AddressTLS] { result.addresses.map { ProbeVerdict.classify($0, dane: result.dane?[$0.host]) } }

    public var fitness: ProbeVerdict.Fitness { ProbeVerdict.fitness(classes) }

    public var levels: [(level: PolicyLevel, outcome: ProbeVerdict.Outcome?)] { ProbeVerdict.levels(classes) }

    /// What delivery would do now: the decided level and verification,
    /// over only the MX hosts an enforce MTA-STS policy lists.
    public var decisionOutcome: ProbeVerdict.Outcome? {
        guard !result.addresses.isEmpty else { return nil }
        var addresses = result.addresses
        if let sts = decision.enforcedSTS {
            addresses = addresses.filter { sts.policy.matches(mxHost: $0.host) }
            if addresses.isEmpty { return .deferred }
        }
        return ProbeVerdict.outcome(level: decision.level, verification: decision.requiresVerification,
                                    addresses.map { ProbeVerdict.classify($0, dane: result.dane?[$0.host]) })
    }

    /// The policy the MX hosts are matched against: the live one, else an
    /// unexpired cached one.
    var matchingPolicy: STSPolicy? {
        if case .policy(_, let p)? = mtaSTS.live { return p }
        if let c = mtaSTS.cached, !c.isExpired(at: now) { return c.policy }
        return nil
    }

    static func words(_ o: ProbeVerdict.Outcome?) -> String {
        switch o {
        case .plaintext?: return "deliver in plaintext"
        case .tls?: return "deliver over TLS (certificate not checked)"
        case .verifiedTLS?: return "deliver over verified TLS"
        case .deferred?: return "defer (retry later; bounce at the queue lifetime)"
        case .dropped?: return "drop (no delivery, no bounce; audit log line)"
        case nil: return "unknown (no address to judge by)"
        }
    }

    static func fitWords(_ f: ProbeVerdict.Fitness) -> String {
        switch f {
        case .verify: return "verify"
        case .forcedOnly: return "forced"
        case .neither: return "neither"
        case .unknown: return "unknown"
        }
    }

    static func verificationWords(_ v: TLSVerification, host: String, dane: TLSARecord? = nil) -> String {
        switch v {
        case .trusted where dane != nil: return "trusted (DANE: TLSA \(dane!) matched)"
        case .trusted: return "trusted (chain and name \(host) verified)"
        case .failed(let f): return "FAILED: \(f.kind.rawValue) (\(f.detail))"
        case .noPeerCertificate: return "no certificate presented"
        }
    }
}

// MARK: text

extension ProbeReport {
    public typealias TextSection = @Sendable (ProbeReport) -> [String]

    /// In order; each returns its lines (a blank line separates sections).
    public static let textSections: [TextSection] = [
        { $0.mxText() }, { $0.addressesText() }, { $0.mtaSTSText() }, { $0.daneText() },
        { [LearnedExplanation.text($0.learned, decision: $0.decision, settings: $0.learnedSettings, now: $0.now)] },
        { $0.decisionText() }, { $0.levelsText() }, { $0.fitnessText() },
    ]

    public func text() -> String {
        Self.textSections.map { $0(self).joined(separator: "\n") }.filter { !$0.isEmpty }.joined(separator: "\n\n")
    }

    func mxText() -> [String] {
        var out = ["relayd probe \(result.domain) at \(PolicyExplanation.utc(now))"]
        switch result.mx {
        case .failed(let why):
            out.append("MX lookup failed: \(why)")
        case .skipped:
            out.append("MX lookup skipped (--ip and --mx-name given)")
        case .found(let hosts):
            out.append("MX hosts, in preference order\(hosts.first?.implicit == true ? " (implicit MX: the domain's own addresses)" : ""):")
            for h in hosts {
                out.append("  \(String(h.preference).padding(toLength: 5, withPad: " ", startingAt: 0)) \(h.name)  \(h.addresses.map(\.description).joined(separator: ", "))")
            }
        }
        if result.notProbed > 0 { out.append("(\(result.notProbed) more address(es) not probed)") }
        return out
    }

    func addressesText() -> [String] {
        result.addresses.flatMap { addressText($0) + [""] }.dropLast().map { $0 }
    }

    func addressText(_ r: HostProbeResult) -> [String] {
        func row(_ k: String, _ v: String) -> String { "  \(k.padding(toLength: 13, withPad: " ", startingAt: 0))\(v)" }
        var out = ["\(r.address) port \(r.port) (\(r.host))"]
        let f = r.findings
        if let banner = f.banner { out.append(row("greeting", "220 \(banner)")) }
        if let offered = f.starttlsOffered { out.append(row("STARTTLS", offered ? "offered" : "NOT offered")) }
        if f.discardedAfterSTARTTLS > 0 {
            out.append(row("warning", "\(f.discardedAfterSTARTTLS) plaintext bytes after the 220 to STARTTLS (discarded)"))
        }
        if let tls = r.tls {
            out.append(row("TLS", "\(tls.protocolVersion), \(tls.cipher), \(tls.cipherBits) bits, forward secrecy \(tls.forwardSecret ? "yes" : "NO")"))
            out.append(row("verification", Self.verificationWords(tls.verification, host: r.host, dane: tls.daneMatch)))
        }
        for (i, c) in r.certificates.enumerated() {
            out.append(row(i == 0 ? "certificate" : "", "[\(i)] \(c.subject)"))
            out.append(row("", "    issuer   \(c.issuer)"))
            if !c.dnsNames.isEmpty { out.append(row("", "    names    \(c.dnsNames.joined(separator: ", "))")) }
            if let a = c.notBefore, let b = c.notAfter {
                let left = b <= now ? "EXPIRED" : "\((b - now) / 86_400) days left"
                out.append(row("", "    valid    \(PolicyExplanation.utc(a)) to \(PolicyExplanation.utc(b)) (\(left))"))
            }
            if !c.publicKeySHA256.isEmpty { out.append(row("", "    spki     sha256 \(c.publicKeySHA256)")) }
        }
        if let failure = r.failure { out.append(row("FAILED at", failure.description)) }
        out.append(row("finding", ProbeVerdict.classify(r, dane: result.dane?[r.host]).rawValue))
        return out
    }

    func mtaSTSText() -> [String] {
        guard mtaSTS.enabled else { return ["MTA-STS: disabled ([mta_sts] enabled = false)"] }
        var out = ["MTA-STS:"]
        if let c = mtaSTS.cached {
            out.append("  cached   id \(c.id), mode \(c.policy.mode.rawValue), mx \(c.policy.mx.joined(separator: ", ")), "
                       + (c.isExpired(at: now) ? "expired (not applied)" : "expires \(PolicyExplanation.utc(c.expires))"))
        } else {
            out.append("  cached   none")
        }
        switch mtaSTS.live {
        case .policy(let id, let p)?:
            out.append("  live     id \(id), mode \(p.mode.rawValue), mx \(p.mx.joined(separator: ", ")), max_age \(p.maxAge) s")
        case .noRecord(let why)?: out.append("  live     no policy published (\(why))")
        case .lookupFailed(let why)?: out.append("  live     TXT lookup failed: \(why)")
        case .fetchFailed(let id, let why)?: out.append("  live     record id \(id), policy fetch failed: \(why)")
        case .invalidPolicy(let id, let why)?: out.append("  live     record id \(id), invalid policy: \(why)")
        case nil: out.append("  live     not looked up")
        }
        if let p = matchingPolicy, case .found(let hosts) = result.mx {
            for h in hosts {
                out.append("  \(h.name): \(p.matches(mxHost: h.name) ? "matches the policy" : "NOT in the policy")")
            }
        }
        return out
    }

    func decisionText() -> [String] {
        let d = decision
        var out = ["Decision now: \(d.level.rawValue)\(d.requiresVerification ? " (verified)" : "") decided by \(d.layer.rawValue): \(d.reason)"]
        for v in d.verdicts {
            out.append("  \(v.layer.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) \((v.level.map(\.rawValue) ?? "-").padding(toLength: 14, withPad: " ", startingAt: 0)) \(v.detail)")
        }
        if let relay {
            out.append("  route: relay \(relay); these MX hosts are not where its mail goes")
        }
        out.append("  → \(Self.words(decisionOutcome))")
        return out
    }

    func levelsText() -> [String] {
        ["What each level would do (tls-exclusive at verify strength):"] + levels.map {
            "  \($0.level.rawValue.padding(toLength: 14, withPad: " ", startingAt: 0)) \(Self.words($0.outcome))"
        }
    }

    func fitnessText() -> [String] {
        let f = fitness
        switch f {
        case .verify: return ["Fit for verify (exit 0): every address that answered offered STARTTLS and verified."]
        case .forcedOnly: return ["Fit for forced only (exit 2): every address that answered did TLS, not all verified."]
        case .neither: return ["Fit for neither forced nor verify (exit 3): an address that answered has no usable TLS."]
        case .unknown: return ["Could not tell (exit 1): no address answered."]
        }
    }
}

// MARK: JSON

extension ProbeReport {
    public typealias JSONSection = (key: String, value: @Sendable (ProbeReport) -> Any)

    public static let jsonSections: [JSONSection] = [
        ("domain", { $0.result.domain }),
        ("probed_at", { $0.now }),
        ("mx", { $0.mxJSON() }),
        ("addresses", { r in r.result.addresses.map { r.addressJSON($0) } }),
        ("not_probed", { $0.result.notProbed }),
        ("mta_sts", { $0.mtaSTSJSON() }),
        ("learned", { LearnedExplanation.json($0.learned, decision: $0.decision, settings: $0.learnedSettings, now: $0.now) }),
        ("dane", { $0.daneJSON() }),
        ("dane_note", { $0.result.dane == nil ? daneNote : "checked" }),
        ("decision", { $0.decisionJSON() }),
        ("levels", { r in
            Dictionary(uniqueKeysWithValues: r.levels.map { ($0.level.rawValue, $0.outcome.map(\.rawValue) as Any? ?? NSNull()) })
        }),
        ("fit_for", { fitWords($0.fitness) }),
        ("exit_code", { Int($0.fitness.rawValue) }),
    ]

    public func json() -> String {
        var root: [String: Any] = [:]
        for s in Self.jsonSections { root[s.key] = s.value(self) }
        let data = (try? JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    func mxJSON() -> [String: Any] {
        switch result.mx {
        case .failed(let why): return ["status": "failed", "error": why, "hosts": [Any]()]
        case .skipped: return ["status": "skipped", "error": NSNull(), "hosts": [Any]()]
        case .found(let hosts):
            let policy = matchingPolicy
            return ["status": "found", "error": NSNull(), "hosts": hosts.map { h -> [String: Any] in
                ["name": h.name, "preference": h.preference, "implicit": h.implicit,
                 "addresses": h.addresses.map(\.description),
                 "mta_sts_match": policy.map { $0.matches(mxHost: h.name) as Any } ?? NSNull()]
            }]
        }
    }

    func addressJSON(_ r: HostProbeResult) -> [String: Any] {
        let f = r.findings
        var out: [String: Any] = [
            "host": r.host, "address": r.address.description, "port": Int(r.port),
            "banner": f.banner ?? NSNull(), "starttls_offered": f.starttlsOffered ?? NSNull(),
            "ehlo_keywords": f.ehloKeywords, "ehlo_keywords_after_tls": f.ehloKeywordsAfterTLS ?? NSNull(),
            "discarded_after_starttls": f.discardedAfterSTARTTLS, "finding": ProbeVerdict.classify(r, dane: result.dane?[r.host]).rawValue,
            "failure": f.failure.map { failure -> Any in
                ["step": failure.step.rawValue, "detail": failure.detail,
                 "tls_reason": failure.tls.map { $0.kind.rawValue as Any } ?? NSNull()] as [String: Any]
            } ?? NSNull(),
            "certificates": r.certificates.map { c -> [String: Any] in
                ["subject": c.subject, "issuer": c.issuer, "dns_names": c.dnsNames,
                 "not_before": c.notBefore ?? NSNull(), "not_after": c.notAfter ?? NSNull(), "spki_sha256": c.publicKeySHA256]
            },
        ]
        if let tls = r.tls {
            var verification: [String: Any] = ["result": "trusted", "reason": NSNull(), "detail": NSNull(), "name": r.host]
            switch tls.verification {
            case .trusted: break
            case .failed(let failure):
                verification["result"] = "failed"
                verification["reason"] = failure.kind.rawValue
                verification["detail"] = failure.detail
            case .noPeerCertificate: verification["result"] = "no-certificate"
            }
            out["tls"] = ["version": tls.protocolVersion, "cipher": tls.cipher, "bits": tls.cipherBits,
                          "forward_secrecy": tls.forwardSecret, "verification": verification] as [String: Any]
        } else {
            out["tls"] = NSNull()
        }
        return out
    }

    func mtaSTSJSON() -> [String: Any] {
        var out: [String: Any] = ["enabled": mtaSTS.enabled]
        out["cached"] = mtaSTS.cached.map { c -> Any in
            ["id": c.id, "mode": c.policy.mode.rawValue, "mx": c.policy.mx, "max_age": c.policy.maxAge,
             "fetched": c.fetched, "expires": c.expires, "expired": c.isExpired(at: now)]
        } ?? NSNull()
        func live(_ status: String, id: String? = nil, detail: String? = nil, policy: STSPolicy? = nil) -> [String: Any] {
            ["status": status, "id": id ?? NSNull(), "detail": detail ?? NSNull(),
             "mode": policy?.mode.rawValue ?? NSNull(), "mx": policy?.mx ?? NSNull(), "max_age": policy?.maxAge ?? NSNull()]
        }
        switch mtaSTS.live {
        case .policy(let id, let p)?: out["live"] = live("policy", id: id, policy: p)
        case .noRecord(let why)?: out["live"] = live("no-record", detail: why)
        case .lookupFailed(let why)?: out["live"] = live("lookup-failed", detail: why)
        case .fetchFailed(let id, let why)?: out["live"] = live("fetch-failed", id: id, detail: why)
        case .invalidPolicy(let id, let why)?: out["live"] = live("invalid-policy", id: id, detail: why)
        case nil: out["live"] = NSNull()
        }
        return out
    }

    func decisionJSON() -> [String: Any] {
        let d = decision
        return ["level": d.level.rawValue, "requires_verification": d.requiresVerification, "layer": d.layer.rawValue,
                "reason": d.reason, "relay": relay ?? NSNull(), "outcome": decisionOutcome?.rawValue ?? NSNull(),
                "verdicts": d.verdicts.map { v -> [String: Any] in
                    ["layer": v.layer.rawValue, "level": v.level.map(\.rawValue) ?? NSNull(), "detail": v.detail]
                }]
    }
}

// MARK: DANE

extension ProbeReport {
    /// Each MX host's TLSA lookup and records, and which probed address's
    /// certificate chain each record describes.
    func daneText() -> [String] {
        guard let states = result.dane else { return ["DANE: \(Self.daneNote)"] }
        guard case .found(let hosts) = result.mx else { return [Self.daneHeading] }
        return Self.daneText(hosts: hosts, states: states, port: result.addresses.first?.port ?? 25, addresses: result.addresses)
    }

    static let daneHeading = "DANE (DNSSEC-validated TLSA records, RFC 7672; decides per MX host, before MTA-STS):"

    /// The DANE lines for `hosts`; `addresses`: what a probe found at them
    /// (none for `relayd policy explain`, which does not connect).
    public static func daneText(hosts: [MXHost], states: [String: DANEHostState], port: UInt16,
                                addresses: [HostProbeResult]) -> [String] {
        var out = [daneHeading]
        for h in hosts {
            let q = TLSALookup.queryName(h.name, port: port)
            switch states[h.name] ?? .insecure {
            case .insecure:
                out.append("  \(h.name): address records not signed (insecure): no TLSA lookup, no DANE")
            case .noRecords:
                out.append("  \(h.name): addresses secure; no TLSA records at \(q) (or not signed): no DANE")
            case .failed(let why):
                out.append("  \(h.name): addresses secure; \(why): delivery does not contact this host (4.7.5)")
            case .unusable(let records):
                out.append("  \(h.name): addresses secure; TLSA at \(q), none usable for SMTP: TLS required, not authenticated")
                for r in records { out.append("    \(r.presentation)  unusable (\(Self.unusableReason(r)))") }
            case .usable(let policy):
                out.append("  \(h.name): addresses secure; TLSA at \(TLSALookup.queryName(policy.baseDomain, port: port)):"
                           + " DANE authentication required")
                for r in policy.records {
                    let matches = addresses.filter { $0.host == h.name }.map { a -> String in
                        guard !a.certificates.isEmpty else { return "\(a.address): no certificate seen" }
                        guard let depth = TLSAMatching.matchingDepth(r, chain: a.certificates) else { return "\(a.address): no match" }
                        return "\(a.address): matches the certificate at depth \(depth)"
                    }
                    out.append("    \(r.presentation)")
                    for m in matches { out.append("      \(m)") }
                }
                for a in addresses where a.host == h.name {
                    let verdict: String
                    if let m = a.tls?.daneMatch { verdict = "DANE verified (by \(m))" } else if a.tls != nil {
                        verdict = "DANE FAILED: no record authenticated the server; delivery defers"
                    } else {
                        verdict = "no TLS session: delivery defers"
                    }
                    out.append("    \(a.address): \(verdict)")
                }
            }
        }
        return out
    }

    static func unusableReason(_ r: TLSARecord) -> String {
        if r.usage < TLSARecord.daneTA { return "PKIX usage \(r.usage) is not for SMTP" }
        if r.usage > TLSARecord.daneEE { return "unknown usage" }
        if r.selector > 1 { return "unknown selector" }
        if r.matchingType > 2 { return "unknown matching type" }
        return "data length \(r.data.count) does not fit matching type \(r.matchingType)"
    }

    func daneJSON() -> Any {
        guard let states = result.dane else { return NSNull() }
        guard case .found(let mx) = result.mx else { return ["hosts": [] as [Any]] }
        return Self.daneJSON(hosts: mx, states: states, addresses: result.addresses)
    }

    public static func daneJSON(hosts mx: [MXHost], states: [String: DANEHostState], addresses: [HostProbeResult]) -> [String: Any] {
        var hosts: [[String: Any]] = []
        for h in mx {
            let state = states[h.name] ?? .insecure
            var o: [String: Any] = ["host": h.name, "secure": h.secure, "state": state.logWord]
            switch state {
            case .failed(let why): o["detail"] = why
            case .unusable(let records):
                o["records"] = records.map { ["record": $0.presentation, "usable": false, "why": Self.unusableReason($0)] as [String: Any] }
            case .usable(let policy):
                o["base_domain"] = policy.baseDomain
                o["records"] = policy.records.map { r -> [String: Any] in
                    let matches = addresses.filter { $0.host == h.name }.compactMap { a -> [String: Any]? in
                        TLSAMatching.matchingDepth(r, chain: a.certificates).map { ["address": a.address.description, "depth": $0] }
                    }
                    return ["record": r.presentation, "usable": true, "matches": matches]
                }
                o["addresses"] = addresses.filter { $0.host == h.name }.map { a -> [String: Any] in
                    ["address": a.address.description, "verified": a.tls?.daneMatch != nil,
                     "matched": a.tls?.daneMatch.map(\.presentation) ?? NSNull() as Any]
                }
            default: break
            }
            hosts.append(o)
        }
        return ["hosts": hosts]
    }
}

