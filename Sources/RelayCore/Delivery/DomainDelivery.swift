// One delivery attempt for the recipients of one message at one
// destination domain. What to do is decided by DeliveryAttempt, a sans-IO
// state machine (hop order, plaintext retry, fallback, tls-exclusive's
// drop); this file is its driver: it asks the resolver, connects or takes a
// kept connection, runs ClientRun, writes the log, and hands the machine
// each answer. Every address tried gets one structured log line (SPEC: TLS
// version, cipher, forward secrecy, verification result and the policy
// layer that decided); the last line of an attempt carries its conclusion
// (AttemptOutcome), and an attempt that never reached an address (DNS,
// relay lookup) gets one line of its own.
//
// The TLS rules live in two places only: ClientSession (no MAIL before the
// required TLS is up) and DeliveryAttempt (what a TLS failure means at
// each level).
import RelayConfig
import RelayDNS
import RelayIO
import RelayLearned
import RelayMetrics
import RelayModel
import RelayPolicy
import RelayMTASTS
import RelayQueue
import RelaySMTP
import RelaySTS
import RelayTLS
import RelayTLSRPT
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
    /// MTA-STS discovery (nil: `[mta_sts] enabled = false`).
    public let mtaSTS: STSDiscovery?
    /// Learned TLS status, told what each MX session showed (nil:
    /// `[learned] enabled = false`).
    public let learned: LearnedStatus?
    /// TLS-RPT counters (RFC 8460); nil when [tlsrpt] is off. Set after init.
    public var tlsrpt: TLSRPTLedger?
    /// The TLS tally of `relayd report tls`; nil in tests that do not
    /// count. Set after init, like tlsrpt.
    public var tlsTally: TLSTally?
    /// The Prometheus metrics; nil: not counted. Set after init.
    public var metrics: RelayMetrics?
    public let logger: Logger
    public private(set) var queue: DispatchQueue
    /// Seconds since the epoch; the queue runner's clock, so both judge the
    /// queue lifetime alike.
    public private(set) var now: @Sendable () -> Int
    /// Overrides MX lookups' port in tests; production is 25.
    public var mxPort: UInt16 { config.outbound.mxPort }

    public init(config: Config, engine: PolicyEngine, mx: MXResolver, dns: any DNSResolving,
                tlsContext: TLSContext, relayCredentials: [String: Credentials] = [:], pool: ConnectionPool? = nil,
                mtaSTS: STSDiscovery? = nil, learned: LearnedStatus? = nil,
                logger: Logger, queue: DispatchQueue, now: @escaping @Sendable () -> Int = { Int(time(nil)) }) {
        self.now = now
        self.pool = pool
        self.mtaSTS = mtaSTS
        self.learned = learned
        self.config = config
        self.engine = engine
        self.mx = mx
        self.dns = dns
        self.tlsContext = tlsContext
        self.relayCredentials = relayCredentials
        self.logger = logger
        self.queue = queue
    }

    /// The same environment on another queue and clock: a copy of the
    /// whole, so a field added later is never dropped on the way.
    public func with(queue: DispatchQueue, now: @escaping @Sendable () -> Int) -> DeliveryEnvironment {
        var copy = self
        copy.queue = queue
        copy.now = now
        return copy
    }
}

/// Confinement: the machine and the completion are touched only on
/// `env.queue`: every answer from the resolver, the connector or ClientRun
/// comes back through `feed`, which hops onto it, and `perform` checks it
/// in debug builds. Hence @unchecked Sendable.
public final class DomainDelivery: @unchecked Sendable {
    typealias Hop = DeliveryAttempt.Hop

    let env: DeliveryEnvironment
    let message: SpooledMessage
    let domain: String
    let indexes: [Int]
    /// Decided when the attempt starts, after MTA-STS discovery. Touched
    /// only on env.queue, like the machine.
    private(set) var decision: PolicyDecision
    /// The message's own controls applied to the decision (MessagePolicy).
    private(set) var messagePolicy: MessagePolicy?
    /// This delivery carries the S/MIME-encrypted copy (the channel leg):
    /// the message's floors were what could not be met, so they do not
    /// apply to it again.
    let channelLeg: Bool
    /// The completion while the S/MIME copies are being made off the
    /// attempt queue (DomainDelivery+SMIME); touched on env.queue only.
    var channelCompletion: ((DomainDeliveryReport) -> Void)?
    private var machine: DeliveryAttempt?
    private var completion: ((DomainDeliveryReport) -> Void)?
    /// Monotonic seconds when run() was called, for the duration histogram.
    private(set) var startedAt = 0.0

