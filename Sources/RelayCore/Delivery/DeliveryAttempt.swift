// The decisions of one delivery attempt for one destination domain, as a
// sans-IO state machine in the style of ServerSession and ClientSession:
// it is told what happened (addresses resolved, an SMTP run ended) and
// answers with what to do next. DomainDelivery does the I/O — DNS,
// connections, the kept-connection pool, the log — and decides nothing.
//
// Why a machine rather than the callback chain it replaced: the chain
// (resolve → hops → attempt → run → handle → attempt) spread one question,
// "what does this failed address mean?", over four functions that each
// re-derived where they were (destination or fallback relay, first try or
// plaintext retry). Here "where" is the phase, each event is handled once,
// and the two policy questions are one switch each:
//   - `afterFailure`: one address failed — retry it in plaintext
//     (opportunistic only), stop (the remote judged the message), or go on
//     to the next address;
//   - `afterEveryAddressFailed`: the destination could not be reached as
//     policy requires — drop (tls-exclusive), hand to the fallback relay
//     (TLS was the only problem), or fail with the most telling failure.
// Unit tests feed ClientRunResults straight in (DeliveryAttemptTests).
import RelayConfig
import RelayModel
import RelayPolicy
import RelaySMTP
import RelaySTS
public struct DeliveryAttempt {
    /// One address to try, with the TLS it must get.
    public struct Hop: Sendable {
        public let host: String
        public let address: IPAddress
        public let port: UInt16
        public let implicitTLS: Bool
        public let level: PolicyLevel
        public let requiresVerification: Bool
        public let credentials: Credentials?
        /// "mx", "relay NAME", "fallback NAME", plus a note for a plaintext retry.
        public let via: String
        /// MX preference; a relay's addresses share one (see notLoopingBack).
        public var preference = 0
        /// DANE for this MX host (nil: not looked up — DNSSEC off, a
        /// relay, or the operator's entry decides).
        public var dane: DANEHostState? = nil
        /// The layer that set this hop's level when it is not the domain
        /// decision's (DANE decides per MX host).
        public var layer: PolicyLayer? = nil

        /// The records to authenticate by, when DANE has usable ones.
        public var danePolicy: DANEPolicy? {
            if case .usable(let p)? = dane { return p }
            return nil
        }
    }

    /// What the attempt knows when it starts.
    public struct Plan: Sendable {
        public let domain: String
        public let decision: PolicyDecision
        public let indexes: [Int]
        /// The transport entry or smarthost for the domain; nil: its MX hosts.
        public let relay: Config.UpstreamRelay?
        /// The decision's fallback relay, when it names one that exists.
        public let fallback: Config.UpstreamRelay?
        /// Passwords of the relays that have them.
        public let credentials: [String: Credentials]
        public let mxPort: UInt16
        public let maxAddresses: Int
        /// DANE applies: `[dns] dnssec`, mail to MX hosts, and no operator
        /// entry for the domain (the escape hatch for broken DANE).
        public let dane: Bool
        /// RFC 8689 REQUIRETLS: every hop must be found securely (DNSSEC,
        /// an MTA-STS policy, or the operator's relay), authenticated
        /// (DANE or a verified chain) and offer REQUIRETLS.
        public var requireTLS = false

        /// The plan for `domain` (normalised) under `config`: its transport
        /// entry (most specific key first) or the smarthost, else MX.
        /// `automaticLayers` false (a TLS-RPT report): no DANE either.
        public init(domain: String, decision: PolicyDecision, indexes: [Int], config: Config,
                    credentials: [String: Credentials], automaticLayers: Bool = true) {
            let outbound = config.outbound
            self.domain = domain
            self.decision = decision
            self.indexes = indexes
            self.relay = Self.relay(for: domain, config: config)
            self.fallback = decision.fallback.flatMap { outbound.relays[$0] }
            self.credentials = credentials
            self.mxPort = outbound.mxPort
            self.maxAddresses = outbound.maxAddressesPerAttempt
            // The operator's entry switches DANE off for its domain even when
            // the message raised the level above it (layer "message").
            let entry = decision.verdicts.contains { $0.layer == .operatorEntry && $0.level != nil }
            self.dane = automaticLayers && config.dns.dnssec && relay == nil && decision.layer != .operatorEntry && !entry
        }

