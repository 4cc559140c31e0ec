// The one immutable, validated configuration of a running relayd. Built only
// by ConfigLoader; every field here has already passed validation, so the
// rest of RelayCore never re-checks it. Config/ may import Model, Policy,
// TLS (for the protocol/cipher vocabulary and a trial context), Logging and
// TOMLKit, and nothing that does I/O beyond reading the files it names.
import RelayModel
import RelayPolicy
import RelayTLS
import Logging

public struct Config: Sendable {
    public let file: String
    public let server: Server
    public let listeners: [Listener]
    public let tls: TLS
    public let relay: Relay
    public let outbound: Outbound
    public let queue: Queue
    public let dns: DNS
    public let limits: Limits
    public let log: Log
    public var mtaSTS = MTASTS()
    /// `[learned]`: learned TLS status and its daily probes.
    public var learned = LearnedSettings()
    /// `[tlsrpt]`: SMTP TLS reporting (RFC 8460).
    public var tlsrpt = TLSRPT()
    /// `[metrics]`: the Prometheus scrape listener.
    public var metrics = Metrics()
    /// `[escalation]`, `[forwarding]`, `[smime]`: per-message controls.
    public var escalation = Escalation()
    public var forwarding = Forwarding()
    public var smime = SMIME()
    /// `[state]`: where shared state lives (file, or PostgreSQL).
    public var state = State()

    public struct Server: Sendable {
        /// The name in the greeting, EHLO and Received headers.
        public let hostname: String
        public let spoolDirectory: String
        /// crypt(3) users file for SMTP AUTH; nil disables AUTH.
        public let usersFile: String?
        /// Put "(authenticated as USER)" in Received headers (Postfix's
        /// smtpd_sasl_authenticated_header); off by default for privacy.
        public let receivedHeaderNamesUser: Bool
    }

    public enum ListenerKind: String, CaseIterable, Sendable {
        /// Port 25 style: STARTTLS offered, AUTH optional.
        case smtp
        /// Port 587 (RFC 6409): STARTTLS required before AUTH and MAIL.
        case submission
        /// Port 465 (RFC 8314): TLS from the first byte.
        case smtps
    }

    public struct Listener: Sendable {
        public let address: HostPort
        public let kind: ListenerKind
        /// MAIL is refused (530 5.7.0) until the session is encrypted.
        public let requireTLS: Bool
        /// MAIL is refused (530 5.7.0) until the client authenticated.
        public let requireAuth: Bool
    }

    public struct TLS: Sendable {
        public let certificateFile: String
        public let keyFile: String
        /// `ec_certificate` / `ec_key`: an ECDSA chain beside the first
        /// (Postfix's smtpd_tls_eccert_file / smtpd_tls_eckey_file). Both or
        /// neither; the first chain is then of another key type (RSA).
        public var ecCertificateFile: String? = nil
        public var ecKeyFile: String? = nil
        /// Trust anchors for `verify`; nil means the system store.
        public let caBundleFile: String?
        public let minimumVersion: TLSProtocolVersion
        public let ciphers: TLSCipherPolicy

        /// The chains a server context loads after the first one.
        public var additionalCertificates: [TLSCertificateChain] {
            guard let cert = ecCertificateFile, let key = ecKeyFile else { return [] }
            return [TLSCertificateChain(chainFile: cert, keyFile: key, requiredKeyType: .ecdsa)]
        }
    }

    public struct Relay: Sendable {
        /// Clients in these networks may relay to any domain without AUTH.
        public let clientNetworks: [IPNetwork]
        /// Domains anyone may send to (the inbound-gateway role).
        public let domains: [String]
        /// Clients in these networks must use TLS before MAIL.
        public let requireTLSNetworks: [IPNetwork]
        /// Senders in these domains must arrive over TLS (".d" = subdomains).
        public let requireTLSSenderDomains: [String]
        /// RFC 8689 §5: a `TLS-Required: No` header relaxes the automatic
        /// layers (MTA-STS, DANE, learned) for its message. Default true.
        public var honorTLSRequiredNo = true
    }

