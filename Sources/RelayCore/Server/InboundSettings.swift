// Everything an inbound session needs that a SIGHUP may replace: built
// whole from a Config, swapped whole, never mutated. A session keeps the
// snapshot it started with.
import RelayAuth
import RelayConfig
import RelayIO
import RelayModel
import RelaySMTP
import RelayTLS
import Foundation
import Logging

public final class InboundSettings: Sendable {
    public let config: Config
    public let tlsContext: TLSContext
    public let users: UsersFile?
    /// Made with the users file, since its decoys come from the file.
    public let verifier: PasswordVerifier?

    public init(config: Config) throws {
        self.config = config
        let tls = config.tls
        self.tlsContext = try TLSContext(TLSContextConfiguration(
            role: .server, certificateChainFile: tls.certificateFile, privateKeyFile: tls.keyFile,
            additionalCertificates: tls.additionalCertificates,
            caBundleFile: tls.caBundleFile, minimumVersion: tls.minimumVersion, ciphers: tls.ciphers))
        if let path = config.server.usersFile {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            let (users, problems) = UsersFile.parse(text)
            if let first = problems.first { throw ConfigErrors(errors: [ConfigError(file: path, line: first.line, key: nil, message: first.message)]) }
            self.users = users
            self.verifier = PasswordVerifier(users: users)
        } else {
            self.users = nil
            self.verifier = nil
        }
    }

    func sessionConfiguration(for listener: Config.Listener, client: IPAddress) -> ServerSessionConfiguration {
        let relay = config.relay
        let limits = config.limits
        let mustTLS = listener.requireTLS || relay.requireTLSNetworks.contains { $0.contains(client) }
        return ServerSessionConfiguration(
            hostname: config.server.hostname,
            startTLSAvailable: listener.kind != .smtps,
            requireTLS: mustTLS,
            requireAuth: listener.requireAuth,
            authAvailable: users != nil,
            clientIsTrusted: relay.clientNetworks.contains { $0.contains(client) },
            relayDomains: Set(relay.domains),
            requireTLSSenderDomains: Set(relay.requireTLSSenderDomains),
            maxMessageSize: limits.maxMessageSize,
            maxRecipients: limits.maxRecipients,
            maxErrors: limits.maxErrors,
            maxAuthFailures: limits.authFailuresPerConnection,
            maxHops: limits.maxHops)
    }
}
