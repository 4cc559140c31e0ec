// Reads the TOML policy file into a validated Config, collecting every
// problem instead of stopping at the first: an operator fixing a file wants
// the whole list at once, as `nginx -t` and `postfix check` give it.
//
// Relative file paths in the config are taken relative to the directory of
// the config file itself, not the working directory, so the same file works
// from `make run`, from systemd, and from `relayd check-config` anywhere.
import RelayAuth
import RelayModel
import RelayPolicy
import RelayTLS
import Foundation
import Logging
import TOMLKit

public enum ConfigLoader {
    public static func load(path: String) throws -> Config {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigErrors(errors: [ConfigError(file: path, line: nil, key: nil,
                                                    message: "cannot read config file: \(error.localizedDescription)")])
        }
        return try parse(text, file: path)
    }

    public static func parse(_ text: String, file: String) throws -> Config {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let e as TOMLParseError {
            throw ConfigErrors(errors: [ConfigError(file: file, line: e.source.begin.line, key: nil,
                                                    message: "TOML syntax error: \(e.description)")])
        }
        let diagnostics = ConfigDiagnostics(file: file, locator: TOMLKeyLocator(source: text))
        let baseDirectory = (file as NSString).deletingLastPathComponent
        let builder = ConfigBuilder(root: ConfigReader(table: table, path: "", diagnostics: diagnostics),
                              diagnostics: diagnostics,
                              baseDirectory: baseDirectory.isEmpty ? "." : baseDirectory)
        let config = builder.build(file: file)
        if let config, diagnostics.errors.isEmpty { return config }
        throw ConfigErrors(errors: diagnostics.errors)
    }

    /// "30s", "5m", "4h", "5d" or a bare integer number of seconds.
    public static func parseDuration(_ text: String) -> Int? {
        var digits = Substring(text)
        var multiplier = 1
        if let unit = digits.last, !unit.isNumber {
            switch unit {
            case "s": multiplier = 1
            case "m": multiplier = 60
            case "h": multiplier = 3600
            case "d": multiplier = 86400
            default: return nil
            }
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
              let n = Int(digits), n <= Int.max / multiplier else { return nil }
        return n * multiplier
    }
}

struct ConfigBuilder {
    let root: ConfigReader
    let diagnostics: ConfigDiagnostics
    let baseDirectory: String

    func resolve(_ path: String) -> String {
        ((path.hasPrefix("/") ? path : baseDirectory + "/" + path) as NSString).standardizingPath
    }

    func build(file: String) -> Config? {
        let server = buildServer()
        let tls = buildTLS()
        let listeners = buildListeners(tls: tls)
        let relay = buildRelay()
        let outbound = buildOutbound()
        let queue = buildQueue()
        let dns = buildDNS()
        let limits = buildLimits()
        let log = buildLog()
        let mtaSTS = buildMTASTS()
        let learned = buildLearned()
        let tlsrpt = buildTLSRPT()
        let metrics = buildMetrics(listeners: listeners ?? [])
        let smime = buildSMIME()
        let escalation = buildEscalation(relays: outbound?.relays ?? [:], smime: smime)
        let forwarding = buildForwarding(relay: relay)
        let state = buildState()
        root.finish()
        guard let server, let tls, let listeners, let relay, let outbound, let queue, let dns, let limits, let log, let mtaSTS,
              let learned, let tlsrpt, let metrics, let smime, let escalation, let forwarding, let state
        else { return nil }
        var config = Config(file: file, server: server, listeners: listeners, tls: tls, relay: relay,
                            outbound: outbound, queue: queue, dns: dns, limits: limits, log: log)
        config.mtaSTS = mtaSTS
        config.learned = learned
        config.tlsrpt = tlsrpt
        config.metrics = metrics
        config.escalation = escalation
        config.forwarding = forwarding
        config.smime = smime
        config.state = state
        if outbound.domains.values.contains(where: \.smime) || outbound.defaultPolicy.smime, smime.certificateDirectory == nil {
            diagnostics.report("smime", "a domain's channel is \"smime\" but [smime] certificate_directory is not set")
            return nil
        }
        return config
    }

