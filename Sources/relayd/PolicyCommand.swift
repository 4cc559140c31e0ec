// `relayd policy …`: what the policy engine decides for a domain and why,
// and the operator's hands on the MTA-STS cache and on learned TLS status.
// Safe while the daemon runs: explain and list only read (records are
// replaced atomically; a learned record's counters may trail the daemon's
// memory by up to a minute); refresh and flush change the MTA-STS record on
// disk the same way, then ask the daemon (through the spool's request
// files, like `relayd queue`) to take the record into memory. Learned
// records have one writer while the daemon runs, the daemon: pin, unpin
// and forget are handed to it as requests, and carried out here under the
// spool lock only when no daemon runs.
import ArgumentParser
import Dispatch
import Foundation
import Logging
import RelayCore

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Explain a domain's policy; list, pin, unpin or forget learned TLS status; refresh or flush a cached MTA-STS policy.",
        subcommands: [Explain.self, List.self, Pin.self, Unpin.self, Forget.self, Reprobe.self, Refresh.self, Flush.self])

    static func load(_ options: ConfigOption) throws -> (Config, Spool, FileSTSCacheStore) {
        do {
            let config = try ConfigLoader.load(path: options.config)
            let spool = try Spool(root: config.server.spoolDirectory)
            let store = FileSTSCacheStore(spool: spool, now: { Int(Date().timeIntervalSince1970) }, onDamaged: { domain, aside in
                printError("MTA-STS cache record of \(domain) was damaged; set aside as \(aside)")
            })
            return (config, spool, store)
        } catch let e as ConfigErrors {
            for error in e.errors { printError(error.description) }
            throw ExitCode(1)
        }
    }

    static func domainArgument(_ text: String) throws -> String {
        let d = DNSName.normalize(text)
        guard STSCacheKey.isValid(d) else { throw ValidationError("'\(text)' is not a domain name") }
        return d
    }

    /// The learned records from the spool (read-only here): one domain's,
    /// or all of them.
    static func learnedStatus(_ config: Config, only domain: String? = nil) throws -> LearnedStatus {
        let status = writableLearnedStatus(config, try Spool(root: config.server.spoolDirectory),
                                           logger: Logger(label: "relayd") { _ in SwiftLogNoOpLogHandler() })
        if let domain { _ = status.reload(domain) } else { status.load() }
        return status
    }

    /// The learned records over the spool's file store (a damaged record
    /// is set aside and said so on stderr), for changes made here when no
    /// daemon runs.
    static func writableLearnedStatus(_ config: Config, _ spool: Spool,
                                      logger: Logger = Logger(label: "relayd") { LogfmtHandler(label: $0, level: .notice) }) -> LearnedStatus {
        let now: @Sendable () -> Int = { Int(Date().timeIntervalSince1970) }
        let store = FileLearnedStore(spool: spool, now: now, onDamaged: { domain, aside in
            printError("learned record of \(domain) was damaged; set aside as \(aside)")
        })
        return LearnedStatus(store: store, settings: config.learned, logger: logger, now: now)
    }

    /// With [state] backend = "postgres": the shared evidence per instance
    /// and the action history of one domain (or all); nil with the file
    /// backend. A database that does not answer is said, not fatal: the
    /// local part of the answer stands on its own.
    static func sharedHistory(_ config: Config, domain: String?) -> Result<SharedLearnedHistory, SharedHistoryError>? {
        guard var pool = PGPoolConfiguration(state: config.state, applicationName: "relayd-policy") else { return nil }
        pool.size = 1
        do {
            return .success(try SharedStateQuery.run(pool) { pg, done in PGLearnedHistory.read(pg, domain: domain, completion: done) })
        } catch {
            return .failure(SharedHistoryError(description: "\(error)"))
        }
    }

    struct SharedHistoryError: Error, CustomStringConvertible {
        var description: String
    }

    enum DANEFindings {
        case found([MXHost], [String: DANEHostState])
        case notLookedUp(String)
    }

    /// What DANE says of the domain's MX hosts now: MX, address and TLSA
    /// lookups through the config's (validating) resolvers, bounded.
    static func daneLookup(_ config: Config, _ domain: String, relay: String?, decision: PolicyDecision) throws -> DANEFindings {
        guard config.dns.dnssec else { return .notLookedUp("off ([dns] dnssec = false): no TLSA lookups") }
        if let relay { return .notLookedUp("not used: mail for \(domain) goes to relay \(relay), not to its MX hosts") }
        if decision.layer == .operatorEntry {
            return .notLookedUp("not used: the [outbound.domains] entry decides (the escape hatch for broken DANE)")
        }
        let resolver = try CAresResolver(servers: config.dns.servers)
        let done = DispatchSemaphore(value: 0)
        let found = Locked<DANEFindings>(.notLookedUp("no answer within 20 s"))
        MXResolver(resolver: resolver, trustAD: true, shuffle: { $0 }).resolve(domain) { resolution in
            switch resolution {
            case .failed(let f):
                found.withLock { $0 = .notLookedUp("MX lookup failed: \(f.reason)") }
                done.signal()
            case .hosts(let hosts):
                TLSALookup(resolver: resolver).lookup(hosts, port: config.outbound.mxPort) { states in
                    found.withLock { $0 = .found(hosts, states) }
                    done.signal()
                }
            }
        }
        _ = done.wait(timeout: .now() + .seconds(20))
        return found.withLock { $0 }
    }

    /// Who runs the command, for the audit log: the login name, and the
    /// sudo user behind it when there is one.
    static var operatorName: String {
        let uid = getuid()
        var name = "uid \(uid)"
        if let pw = getpwuid(uid), let n = pw.pointee.pw_name { name = String(cString: n) }
        if let sudo = ProcessInfo.processInfo.environment["SUDO_USER"], !sudo.isEmpty, sudo != name {
            name += " (sudo by \(sudo))"
        }
        return name
    }

    /// Hands a learned-status change to the running daemon, or carries it
    /// out here (under the spool lock) when none runs.
    /// `here`: what to do without a daemon (default: apply the change to
    /// the records on disk).
    static func change(_ options: ConfigOption, _ change: LearnedChange, command: String,
                       here: ((Config, Spool) throws -> String)? = nil) throws {
        let (config, spool, _) = try load(options)
        guard config.learned.enabled else {
            printError("relayd policy \(command): learned TLS status is disabled ([learned] enabled = false)")
            throw ExitCode(1)
        }
        do {
            let result = try QueueAdmin(spool: spool).submit(.learned(change)) { _ in
                if let here { return try here(config, spool) }
                let status = writableLearnedStatus(config, spool)
                _ = status.reload(change.domain)
                // No daemon: with the shared backend the change waits in the
                // actions outbox, and the next start appends it.
                let shared = PGPoolConfiguration(state: config.state) == nil ? nil
                    : LearnedActionSync(status: status, evidence: nil, backend: OutboxOnly(), instance: config.state.instance, spool: spool,
                                        logger: Logger(label: "relayd") { _ in SwiftLogNoOpLogHandler() })
                if let shared { status.setChangeObserver { change, at in shared.record(change, at: at) } }
                let result = status.apply(change)
                shared?.persistPending()
                if let shared, !shared.pending.isEmpty { return result + " (shared with the other instances when relayd next starts)" }
                return result
            }
            print(result)
            if result.hasPrefix("error:") { throw ExitCode(1) }
        } catch let e as ExitCode {
            throw e
        } catch {
            printError("relayd policy \(command): \(error)")
            throw ExitCode(1)
        }
    }

    /// The actions outbox without a database: what is recorded is only
    /// persisted (by `persistPending`), for the daemon to append.
    struct OutboxOnly: SharedActionBackend {
        struct NotHere: Error {}
        func append(_ actions: [SharedAction], completion: @escaping @Sendable (Result<Void, any Error>) -> Void) { completion(.failure(NotHere())) }
        func actions(after: Int64, completion: @escaping @Sendable (Result<SharedActionPull, any Error>) -> Void) { completion(.failure(NotHere())) }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List learned TLS records (--learned) or cached MTA-STS policies (--mta-sts).")
        @OptionGroup var options: ConfigOption
        @Flag(help: "Learned TLS status records.") var learned = false
        @Flag(name: .customLong("mta-sts"), help: "Cached MTA-STS policies.") var mtaSTS = false
        @Flag(help: "JSON instead of text.") var json = false

        func validate() throws {
            guard learned != mtaSTS else { throw ValidationError("give one of --learned or --mta-sts") }
        }

        func run() throws {
            let (config, _, store) = try PolicyCommand.load(options)
            let now = Int(Date().timeIntervalSince1970)
            if learned {
                let records = try PolicyCommand.learnedStatus(config).records
                let shared = PolicyCommand.sharedHistory(config, domain: nil)
                if json {
                    let all = records.map { LearnedExplanation.record($0, settings: config.learned, now: now) }
                    var root: [String: Any] = ["enabled": config.learned.enabled, "records": all]
                    switch shared {
                    case .none: break
                    case .success(let history): root["shared"] = Dictionary(uniqueKeysWithValues: history.domains.map { ($0, history.json($0)) })
                    case .failure(let error): root["shared"] = ["error": error.description]
                    }
                    let data = try JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])
                    print(String(decoding: data, as: UTF8.self))
                    return
                } else if records.isEmpty {
                    print("no learned TLS records")
                } else {
                    print(LearnedExplanation.list(records, settings: config.learned, now: now))
                }
                switch shared {
                case .none: break
                case .success(let history):
                    print("")
                    if history.domains.isEmpty { print("Shared state (PostgreSQL): no evidence and no operator actions") }
                    for d in history.domains {
                        print("\(d):")
                        print(history.text(d).split(separator: "\n").dropFirst().joined(separator: "\n"))
                    }
                case .failure(let error): print("\nShared state (PostgreSQL): unavailable: \(error)")
                }
                return
            }
            let records = STSDiscovery.load(store)
            if json {
                let all = records.map { ["domain": $0.domain, "id": $0.id, "mode": $0.policy.mode.rawValue, "mx": $0.policy.mx,
                                         "fetched": $0.fetched, "expires": $0.expires, "expired": $0.isExpired(at: now)] as [String: Any] }
                let data = try JSONSerialization.data(withJSONObject: ["policies": all], options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else if records.isEmpty {
                print("no cached MTA-STS policies")
            } else {
                for r in records {
                    print("\(r.domain)  \(r.policy.mode.rawValue)  id \(r.id)  mx \(r.policy.mx.joined(separator: ","))"
                          + "  \(r.isExpired(at: now) ? "expired" : "expires \(LearnedClock.utc(r.expires))")")
                }
            }
        }
    }

    struct Pin: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fix a domain's learned TLS answer (opportunistic, forced or verify; none holds learning back).",
            discussion: "The pin is the learned layer's answer: like learned status it only raises above default_level, and the operator's [outbound.domains] entry, DANE and MTA-STS come first. A pinned record never relaxes or expires.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The recipient domain.") var domain: String
        @Argument(help: "none, opportunistic, forced or verify.") var level: String
        @Option(help: "Last moment of the pin: YYYY-MM-DD (its start, UTC) or YYYY-MM-DDTHH:MM:SSZ.") var until: String?
        @Option(help: "Why (kept in the record and the audit log).") var reason: String = ""

        func run() throws {
            let d = try PolicyCommand.domainArgument(domain)
            guard let lvl = PolicyLevel(configName: level), LearnedRecord.Pin.levels.contains(lvl) else {
                throw ValidationError("a pin's level is one of \(LearnedRecord.Pin.levels.map(\.rawValue).joined(separator: ", "))")
            }
            var end: Int?
            if let until {
                guard let t = LearnedClock.parse(until) else { throw ValidationError("--until: '\(until)' is not YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ") }
                end = t
            }
            try PolicyCommand.change(options, .pin(domain: d, level: lvl.rawValue, until: end, reason: reason, by: PolicyCommand.operatorName),
                                     command: "pin")
        }
    }

    struct Unpin: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a domain's pin; learned status decides again.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The recipient domain.") var domain: String

        func run() throws {
            try PolicyCommand.change(options, .unpin(domain: try PolicyCommand.domainArgument(domain), by: PolicyCommand.operatorName),
                                     command: "unpin")
        }
    }

    struct Forget: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Reset a domain's learned TLS record (audited); an active pin stays.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The recipient domain.") var domain: String

        func run() throws {
            try PolicyCommand.change(options, .forget(domain: try PolicyCommand.domainArgument(domain), by: PolicyCommand.operatorName),
                                     command: "forget")
        }
    }

    struct Reprobe: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Probe a learned domain's MX hosts now, as the daily probe does, and record the result.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The recipient domain.") var domain: String

        func run() throws {
            let d = try PolicyCommand.domainArgument(domain)
            try PolicyCommand.change(options, .reprobe(domain: d, by: PolicyCommand.operatorName), command: "reprobe") { config, spool in
                try Self.probeHere(config, spool, d)
            }
        }

        /// No daemon: probe here, under the spool lock, and write the record.
        static func probeHere(_ config: Config, _ spool: Spool, _ domain: String) throws -> String {
            let now: @Sendable () -> Int = { Int(Date().timeIntervalSince1970) }
            let status = PolicyCommand.writableLearnedStatus(config, spool)
            _ = status.reload(domain)
            guard status.record(domain) != nil else { return "\(domain): no learned record; nothing to probe" }
            let resolver = try CAresResolver(servers: config.dns.servers)
            let prober = OutboundSettings.domainProber(config, resolver: resolver, tlsContext: try OutboundSettings.clientTLSContext(config),
                                                       timeoutSeconds: config.learned.probeTimeout)
            let done = DispatchSemaphore(value: 0)
            let found = Locked<LearnedProbeReport?>(nil)
            LearnedProbing.probe(prober, queue: DispatchQueue(label: "relayd.reprobe"), now: now)(domain) { report in
                found.withLock { $0 = report }
                done.signal()
            }
            let bound = config.learned.probeTimeout * 18 + 30
            guard done.wait(timeout: .now() + .seconds(bound)) == .success, let report = found.withLock({ $0 }) else {
                return "error: \(domain): the probe did not finish within \(bound) s"
            }
            status.observeProbe(domain: domain, probe: report.probe, hosts: report.hosts, mx: report.mx, keys: report.keys)
            let p = report.probe
            return "\(domain): probed; " + (p.answered ? "\(p.seen) at \(p.host)" : "no answer") + (p.detail.isEmpty ? "" : " (\(p.detail))")
        }
    }

    /// Tells a running daemon to take the domain's record from disk.
    static func tellDaemon(_ spool: Spool, _ domain: String) throws -> String {
        try QueueAdmin(spool: spool).submit(.reloadSTS(domain))
    }

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Each layer's answer for a domain, the winner, and its cached MTA-STS policy.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The recipient domain.") var domain: String
        @Flag(help: "JSON instead of text.") var json = false

        func run() throws {
            let d = try PolicyCommand.domainArgument(domain)
            let (config, _, store) = try PolicyCommand.load(options)
            let now = Int(Date().timeIntervalSince1970)
            let cached = try? store.get(d)
            let policies = config.mtaSTS.enabled ? STSPolicies(cached.map { [$0] } ?? []) : nil
            let learned = try PolicyCommand.learnedStatus(config, only: d)
            let decision = OutboundSettings.engine(config, stsPolicies: policies, learned: learned, now: { now }).decide(d)
            let relay = DeliveryAttempt.Plan.relay(for: d, config: config)
            let record = learned.record(d)
            let dane = try PolicyCommand.daneLookup(config, d, relay: relay?.name, decision: decision)
            if json {
                var extra: [String: Any] = ["learned": LearnedExplanation.json(record, decision: decision, settings: config.learned, now: now)]
                switch PolicyCommand.sharedHistory(config, domain: d) {
                case .none: break
                case .success(let history): extra["shared"] = history.json(d)
                case .failure(let error): extra["shared"] = ["error": error.description]
                }
                switch dane {
                case .found(let hosts, let states): extra["dane"] = ProbeReport.daneJSON(hosts: hosts, states: states, addresses: [])
                case .notLookedUp(let why): extra["dane"] = NSNull(); extra["dane_note"] = why
                }
                print(PolicyExplanation.json(decision, cached: cached, enabled: config.mtaSTS.enabled, relay: relay?.name, now: now,
                                             extra: extra))
            } else {
                print(PolicyExplanation.text(decision, cached: cached, enabled: config.mtaSTS.enabled, relay: relay?.name, now: now))
                print(LearnedExplanation.text(record, decision: decision, settings: config.learned, now: now))
                switch PolicyCommand.sharedHistory(config, domain: d) {
                case .none: break
                case .success(let history): print(history.text(d))
                case .failure(let error): print("Shared state (PostgreSQL): unavailable: \(error)")
                }
                switch dane {
                case .found(let hosts, let states):
                    print(ProbeReport.daneText(hosts: hosts, states: states, port: config.outbound.mxPort, addresses: []).joined(separator: "\n"))
                case .notLookedUp(let why): print("DANE: \(why)")
                }
            }
        }
    }

    struct Refresh: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Fetch a domain's MTA-STS policy now, whatever its id.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The recipient domain.") var domain: String

        func run() throws {
            let d = try PolicyCommand.domainArgument(domain)
            let (config, spool, store) = try PolicyCommand.load(options)
            guard config.mtaSTS.enabled else {
                printError("relayd policy refresh: MTA-STS is disabled ([mta_sts] enabled = false)")
                throw ExitCode(1)
            }
            let logger = Logger(label: "relayd") { label in LogfmtHandler(label: label, level: .info) }
            let resolver: CAresResolver
            let tls: TLSContext
            do {
                resolver = try CAresResolver(servers: config.dns.servers)
                tls = try OutboundSettings.clientTLSContext(config)
            } catch {
                printError("relayd policy refresh: \(error)")
                throw ExitCode(1)
            }
            let policies = STSPolicies(STSDiscovery.load(store))
            let before = policies.record(d)
            let discovery = STSDiscovery(resolver: resolver,
                                         fetcher: HTTPSFetcher(resolver: resolver, tlsContext: tls, timeoutSeconds: config.mtaSTS.fetchTimeout),
                                         store: store, policies: policies, logger: logger, now: { Int(Date().timeIntervalSince1970) })
            let done = DispatchSemaphore(value: 0)
            discovery.refresh(d) { done.signal() }
            guard done.wait(timeout: .now() + .seconds(config.mtaSTS.fetchTimeout + 15)) == .success else {
                printError("relayd policy refresh: no answer within \(config.mtaSTS.fetchTimeout + 15) s")
                throw ExitCode(1)
            }
            let after = policies.record(d)
            if let after, after != before, after.lastResult == "ok", after.fetched != before?.fetched {
                print("\(d): fetched policy id \(after.id), mode \(after.policy.mode.rawValue), mx \(after.policy.mx.joined(separator: ", "))")
            } else if let after {
                print("\(d): not fetched (\(after.lastAttempt == before?.lastAttempt ? "see the log above" : after.lastResult)); the cached policy id \(after.id) stays")
            } else {
                print("\(d): no MTA-STS policy (see the log above)")
            }
            do { print(try PolicyCommand.tellDaemon(spool, d)) } catch {
                printError("relayd policy refresh: the daemon did not take the new record: \(error)")
                throw ExitCode(1)
            }
        }
    }

    struct Flush: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Forget a domain's cached MTA-STS policy (it is discovered again on the next delivery).")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The recipient domain.") var domain: String

        func run() throws {
            let d = try PolicyCommand.domainArgument(domain)
            let (_, spool, store) = try PolicyCommand.load(options)
            do {
                let removed = try store.delete(d)
                print(removed ? "\(d): cached MTA-STS policy removed" : "\(d): no cached MTA-STS policy")
                print(try PolicyCommand.tellDaemon(spool, d))
            } catch {
                printError("relayd policy flush: \(error)")
                throw ExitCode(1)
            }
        }
    }
}
