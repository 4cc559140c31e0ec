// One delivery attempt for the recipients of one message at one
// destination domain: decide the policy, find the next hop (transport
// table, smarthost, or MX), try its addresses in order, and turn what
// happened into one typed result per recipient. Every address tried gets
// one structured log line (SPEC: TLS version, cipher, forward secrecy,
// verification result and the policy layer that decided); the last line of
// an attempt carries its conclusion (AttemptOutcome), and an attempt that
// never reached an address (DNS, relay lookup) gets one line of its own.
//
// The TLS rules live in two places only: ClientSession (no MAIL before the
// required TLS is up) and here (what a TLS failure means at each level).
import Dispatch
import Logging
#if canImport(Glibc)
import Glibc
#endif

public enum RecipientResult: Equatable, Sendable {
    case delivered(Reply)
    case failed(DeliveryFailure)
    /// tls-exclusive: TLS could not be had; no delivery, no bounce.
    case dropped(String)
}

public struct DomainDeliveryReport: Sendable {
    public let decision: PolicyDecision
    public let results: [Int: RecipientResult]
    /// Whether the message had outlived the queue lifetime when this
    /// attempt concluded: its transient failures are then bounces. Decided
    /// once, where the log line is written, so the queue files what the log
    /// said.
    public let lifetimeExceeded: Bool

    public init(decision: PolicyDecision, results: [Int: RecipientResult], lifetimeExceeded: Bool = false) {
        self.decision = decision
        self.results = results
        self.lifetimeExceeded = lifetimeExceeded
    }
}

/// What DomainDelivery needs from the rest of the daemon.
public struct DeliveryEnvironment: Sendable {
    public let config: Config
    public let engine: PolicyEngine
    public let mx: MXResolver
    public let dns: any DNSResolving
    /// One client context: floor and ciphers from config on every attempt.
    public let tlsContext: TLSContext
    /// AUTH credentials of the relays that have them, read once per
    /// (re)load rather than on every attempt.
    public let relayCredentials: [String: Credentials]
    /// Connections kept for the next message to the same hop (nil: none).
    public let pool: ConnectionPool?
    public let logger: Logger
    public let queue: DispatchQueue
    /// Seconds since the epoch; the queue runner's clock, so both judge the
    /// queue lifetime alike.
    public let now: @Sendable () -> Int
    /// Overrides MX lookups' port in tests; production is 25.
    public var mxPort: UInt16 { config.outbound.mxPort }

    public init(config: Config, engine: PolicyEngine, mx: MXResolver, dns: any DNSResolving,
                tlsContext: TLSContext, relayCredentials: [String: Credentials] = [:], pool: ConnectionPool? = nil,
                logger: Logger, queue: DispatchQueue, now: @escaping @Sendable () -> Int = { Int(time(nil)) }) {
        self.now = now
        self.pool = pool
        self.config = config
        self.engine = engine
        self.mx = mx
        self.dns = dns
        self.tlsContext = tlsContext
        self.relayCredentials = relayCredentials
        self.logger = logger
        self.queue = queue
    }
}

extension TLSContext: @unchecked Sendable {}

public final class DomainDelivery: @unchecked Sendable {
    struct Hop {
        let host: String
        let address: IPAddress
        let port: UInt16
        let implicitTLS: Bool
        let level: PolicyLevel
        let requiresVerification: Bool
        let credentials: Credentials?
        let via: String  // "mx", "relay NAME", "fallback NAME"
        /// MX preference; relays have one level (see hopsNotLoopingBack).
        var preference = 0
    }

    let env: DeliveryEnvironment
    let message: SpooledMessage
    let domain: String
    let indexes: [Int]
    let decision: PolicyDecision
    private var completion: ((DomainDeliveryReport) -> Void)?
    private var failures: [DeliveryFailure] = []

    public init(env: DeliveryEnvironment, message: SpooledMessage, domain: String, recipientIndexes: [Int]) {
        self.env = env
        self.message = message
        self.domain = DNSName.normalize(domain)
        self.indexes = recipientIndexes
        self.decision = env.engine.decide(domain)
    }