    // MARK: sections

    func section(_ name: String, required: Bool) -> ConfigReader? {
        if let s = root.subtable(name) { return s }
        if required, !root.table.contains(key: name) {
            diagnostics.report(name, "missing section [\(name)]")
        }
        return nil
    }

    func buildServer() -> Config.Server? {
        guard let s = section("server", required: true) else { return nil }
        defer { s.finish() }
        var ok = true
        let hostname = s.string("hostname")
        if hostname == nil {
            diagnostics.report(s.keyPath("hostname"), "required (the name this relay announces)"); ok = false
        } else if let h = hostname, !DomainName.isValidHostname(h) {
            diagnostics.report(s.keyPath("hostname"), "'\(h)' is not a valid host name"); ok = false
        }
        let spool = s.string("spool_dir")
        if spool?.isEmpty ?? true {
            diagnostics.report(s.keyPath("spool_dir"), "required (the queue directory)"); ok = false
        }
        var users: String?
        if let u = s.string("users_file"), !u.isEmpty {
            let resolved = resolve(u)
            if !FileManager.default.isReadableFile(atPath: resolved) {
                diagnostics.report(s.keyPath("users_file"), "users file is missing or unreadable: \(resolved)"); ok = false
            } else if let text = try? String(contentsOfFile: resolved, encoding: .utf8) {
                let (_, problems) = UsersFile.parse(text)
                for p in problems { diagnostics.report(s.keyPath("users_file"), "\(resolved):\(p.line): \(p.message)") }
                if problems.isEmpty { users = resolved } else { ok = false }
            } else {
                diagnostics.report(s.keyPath("users_file"), "users file is not UTF-8 text: \(resolved)"); ok = false
            }
        }
        let receivedAuthUser = s.bool("received_auth_user") ?? false
        guard ok, let hostname, let spool else { return nil }
        return Config.Server(hostname: hostname.lowercased(), spoolDirectory: resolve(spool), usersFile: users,
                             receivedHeaderNamesUser: receivedAuthUser)
    }

