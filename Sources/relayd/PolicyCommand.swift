// `relayd policy …`: what the policy engine decides for a domain and why,
// and the operator's hands on the MTA-STS cache. Safe while the daemon
// runs: explain only reads (cache records are replaced atomically);
// refresh and flush change the record on disk the same way, then ask the
// daemon (through the spool's request files, like `relayd queue`) to take
// the record into memory.
import ArgumentParser
import Dispatch
import Foundation
import Logging
import RelayCore

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Explain a domain's policy; refresh or flush its cached MTA-STS policy.",
        subcommands: [Explain.self, Refresh.self, Flush.self])

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
            let decision = OutboundSettings.engine(config, stsPolicies: policies, now: { now }).decide(d)
            let relay = DeliveryAttempt.Plan.relay(for: d, config: config)
            if json {
                print(PolicyExplanation.json(decision, cached: cached, enabled: config.mtaSTS.enabled, relay: relay?.name, now: now))
            } else {
                print(PolicyExplanation.text(decision, cached: cached, enabled: config.mtaSTS.enabled, relay: relay?.name, now: now))
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