        /// The transport entry (most specific key first) or smarthost that
        /// carries mail for `domain`; nil: its MX hosts.
        public static func relay(for domain: String, config: Config) -> Config.UpstreamRelay? {
            let outbound = config.outbound
            let name = DNSName.lookupKeys(domain).lazy.compactMap { outbound.transport[$0] }.first ?? outbound.smarthost
            return name.flatMap { outbound.relays[$0] }
        }
    }

    enum Leg: Equatable {
        /// The destination: its relay or its MX hosts.
        case destination
        /// The fallback relay, after TLS could not be had at the destination.
        case fallback
    }

    public enum Event: Sendable {
        case start
        /// The answer to `resolveMX` or `resolveHost`.
        case resolved(MXResolution)
        /// The answer to `run`.
        case ran(ClientRunResult)
        /// The answer to `resolveTLSA`: each MX host's DANE state.
        case tlsaResolved([String: DANEHostState])
    }

    public enum Action {
        case resolveMX(String)
        /// A relay's host name (not an MX lookup: its own address records).
        case resolveHost(String)
        /// DANE: the TLSA records of these MX hosts (only secure ones are
        /// asked; see TLSALookup).
        case resolveTLSA([MXHost])
        /// DANE: the host's TLSA lookup failed or did not validate; it is
        /// not contacted (4.7.5), never treated as "no DANE".
        case daneUnavailable(host: String, reason: String)
        /// Connect (or take a kept connection) and run one SMTP transaction.
        case run(Hop, TLSRequirement)
        /// A `delivery attempt` line that does not conclude the attempt.
        case log(AttemptOutcome, Hop, ClientRunResult, detail: String)
        case handingToFallback(relay: String, reason: String)
        /// MX hosts at or below relayd's own preference are left out.
        case skippingLessPreferred(Hop, listener: HostPort)
        /// MTA-STS: an MX host the domain's policy does not list. Under
        /// enforce it is never contacted; under testing it is, and this
        /// says what enforce would have done.
        case notInSTSPolicy(host: String, STSDecision)
        /// Nothing is left once relayd itself is taken out: logged as such,
        /// then concluded without a `delivery attempt` line.
        case loopsBack(Hop, listener: HostPort, DeliveryFailure)
        /// The end: each recipient's result; `logged` false when the line
        /// was already written (the loop warning).
        case conclude([Int: RecipientResult], Hop?, ClientRunResult?, detail: String, logged: Bool)
    }

    enum Phase {
        case ready
        case resolving(Leg)
        case lookingUpTLSA([MXHost])
        case trying(Leg, Hop, rest: ArraySlice<Hop>)
        case done
    }

    let plan: Plan
    /// Which of relayd's listeners a hop would reach (nil: none); the
    /// driver answers from its listeners and the machine's local addresses.
    let selfListener: (Hop) -> HostPort?
    private(set) var phase = Phase.ready
    /// The destination's failed addresses, in order.
    private(set) var failures: [DeliveryFailure] = []

    public init(plan: Plan, selfListener: @escaping (Hop) -> HostPort?) {
        self.plan = plan
        self.selfListener = selfListener
    }

    public mutating func handle(_ event: Event) -> [Action] {
        switch (phase, event) {
        case (.ready, .start):
            if let relay = plan.relay { return start(relay, leg: .destination) }
            phase = .resolving(.destination)
            return [.resolveMX(plan.domain)]
        case (.resolving(let leg), .resolved(.failed(let f))):
            return concludeAll(.failed(f), hop: nil, run: nil, detail: label(leg).map { "\($0): \(f)" } ?? f.description)
        case (.resolving(let leg), .resolved(.hosts(let hosts))):
            if leg == .destination && plan.relay == nil {
                if plan.dane {
                    phase = .lookingUpTLSA(hosts)
                    return [.resolveTLSA(hosts)]
                }
                return mxAttempt(hosts, dane: [:])
            }
            return tryAddresses(hosts.flatMap(\.addresses).map { relayHop(leg, $0) }, leg: leg)
        case (.lookingUpTLSA(let hosts), .tlsaResolved(let states)):
            return mxAttempt(hosts, dane: states)
        case (.trying(let leg, let hop, let rest), .ran(let result)):
            return ran(result, leg: leg, hop: hop, rest: rest)
        default:
            // The driver answers only what was asked; anything else (a late
            // answer after the end) changes nothing.
            return []
        }
    }

    // MARK: the two decisions

    enum AfterFailure: Equatable {
        case retryInPlaintext
        case stop
        case nextAddress
    }