    public struct Outbound: Sendable {
        /// A level, or a table as for a per-domain entry.
        public let defaultPolicy: DomainPolicy
        public var defaultLevel: PolicyLevel { defaultPolicy.level }
        /// The operator's explicit per-domain entries, keys lower-cased.
        public let domains: [String: DomainPolicy]
        /// Local address outgoing connections are made from (nil: any).
        public let sourceAddress: IPAddress?
        /// Relay that takes all mail instead of MX delivery (nil: none).
        public let smarthost: String?
        /// Domain (or ".parent") → relay name, instead of MX lookup.
        public let transport: [String: String]
        /// Named next hops: smarthost, transport targets, fallbacks.
        public let relays: [String: UpstreamRelay]
        /// Port for MX delivery (25; tests use others).
        public let mxPort: UInt16
        /// How many MX addresses one attempt may try.
        public let maxAddressesPerAttempt: Int
        /// Global and per-destination-domain simultaneous deliveries.
        public let maxConcurrentDeliveries: Int
        public let maxConcurrentPerDomain: Int
        public let connectTimeout: Int
        /// Seconds a connection is kept after a transaction for the next
        /// message to the same next hop; 0 turns reuse off.
        public let connectionReuse: Int
    }

    /// An upstream relay: its own address, TLS level and credentials.
    public struct UpstreamRelay: Sendable {
        public let name: String
        public let address: HostPort
        /// TLS from the first byte (port 465 style) instead of STARTTLS.
        public let implicitTLS: Bool
        /// The hop's own TLS level; the destination's level still applies
        /// when it is stricter.
        public let level: PolicyLevel
        public let username: String?
        /// File holding the password (kept out of the config file).
        public let passwordFile: String?
    }

    public struct Queue: Sendable {
        /// Delays between attempts, in seconds; the last repeats.
        public let retrySchedule: [Int]
        /// Seconds after which an undelivered message bounces.
        public let maxLifetime: Int
        /// New mail is refused (452 4.3.1) below this much free space.
        public let minFreeSpace: Int
        /// Bytes of message bodies the queue runner may hold in memory
        /// (handed over by the inbound side, waiting or being delivered);
        /// everything else is streamed from the spool.
        public let memoryBudget: Int
        /// Seconds a message may wait with recipients still pending before
        /// its sender gets one delay notice (RFC 3464 `Action: delayed`);
        /// 0 sends none.
        public let delayWarning: Int

        /// How a group-committed batch of accepted messages is made durable
        /// before its 250s (`[queue] sync`; Queue/Spool.swift).
        public let sync: Sync

        public enum Sync: String, Sendable, CaseIterable {
            /// fsync each queue file, then the incoming/ directory once per batch.
            case file
            /// One syncfs(2) of the spool's filesystem per batch.
            case filesystem
        }

        public init(retrySchedule: [Int], maxLifetime: Int, minFreeSpace: Int, memoryBudget: Int = Queue.defaultMemoryBudget,
                    delayWarning: Int = Queue.defaultDelayWarning, sync: Sync = Queue.defaultSync) {
            self.retrySchedule = retrySchedule
            self.maxLifetime = maxLifetime
            self.minFreeSpace = minFreeSpace
            self.memoryBudget = memoryBudget
            self.delayWarning = delayWarning
            self.sync = sync
        }

        public static let defaultSync = Sync.file

        public static let defaultMemoryBudget = 128 * 1024 * 1024
        public static let defaultDelayWarning = 4 * 3600
    }

    /// `[mta_sts]`: RFC 8461 policy discovery and enforcement for mail
    /// delivered to MX hosts.
    public struct MTASTS: Sendable {
        public var enabled = true
        /// The whole policy fetch (DNS, connect, TLS, response), seconds.
        public var fetchTimeout = 60
        /// A cached policy this old (seconds) is fetched again proactively
        /// (so is one within a quarter of its max_age of expiring).
        public var refreshInterval = 86_400
    }