    public convenience init(env: DeliveryEnvironment, message: SpooledMessage, domain: String, recipientIndexes: [Int]) {
        self.init(env: env, message: message, domain: domain, recipientIndexes: recipientIndexes, channelLeg: false)
    }

    init(env: DeliveryEnvironment, message: SpooledMessage, domain: String, recipientIndexes: [Int], channelLeg: Bool) {
        self.env = env
        self.message = message
        self.domain = DNSName.normalize(domain)
        self.indexes = recipientIndexes
        self.channelLeg = channelLeg
        self.decision = env.engine.decide(self.domain)
    }

    /// MTA-STS is discovered first, for mail that goes to the domain's MX
    /// hosts (a smarthost or transport relay is not an MX: RFC 8461 §4
    /// does not apply to it); then the policy is decided and the machine
    /// started.
    public func run(completion: @escaping (DomainDeliveryReport) -> Void) {
        self.completion = completion
        startedAt = RelayMetrics.monotonicSeconds()
        if let sts = env.mtaSTS, DeliveryAttempt.Plan.relay(for: domain, config: env.config) == nil {
            sts.prepare(domain) { [self] in env.queue.async { [self] in start() } }
        } else {
            env.queue.async { [self] in start() }
        }
    }

    private func start() {
        dispatchPrecondition(condition: .onQueue(env.queue))
        let policy = channelLeg
            ? Self.channelLegPolicy(domain: domain, envelope: message.envelope, indexes: indexes, engine: env.engine,
                                    config: env.config)
            : MessagePolicy.decide(domain: domain, envelope: message.envelope, indexes: indexes, engine: env.engine, config: env.config)
        messagePolicy = policy
        decision = policy.decision
        if policy.relaxed {
            env.logger.info("TLS-Required: No honoured: MTA-STS, DANE and learned status do not apply", metadata: [
                "id": "\(message.id)", "domain": "\(domain)", "level": "\(decision.level.rawValue)", "layer": "\(decision.layer.rawValue)"])
        }
        var plan = DeliveryAttempt.Plan(domain: domain, decision: decision, indexes: indexes,
                                        config: env.config, credentials: env.relayCredentials, automaticLayers: policy.automaticLayers)
        plan.requireTLS = policy.requireTLS
        machine = DeliveryAttempt(plan: plan, selfListener: Self.selfListener(listeners: env.config.listeners.map(\.address)))
        for action in machine!.handle(.start) { perform(action) }
    }

    /// A TLS-RPT report (RFC 8460 §5.4) may be about the very policy that
    /// fails, so the automatic layers — MTA-STS, DANE, learned status — do
    /// not hold it back; the operator's own settings (default_level and
    /// the [outbound.domains] entries) still do: they are never relaxed,
    /// as `TLS-Required: No` never relaxes them (RFC 8689).
    static func reportDecision(_ domain: String, config: Config) -> PolicyDecision {
        PolicyEngine(defaultPolicy: config.outbound.defaultPolicy, domains: config.outbound.domains).decide(domain)
    }

    /// The S/MIME copy travels at the domain's level without the
    /// escalation (its level is what could not be had). A forwarded copy's
    /// `tls_only` floor stays: it promises "never plaintext", whatever the
    /// content. When the operator's own entry named the channel, its demand
    /// is what failed, so the copy goes with opportunistic TLS (or the
    /// floor) — the content is protected by the encryption.
    static func channelLegPolicy(domain: String, envelope: Envelope, indexes: [Int], engine: PolicyEngine,
                                 config: Config) -> MessagePolicy {
        var unescalated = envelope
        unescalated.escalation = nil
        let base = MessagePolicy.decide(domain: domain, envelope: unescalated, indexes: indexes, engine: engine, config: config)
        let d = base.decision
        guard d.layer == .operatorEntry, engine.operatorEntry(for: domain)?.policy.smime == true else { return base.withoutChannel }
        let floor = indexes.compactMap { envelope.recipients[$0].tlsFloor }.max()
        let relaxed: PolicyDecision
        if let floor, floor > .opportunistic {
            relaxed = PolicyDecision(domain: d.domain, level: floor, requiresVerification: floor >= .verify, layer: .message,
                                     reason: "forwarded copy: tls_only \(floor.rawValue) (S/MIME-encrypted copy)", fallback: nil,
                                     verdicts: d.verdicts)
        } else {
            relaxed = PolicyDecision(domain: d.domain, level: .opportunistic, requiresVerification: false, layer: .operatorEntry,
                                     reason: d.reason + ": S/MIME-encrypted copy, TLS opportunistic", fallback: nil,
                                     verdicts: d.verdicts)
        }
        return MessagePolicy(decision: relaxed, automaticLayers: false, requireTLS: false, relaxed: base.relaxed,
                             raisedBy: nil, smimeChannel: false)
    }