    /// What one failed address means.
    func afterFailure(_ failure: ClientFailure, hop: Hop, leg: Leg) -> AfterFailure {
        switch (failure, leg, hop.level) {
        case (.rejected, _, _), (.needsSMTPUTF8, _, _), (.messageTooBig, _, _):
            // The remote's verdict on the message: no other address of the
            // same domain would judge it differently.
            return .stop
        case (.tls, .destination, .opportunistic) where !hop.implicitTLS:
            // A failed handshake leaves the connection unusable; at
            // opportunistic the same address is tried again without TLS.
            return .retryInPlaintext
        default:
            return .nextAddress
        }
    }

    enum AfterEveryAddress: Equatable {
        case drop
        case fallback
        case fail
    }

    /// What it means that no address of the destination took the message.
    /// Only when TLS is what failed (each address that answered failed on
    /// TLS; the others could not be reached) does the level have a say.
    func afterEveryAddressFailed() -> AfterEveryAddress {
        let tlsOnly = failures.contains(where: \.tlsPolicy)
            && failures.allSatisfy { $0.cause == .tlsPolicy || $0.cause == .unreachable }
        switch (tlsOnly, plan.decision.level, plan.fallback) {
        // A REQUIRETLS message is never dropped: its sender asked to hear.
        case (true, .tlsExclusive, _) where failures.allSatisfy(\.tlsPolicy) && !plan.requireTLS: return .drop
        case (true, _, .some): return .fallback
        default: return .fail
        }
    }

    // MARK: steps

    private mutating func start(_ relay: Config.UpstreamRelay, leg: Leg) -> [Action] {
        if relay.username != nil && plan.credentials[relay.name] == nil {
            let f = DeliveryFailure(.transient, status: "4.3.5", reason: "no password loaded for relay \(relay.name)")
            return concludeAll(.failed(f), hop: nil, run: nil, detail: "\(label(leg) ?? relay.name): \(f)")
        }
        if let ip = IPAddress(relay.address.host) { return tryAddresses([relayHop(leg, ip)], leg: leg) }
        phase = .resolving(leg)
        return [.resolveHost(relay.address.host)]
    }

    /// "relay NAME" / "fallback NAME"; nil for MX hosts.
    private func label(_ leg: Leg) -> String? {
        switch leg {
        case .destination: return plan.relay.map { "relay \($0.name)" }
        case .fallback: return plan.fallback.map { "fallback \($0.name)" }
        }
    }

    /// The MX hosts as hops, then the first address tried.
    private mutating func mxAttempt(_ hosts: [MXHost], dane: [String: DANEHostState]) -> [Action] {
        var actions: [Action] = []
        let hops = mxHops(hosts, dane: dane, &actions)
        if hops.isEmpty, failures.isEmpty, let sts = plan.decision.enforcedSTS {
            let f = DeliveryFailure(.transient, status: "4.7.5",
                                    reason: "no MX host of \(plan.domain) is listed in its MTA-STS policy (id \(sts.id))",
                                    cause: .tlsPolicy)
            return actions + concludeAll(.failed(f), hop: nil, run: nil, detail: f.description)
        }
        return actions + tryAddresses(hops, leg: .destination)
    }