    func buildTLS() -> Config.TLS? {
        guard let t = section("tls", required: true) else { return nil }
        defer { t.finish() }
        var ok = true
        func requiredFile(_ key: String, what: String) -> String? {
            guard let p = t.string(key), !p.isEmpty else {
                diagnostics.report(t.keyPath(key), "required (\(what))"); ok = false; return nil
            }
            let resolved = resolve(p)
            guard FileManager.default.isReadableFile(atPath: resolved) else {
                diagnostics.report(t.keyPath(key), "\(what) file is missing or unreadable: \(resolved)"); ok = false
                return nil
            }
            return resolved
        }
        let cert = requiredFile("certificate", what: "certificate chain")
        let key = requiredFile("key", what: "private key")
        // The ECDSA chain of a dual setup: both keys or neither.
        var ecCert: String?, ecKey: String?
        let ecCertGiven = !(t.string("ec_certificate") ?? "").isEmpty, ecKeyGiven = !(t.string("ec_key") ?? "").isEmpty
        if ecCertGiven || ecKeyGiven {
            if !ecKeyGiven {
                diagnostics.report(t.keyPath("ec_key"), "required with ec_certificate (the ECDSA chain's private key)"); ok = false
            } else if !ecCertGiven {
                diagnostics.report(t.keyPath("ec_certificate"), "required with ec_key (the ECDSA certificate chain)"); ok = false
            } else {
                ecCert = requiredFile("ec_certificate", what: "ECDSA certificate chain")
                ecKey = requiredFile("ec_key", what: "ECDSA private key")
            }
        }
        var ca: String?
        if let c = t.string("ca_bundle"), !c.isEmpty {
            let resolved = resolve(c)
            if FileManager.default.isReadableFile(atPath: resolved) { ca = resolved } else {
                diagnostics.report(t.keyPath("ca_bundle"), "CA bundle is missing or unreadable: \(resolved)"); ok = false
            }
        }
        var floor = TLSProtocolVersion.tls1_2
        if let v = t.string("min_version") {
            if let parsed = TLSProtocolVersion(configName: v) { floor = parsed } else {
                diagnostics.report(t.keyPath("min_version"),
                                   "'\(v)' is not an allowed protocol floor (TLSv1, TLSv1.1, TLSv1.2, TLSv1.3; SSL versions are never allowed)")
                ok = false
            }
        }
        let ciphers = TLSCipherPolicy(cipherList: t.string("ciphers", default: TLSCipherPolicy.defaultCipherList),
                                      cipherSuites: t.string("ciphersuites", default: TLSCipherPolicy.defaultCipherSuites))
        guard ok, let cert, let key else { return nil }
        var tls = Config.TLS(certificateFile: cert, keyFile: key, caBundleFile: ca, minimumVersion: floor, ciphers: ciphers)
        tls.ecCertificateFile = ecCert
        tls.ecKeyFile = ecKey
        // Load it for real once: a key that does not match its certificate,
        // two chains of one key type or a cipher list that leaves nothing
        // must fail here, not at the first STARTTLS. The error names the
        // chain at fault; it is reported at that chain's certificate key.
        do {
            _ = try TLSContext(TLSContextConfiguration(role: .server, certificateChainFile: cert, privateKeyFile: key,
                                                       additionalCertificates: tls.additionalCertificates,
                                                       caBundleFile: ca, minimumVersion: floor, ciphers: ciphers))
        } catch {
            let at = (error as? TLSSetupError)?.chain == 1 ? "ec_certificate" : "certificate"
            diagnostics.report(t.keyPath(at), "TLS setup fails: \(error)")
            return nil
        }
        return tls
    }

    func buildListeners(tls: Config.TLS?) -> [Config.Listener]? {
        guard let entries = root.tableArray("listener") else {
            if !root.table.contains(key: "listener") {
                diagnostics.report("listener", "at least one [[listener]] is required")
            }
            return nil
        }
        var result: [Config.Listener] = []
        var ok = true
        for l in entries {
            defer { l.finish() }
            // Read every key before judging any, so one bad value does not
            // make its neighbours look unknown.
            let kindName = l.string("kind", default: "smtp")
            let addrText = l.string("address")
            let requireTLSSetting = l.bool("require_tls")
            let requireAuthSetting = l.bool("require_auth")
            guard let kind = Config.ListenerKind(rawValue: kindName) else {
                diagnostics.report(l.keyPath("kind"), "unknown listener kind '\(kindName)' (smtp, submission, smtps)")
                ok = false
                continue
            }
            let defaultPort: UInt16 = kind == .smtp ? 25 : (kind == .submission ? 587 : 465)
            guard let addrText else {
                diagnostics.report(l.keyPath("address"), "required (e.g. \"127.0.0.1:\(defaultPort)\")"); ok = false
                continue
            }
            guard let address = HostPort(addrText, defaultPort: defaultPort), IPAddress(address.host) != nil
                    || address.host == "*" else {
                diagnostics.report(l.keyPath("address"), "'\(addrText)' is not an IP address with optional port (use \"*:25\" for all)")
                ok = false
                continue
            }
            let requireTLS = requireTLSSetting ?? (kind != .smtp)
            let requireAuth = requireAuthSetting ?? (kind != .smtp)
            if kind == .submission && !requireTLS {
                diagnostics.report(l.keyPath("require_tls"),
                                   "a submission listener must require TLS (RFC 8314: credentials never cross in plaintext)")
                ok = false
            }
            if kind == .smtps && !requireTLS {
                diagnostics.report(l.keyPath("require_tls"), "an smtps listener is TLS from the first byte; require_tls cannot be false")
                ok = false
            }
            result.append(Config.Listener(address: address, kind: kind, requireTLS: requireTLS, requireAuth: requireAuth))
        }
        var seen = Set<HostPort>()
        for l in result where !seen.insert(l.address).inserted {
            diagnostics.report("listener", "address \(l.address) is used by two listeners"); ok = false
        }
        return ok && !result.isEmpty ? result : nil
    }

