// Why a delivery attempt did not deliver, typed so the queue decides retry
// or bounce from this alone (chasquid's courier returns (err, permanent);
// this is the same idea with the reason kept structured for DSNs and logs).
import RelaySMTP
public struct DeliveryFailure: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Equatable, Sendable {
        /// Try again later.
        case transient
        /// Never going to work: bounce (or drop, for tls-exclusive).
        case permanent
    }

    public let kind: Kind
    /// RFC 3463 enhanced status code for the DSN, e.g. "4.4.1", "5.7.10".
    public let status: String
    public let reason: String
    /// What failed, as far as the choice between next address, fallback,
    /// drop and defer cares.
    public enum Cause: Equatable, Sendable {
        /// TLS policy: STARTTLS missing or refused, a failed handshake, a
        /// certificate that does not verify.
        case tlsPolicy
        /// No connection, or it was lost: says nothing about the hop's TLS.
        case unreachable
        /// RFC 8689: the message carries REQUIRETLS and this hop cannot
        /// take it (not found securely, or REQUIRETLS not offered). Not a
        /// TLS-policy failure: it neither drops (tls-exclusive) nor waits
        /// for TLS; when every address fails so, the message is returned
        /// with 5.7.30.
        case requireTLS
        /// Anything else: the remote's verdict, a timeout, the message.
        case other
    }
    public let cause: Cause
    /// The remote's reply, when there was one.
    public let remoteReply: Reply?

    /// Whether TLS policy (not the network or the remote's verdict) failed.
    public var tlsPolicy: Bool { cause == .tlsPolicy }

    public init(_ kind: Kind, status: String, reason: String, cause: Cause = .other, remoteReply: Reply? = nil) {
        self.kind = kind
        self.status = status
        self.reason = reason
        self.cause = cause
        self.remoteReply = remoteReply
    }

    public var isPermanent: Bool { kind == .permanent }

    /// The status a transient failure bounces with once the message has
    /// outlived the queue lifetime: the same detail, now permanent (4.4.1
    /// becomes 5.4.1); without one, 5.4.7 "delivery time expired".
    public static func statusAfterLifetime(_ status: String) -> String {
        status.isEmpty ? "5.4.7" : "5" + status.dropFirst()
    }
    public var description: String { "\(status) \(reason)" }
}
