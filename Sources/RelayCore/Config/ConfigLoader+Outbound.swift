// The [outbound] section: the default level, per-domain entries (a level
// name or a table with strength and fallback), next-hop relays, the
// transport table and the delivery limits. Split from ConfigLoader.swift
// to keep each file readable in one sitting.
import RelayModel
import RelayPolicy
import Foundation
import TOMLKit

extension ConfigBuilder {
    func buildOutbound() -> Config.Outbound? {
        let empty = Config.Outbound(defaultPolicy: DomainPolicy(level: .opportunistic), domains: [:], sourceAddress: nil,
                                    smarthost: nil, transport: [:], relays: [:], mxPort: 25, maxAddressesPerAttempt: 5,
                                    maxConcurrentDeliveries: 50, maxConcurrentPerDomain: 10, connectTimeout: 30,
                                    connectionReuse: 5)
        guard let o = section("outbound", required: false) else {
            return root.table.contains(key: "outbound") ? nil : empty
        }
        defer { o.finish() }
        var ok = true
        var defaultPolicy = empty.defaultPolicy
        if o.table.contains(key: "default_level") {
            if let p = parseDomainPolicy(o, key: "default_level", path: o.keyPath("default_level")) { defaultPolicy = p } else { ok = false }
        }
        var source: IPAddress?
        if let s = o.string("source_address"), !s.isEmpty {
            if let ip = IPAddress(s) { source = ip } else {
                diagnostics.report(o.keyPath("source_address"), "'\(s)' is not an IP address"); ok = false
            }
        }
        func positive(_ key: String, _ fallback: Int) -> Int {
            guard o.table.contains(key: key) else { return fallback }
            guard let v = o.int(key) else { ok = false; return fallback }
            guard v > 0 else { diagnostics.report(o.keyPath(key), "must be greater than 0"); ok = false; return fallback }
            return v
        }
        let mxPort = positive("mx_port", 25)
        if mxPort > 65535 { diagnostics.report(o.keyPath("mx_port"), "not a port number"); ok = false }
        let maxAddresses = positive("max_addresses_per_attempt", empty.maxAddressesPerAttempt)
        let maxConcurrent = positive("max_concurrent_deliveries", empty.maxConcurrentDeliveries)
        let maxPerDomain = positive("max_concurrent_per_domain", empty.maxConcurrentPerDomain)
        var connectTimeout = empty.connectTimeout
        if o.table.contains(key: "connect_timeout") {
            if let d = duration(o, "connect_timeout") { connectTimeout = d } else { ok = false }
        }
        var connectionReuse = empty.connectionReuse
        if let raw = o.raw("connection_reuse") {
            // "0s" (or 0) is allowed here: it turns reuse off.
            let seconds = raw.int ?? raw.string.flatMap { $0 == "0" ? 0 : ConfigLoader.parseDuration($0) }
            if let seconds, (0...300).contains(seconds) { connectionReuse = seconds } else {
                diagnostics.report(o.keyPath("connection_reuse"),
                                   "expected a duration from \"0s\" (off) to \"5m\", found \(raw.debugDescription)")
                ok = false
            }
        }

        var relays: [String: Config.UpstreamRelay] = [:]
        for r in o.tableArray("relay") ?? [] {
            defer { r.finish() }
            let name = r.string("name")
            let addressText = r.string("address")
            let implicitTLS = r.bool("implicit_tls") ?? false
            let levelName = r.string("level", default: "verify")
            let username = r.string("username")
            let passwordFile = r.string("password_file")
            guard let name, !name.isEmpty else { diagnostics.report(r.keyPath("name"), "required"); ok = false; continue }
            guard let addressText, let address = HostPort(addressText, defaultPort: implicitTLS ? 465 : 25),
                  IPAddress(address.host) != nil || DomainName.isValidHostname(address.host) else {
                diagnostics.report(r.keyPath("address"), "expected \"host:port\""); ok = false; continue
            }
            guard let level = parseLevel(levelName, at: r.keyPath("level")) else { ok = false; continue }
            var resolvedPassword: String?
            if let pf = passwordFile, !pf.isEmpty {
                let path = resolve(pf)
                guard FileManager.default.isReadableFile(atPath: path) else {
                    diagnostics.report(r.keyPath("password_file"), "missing or unreadable: \(path)"); ok = false; continue
                }
                resolvedPassword = path
            }
            if (username?.isEmpty ?? true) != (resolvedPassword == nil) {
                diagnostics.report(r.keyPath("username"), "username and password_file go together"); ok = false; continue
            }
            if relays[name] != nil { diagnostics.report(r.keyPath("name"), "relay '\(name)' defined twice"); ok = false; continue }
            relays[name] = Config.UpstreamRelay(name: name, address: address, implicitTLS: implicitTLS, level: level,
                                        username: username?.isEmpty == false ? username : nil, passwordFile: resolvedPassword)
        }
        func relayName(_ value: String, at path: String) -> String? {
            guard relays[value] != nil else {
                diagnostics.report(path, "no [[outbound.relay]] named '\(value)'"); ok = false; return nil
            }
            return value
        }
        var smarthost: String?
        if let s = o.string("smarthost"), !s.isEmpty { smarthost = relayName(s, at: o.keyPath("smarthost")) }

        var transport: [String: String] = [:]
        if let t = o.subtable("transport") {
            t.markAllKnown()
            for key in t.allKeys.sorted() {
                let domain = key.lowercased()
                guard DomainName.isValidHostname(domain.hasPrefix(".") ? String(domain.dropFirst()) : domain) else {
                    diagnostics.report(t.keyPath(key), "'\(key)' is not a domain name"); ok = false; continue
                }
                guard let v = t.raw(key)?.string else {
                    diagnostics.report(t.keyPath(key), "expected a relay name"); ok = false; continue
                }
                if let name = relayName(v, at: t.keyPath(key)) { transport[domain] = name }
            }
        }

        var domains: [String: DomainPolicy] = [:]
        if let table = o.subtable("domains") {
            table.markAllKnown()
            for name in table.allKeys.sorted() {
                let path = table.keyPath(name)
                let domain = name.lowercased()
                guard DomainName.isValidHostname(domain.hasPrefix(".") ? String(domain.dropFirst()) : domain) else {
                    diagnostics.report(path, "'\(name)' is not a domain name (\".example.com\" matches subdomains)"); ok = false
                    continue
                }
                if let policy = parseDomainPolicy(table, key: name, path: path) {
                    if let f = policy.fallback, relayName(f, at: path) == nil { continue }
                    if domains.updateValue(policy, forKey: domain) != nil {
                        diagnostics.report(path, "domain listed twice (names are case-insensitive)"); ok = false
                    }
                } else { ok = false }
            }
        }
        if let f = defaultPolicy.fallback, relayName(f, at: o.keyPath("default_level")) == nil { ok = false }
        guard ok else { return nil }
        return Config.Outbound(defaultPolicy: defaultPolicy, domains: domains, sourceAddress: source, smarthost: smarthost,
                               transport: transport, relays: relays, mxPort: UInt16(mxPort),
                               maxAddressesPerAttempt: maxAddresses, maxConcurrentDeliveries: maxConcurrent,
                               maxConcurrentPerDomain: maxPerDomain, connectTimeout: connectTimeout,
                               connectionReuse: connectionReuse)
    }

