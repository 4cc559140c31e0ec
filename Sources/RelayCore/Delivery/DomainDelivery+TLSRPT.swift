// What each MX session tells TLS-RPT (RFC 8460): one event per address
// tried, from what the `delivery attempt` line already knows. Called from
// `log(...)`; `TLSRPTLedger.record` only counts in memory.
//
// Not counted: a message that is itself a TLS-RPT report (§5.4; its
// Envelope.tlsReport flag), a smarthost or transport relay (not the
// domain's MX), a plaintext retry (the failure it follows was counted), a
// hop where TLS was never asked for, and a session that ended before the
// TLS question came up (connect or greeting failures say nothing of TLS).
// The policy is the host's DANE TLSA records when DANE decided for it
// (type tlsa: a record matched → success; nothing matched → tlsa-invalid;
// a TLSA lookup that failed → dnssec-invalid, counted without a session;
// records all unusable and TLS had → success, as RFC 7672 asks nothing
// more), else the MTA-STS policy the decision carried (enforce or
// testing), else no-policy-found.
import RelayModel
import RelayMTASTS
import RelaySMTP
import RelaySTS
import RelayTLS
import RelayTLSRPT

extension DomainDelivery {
    func countForTLSRPT(hop: Hop?, run: ClientRunResult?) {
        guard env.tlsrpt != nil || env.metrics != nil, !message.envelope.tlsReport, let hop, hop.via == "mx", let run,
              let event = Self.tlsrptEvent(domain: domain, sts: (decision.enforcedSTS ?? decision.testingSTS)?.policy,
                                           host: hop.host, ip: "\(hop.address)", tls: hop.level.tlsRequirement,
                                           verificationRequired: hop.requiresVerification, result: run, dane: hop.dane,
                                           stsProblem: env.mtaSTS?.fetchProblem(domain))
        else { return }
        env.tlsrpt?.record(event)
        if case .failure(let f) = event.result { env.metrics?.tlsFailure(f.resultType) }
    }

    /// A DANE host not contacted because its TLSA lookup failed.
    func countDANEUnavailable(host: String, reason: String) {
        guard !message.envelope.tlsReport else { return }
        env.metrics?.tlsFailure(.dnssecInvalid)
        env.tlsrpt?.record(.failure(TLSRPTPolicy(type: .tlsa, domain: domain),
                               TLSRPTFailure(resultType: .dnssecInvalid, receivingMXHostname: host, additionalInformation: reason)))
    }

    /// The pure mapping: nil when the session says nothing about TLS.
    static func tlsrptEvent(domain: String, sts: STSPolicy?, host: String, ip: String, tls: TLSRequirement,
                            verificationRequired: Bool, result: ClientRunResult, dane: DANEHostState? = nil,
                            stsProblem: STSDiscovery.FetchProblem? = nil) -> TLSRPTEvent? {
        guard tls != .never else { return nil }
        if let dane, dane.applies { return daneEvent(domain: domain, host: host, ip: ip, state: dane, result: result) }
        // A policy that could not be had: the session is a failure of the
        // sts policy, of the kind the fetch failed with (RFC 8460 §4.3.2.2).
        if sts == nil, let stsProblem, result.tls != nil || result.outcome.isTLSQuestionAnswered {
            let (type, info): (TLSRPTResultType, String)
            switch stsProblem {
            case .fetchError(let why): (type, info) = (.stsPolicyFetchError, why)
            case .invalid(let why): (type, info) = (.stsPolicyInvalid, why)
            case .webPKI(let why): (type, info) = (.stsWebpkiInvalid, why)
            }
            return .failure(TLSRPTPolicy(type: .sts, domain: domain),
                            TLSRPTFailure(resultType: type, receivingMXHostname: host, receivingIP: ip, additionalInformation: info))
        }
        let policy: TLSRPTPolicy
        if let sts {
            policy = TLSRPTPolicy(type: .sts, strings: sts.text.split(separator: "\n").map(String.init), domain: domain,
                                  mxHosts: sts.mx)
        } else {
            policy = TLSRPTPolicy(type: .noPolicyFound, domain: domain)
        }
        func failure(_ type: TLSRPTResultType, code: String? = nil, info: String? = nil) -> TLSRPTEvent {
            .failure(policy, TLSRPTFailure(resultType: type, receivingMXHostname: host, receivingIP: ip,
                                           failureReasonCode: code, additionalInformation: info))
        }
        // Under MTA-STS the host must also be one the policy names (§4.1 of
        // RFC 8461); enforce never connects to another, testing does.
        if let sts, !sts.matches(mxHost: host) {
            return failure(.validationFailure, info: "MX host not in the MTA-STS policy")
        }
        if let info = result.tls {
            switch info.verification {
            case .trusted:
                return .success(policy)
            case .failed(let f) where sts != nil || verificationRequired:
                return failure(resultType(f), code: f.kind.rawValue, info: f.detail)
            default:
                // Opportunistic with no policy: TLS was had, as asked.
                return sts == nil && !verificationRequired ? .success(policy)
                    : failure(.certificateNotTrusted, code: "no-verification", info: "\(info.verification)")
            }
        }
        return withoutSession(result.outcome, resultType: resultType) { failure($0, code: $1, info: $2) }
    }