    func buildRelay() -> Config.Relay? {
        guard let r = section("relay", required: false) else {
            return root.table.contains(key: "relay") ? nil
                : Config.Relay(clientNetworks: [], domains: [], requireTLSNetworks: [], requireTLSSenderDomains: [])
        }
        defer { r.finish() }
        var ok = true
        func networks(_ key: String) -> [IPNetwork] {
            var out: [IPNetwork] = []
            for text in r.stringArray(key) ?? [] {
                if let n = IPNetwork(text) { out.append(n) } else {
                    diagnostics.report(r.keyPath(key), "'\(text)' is not a network (e.g. 192.0.2.0/24)"); ok = false
                }
            }
            return out
        }
        func domains(_ key: String) -> [String] {
            var out: [String] = []
            for d in r.stringArray(key) ?? [] {
                let bare = d.hasPrefix(".") ? String(d.dropFirst()) : d
                if DomainName.isValidHostname(bare) { out.append(d.lowercased()) } else {
                    diagnostics.report(r.keyPath(key), "'\(d)' is not a domain name"); ok = false
                }
            }
            return out
        }
        var relay = Config.Relay(clientNetworks: networks("client_networks"), domains: domains("domains"),
                                 requireTLSNetworks: networks("require_tls_networks"),
                                 requireTLSSenderDomains: domains("require_tls_sender_domains"))
        if r.table.contains(key: "honor_tls_required_no") {
            if let b = r.bool("honor_tls_required_no") { relay.honorTLSRequiredNo = b } else { ok = false }
        }
        return ok ? relay : nil
    }

    func parseLevel(_ text: String, at path: String) -> PolicyLevel? {
        if let level = PolicyLevel(configName: text) { return level }
        diagnostics.report(path, "unknown policy level '\(text)' (expected one of: \(PolicyLevel.configNames))")
        return nil
    }

    func duration(_ r: ConfigReader, _ key: String, element: (any TOMLValueConvertible)? = nil) -> Int? {
        guard let v = element ?? r.raw(key) else { return nil }
        if let i = v.int, i > 0 { return i }
        if let s = v.string, let d = ConfigLoader.parseDuration(s), d > 0 { return d }
        diagnostics.report(r.keyPath(key), "expected a positive duration such as \"30s\", \"5m\", \"4h\", \"5d\" or seconds, found \(v.debugDescription)")
        return nil
    }