    public func run(completion: @escaping (DomainDeliveryReport) -> Void) {
        self.completion = completion
        env.queue.async { [self] in
            if let relayName = relayFor(domain), let relay = env.config.outbound.relays[relayName] {
                hopsForRelay(relay, via: "relay \(relayName)") { [self] hops in
                    switch hops {
                    case .failed(let f):
                        concludeAll(.failed(f), hop: nil, run: nil, detail: "relay \(relayName): \(f)")
                    case .hosts(let list): if let list = hopsNotLoopingBack(list) { tryHops(list[...]) }
                    }
                }
                return
            }
            env.mx.resolve(domain) { [self] resolution in
                env.queue.async { [self] in
                    switch resolution {
                    case .failed(let f):
                        concludeAll(.failed(f), hop: nil, run: nil, detail: f.description)
                    case .hosts(let hosts):
                        let policy = decision
                        var list: [Hop] = []
                        for h in hosts {
                            for ip in h.addresses.sorted(by: { $0.isV4 && !$1.isV4 }) {
                                list.append(Hop(host: h.name, address: ip, port: env.mxPort, implicitTLS: false,
                                                level: policy.level, requiresVerification: policy.requiresVerification,
                                                credentials: nil, via: "mx", preference: h.preference))
                            }
                        }
                        guard let list = hopsNotLoopingBack(list) else { return }
                        tryHops(list.prefix(env.config.outbound.maxAddressesPerAttempt))
                    }
                }
            }
        }
    }

    func relayFor(_ domain: String) -> String? {
        let table = env.config.outbound.transport
        return DNSName.lookupKeys(domain).lazy.compactMap { table[$0] }.first ?? env.config.outbound.smarthost
    }

    enum HopList { case hosts([Hop]); case failed(DeliveryFailure) }

    /// A relay hop: its own level, but never weaker than the destination's.
    func hopsForRelay(_ relay: Config.UpstreamRelay, via: String, completion: @escaping (HopList) -> Void) {
        let level = max(relay.level, decision.level)
        let verify = decision.requiresVerification || DomainPolicy(level: relay.level).requiresVerification
        let credentials = env.relayCredentials[relay.name]
        if relay.username != nil && credentials == nil {
            return completion(.failed(DeliveryFailure(.transient, status: "4.3.5", reason: "no password loaded for relay \(relay.name)")))
        }
        let make: (IPAddress) -> Hop = { ip in
            Hop(host: relay.address.host, address: ip, port: relay.address.port, implicitTLS: relay.implicitTLS,
                level: level, requiresVerification: verify, credentials: credentials, via: via)
        }
        if let ip = IPAddress(relay.address.host) { return completion(.hosts([make(ip)])) }
        env.mx.resolveAddresses([(0, relay.address.host)], implicit: true, domain: relay.address.host) { [self] r in
            env.queue.async {
                switch r {
                case .failed(let f): completion(.failed(f))
                case .hosts(let hosts): completion(.hosts(hosts.flatMap { $0.addresses.map(make) }))
                }
            }
        }
    }

    // MARK: trying addresses

    func tryHops(_ hops: ArraySlice<Hop>) {
        guard let hop = hops.first else { return allHopsFailed(last: nil, run: nil) }
        attempt(hop, tls: hop.level.tlsRequirement) { [self] result in
            handle(result, hop: hop, rest: hops.dropFirst())
        }
    }

    func attempt(_ hop: Hop, tls: TLSRequirement, completion: @escaping (ClientRunResult) -> Void) {
        let key = ConnectionPool.Key(address: hop.address, port: hop.port, tls: tls, verified: hop.requiresVerification,
                                     host: hop.host, user: hop.credentials?.username)
        if let pool = env.pool, let entry = pool.take(key) {
            let connection = entry.connection
            let config = sessionConfiguration(hop, tls: tls)
            let options = tlsOptions(hop)
            connection.queue.async { [self] in
                ClientRun(configuration: config, body: message.body, connection: connection, tlsContext: env.tlsContext,
                          tlsOptions: options, pool: pool, poolKey: key, reused: entry) { [self] result in
                    env.queue.async { [self] in
                        // A kept connection that turned out dead or refused
                        // RSET proves nothing about the hop: go fresh.
                        if case .failed(.keptConnectionLost) = result.outcome {
                            connectFresh(hop, tls: tls, key: key, completion: completion)
                        } else {
                            completion(result)
                        }
                    }
                }.start()
            }
            return
        }
        connectFresh(hop, tls: tls, key: key, completion: completion)
    }