    /// A session that never had TLS: what stopped it, or nil when it
    /// failed before the TLS question came up.
    static func withoutSession(_ outcome: ClientOutcome, resultType: (TLSFailure) -> TLSRPTResultType,
                               _ failure: (TLSRPTResultType, String?, String?) -> TLSRPTEvent) -> TLSRPTEvent? {
        switch outcome {
        case .completed, .failed(.tlsNotOffered):
            return failure(.starttlsNotSupported, nil, nil)
        case .failed(.tlsRefused(let reply)):
            return failure(.starttlsNotSupported, nil, "STARTTLS refused: \(reply)")
        case .failed(.tls(let f)):
            return failure(resultType(f), f.kind.rawValue, f.detail)
        default:
            return nil
        }
    }

    /// A session with a host DANE decided for.
    static func daneEvent(domain: String, host: String, ip: String, state: DANEHostState, result: ClientRunResult) -> TLSRPTEvent? {
        let records: [TLSARecord]
        switch state {
        case .usable(let p): records = p.records
        case .unusable(let r): records = r
        default: return nil
        }
        let policy = TLSRPTPolicy(type: .tlsa, strings: records.map(\.presentation), domain: domain, mxHosts: [host])
        func failure(_ type: TLSRPTResultType, code: String? = nil, info: String? = nil) -> TLSRPTEvent {
            .failure(policy, TLSRPTFailure(resultType: type, receivingMXHostname: host, receivingIP: ip,
                                           failureReasonCode: code, additionalInformation: info))
        }
        if let info = result.tls {
            if case .unusable = state { return .success(policy) }
            if info.daneMatch != nil { return .success(policy) }
            if case .failed(let f) = info.verification { return failure(daneResultType(f), code: f.kind.rawValue, info: f.detail) }
            return failure(.tlsaInvalid)
        }
        return withoutSession(result.outcome, resultType: daneResultType) { failure($0, code: $1, info: $2) }
    }

    /// Under DANE: no record matched is tlsa-invalid; a DANE-TA chain with
    /// the wrong name or dates says so.
    static func daneResultType(_ f: TLSFailure) -> TLSRPTResultType {
        switch f.kind {
        case .daneNoMatch: return .tlsaInvalid
        case .hostnameMismatch: return .certificateHostMismatch
        case .certificateUntrusted where f.detail.lowercased().contains("expired"): return .certificateExpired
        case .certificateUntrusted: return .tlsaInvalid
        default: return .validationFailure
        }
    }

    static func resultType(_ f: TLSFailure) -> TLSRPTResultType {
        switch f.kind {
        case .hostnameMismatch: return .certificateHostMismatch
        case .certificateUntrusted: return f.detail.lowercased().contains("expired") ? .certificateExpired : .certificateNotTrusted
        case .noPeerCertificate: return .certificateNotTrusted
        default: return .validationFailure
        }
    }
}

extension ClientOutcome {
    /// Whether the session got as far as TLS being had or refused (not a
    /// connect or greeting failure, which say nothing of TLS).
    var isTLSQuestionAnswered: Bool {
        switch self {
        case .completed, .failed(.tlsNotOffered), .failed(.tlsRefused), .failed(.tls): return true
        default: return false
        }
    }
}