    func buildQueue() -> Config.Queue? {
        let defaults = Config.Queue(retrySchedule: [300, 600, 1200, 2400, 4000], maxLifetime: 5 * 86400,
                                    minFreeSpace: 100 * 1024 * 1024)
        guard let q = section("queue", required: false) else { return root.table.contains(key: "queue") ? nil : defaults }
        defer { q.finish() }
        var ok = true
        var schedule = defaults.retrySchedule
        if let raw = q.raw("retry_schedule") {
            if let arr = raw.array, !arr.isEmpty {
                schedule = []
                for element in arr {
                    if let d = duration(q, "retry_schedule", element: element) { schedule.append(d) } else { ok = false }
                }
            } else {
                diagnostics.report(q.keyPath("retry_schedule"), "expected a non-empty array of durations"); ok = false
            }
        }
        var lifetime = defaults.maxLifetime
        if q.table.contains(key: "max_lifetime") {
            if let d = duration(q, "max_lifetime") { lifetime = d } else { ok = false }
        }
        var minFree = defaults.minFreeSpace
        if q.table.contains(key: "min_free_space") {
            if let v = q.int("min_free_space") {
                if v >= 0 { minFree = v } else { diagnostics.report(q.keyPath("min_free_space"), "must not be negative"); ok = false }
            } else { ok = false }
        }
        var budget = defaults.memoryBudget
        if q.table.contains(key: "memory_budget") {
            if let v = q.int("memory_budget") {
                if v >= 0 { budget = v } else { diagnostics.report(q.keyPath("memory_budget"), "must not be negative"); ok = false }
            } else { ok = false }
        }
        var delayWarning = defaults.delayWarning
        if let raw = q.raw("delay_warning") {
            // "0" (or 0) turns delay notices off; anything else is a
            // duration of at least one second.
            if raw.int == 0 || raw.string == "0" {
                delayWarning = 0
            } else if let d = duration(q, "delay_warning") {
                delayWarning = d
            } else { ok = false }
        }
        var sync = defaults.sync
        if q.table.contains(key: "sync") {
            if let v = q.string("sync"), let parsed = Config.Queue.Sync(rawValue: v) { sync = parsed } else {
                diagnostics.report(q.keyPath("sync"), "expected \"file\" or \"filesystem\""); ok = false
            }
        }
        return ok ? Config.Queue(retrySchedule: schedule, maxLifetime: lifetime, minFreeSpace: minFree, memoryBudget: budget,
                                 delayWarning: delayWarning, sync: sync) : nil
    }

    func buildMTASTS() -> Config.MTASTS? {
        var m = Config.MTASTS()
        guard let s = section("mta_sts", required: false) else { return root.table.contains(key: "mta_sts") ? nil : m }
        defer { s.finish() }
        var ok = true
        if s.table.contains(key: "enabled") {
            if let b = s.bool("enabled") { m.enabled = b } else { ok = false }
        }
        if s.table.contains(key: "fetch_timeout") {
            if let d = duration(s, "fetch_timeout") {
                if d <= 300 { m.fetchTimeout = d } else { diagnostics.report(s.keyPath("fetch_timeout"), "at most 5m"); ok = false }
            } else { ok = false }
        }
        if s.table.contains(key: "refresh_interval") {
            if let d = duration(s, "refresh_interval") {
                if d >= 3600 { m.refreshInterval = d } else {
                    diagnostics.report(s.keyPath("refresh_interval"), "at least 1h"); ok = false
                }
            } else { ok = false }
        }
        return ok ? m : nil
    }

    func buildLearned() -> LearnedSettings? {
        var l = LearnedSettings()
        guard let s = section("learned", required: false) else { return root.table.contains(key: "learned") ? nil : l }
        defer { s.finish() }
        var ok = true
        if s.table.contains(key: "enabled") {
            if let b = s.bool("enabled") { l.enabled = b } else { ok = false }
        }
        /// A duration key with a floor, as "at least …" in the diagnostic.
        func window(_ key: String, atLeast floor: Int, _ floorText: String, _ set: (Int) -> Void) {
            guard s.table.contains(key: key) else { return }
            guard let d = duration(s, key) else { ok = false; return }
            if d >= floor { set(d) } else { diagnostics.report(s.keyPath(key), "at least \(floorText)"); ok = false }
        }
        window("relax_after", atLeast: 86_400, "1d") { l.relaxAfter = $0 }
        window("expire_after", atLeast: 86_400, "1d") { l.expireAfter = $0 }
        window("probe_interval", atLeast: 3600, "1h") { l.probeInterval = $0 }
        window("probe_timeout", atLeast: 1, "1s") { l.probeTimeout = $0 }
        if l.probeTimeout > 300 { diagnostics.report(s.keyPath("probe_timeout"), "at most 5m"); ok = false }
        if s.table.contains(key: "probe_concurrency") {
            if let n = s.int("probe_concurrency") {
                if (1...64).contains(n) { l.probeConcurrency = n } else {
                    diagnostics.report(s.keyPath("probe_concurrency"), "between 1 and 64"); ok = false
                }
            } else { ok = false }
        }
        if ok, l.expireAfter <= l.relaxAfter {
            diagnostics.report(s.keyPath("expire_after"), "must be longer than relax_after"); ok = false
        }
        return ok ? l : nil
    }