    /// A domain's value is a level name, or a table { level, strength }.
    func parseDomainPolicy(_ table: ConfigReader, key: String, path: String) -> DomainPolicy? {
        guard let raw = table.raw(key) else { return nil }
        if let s = raw.string {
            return parseLevel(s, at: path).map { DomainPolicy(level: $0) }
        }
        guard let sub = table.subtable(key) else { return nil }
        defer { sub.finish() }
        guard let levelName = sub.string("level") else {
            diagnostics.report(sub.keyPath("level"), "required"); return nil
        }
        guard let level = parseLevel(levelName, at: sub.keyPath("level")) else { return nil }
        var strength = DomainPolicy.Strength.verify
        var fallback = sub.string("fallback")
        if fallback != nil && level != .forced && level != .verify {
            diagnostics.report(sub.keyPath("fallback"), "only forced and verify take a fallback"); return nil
        }
        // The stronger channel: "relay:NAME" is the fallback relay by
        // another name; "smime" encrypts the message itself.
        var smime = false
        if let c = sub.string("channel") {
            guard level == .forced || level == .verify else {
                diagnostics.report(sub.keyPath("channel"), "only forced and verify take a channel"); return nil
            }
            switch parseChannel(c, at: sub.keyPath("channel")) {
            case .smime?: smime = true
            case .relay(let name)?:
                if fallback != nil && fallback != name {
                    diagnostics.report(sub.keyPath("channel"), "names relay '\(name)' but fallback names '\(fallback!)'"); return nil
                }
                fallback = name
            case nil: return nil
            }
        }
        if let s = sub.string("strength") {
            guard level == .tlsExclusive else {
                diagnostics.report(sub.keyPath("strength"), "only tls-exclusive takes a strength"); return nil
            }
            guard let parsed = DomainPolicy.Strength(rawValue: s) else {
                diagnostics.report(sub.keyPath("strength"), "'\(s)' is not forced or verify"); return nil
            }
            strength = parsed
        }
        return DomainPolicy(level: level, exclusiveStrength: strength, fallback: fallback, smime: smime)
    }

    /// `"smime"` or `"relay:NAME"` (the relay is checked where relays are).
    func parseChannel(_ text: String, at path: String) -> Config.SecureChannel? {
        if text == "smime" { return .smime }
        if text.hasPrefix("relay:"), !text.dropFirst(6).isEmpty { return .relay(String(text.dropFirst(6))) }
        diagnostics.report(path, "'\(text)' is not a channel (expected \"smime\" or \"relay:NAME\")")
        return nil
    }
}
