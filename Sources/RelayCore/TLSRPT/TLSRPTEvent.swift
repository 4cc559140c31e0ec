// What one delivery session tells TLS-RPT (RFC 8460 §4): under which
// policy it ran, and whether a TLS session could be had as the policy
// asked. The delivery side builds one `TLSRPTEvent` per MX session and
// hands it to `TLSRPTLedger.record`; nothing here does I/O.
//
// The words are the RFC's (§4.3 policy types, §4.3.2 result types), as raw
// values, so the report is written from them without a table of spellings.

/// §4.4 "policy-type".
import RelayModel

public enum TLSRPTPolicyType: String, CaseIterable, Sendable {
    case sts
    case tlsa
    case noPolicyFound = "no-policy-found"
}

/// The policy a session was held to, as the report's "policy" object names
/// it. Two sessions count together exactly when their policies are equal.
public struct TLSRPTPolicy: Hashable, Sendable {
    public var type: TLSRPTPolicyType
    /// For sts: the policy's lines; for tlsa: each TLSA record as text;
    /// none for no-policy-found.
    public var strings: [String]
    /// The recipient domain the policy is for.
    public var domain: String
    /// For sts: the policy's mx patterns.
    public var mxHosts: [String]

    public init(type: TLSRPTPolicyType, strings: [String] = [], domain: String, mxHosts: [String] = []) {
        self.type = type
        self.strings = strings
        self.domain = domain
        self.mxHosts = mxHosts
    }
}

/// One failure's particulars (§4.4 "failure-details"); sessions with equal
/// particulars share one entry and its count.
public struct TLSRPTFailure: Hashable, Sendable {
    public var resultType: TLSRPTResultType
    public var sendingMTAIP: String?
    public var receivingMXHostname: String?
    public var receivingIP: String?
    public var failureReasonCode: String?
    public var additionalInformation: String?

    public init(resultType: TLSRPTResultType, sendingMTAIP: String? = nil, receivingMXHostname: String? = nil,
                receivingIP: String? = nil, failureReasonCode: String? = nil, additionalInformation: String? = nil) {
        self.resultType = resultType
        self.sendingMTAIP = sendingMTAIP
        self.receivingMXHostname = receivingMXHostname
        self.receivingIP = receivingIP
        self.failureReasonCode = failureReasonCode
        self.additionalInformation = additionalInformation
    }
}

/// One counted session.
public struct TLSRPTEvent: Hashable, Sendable {
    public enum Result: Hashable, Sendable {
        case success
        case failure(TLSRPTFailure)
    }

    public var policy: TLSRPTPolicy
    public var result: Result

    public init(policy: TLSRPTPolicy, result: Result) {
        self.policy = policy
        self.result = result
    }

    public static func success(_ policy: TLSRPTPolicy) -> TLSRPTEvent { TLSRPTEvent(policy: policy, result: .success) }

    public static func failure(_ policy: TLSRPTPolicy, _ failure: TLSRPTFailure) -> TLSRPTEvent {
        TLSRPTEvent(policy: policy, result: .failure(failure))
    }
}