    func buildTLSRPT() -> Config.TLSRPT? {
        var t = Config.TLSRPT()
        guard let s = section("tlsrpt", required: false) else { return root.table.contains(key: "tlsrpt") ? nil : t }
        defer { s.finish() }
        var ok = true
        if s.table.contains(key: "enabled") {
            if let b = s.bool("enabled") { t.enabled = b } else { ok = false }
        }
        /// A one-line value: printable ASCII, no more than a header line holds.
        func text(_ key: String, _ set: (String) -> Void) {
            guard s.table.contains(key: key) else { return }
            guard let v = s.string(key) else { ok = false; return }
            guard !v.isEmpty, v.utf8.count <= 200, v.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) else {
                diagnostics.report(s.keyPath(key), "must be 1 to 200 printable ASCII characters"); ok = false; return
            }
            set(v)
        }
        text("organization") { t.organization = $0 }
        text("contact") { t.contact = $0 }
        text("submitter") { v in
            let d = v.lowercased()
            if DomainName.isValidHostname(d) && d.contains(".") { t.submitter = d } else {
                diagnostics.report(s.keyPath("submitter"), "must be a domain name (the reports' submitter)"); ok = false
            }
        }
        text("from") { v in
            if let m = Mailbox.parseForwardPath("<\(v)>") { t.from = m } else {
                diagnostics.report(s.keyPath("from"), "must be a mail address"); ok = false
            }
        }
        if ok, t.enabled {
            if t.organization.isEmpty { diagnostics.report(s.keyPath("organization"), "required when tlsrpt is enabled"); ok = false }
            if t.submitter.isEmpty { diagnostics.report(s.keyPath("submitter"), "required when tlsrpt is enabled"); ok = false }
        }
        if ok, t.contact.isEmpty, !t.submitter.isEmpty { t.contact = "mailto:postmaster@\(t.submitter)" }
        return ok ? t : nil
    }

    /// `[metrics] address`: an IP address (or "*") with an optional port,
    /// 9464 by default, like a listener's; empty means no metrics listener.
    /// It may not share an address with an SMTP listener.
    func buildMetrics(listeners: [Config.Listener]) -> Config.Metrics? {
        var m = Config.Metrics()
        guard let s = section("metrics", required: false) else { return root.table.contains(key: "metrics") ? nil : m }
        defer { s.finish() }
        guard s.table.contains(key: "address") else { return m }
        guard let text = s.string("address") else { return nil }
        if text.isEmpty { return m }
        guard let address = HostPort(text, defaultPort: 9464), IPAddress(address.host) != nil || address.host == "*" else {
            diagnostics.report(s.keyPath("address"), "'\(text)' is not an IP address with optional port (e.g. \"127.0.0.1:9464\"; empty for none)")
            return nil
        }
        if address.port != 0, listeners.contains(where: { $0.address == address }) {
            diagnostics.report(s.keyPath("address"), "address \(address) is used by a listener")
            return nil
        }
        m.address = address
        return m
    }

    func buildDNS() -> Config.DNS? {
        guard let d = section("dns", required: false) else { return root.table.contains(key: "dns") ? nil : Config.DNS(servers: []) }
        defer { d.finish() }
        var servers: [HostPort] = []
        var ok = true
        for text in d.stringArray("servers") ?? [] {
            if let hp = HostPort(text, defaultPort: 53), IPAddress(hp.host) != nil { servers.append(hp) } else {
                diagnostics.report(d.keyPath("servers"), "'\(text)' is not an IP address with optional port"); ok = false
            }
        }
        var dns = Config.DNS(servers: servers)
        if d.table.contains(key: "dnssec") {
            if let b = d.bool("dnssec") { dns.dnssec = b } else { ok = false }
        }
        if ok, dns.dnssec {
            // The AD bit is only as good as the path to the validator.
            if servers.isEmpty {
                diagnostics.report(d.keyPath("dnssec"), "needs `servers` to name the validating resolvers, each on loopback (127.0.0.0/8 or ::1)")
                ok = false
            } else if let remote = servers.first(where: { !(IPAddress($0.host)?.isLoopback ?? false) }) {
                diagnostics.report(d.keyPath("dnssec"), "the AD bit is trusted only from a loopback resolver; \(remote) is not one")
                ok = false
            }
        }
        return ok ? dns : nil
    }

    func buildLimits() -> Config.Limits? {
        let defaults = Config.Limits(maxMessageSize: 36_700_160, maxRecipients: 1000, maxConnections: 1000,
                                     maxConnectionsPerIP: 50, idleTimeout: 300, dataTimeout: 600, sessionTimeout: 600, maxErrors: 10,
                                     authFailuresPerConnection: 3, authFailuresPerIP: 10, maxHops: 50)
        guard let l = section("limits", required: false) else { return root.table.contains(key: "limits") ? nil : defaults }
        defer { l.finish() }
        var ok = true
        func positive(_ key: String, _ fallback: Int) -> Int {
            guard l.table.contains(key: key) else { return fallback }
            guard let v = l.int(key) else { ok = false; return fallback }
            guard v > 0 else { diagnostics.report(l.keyPath(key), "must be greater than 0"); ok = false; return fallback }
            return v
        }
        var idle = defaults.idleTimeout
        if l.table.contains(key: "idle_timeout") {
            if let d = duration(l, "idle_timeout") { idle = d } else { ok = false }
        }
        var dataTimeout = defaults.dataTimeout
        if l.table.contains(key: "data_timeout") {
            if let d = duration(l, "data_timeout") { dataTimeout = d } else { ok = false }
        }
        var sessionTimeout = defaults.sessionTimeout
        if l.table.contains(key: "session_timeout") {
            if let d = duration(l, "session_timeout") { sessionTimeout = d } else { ok = false }
        }
        let maxSize = positive("max_message_size", defaults.maxMessageSize)
        if maxSize > Config.Limits.maxMessageSizeCap {
            diagnostics.report(l.keyPath("max_message_size"),
                               "must be at most \(Config.Limits.maxMessageSizeCap) (512 MiB), found \(maxSize)")
            ok = false
        }
        let limits = Config.Limits(
            maxMessageSize: maxSize,
            maxRecipients: positive("max_recipients", defaults.maxRecipients),
            maxConnections: positive("max_connections", defaults.maxConnections),
            maxConnectionsPerIP: positive("max_connections_per_ip", defaults.maxConnectionsPerIP),
            idleTimeout: idle,
            dataTimeout: dataTimeout,
            sessionTimeout: sessionTimeout,
            maxErrors: positive("max_errors", defaults.maxErrors),
            authFailuresPerConnection: positive("auth_failures_per_connection", defaults.authFailuresPerConnection),
            authFailuresPerIP: positive("auth_failures_per_ip", defaults.authFailuresPerIP),
            maxHops: positive("max_hops", defaults.maxHops))
        return ok ? limits : nil
    }

    func buildLog() -> Config.Log? {
        guard let l = section("log", required: false) else { return root.table.contains(key: "log") ? nil : Config.Log(level: .info) }
        defer { l.finish() }
        let name = l.string("level", default: "info")
        guard let level = Logger.Level(rawValue: name.lowercased()) else {
            diagnostics.report(l.keyPath("level"), "unknown log level '\(name)' (trace, debug, info, notice, warning, error, critical)")
            return nil
        }
        return Config.Log(level: level)
    }
}
