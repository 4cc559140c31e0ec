// `[escalation]`, `[forwarding]` and `[smime]`: validated so a running
// relayd never meets a tag it cannot match, a channel naming no relay, or
// an alias it could not deliver. README "Message-level controls" is the
// operator's description of the same keys.
import RelayModel
import RelayPolicy

extension ConfigBuilder {
    func buildSMIME() -> Config.SMIME? {
        var s = Config.SMIME()
        guard let t = section("smime", required: false) else { return root.table.contains(key: "smime") ? nil : s }
        defer { t.finish() }
        if let d = t.string("certificate_directory") {
            guard !d.isEmpty else { diagnostics.report(t.keyPath("certificate_directory"), "must not be empty"); return nil }
            s.certificateDirectory = resolve(d)
        }
        return s
    }

    func buildEscalation(relays: [String: Config.UpstreamRelay], smime: Config.SMIME?) -> Config.Escalation? {
        var e = Config.Escalation()
        var channelRelayLevel: PolicyLevel?
        guard let t = section("escalation", required: false) else { return root.table.contains(key: "escalation") ? nil : e }
        defer { t.finish() }
        var ok = true
        for tag in t.stringArray("subject_tags") ?? [] {
            let inner = tag.hasPrefix("[") && tag.hasSuffix("]") && tag.count >= 2 ? String(tag.dropFirst().dropLast()) : tag
            // A tag is one bracketed token of printable ASCII: what a user
            // can type into a subject line and see back unchanged.
            guard !inner.isEmpty, inner.count <= 40,
                  inner.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f && $0 != "[" && $0 != "]" }) else {
                diagnostics.report(t.keyPath("subject_tags"), "'\(tag)' is not a tag (1 to 40 printable characters, no spaces or brackets inside)")
                ok = false; continue
            }
            let spelled = "[" + inner + "]"
            if !e.subjectTags.contains(where: { $0.lowercased() == spelled.lowercased() }) { e.subjectTags.append(spelled) }
        }
        if let h = t.string("header") {
            // RFC 5322 §3.6.8 field-name: printable ASCII but ":".
            guard !h.isEmpty, h.count <= 76, h.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f && $0 != ":" }) else {
                diagnostics.report(t.keyPath("header"), "'\(h)' is not a header field name"); return nil
            }
            guard !["subject", "from", "to", "cc", "date", "message-id", "received", "tls-required"].contains(h.lowercased()) else {
                diagnostics.report(t.keyPath("header"), "'\(h)' is a standard header field; name one of your own (e.g. X-Relayd-Escalate)")
                return nil
            }
            e.header = h
        }
        if let l = t.string("level") {
            guard let level = parseLevel(l, at: t.keyPath("level")) else { return nil }
            guard level >= .forced else {
                diagnostics.report(t.keyPath("level"), "an escalation raises to forced, verify or tls-exclusive, not '\(l)'"); return nil
            }
            e.level = level
        }
        if let s = t.string("senders") {
            guard let senders = Config.Escalation.Senders(rawValue: s) else {
                diagnostics.report(t.keyPath("senders"), "'\(s)' is not authenticated, networks or everyone"); return nil
            }
            e.senders = senders
        }
        for text in t.stringArray("networks") ?? [] {
            if let n = IPNetwork(text) { e.networks.append(n) } else {
                diagnostics.report(t.keyPath("networks"), "'\(text)' is not a network (e.g. 192.0.2.0/24)"); ok = false
            }
        }
        if e.senders == .networks && e.networks.isEmpty && ok {
            diagnostics.report(t.keyPath("networks"), "senders = \"networks\" needs at least one network"); ok = false
        }
        if let c = t.string("channel") {
            switch parseChannel(c, at: t.keyPath("channel")) {
            case .relay(let name)?:
                e.channel = .relay(name)
                guard let relay = relays[name] else {
                    diagnostics.report(t.keyPath("channel"), "no [[outbound.relay]] named '\(name)'"); ok = false; break
                }
                // Checked once the level is known (below).
                channelRelayLevel = relay.level
            case .smime?:
                if smime?.certificateDirectory == nil {
                    diagnostics.report(t.keyPath("channel"), "\"smime\" needs [smime] certificate_directory"); ok = false
                }
                e.channel = .smime
            case nil: ok = false
            }
        }
        // The relay that takes an escalated message is never weaker than the
        // escalation, up to verify (a relay hop has no tls-exclusive of its
        // own); the floor also travels with the message to it.
        if let l = channelRelayLevel, l < min(e.level, .verify), case .relay(let name)? = e.channel {
            diagnostics.report(t.keyPath("channel"),
                               "relay '\(name)' is at level \(l.rawValue), below \(min(e.level, .verify).rawValue) (the escalation's level, verify at most for a relay)")
            ok = false
        }
                if ok, !e.enabled, t.table.contains(key: "channel") || t.table.contains(key: "level") {
            diagnostics.report("escalation", "names no subject_tags and no header: nothing can escalate"); ok = false
        }
        return ok ? e : nil
    }

    /// The alias table. Keys must be in `[relay] domains` (relayd forwards
    /// only mail it accepts for its own domains); one level of expansion,
    /// so a target may not itself be an alias.
    func buildForwarding(relay: Config.Relay?) -> Config.Forwarding? {
        var f = Config.Forwarding()
        guard let t = section("forwarding", required: false) else { return root.table.contains(key: "forwarding") ? nil : f }
        defer { t.finish() }
        var ok = true
        if t.table.contains(key: "tls_only") {
            if let b = t.bool("tls_only") { f.tlsOnly = b } else { ok = false }
        }
        if let l = t.string("level") {
            guard let level = parseLevel(l, at: t.keyPath("level")) else { return nil }
            guard level == .forced || level == .verify else {
                diagnostics.report(t.keyPath("level"), "a TLS-only copy's floor is forced or verify, not '\(l)'"); return nil
            }
            f.level = level
        }
        guard let table = t.subtable("aliases") else { return ok ? f : nil }
        table.markAllKnown()
        let ownDomains = relay?.domains ?? []
        for key in table.allKeys.sorted() {
            let path = table.keyPath(key)
            guard let from = Mailbox.parseForwardPath("<\(key)>"), !from.isAddressLiteral else {
                diagnostics.report(path, "'\(key)' is not a mail address"); ok = false; continue
            }
            guard DNSName.lookupKeys(from.domain.lowercased()).contains(where: ownDomains.contains) else {
                diagnostics.report(path, "\(from.domain) is not in [relay] domains: relayd forwards only mail for its own domains")
                ok = false; continue
            }
            var targetTexts: [String] = []
            var tlsOnly = f.tlsOnly
            if table.raw(key)?.table != nil, let entry = table.subtable(key) {
                defer { entry.finish() }
                targetTexts = entry.stringArray("to") ?? []
                if entry.table.contains(key: "tls_only") {
                    if let b = entry.bool("tls_only") { tlsOnly = b } else { ok = false }
                }
            } else if let list = table.stringArray(key) {
                targetTexts = list
            } else { ok = false; continue }
            var targets: [Mailbox] = []
            for text in targetTexts {
                guard let m = Mailbox.parseForwardPath("<\(text)>") else {
                    diagnostics.report(path, "'\(text)' is not a mail address"); ok = false; continue
                }
                if !targets.contains(m) { targets.append(m) }
            }
            guard !targets.isEmpty || !ok else {
                diagnostics.report(path, "forwards to no address"); ok = false; continue
            }
            f.aliases[from.description.lowercased()] = .init(targets: targets, tlsOnly: tlsOnly)
        }
        for (key, alias) in f.aliases.sorted(by: { $0.key < $1.key }) {
            for target in alias.targets where f.aliases[target.description.lowercased()] != nil {
                diagnostics.report(table.keyPath(key), "forwards to \(target), itself an alias: relayd expands one level only")
                ok = false
            }
        }
        return ok ? f : nil
    }
}