    /// Hands the machine one event on env.queue and carries out its answer.
    private func feed(_ event: DeliveryAttempt.Event) {
        env.queue.async { [self] in
            guard machine != nil else { return }
            for action in machine!.handle(event) { perform(action) }
        }
    }

    private func perform(_ action: DeliveryAttempt.Action) {
        dispatchPrecondition(condition: .onQueue(env.queue))
        switch action {
        case .resolveMX(let name):
            env.mx.resolve(name) { [self] r in feed(.resolved(r)) }
        case .resolveHost(let host):
            env.mx.resolveAddresses([(0, host)], implicit: true, domain: host) { [self] r in feed(.resolved(r)) }
        case .resolveTLSA(let hosts):
            TLSALookup(resolver: env.dns).lookup(hosts, port: env.mxPort) { [self] states in feed(.tlsaResolved(states)) }
        case .daneUnavailable(let host, let reason):
            countDANEUnavailable(host: host, reason: reason)
            env.logger.warning("DANE: TLSA lookup failed; MX host not contacted", metadata: [
                "id": "\(message.id)", "domain": "\(domain)", "mx": "\(host)", "dane": "bogus", "reason": "\(reason)"])
        case .run(let hop, let tls):
            attempt(hop, tls: tls) { [self] result in
                learn(hop, tls: tls, result)
                feed(.ran(result))
            }
        case .log(let outcome, let hop, let run, let detail):
            log(outcome, hop: hop, run: run, detail: detail)
        case .handingToFallback(let relay, let reason):
            env.metrics?.deliveryAttempt(.fallback)
            env.logger.notice("TLS to destination unavailable; handing to fallback relay",
                              metadata: ["id": "\(message.id)", "domain": "\(domain)", "fallback": "\(relay)", "reason": "\(reason)"])
        case .notInSTSPolicy(let host, let sts):
            let fields: Logger.Metadata = ["id": "\(message.id)", "domain": "\(domain)", "mx": "\(host)",
                                           "mta_sts_id": "\(sts.id)", "patterns": "\(sts.policy.mx.joined(separator: ","))"]
            if sts.policy.mode == .enforce {
                env.logger.info("MTA-STS: MX host not in the policy; not contacted", metadata: fields)
            } else {
                env.logger.info("MTA-STS testing: MX host not in the policy (enforce would not contact it)", metadata: fields)
            }
        case .skippingLessPreferred(let hop, let listener):
            var fields = loopFields(hop, listener)
            fields["preference"] = "\(hop.preference)"
            env.logger.info("skipping MX hosts not preferred to this relay", metadata: fields)
        case .loopsBack(let hop, let listener, let failure):
            var fields = loopFields(hop, listener)
            fields["status"] = "\(failure.status)"
            fields["outcome"] = "\(AttemptOutcome.bounced(status: failure.status).name)"
            // This line is the record: nothing was attempted, so there is
            // no `delivery attempt` line.
            env.logger.warning("mail loops back to myself; not attempted", metadata: fields)
        case .conclude(let results, let hop, let run, let detail, let logged):
            conclude(results, hop: hop, run: run, detail: detail, logged: logged)
        }
    }

    private func loopFields(_ hop: Hop, _ listener: HostPort) -> Logger.Metadata {
        ["id": "\(message.id)", "domain": "\(domain)", "via": "\(hop.via)", "mx": "\(hop.host)",
         "ip": "\(hop.address)", "port": "\(hop.port)", "listener": "\(listener)"]
    }

    // MARK: running one address