    /// Each MX host's addresses, IPv4 first, in the resolver's host order.
    /// DANE decides per host (RFC 7672): a host with TLSA records gets
    /// mandatory TLS — authenticated by them when any is usable — and
    /// MTA-STS does not apply to it (RFC 8461 §2); a host whose TLSA lookup
    /// failed is left out with a 4.7.5 failure. Under an enforce MTA-STS
    /// policy only the other hosts it lists are kept (RFC 8461 §4.1: the
    /// others are skipped, each logged).
    private mutating func mxHops(_ hosts: [MXHost], dane: [String: DANEHostState], _ actions: inout [Action]) -> [Hop] {
        var kept: [MXHost] = []
        for h in hosts {
            if case .failed(let why) = dane[h.name] {
                actions.append(.daneUnavailable(host: h.name, reason: why))
                failures.append(DeliveryFailure(.transient, status: "4.7.5", reason: "\(h.name): \(why) (DANE)"))
                continue
            }
            kept.append(h)
        }
        if let sts = plan.decision.enforcedSTS ?? plan.decision.testingSTS {
            for h in kept where !(dane[h.name]?.applies ?? false) && !sts.policy.matches(mxHost: h.name) {
                actions.append(.notInSTSPolicy(host: h.name, sts))
            }
            if sts.policy.mode == .enforce {
                kept = kept.filter { (dane[$0.name]?.applies ?? false) || sts.policy.matches(mxHost: $0.name) }
            }
        }
        if plan.requireTLS {
            kept = kept.filter { h in
                guard let why = Self.notFoundSecurely(h, dane: dane[h.name], sts: plan.decision.enforcedSTS ?? plan.decision.testingSTS) else {
                    return true
                }
                failures.append(DeliveryFailure(.permanent, status: "5.7.30", reason: "REQUIRETLS support required: \(why)",
                                                cause: .requireTLS))
                return false
            }
        }
        return kept.flatMap { h in
            h.addresses.sorted(by: { $0.isV4 && !$1.isV4 }).map { ip in
                var hop = Hop(host: h.name, address: ip, port: plan.mxPort, implicitTLS: false, level: plan.decision.level,
                              requiresVerification: plan.decision.requiresVerification, credentials: nil, via: "mx",
                              preference: h.preference)
                hop.dane = dane[h.name]
                switch dane[h.name] {
                case .usable?:
                    hop = Hop(host: h.name, address: ip, port: plan.mxPort, implicitTLS: false,
                              level: max(plan.decision.level, .verify), requiresVerification: true, credentials: nil,
                              via: "mx", preference: h.preference, dane: dane[h.name], layer: .dane)
                case .unusable?:
                    // TLS without authentication: never below forced, and
                    // never below what the domain's own decision asks.
                    hop = Hop(host: h.name, address: ip, port: plan.mxPort, implicitTLS: false,
                              level: max(plan.decision.level, .forced),
                              requiresVerification: plan.decision.requiresVerification && plan.decision.enforcedSTS == nil,
                              credentials: nil, via: "mx", preference: h.preference, dane: dane[h.name], layer: .dane)
                default:
                    break
                }
                return plan.requireTLS ? Self.authenticated(hop) : hop
            }
        }
    }

    /// RFC 8689 §4.2.1: an MX host a REQUIRETLS message may go to was found
    /// securely — DNSSEC-validated (its DANE records, or its own address
    /// answers, authenticated) or listed by the domain's MTA-STS policy.
    /// nil: it was; otherwise why not.
    static func notFoundSecurely(_ h: MXHost, dane: DANEHostState?, sts: STSDecision?) -> String? {
        // DNSSEC counts only when the MX answer itself validated as well as
        // the host's own records (DANE records of a host named by a forged
        // MX answer prove nothing about the domain).
        if h.mxSecure && h.secure { return nil }
        if let sts, sts.policy.matches(mxHost: h.name) { return nil }
        return "MX host \(h.name) was not found securely (the MX answer or the host's records not DNSSEC-validated, "
            + "not listed in an MTA-STS policy)"
    }

    /// A hop for a REQUIRETLS message: TLS required and the certificate
    /// authenticated (DANE when usable, else a verified chain and name).
    static func authenticated(_ hop: Hop) -> Hop {
        var h = Hop(host: hop.host, address: hop.address, port: hop.port, implicitTLS: hop.implicitTLS,
                    level: max(hop.level, .verify), requiresVerification: true, credentials: hop.credentials,
                    via: hop.via, preference: hop.preference, dane: hop.dane, layer: hop.layer)
        if h.level != hop.level || !hop.requiresVerification { h.layer = .message }
        return h
    }

    /// A relay on the way to the destination has its own level, but never
    /// weaker than the destination's. The fallback relay has its own level
    /// only (it exists because the destination's could not be had), unless
    /// the message itself set a floor.
    private func relayHop(_ leg: Leg, _ ip: IPAddress) -> Hop {
        let relay = (leg == .destination ? plan.relay : plan.fallback)!
        let own = DomainPolicy(level: relay.level).requiresVerification
        // The fallback relay has its own level — except when the message
        // raised the decision (an escalation, a TLS-only forwarded copy):
        // that floor travels with the message to whichever hop takes it.
        let carriesFloor = leg == .destination || plan.decision.layer == .message
        let level = carriesFloor ? max(relay.level, plan.decision.level) : relay.level
        let verify = carriesFloor ? plan.decision.requiresVerification || own : own
        let hop = Hop(host: relay.address.host, address: ip, port: relay.address.port, implicitTLS: relay.implicitTLS,
                      level: level, requiresVerification: verify, credentials: plan.credentials[relay.name],
                      via: label(leg)!)
        // A relay the operator configured counts as found securely; its
        // certificate must still verify for a REQUIRETLS message.
        return plan.requireTLS ? Self.authenticated(hop) : hop
    }