    /// `[tlsrpt]`. When enabled, organization and submitter are set (the
    /// loader refuses the file otherwise).
    public struct TLSRPT: Equatable, Sendable {
        public var enabled = false
        /// The report's organization-name.
        public var organization = ""
        /// The report's contact-info; default "mailto:postmaster@<submitter>".
        public var contact = ""
        /// The submitter's domain (report file names, TLS-Report-Submitter).
        public var submitter = ""
        /// Envelope and header sender of report mail; nil: the null sender.
        public var from: Mailbox?

        public init() {}
    }

    /// `[metrics]`. No address (the default, or `address = ""`): no
    /// metrics listener.
    public struct Metrics: Equatable, Sendable {
        public var address: HostPort?
        public init() {}
    }

    public struct DNS: Sendable {
        /// Resolvers to ask; empty means the system's (/etc/resolv.conf).
        public let servers: [HostPort]
        /// The servers validate DNSSEC and their AD bit is trusted: DANE
        /// (RFC 7672) is on. Only loopback servers may be trusted so (the
        /// path to them cannot be tampered with).
        public var dnssec = false
    }

    public struct Limits: Sendable {
        /// At most `maxMessageSizeCap`.
        public let maxMessageSize: Int
        public let maxRecipients: Int
        public let maxConnections: Int
        public let maxConnectionsPerIP: Int
        /// Seconds of client silence before 421 4.4.2 (RFC 5321 §4.5.3.2: 5 min).
        public let idleTimeout: Int
        /// Seconds a whole DATA phase may take, however busy the client
        /// keeps the line (cuts off clients trickling a byte at a time).
        public let dataTimeout: Int
        /// Seconds a session may last without completing a message (each
        /// queued message restarts the clock): a client that keeps its
        /// connection busy with NOOPs still gives it back.
        public let sessionTimeout: Int
        /// 4xx/5xx replies before a session is ended.
        public let maxErrors: Int
        public let authFailuresPerConnection: Int
        /// Failed AUTH per client (IPv4 address, IPv6 /64) within 15 minutes before that client is refused.
        public let authFailuresPerIP: Int
        /// Most Received: headers a message may carry, counting the one
        /// relayd adds (Postfix's hopcount_limit): more is a mail loop,
        /// refused at DATA or, once queued, bounced with 5.4.6.
        public let maxHops: Int

        /// The hard upper limit of `max_message_size`: 512 MiB. Well under
        /// 2 GiB, so no size, count or offset of a message, dot-stuffed or
        /// wrapped in a bounce, comes near Int32 (OpenSSL's counts); and the
        /// inbound side still holds a message in memory while receiving it,
        /// so this bounds what one session can make relayd hold.
        public static let maxMessageSizeCap = 512 * 1024 * 1024
    }

    public struct Log: Sendable {
        public let level: Logger.Level
    }

    /// The keys whose new values a reload cannot apply (sockets, the spool,
    /// the resolver and the log handler are made once, at start), by name,
    /// for the "needs a restart" warning. Every other key is applied.
    public func changesNeedingRestart(from running: Config) -> [String] {
        var keys: [String] = []
        func listenerSet(_ c: Config) -> [String] {
            c.listeners.map { "\($0.address)/\($0.kind.rawValue)/\($0.requireTLS)/\($0.requireAuth)" }
        }
        if server.spoolDirectory != running.server.spoolDirectory { keys.append("server.spool_dir") }
        if listenerSet(self) != listenerSet(running) { keys.append("listener") }
        if dns.servers != running.dns.servers { keys.append("dns.servers") }
        if dns.dnssec != running.dns.dnssec { keys.append("dns.dnssec") }
        if log.level != running.log.level { keys.append("log.level") }
        // The windows are the records' (enabled is not: it is the engine's,
        // rebuilt on reload).
        var windows = learned, runningWindows = running.learned
        windows.enabled = true
        runningWindows.enabled = true
        if windows != runningWindows { keys.append("learned") }
        if tlsrpt != running.tlsrpt { keys.append("tlsrpt") }
        if metrics != running.metrics { keys.append("metrics.address") }
        if state != running.state { keys.append("state") }
        return keys
    }
}