    /// Runs one transaction with `hop` on a kept connection if the pool has
    /// one for the same key, else on a fresh one; calls back on env.queue.
    func attempt(_ hop: Hop, tls: TLSRequirement, completion: @escaping @Sendable (ClientRunResult) -> Void) {
        let key = ConnectionPool.Key(address: hop.address, port: hop.port, tls: tls, verified: hop.requiresVerification,
                                     host: hop.host, user: hop.credentials?.username, dane: hop.danePolicy)
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
    /// Under DANE the TLSA records authenticate instead of the trust store
    /// and the name (RFC 7672 §3).
    func tlsOptions(_ hop: Hop) -> TLSConnection.Options {
        if let dane = hop.danePolicy {
            return TLSConnection.Options(serverName: hop.host, requireVerification: true, dane: dane)
        }
        return TLSConnection.Options(serverName: hop.host, expectedHostname: hop.host, requireVerification: hop.requiresVerification)
    }

    func connectFresh(_ hop: Hop, tls: TLSRequirement, key: ConnectionPool.Key, completion: @escaping @Sendable (ClientRunResult) -> Void) {
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

    // MARK: concluding

    /// Ends the attempt: one log line saying what the queue will do with
    /// these results (unless the machine's loop warning was the record:
    /// `logged` false), then the report. The queue lifetime is judged here,
    /// once, and travels in the report.
    func conclude(_ results: [Int: RecipientResult], hop: Hop?, run: ClientRunResult?, detail: String, logged: Bool) {
        guard let completion else { return }
        self.completion = nil
        let lifetimeExceeded = env.now() - message.arrival >= env.config.queue.maxLifetime
        let outcome = AttemptOutcome.concluding(indexes.compactMap { results[$0] }, lifetimeExceeded: lifetimeExceeded)
        if logged { log(outcome, hop: hop, run: run, detail: detail) }
        countConclusion(outcome, results: results)
        if decision.enforcedSTS != nil, results.values.contains(where: { if case .failed(let f) = $0 { return !f.isPermanent }; return false }) {
            env.mtaSTS?.recheckAfterFailure(domain)
        }
        if messagePolicy?.smimeChannel == true, !channelLeg {
            let waiting = indexes.filter { if case .failed(let f)? = results[$0] { return f.tlsPolicy && !f.isPermanent }; return false }
            if !waiting.isEmpty {
                sendEncrypted(waiting, results: results, lifetimeExceeded: lifetimeExceeded, completion: completion)
                return
            }
        }
        completion(DomainDeliveryReport(decision: decision, results: results, lifetimeExceeded: lifetimeExceeded))
    }

    // MARK: the delivery log

    func logFields(hop: Hop?, tls: TLSSessionInfo?, outcome: AttemptOutcome, detail: String) -> Logger.Metadata {
        var m: Logger.Metadata = [
            "id": "\(message.id)", "domain": "\(domain)", "nrcpt": "\(indexes.count)",
            "level": "\(hop?.level.rawValue ?? decision.level.rawValue)", "layer": "\((hop?.layer ?? decision.layer).rawValue)",
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
        if let state = hop?.dane {
            // verified only when a record matched; a usable RRset that
            // matched nothing is a failure.
            if case .usable = state, tls?.daneMatch == nil {
                m["dane"] = "failed"
            } else {
                m["dane"] = "\(state.logWord)"
            }
            if let match = tls?.daneMatch { m["tlsa"] = "\(match)" }
        }
        if let x = message.envelope.escalation { m["escalated"] = "\(x)" }
        if let raised = messagePolicy?.raisedBy, message.envelope.escalation == nil { m["floor"] = "\(raised)" }
        if message.envelope.requireTLS { m["requiretls"] = "yes" }
        if message.envelope.tlsRequiredNo { m["tls_required_no"] = messagePolicy?.relaxed == true ? "honoured" : "ignored" }
        if channelLeg { m["channel"] = "smime" }
        if let sts = decision.enforcedSTS {
            m["mta_sts"] = "enforce"
            m["mta_sts_id"] = "\(sts.id)"
        } else if let sts = decision.testingSTS {
            m["mta_sts"] = "testing"
            m["mta_sts_id"] = "\(sts.id)"
            if let hop, hop.via == "mx", let would = Self.enforceWouldFail(sts.policy, host: hop.host, tls: tls) {
                m["mta_sts_would_fail"] = "\(would)"
            }
        }
        return m
    }

    /// Testing mode (RFC 8461 §5): what enforce would have refused about
    /// this attempt, in RFC 8460 result-type words so TLS-RPT can count it.
    static func enforceWouldFail(_ policy: STSPolicy, host: String, tls: TLSSessionInfo?) -> String? {
        if !policy.matches(mxHost: host) { return "validation-failure" }
        guard let tls else { return "starttls-not-supported" }
        if case .failed(let f) = tls.verification {
            return f.kind == .hostnameMismatch ? "certificate-host-mismatch" : "certificate-not-trusted"
        }
        return nil
    }

    func log(_ outcome: AttemptOutcome, hop: Hop?, run: ClientRunResult?, detail: String) {
        var fields = logFields(hop: hop, tls: run?.tls, outcome: outcome, detail: detail)
        if let f = run?.tlsFailure { fields["tls_failure"] = "\(f.kind.rawValue)" }
        env.logger.info("delivery attempt", metadata: fields)
        countSession(hop: hop, run: run)
        countForTLSRPT(hop: hop, run: run)
        countForTLSTally(outcome, hop: hop, run: run)
    }
}