    private mutating func tryAddresses(_ hops: [Hop], leg: Leg) -> [Action] {
        var actions: [Action] = []
        guard let kept = notLoopingBack(hops, &actions) else { return actions }
        let list = leg == .destination && plan.relay == nil ? kept.prefix(plan.maxAddresses) : kept[...]
        guard let hop = list.first else {
            switch leg {
            case .destination:
                return actions + everyAddressFailed(last: nil, run: nil)
            case .fallback:
                let f = DeliveryFailure(.transient, status: "4.4.4", reason: "fallback relay unreachable")
                return actions + concludeAll(.failed(f), hop: nil, run: nil, detail: f.description)
            }
        }
        phase = .trying(leg, hop, rest: list.dropFirst())
        return actions + [.run(hop, hop.level.tlsRequirement)]
    }

    /// The hops to try: those more preferred than the first that is relayd
    /// itself (an MX list is cut there, as RFC 5321 §5.1 asks of a relay
    /// that is an MX for the domain; a relay's addresses share one level,
    /// so none of them is left). nil when nothing is left: every recipient
    /// fails permanently with 5.4.6, nothing attempted.
    private mutating func notLoopingBack(_ hops: [Hop], _ actions: inout [Action]) -> [Hop]? {
        var found: (Hop, HostPort)?
        for h in hops {
            if let l = selfListener(h) { found = (h, l); break }
        }
        guard let (hop, listener) = found else { return hops }
        let kept = hops.filter { $0.preference < hop.preference }
        if !kept.isEmpty {
            actions.append(.skippingLessPreferred(hop, listener: listener))
            return kept
        }
        let failure = DeliveryFailure(.permanent, status: "5.4.6", reason: "mail for \(plan.domain) loops back to myself")
        actions.append(.loopsBack(hop, listener: listener, failure))
        actions += concludeAll(.failed(failure), hop: nil, run: nil, detail: failure.description, logged: false)
        return nil
    }

    private mutating func ran(_ result: ClientRunResult, leg: Leg, hop: Hop, rest: ArraySlice<Hop>) -> [Action] {
        if let bad = result.bodyFailure {
            // The queue file, not the hop: no other address would do better.
            let f = DeliveryFailure(.transient, status: "4.3.0", reason: "message body unreadable: \(bad)")
            return concludeAll(.failed(f), hop: hop, run: result, detail: f.description)
        }
        let failure: ClientFailure
        switch result.outcome {
        case .completed(let replies): return concludeTransaction(replies, hop: hop, run: result)
        case .failed(let f): failure = f
        }
        let f = namingPolicy(Self.classify(failure, hop: hop), hop: hop)
        switch afterFailure(failure, hop: hop, leg: leg) {
        case .retryInPlaintext:
            let plaintext = Hop(host: hop.host, address: hop.address, port: hop.port, implicitTLS: false,
                                level: .none, requiresVerification: false, credentials: hop.credentials,
                                via: hop.via + " (plaintext after TLS failure)", preference: hop.preference)
            phase = .trying(leg, plaintext, rest: rest)
            return [.log(.plaintextRetry(status: f.status), hop, result, detail: failure.description), .run(plaintext, .never)]
        case .stop:
            return concludeAll(.failed(f), hop: hop, run: result, detail: f.description)
        case .nextAddress:
            if leg == .destination { failures.append(f) }
            guard let next = rest.first else {
                switch leg {
                case .destination: return everyAddressFailed(last: hop, run: result)
                case .fallback: return concludeAll(.failed(f), hop: hop, run: result, detail: f.description)
                }
            }
            phase = .trying(leg, next, rest: rest.dropFirst())
            return [.log(.nextAddress(status: f.status), hop, result, detail: f.description), .run(next, next.level.tlsRequirement)]
        }
    }

