// Builds the outbound side's reloadable pieces from a Config: the client
// TLS context (the configured floor and cipher policy, applied to every
// attempt at every level that uses TLS) and the policy engine.
import RelayConfig
import RelayDNS
import RelayPolicy
import RelaySMTP
import RelayTLS
import Dispatch
import Logging

public enum OutboundSettings {
    public static func clientTLSContext(_ config: Config) throws -> TLSContext {
        try TLSContext(TLSContextConfiguration(role: .client, caBundleFile: config.tls.caBundleFile,
                                               minimumVersion: config.tls.minimumVersion, ciphers: config.tls.ciphers))
    }

    public static func engine(_ config: Config) -> PolicyEngine {
        PolicyEngine(defaultPolicy: config.outbound.defaultPolicy, domains: config.outbound.domains)
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

    public static func environment(config: Config, resolver: any DNSResolving, logger: Logger) throws -> DeliveryEnvironment {
        DeliveryEnvironment(config: config, engine: engine(config), mx: MXResolver(resolver: resolver), dns: resolver,
                            tlsContext: try clientTLSContext(config), relayCredentials: try relayCredentials(config),
                            pool: config.outbound.connectionReuse > 0 ? ConnectionPool(idleSeconds: config.outbound.connectionReuse) : nil,
                            logger: logger, queue: DispatchQueue(label: "relayd.delivery.default"))
    }
}
