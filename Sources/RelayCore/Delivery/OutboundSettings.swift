// Builds the outbound side's reloadable pieces from a Config: the client
// TLS context (the configured floor and cipher policy, applied to every
// attempt at every level that uses TLS) and the policy engine.
import RelayConfig
import RelayDNS
import RelayHTTPS
import RelayLearned
import RelayMTASTS
import RelayPolicy
import RelaySMTP
import RelayTLS
import Dispatch
import Logging
#if canImport(Glibc)
import Glibc
#endif

public enum OutboundSettings {
    public static func clientTLSContext(_ config: Config) throws -> TLSContext {
        try TLSContext(TLSContextConfiguration(role: .client, caBundleFile: config.tls.caBundleFile,
                                               minimumVersion: config.tls.minimumVersion, ciphers: config.tls.ciphers))
    }

    /// The engine; with `stsPolicies`, they are the MTA-STS layer (the
    /// daemon's in-memory cache, or `relayd policy explain`'s record); with
    /// `learned` (and `[learned] enabled`), the learned-status layer.
    public static func engine(_ config: Config, stsPolicies: STSPolicies? = nil, learned: LearnedStatus? = nil,
                              now: @escaping @Sendable () -> Int = { Int(time(nil)) }) -> PolicyEngine {
        var upgrades: [any PolicyUpgradeLayer] = stsPolicies.map { [MTASTSLayer(policies: $0, now: now)] } ?? []
        if config.learned.enabled, let learned { upgrades.append(LearnedLayer(status: learned)) }
        return PolicyEngine(defaultPolicy: config.outbound.defaultPolicy, domains: config.outbound.domains, upgrades: upgrades)
    }

    /// The TLS prober with this config's trust store, floor, hostname and
    /// source address: `relayd probe`, the daily re-probe of learned
    /// domains and `relayd policy reprobe` use one.
    public static func domainProber(_ config: Config, resolver: any DNSResolving, tlsContext: TLSContext,
                                    timeoutSeconds: Int, port: UInt16? = nil) -> DomainProber {
        DomainProber(resolver: resolver,
                     prober: HostProber(tlsContext: tlsContext, heloName: config.server.hostname,
                                        timeoutSeconds: timeoutSeconds, sourceAddress: config.outbound.sourceAddress),
                     port: port ?? config.outbound.mxPort, dnssec: config.dns.dnssec)
    }

    /// Reads each relay's password file (one line; a trailing newline is
    /// not part of the password).
    public static func relayCredentials(_ config: Config) throws -> [String: Credentials] {
        var out: [String: Credentials] = [:]
        for relay in config.outbound.relays.values {
            guard let user = relay.username, let file = relay.passwordFile else { continue }
            var bytes = Array(try String(contentsOfFile: file, encoding: .utf8).utf8)
            while let last = bytes.last, last == 10 || last == 13 { bytes.removeLast() }
            out[relay.name] = Credentials(username: user, password: bytes)
        }
        return out
    }

    /// `stsPolicies`: the daemon's in-memory MTA-STS cache, kept across
    /// reloads; discovery is built for it when `[mta_sts] enabled`.
    public static func environment(config: Config, resolver: any DNSResolving, logger: Logger,
                                   stsStore: (any STSCacheStore)? = nil, stsPolicies: STSPolicies? = nil,
                                   learned: LearnedStatus? = nil,
                                   stsShared: (any SharedSTSBackend)? = nil) throws -> DeliveryEnvironment {
        let tls = try clientTLSContext(config)
        var discovery: STSDiscovery?
        if config.mtaSTS.enabled, let stsStore, let stsPolicies {
            let fetcher = HTTPSFetcher(resolver: resolver, tlsContext: tls, timeoutSeconds: config.mtaSTS.fetchTimeout)
            discovery = STSDiscovery(resolver: resolver, fetcher: fetcher, store: stsStore, policies: stsPolicies,
                                     logger: logger, now: { Int(time(nil)) }, shared: stsShared,
                                     sharedWait: config.mtaSTS.fetchTimeout)
        }
        return DeliveryEnvironment(config: config, engine: engine(config, stsPolicies: discovery?.policies, learned: learned), mx: MXResolver(resolver: resolver, trustAD: config.dns.dnssec),
                                   dns: resolver, tlsContext: tls, relayCredentials: try relayCredentials(config),
                                   pool: config.outbound.connectionReuse > 0 ? ConnectionPool(idleSeconds: config.outbound.connectionReuse) : nil,
                                   mtaSTS: discovery, learned: config.learned.enabled ? learned : nil, logger: logger, queue: DispatchQueue(label: "relayd.delivery.default"))
    }
}
