// `relayd probe DOMAIN`: the domain TLS checker. What an administrator runs
// before choosing forced or verify for a partner, and what a help desk runs
// when a partner's mail is deferred: the MX hosts, per address STARTTLS, the
// TLS negotiated, the certificate chain and its verification, MTA-STS cached
// and live, and what relayd — at its current decision and at each level —
// would do. It sends EHLO, STARTTLS, EHLO and QUIT only, never MAIL, and
// writes nothing: the spool's MTA-STS cache is only read.
import ArgumentParser
import Dispatch
import Foundation
import Logging
import RelayCore

struct ProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Check a domain's MX hosts for STARTTLS, TLS and certificates, and say what each policy level would do.",
        discussion: """
            Sends EHLO, STARTTLS, EHLO and QUIT to each MX address (never MAIL), using the config's \
            DNS servers, trust store, TLS floor, hostname and source address.

            Exit codes:
              0  fit for verify: every address that answered offered STARTTLS and completed a handshake \
            whose chain and MX name verified (and at least one answered)
              2  fit for forced only: every address that answered did TLS, not all verified
              3  fit for neither: an address that answered has no usable TLS
              1  could not tell: config error, MX/DNS lookup failed, or no address answered
            """)

    @OptionGroup var options: ConfigOption
    @Argument(help: "The recipient domain.") var domain: String
    @Flag(help: "JSON instead of text.") var json = false
    @Option(help: "Probe this address instead of the MX hosts (MX is looked up only to name it, and not at all with --mx-name).") var ip: String?
    @Option(name: .customLong("mx-name"), help: "With --ip: the MX name the certificate must carry (default: the first MX host, else the domain).")
    var mxName: String?
    @Option(help: "The SMTP port (default: [outbound] mx_port).") var port: UInt16?
    @Option(help: "Seconds each step (connect, greeting, EHLO, STARTTLS, handshake) may take.") var timeout: Int = 10

    func validate() throws {
        guard (1...300).contains(timeout) else { throw ValidationError("--timeout must be 1 to 300 seconds") }
        if let ip, IPAddress(ip) == nil { throw ValidationError("--ip '\(ip)' is not an IP address") }
        if mxName != nil && ip == nil { throw ValidationError("--mx-name needs --ip") }
    }

    func run() throws {
        let d = DNSName.normalize(domain)
        guard STSCacheKey.isValid(d) else {
            printError("relayd probe: '\(domain)' is not a domain name")
            throw ExitCode(1)
        }
        let config: Config
        let resolver: CAresResolver
        let tls: TLSContext
        do {
            config = try ConfigLoader.load(path: options.config)
            resolver = try CAresResolver(servers: config.dns.servers)
            tls = try OutboundSettings.clientTLSContext(config)
        } catch let e as ConfigErrors {
            for error in e.errors { printError(error.description) }
            throw ExitCode(1)
        } catch {
            printError("relayd probe: \(error)")
            throw ExitCode(1)
        }
        let now = Int(Date().timeIntervalSince1970)
        let domainProber = OutboundSettings.domainProber(config, resolver: resolver, tlsContext: tls, timeoutSeconds: timeout,
                                                         port: port)

        final class Found: @unchecked Sendable {
            // Written before `group.leave()`, read after `group.wait()`.
            var result: DomainProbeResult?
            var live: STSCheck.Finding?
        }
        let found = Found()
        let group = DispatchGroup()
        let queue = DispatchQueue(label: "relayd.probe")
        group.enter()
        if let ip = ip.flatMap(IPAddress.init) {
            domainProber.probe(domain: d, address: ip, name: mxName, queue: queue) { found.result = $0; group.leave() }
        } else {
            domainProber.probe(domain: d, queue: queue) { found.result = $0; group.leave() }
        }
        if config.mtaSTS.enabled {
            group.enter()
            let fetcher = HTTPSFetcher(resolver: resolver, tlsContext: tls,
                                       timeoutSeconds: min(config.mtaSTS.fetchTimeout, timeout * 3))
            STSCheck.run(domain: d, resolver: resolver, fetcher: fetcher) { finding in
                queue.async { found.live = finding; group.leave() }
            }
        }
        // Each address has at most six steps of `timeout`; ten addresses
        // go four at a time; the DNS lookups come on top.
        let bound = timeout * 6 * 3 + 30
        guard group.wait(timeout: .now() + .seconds(bound)) == .success, let result = found.result else {
            printError("relayd probe: no result within \(bound) s")
            throw ExitCode(1)
        }

        let cached = config.mtaSTS.enabled
            ? readOnlyRecord(config, "mta-sts", d, what: "cached MTA-STS record", CachedSTSPolicy.decode) : nil
        let policies = config.mtaSTS.enabled ? STSPolicies(cached.map { [$0] } ?? []) : nil
        let learned = readOnlyRecord(config, "learned", d, what: "learned record", LearnedRecordFormat.decode)
        let status = LearnedStatus(store: ReadOnlyRecord(record: learned), settings: config.learned,
                                   logger: Logger(label: "relayd") { _ in SwiftLogNoOpLogHandler() }, now: { now })
        _ = status.reload(d)
        let decision = OutboundSettings.engine(config, stsPolicies: policies, learned: status, now: { now }).decide(d)
        let report = ProbeReport(result: result, decision: decision,
                                 mtaSTS: .init(enabled: config.mtaSTS.enabled, cached: cached, live: found.live),
                                 relay: DeliveryAttempt.Plan.relay(for: d, config: config)?.name, now: now,
                                 learned: learned, learnedSettings: config.learned)
        print(json ? report.json() : report.text())
        let code = report.fitness.rawValue
        if code != 0 { throw ExitCode(code) }
    }

    /// A record of the daemon's (`folder` under the spool), read without
    /// changing anything: a damaged one is reported and left where it is
    /// for the daemon to set aside.
    func readOnlyRecord<T>(_ config: Config, _ folder: String, _ domain: String, what: String,
                           _ decode: ([UInt8]) throws -> T) -> T? {
        let dir = config.server.spoolDirectory
        guard FileManager.default.fileExists(atPath: dir + "/" + folder), let spool = try? Spool(root: dir) else { return nil }
        do {
            guard let bytes = try spool.readRecord(folder, domain) else { return nil }
            return try decode(bytes)
        } catch {
            printError("relayd probe: the \(what) of \(domain) is unreadable (\(error)); shown as none")
            return nil
        }
    }
}

/// A store holding the one record the probe read, for the policy layer.
private struct ReadOnlyRecord: LearnedStore {
    let record: LearnedRecord?
    func get(_ domain: String) throws -> LearnedRecord? { record?.domain == domain ? record : nil }
    func put(_ record: LearnedRecord) throws {}
    func list() throws -> [String] { record.map { [$0.domain] } ?? [] }
    func delete(_ domain: String) throws -> Bool { false }
    func audit(_ line: String) throws {}
}