    func sessionConfiguration(_ hop: Hop, tls: TLSRequirement) -> ClientSessionConfiguration {
        ClientSessionConfiguration(heloName: env.config.server.hostname, tls: tls, implicitTLS: hop.implicitTLS,
                                   envelope: message.envelope, recipientIndexes: indexes, bodySize: message.body.count,
                                   credentials: hop.credentials, keepAlive: env.pool != nil)
    }

    /// The name is always checked so the log can say what verification
    /// found; only `verify` strength aborts on it.
    func tlsOptions(_ hop: Hop) -> TLSConnection.Options {
        TLSConnection.Options(serverName: hop.host, expectedHostname: hop.host, requireVerification: hop.requiresVerification)
    }

    func connectFresh(_ hop: Hop, tls: TLSRequirement, key: ConnectionPool.Key, completion: @escaping (ClientRunResult) -> Void) {
        Connector.connect(to: hop.address, port: hop.port, from: env.config.outbound.sourceAddress,
                          timeoutSeconds: env.config.outbound.connectTimeout, queue: env.queue) { [self] r in
            switch r {
            case .failure(let e):
                completion(ClientRunResult(outcome: .failed(.connectFailed("\(e)")), tls: nil, tlsFailure: nil))
            case .success(let fd):
                let connection = Connection(fd: fd, peer: hop.address, queue: env.queue)
                ClientRun(configuration: sessionConfiguration(hop, tls: tls), body: message.body, connection: connection,
                          tlsContext: env.tlsContext, tlsOptions: tlsOptions(hop), pool: env.pool, poolKey: key,
                          completion: completion).start()
            }
        }
    }

    func handle(_ result: ClientRunResult, hop: Hop, rest: ArraySlice<Hop>) {
        if let bad = result.bodyFailure {
            // The queue file, not the hop: no other address would do better.
            let f = DeliveryFailure(.transient, status: "4.3.0", reason: "message body unreadable: \(bad)")
            return concludeAll(.failed(f), hop: hop, run: result, detail: f.description)
        }
        switch result.outcome {
        case .completed(let replies):
            var results: [Int: RecipientResult] = [:]
            for i in indexes {
                guard let r = replies[i] else {
                    results[i] = .failed(DeliveryFailure(.transient, status: "4.4.2", reason: "no reply for recipient"))
                    continue
                }
                if r.code < 300 { results[i] = .delivered(r) } else {
                    results[i] = .failed(DeliveryFailure(r.isPermanent ? .permanent : .transient,
                                                         status: r.enhanced ?? (r.isPermanent ? "5.0.0" : "4.0.0"),
                                                         reason: "\(hop.host)[\(hop.address)] said: \(r)", remoteReply: r))
                }
            }
            conclude(results, hop: hop, run: result, detail: replies.values.map(\.description).sorted().first ?? "")
        case .failed(let failure):
            // Opportunistic: a failed handshake leaves the connection
            // unusable; go again in plaintext to the same address, logged.
            if hop.level == .opportunistic, !hop.implicitTLS, case .tls = failure {
                log(.plaintextRetry(status: classify(failure, hop: hop).status), hop: hop, run: result, detail: failure.description)
                let plaintext = Hop(host: hop.host, address: hop.address, port: hop.port, implicitTLS: false,
                                    level: .none, requiresVerification: false, credentials: hop.credentials,
                                    via: hop.via + " (plaintext after TLS failure)")
                attempt(plaintext, tls: .never) { [self] again in handle(again, hop: plaintext, rest: rest) }
                return
            }
            let f = classify(failure, hop: hop)
            if stopsHere(failure) { return concludeAll(.failed(f), hop: hop, run: result, detail: f.description) }
            failures.append(f)
            if rest.isEmpty { return allHopsFailed(last: hop, run: result) }
            log(.nextAddress(status: f.status), hop: hop, run: result, detail: f.description)
            tryHops(rest)
        }
    }

    /// Failures that end the attempt for this domain, rather than moving to
    /// the next address.
    func stopsHere(_ f: ClientFailure) -> Bool {
        switch f {
        case .rejected, .needsSMTPUTF8, .messageTooBig: return true
        default: return false
        }
    }