    /// `hop`: the last address tried (nil: there was none); its log line
    /// carries what the attempt comes to.
    private mutating func everyAddressFailed(last hop: Hop?, run: ClientRunResult?) -> [Action] {
        // A REQUIRETLS refusal is permanent for its address only: while
        // another address failed otherwise, the message waits for that one.
        let waiting = plan.requireTLS ? failures.last(where: { $0.cause != .requireTLS && !$0.isPermanent }) : nil
        let last = waiting ?? failures.last(where: \.tlsPolicy) ?? failures.last
            ?? DeliveryFailure(.transient, status: "4.4.4", reason: "no addresses to try")
        let detail = failures.last?.description ?? last.description
        // REQUIRETLS (RFC 8689 §4.2.1): when every address refused on
        // REQUIRETLS's own terms or on TLS (not found securely, no
        // REQUIRETLS, no STARTTLS, a certificate that does not
        // authenticate), the message is returned with 5.7.30 — after the
        // fallback relay, when TLS is what failed and one is named (it too
        // must authenticate and offer REQUIRETLS). An address that was down
        // or failed otherwise may yet take it, so that waits; nothing is
        // dropped.
        if plan.requireTLS, let lastRefusal = failures.last,
           failures.allSatisfy({ $0.cause == .requireTLS || $0.cause == .tlsPolicy }),
           !(plan.fallback != nil && failures.contains(where: \.tlsPolicy)) {
            let refusal = lastRefusal.cause == .requireTLS ? lastRefusal
                : DeliveryFailure(.permanent, status: "5.7.30", reason: "REQUIRETLS support required: \(lastRefusal.reason)",
                                  cause: .requireTLS)
            return concludeAll(.failed(refusal), hop: hop, run: run, detail: detail)
        }
        switch afterEveryAddressFailed() {
        case .drop:
            return concludeAll(.dropped(last.reason), hop: hop, run: run, detail: detail)
        case .fallback:
            let relay = plan.fallback!
            var actions: [Action] = []
            if let hop, let run { actions.append(.log(.fallback(status: last.status), hop, run, detail: detail)) }
            actions.append(.handingToFallback(relay: relay.name, reason: last.reason))
            failures = []
            return actions + start(relay, leg: .fallback)
        case .fail:
            return concludeAll(.failed(last), hop: hop, run: run, detail: detail)
        }
    }

    private mutating func concludeTransaction(_ replies: [Int: Reply], hop: Hop, run: ClientRunResult) -> [Action] {
        var results: [Int: RecipientResult] = [:]
        for i in plan.indexes {
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
        phase = .done
        return [.conclude(results, hop, run, detail: replies.values.map(\.description).sorted().first ?? "", logged: true)]
    }

    private mutating func concludeAll(_ r: RecipientResult, hop: Hop?, run: ClientRunResult?, detail: String,
                                      logged: Bool = true) -> [Action] {
        phase = .done
        var results: [Int: RecipientResult] = [:]
        for i in plan.indexes { results[i] = r }
        return [.conclude(results, hop, run, detail: detail, logged: logged)]
    }

    /// Under an enforce MTA-STS policy, a TLS failure says so: the DSN a
    /// sender gets at the queue lifetime names MTA-STS and the check.
    /// So does a failure under learned TLS status: the sender and the
    /// operator learn why a domain that used to take plaintext now waits.
    private func namingPolicy(_ f: DeliveryFailure, hop: Hop) -> DeliveryFailure {
        guard f.tlsPolicy else { return f }
        let why: String
        if case .usable? = hop.dane {
            why = "required by the DANE TLSA records of \(hop.host)"
        } else if case .unusable? = hop.dane {
            why = "required by the DANE TLSA records of \(hop.host), none usable: TLS without authentication"
        } else if let sts = plan.decision.enforcedSTS {
            why = "required by the MTA-STS policy of \(plan.domain), id \(sts.id)"
        } else if plan.decision.layer == .learned {
            why = "required by relayd's learned TLS status of \(plan.domain): \(plan.decision.reason)"
        } else if plan.decision.layer == .message {
            why = "required by this message: \(plan.decision.reason)"
        } else {
            return f
        }
        return DeliveryFailure(f.kind, status: f.status, reason: f.reason + " (\(why))", cause: f.cause, remoteReply: f.remoteReply)
    }

    /// The typed failure of one address, with the status the DSN and the
    /// log carry.
    static func classify(_ f: ClientFailure, hop: Hop) -> DeliveryFailure {
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
        case .requireTLSNotOffered:
            return DeliveryFailure(.permanent, status: "5.7.30",
                                   reason: "REQUIRETLS support required: \(at) does not offer REQUIRETLS", cause: .requireTLS)
        case .messageTooBig(let limit):
            return DeliveryFailure(.permanent, status: "5.3.4", reason: "message is larger than \(at)'s limit of \(limit) bytes")
        }
    }
}
