import ArgumentParser
import Foundation
import Dispatch
import RelayCore
import RelaySync
#if canImport(Glibc)
import Glibc
#endif

/// `relayd check-config`: like `nginx -t`, every problem, exit 0 or 1.
struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Check the config file and every file it names; print all problems.")

    @OptionGroup var options: ConfigOption

    func run() throws {
        do {
            let config = try ConfigLoader.load(path: options.config)
            for warning in routeWarnings(config) { printError("\(options.config): warning: \(warning)") }
            for warning in forwardingWarnings(config) { printError("\(options.config): warning: \(warning)") }
            print("\(options.config): configuration OK (\(config.listeners.count) listeners, default level \(config.outbound.defaultLevel.rawValue), \(config.outbound.domains.count) per-domain entries)")
        } catch let e as ConfigErrors {
            for error in e.errors { printError(error.description) }
            printError("\(options.config): \(e.errors.count) problem\(e.errors.count == 1 ? "" : "s") found")
            throw ExitCode(1)
        }
    }
}

extension CheckConfig {
    /// Where mail would go (RouteCheck): warnings only. DNS gets a short
    /// timeout, and a resolver that cannot be reached is itself a warning,
    /// never a failed check: the check may run where DNS is not.
    func routeWarnings(_ config: Config) -> [String] {
        guard !config.relay.domains.isEmpty || !config.outbound.relays.isEmpty else { return [] }
        let resolver: CAresResolver
        do { resolver = try CAresResolver(servers: config.dns.servers, timeoutMilliseconds: 1500, tries: 1) } catch {
            return ["relay domains and relays not checked: \(error)"]
        }
        let found = Locked<[String]>([])
        let done = DispatchSemaphore(value: 0)
        let check = RouteCheck(config: config, resolver: resolver)
        check.run { warnings in
            found.withLock { $0 = warnings }
            done.signal()
        }
        guard done.wait(timeout: .now() + 10) == .success else {
            return ["relay domains and relays not checked: DNS did not answer within 10 seconds"]
        }
        return found.withLock { $0 }
    }
}

extension CheckConfig {
    /// TLS-only forwarding targets known not to take TLS: the learned
    /// records in the spool (when there is one) and a probe of each
    /// target domain, bounded like the route check.
    func forwardingWarnings(_ config: Config) -> [String] {
        guard !ForwardingCheck.targets(config.forwarding).isEmpty else { return [] }
        var records: [String: LearnedRecord] = [:]
        let dir = config.server.spoolDirectory
        if FileManager.default.fileExists(atPath: dir), let spool = try? Spool(root: dir) {
            let store = FileLearnedStore(spool: spool, now: { Int(time(nil)) }, onDamaged: { _, _ in })
            for (domain, _) in ForwardingCheck.targets(config.forwarding) { records[domain] = try? store.get(domain) }
        }
        let prober: DomainProber?
        do {
            let resolver = try CAresResolver(servers: config.dns.servers, timeoutMilliseconds: 1500, tries: 1)
            prober = OutboundSettings.domainProber(config, resolver: resolver, tlsContext: try OutboundSettings.clientTLSContext(config),
                                                   timeoutSeconds: 5)
        } catch {
            prober = nil
        }
        let found = Locked<[String]?>(nil)
        let done = DispatchSemaphore(value: 0)
        let known = records
        ForwardingCheck.run(config.forwarding, learned: { known[$0] }, prober: prober, now: Int(time(nil)),
                            queue: DispatchQueue(label: "relayd.check-config.forwarding")) { warnings in
            found.withLock { $0 = warnings }
            done.signal()
        }
        guard done.wait(timeout: .now() + 30) == .success else {
            return ["[forwarding] targets not checked: the probes did not finish within 30 seconds"]
        }
        return found.withLock { $0 } ?? []
    }
}

func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