    func classify(_ f: ClientFailure, hop: Hop) -> DeliveryFailure {
        let at = "\(hop.host)[\(hop.address)]:\(hop.port)"
        switch f {
        case .tlsNotOffered:
            return DeliveryFailure(.transient, status: "4.7.10", reason: "TLS not offered by \(at) (policy \(hop.level.rawValue))", cause: .tlsPolicy)
        case .tlsRefused(let r):
            return DeliveryFailure(.transient, status: "4.7.10", reason: "STARTTLS refused by \(at): \(r)", cause: .tlsPolicy, remoteReply: r)
        case .tls(let t):
            let status = (t.kind == .certificateUntrusted || t.kind == .hostnameMismatch) ? "4.7.15" : "4.7.5"
            return DeliveryFailure(.transient, status: status, reason: "TLS with \(at) failed: \(t.kind.rawValue): \(t.detail)", cause: .tlsPolicy)
        case .greeting(let r):
            return DeliveryFailure(.transient, status: r.enhanced.map { "4" + $0.dropFirst() } ?? "4.4.2",
                                   reason: "\(at) greeted with \(r)", remoteReply: r)
        case .rejected(let r, let stage):
            return DeliveryFailure(r.isPermanent ? .permanent : .transient, status: r.enhanced ?? (r.isPermanent ? "5.0.0" : "4.0.0"),
                                   reason: "\(at) refused \(stage): \(r)", remoteReply: r)
        case .authRejected(let r):
            return DeliveryFailure(.transient, status: "4.7.8", reason: "\(at) refused our AUTH: \(r)", remoteReply: r)
        case .protocolError(let s):
            return DeliveryFailure(.transient, status: "4.5.0", reason: "protocol error with \(at): \(s)")
        case .connectFailed(let why):
            return DeliveryFailure(.transient, status: "4.4.1", reason: "\(at): connect: \(why)", cause: .unreachable)
        case .connectionLost(let stage):
            return DeliveryFailure(.transient, status: "4.4.1", reason: "\(at): connection lost during \(stage.rawValue)",
                                   cause: .unreachable)
        case .keptConnectionLost:
            return DeliveryFailure(.transient, status: "4.4.1", reason: "\(at): kept connection no longer usable",
                                   cause: .unreachable)
        case .timeout(let stage):
            return DeliveryFailure(.transient, status: "4.4.2", reason: "\(at): timeout during \(stage.rawValue)")
        case .needsSMTPUTF8:
            return DeliveryFailure(.permanent, status: "5.6.7", reason: "\(at) does not support SMTPUTF8, which this message needs")
        case .messageTooBig(let limit):
            return DeliveryFailure(.permanent, status: "5.3.4", reason: "message is larger than \(at)'s limit of \(limit) bytes")
        }
    }

    /// Every address failed; `hop` is the last one tried (nil: there was
    /// none), and its log line carries what the attempt comes to.
    func allHopsFailed(last hop: Hop?, run: ClientRunResult?) {
        // If each address that answered failed on TLS, the domain cannot
        // give us TLS right now: the level decides.
        let tlsOnly = !failures.isEmpty && failures.contains { $0.tlsPolicy }
            && failures.allSatisfy { $0.cause == .tlsPolicy || $0.cause == .unreachable }
        let last = failures.last(where: \.tlsPolicy) ?? failures.last
            ?? DeliveryFailure(.transient, status: "4.4.4", reason: "no addresses to try")
        let detail = failures.last?.description ?? last.description
        if tlsOnly && failures.allSatisfy(\.tlsPolicy) && decision.level == .tlsExclusive {
            return concludeAll(.dropped(last.reason), hop: hop, run: run, detail: detail)
        }
        if tlsOnly, let fallback = decision.fallback, let relay = env.config.outbound.relays[fallback] {
            log(.fallback(status: last.status), hop: hop, run: run, detail: detail)
            env.logger.notice("TLS to destination unavailable; handing to fallback relay",
                              metadata: ["id": "\(message.id)", "domain": "\(domain)", "fallback": "\(fallback)", "reason": "\(last.reason)"])
            failures = []
            hopsForRelay(relay, via: "fallback \(fallback)") { [self] hops in
                switch hops {
                case .failed(let f): concludeAll(.failed(f), hop: nil, run: nil, detail: "fallback \(fallback): \(f)")
                case .hosts(let list):
                    // The fallback's own level only; it must not inherit the
                    // destination's (it exists because that failed).
                    let own = list.map { Hop(host: $0.host, address: $0.address, port: $0.port, implicitTLS: $0.implicitTLS,
                                             level: relay.level, requiresVerification: DomainPolicy(level: relay.level).requiresVerification,
                                             credentials: $0.credentials, via: $0.via) }
                    if let own = hopsNotLoopingBack(own) { tryFallback(own[...]) }
                }
            }
            return
        }
        concludeAll(.failed(last), hop: hop, run: run, detail: detail)
    }

    func tryFallback(_ hops: ArraySlice<Hop>) {
        guard let hop = hops.first else {
            let f = DeliveryFailure(.transient, status: "4.4.4", reason: "fallback relay unreachable")
            return concludeAll(.failed(f), hop: nil, run: nil, detail: f.description)
        }
        attempt(hop, tls: hop.level.tlsRequirement) { [self] result in
            if case .failed(let f) = result.outcome, !stopsHere(f) {
                let d = classify(f, hop: hop)
                let rest = hops.dropFirst()
                if rest.isEmpty { return concludeAll(.failed(d), hop: hop, run: result, detail: d.description) }
                log(.nextAddress(status: d.status), hop: hop, run: result, detail: d.description)
                return tryFallback(rest)
            }
            handle(result, hop: hop, rest: [])
        }
    }

    // MARK: concluding

    func concludeAll(_ r: RecipientResult, hop: Hop?, run: ClientRunResult?, detail: String, logged: Bool = true) {
        var results: [Int: RecipientResult] = [:]
        for i in indexes { results[i] = r }
        conclude(results, hop: hop, run: run, detail: detail, logged: logged)
    }

    /// Ends the attempt: one log line saying what the queue will do with
    /// these results (unless the caller has written its own: `logged`
    /// false), then the report. The queue lifetime is judged here, once,
    /// and travels in the report.
    func conclude(_ results: [Int: RecipientResult], hop: Hop?, run: ClientRunResult?, detail: String, logged: Bool = true) {
        guard let completion else { return }
        self.completion = nil
        let lifetimeExceeded = env.now() - message.arrival >= env.config.queue.maxLifetime
        let outcome = AttemptOutcome.concluding(indexes.compactMap { results[$0] }, lifetimeExceeded: lifetimeExceeded)
        if logged { log(outcome, hop: hop, run: run, detail: detail) }
        completion(DomainDeliveryReport(decision: decision, results: results, lifetimeExceeded: lifetimeExceeded))
    }

    // MARK: the delivery log

    func logFields(hop: Hop?, tls: TLSSessionInfo?, outcome: AttemptOutcome, detail: String) -> Logger.Metadata {
        var m: Logger.Metadata = [
            "id": "\(message.id)", "domain": "\(domain)", "nrcpt": "\(indexes.count)",
            "level": "\(hop?.level.rawValue ?? decision.level.rawValue)", "layer": "\(decision.layer.rawValue)",
            "outcome": "\(outcome.name)", "detail": "\(detail)",
        ]
        if let status = outcome.status { m["status"] = "\(status)" }
        if let split = outcome.split { m["recipients"] = "\(split)" }
        if let hop {
            m["mx"] = "\(hop.host)"
            m["ip"] = "\(hop.address)"
            m["port"] = "\(hop.port)"
            m["via"] = "\(hop.via)"
        }
        m["tls"] = "\(tls?.protocolVersion ?? "none")"
        m["cipher"] = "\(tls?.cipher ?? "none")"
        m["bits"] = "\(tls?.cipherBits ?? 0)"
        m["verify"] = "\(tls.map { "\($0.verification)" } ?? "none")"
        // Only with TLS: "fs=no" must mean a TLS session without forward
        // secrecy, never a plaintext one (a grep for it must not find those).
        if let tls { m["fs"] = "\(tls.forwardSecret ? "yes" : "no")" }
        return m
    }

    func log(_ outcome: AttemptOutcome, hop: Hop?, run: ClientRunResult?, detail: String) {
        var fields = logFields(hop: hop, tls: run?.tls, outcome: outcome, detail: detail)
        if let f = run?.tlsFailure { fields["tls_failure"] = "\(f.kind.rawValue)" }
        env.logger.info("delivery attempt", metadata: fields)
    }
}
