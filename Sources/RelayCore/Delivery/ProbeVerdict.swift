// What the probe's findings mean, as a pure function: for each policy level,
// what delivery would do with the addresses found (SPEC.md's table, in
// DeliveryAttempt's terms: addresses in order; opportunistic falls back to
// plaintext when STARTTLS is missing, refused or its handshake fails;
// forced needs a completed handshake; verify needs the chain and the MX
// name verified; tls-exclusive drops when every address that answered
// failed on TLS), and which strict level the domain is fit for — the exit
// code of `relayd probe`.
import RelayModel
import RelayPolicy
import RelaySMTP
import RelayTLS

public enum ProbeVerdict {
    /// What one address offers, as far as a policy level cares.
    public enum AddressTLS: String, Equatable, Sendable {
        /// Nothing to judge: no connection, no greeting, or EHLO unanswered.
        case noAnswer = "no-answer"
        case noSTARTTLS = "no-starttls"
        /// STARTTLS offered but refused, or the handshake failed.
        case tlsFailed = "tls-failed"
        /// The handshake completed but the server gave up inside TLS.
        case brokenAfterTLS = "broken-after-tls"
        case tlsUnverified = "tls-unverified"
        case tlsVerified = "tls-verified"
        /// DANE (RFC 7672) decides for this host, whatever the level:
        /// a TLSA record authenticated the server;
        case daneVerified = "dane-verified"
        /// the host has TLSA records, none usable, and TLS worked (TLS is
        /// mandatory, not authenticated);
        case daneTLS = "dane-tls"
        /// the host has TLSA records and DANE failed (no match, no TLS, or
        /// the TLSA lookup failed): delivery does not use it.
        case daneFailed = "dane-failed"
    }

    /// What delivery at one level would do with the whole domain.
    public enum Outcome: String, Equatable, Sendable {
        case plaintext
        /// Over TLS, the certificate not required to verify.
        case tls
        case verifiedTLS = "verified-tls"
        case deferred = "defer"
        case dropped = "drop"
    }

    /// The strictest level the domain is fit for, and the process exit code.
    public enum Fitness: Int32, Equatable, Sendable {
        case verify = 0
        case unknown = 1
        case forcedOnly = 2
        case neither = 3
    }

    /// With DANE: the host's TLSA state decides before any level does.
    public static func classify(_ r: HostProbeResult, dane: DANEHostState?) -> AddressTLS {
        let plain = classify(r)
        switch dane {
        case .usable?:
            if plain == .noAnswer { return .noAnswer }
            return r.tls?.daneMatch != nil && plain == .tlsVerified ? .daneVerified : .daneFailed
        case .unusable?:
            if plain == .noAnswer { return .noAnswer }
            return plain == .tlsVerified || plain == .tlsUnverified ? .daneTLS : .daneFailed
        case .failed?:
            return .daneFailed
        case .insecure?, .noRecords?, nil:
            return plain
        }
    }

    public static func classify(_ r: HostProbeResult) -> AddressTLS {
        guard let offered = r.starttlsOffered else { return .noAnswer }
        guard offered else { return .noSTARTTLS }
        guard r.findings.tlsEstablished, let tls = r.tls else { return .tlsFailed }
        if r.failure != nil { return .brokenAfterTLS }
        return tls.verification == .trusted ? .tlsVerified : .tlsUnverified
    }

    /// One address at one level: delivered, or on to the next address
    /// (`tlsPolicy`: because of TLS, which is what tls-exclusive drops on).
    enum Step: Equatable {
        case deliver(Outcome)
        case next(tlsPolicy: Bool)
    }

    static func step(_ a: AddressTLS, level: PolicyLevel, verification: Bool) -> Step {
        switch a {
        case .noAnswer: return .next(tlsPolicy: false)
        case .daneVerified: return .deliver(.verifiedTLS)
        case .daneTLS: return .deliver(.tls)
        case .daneFailed: return .next(tlsPolicy: true)
        default: break
        }
        switch level {
        case .none:
            return .deliver(.plaintext)
        case .opportunistic:
            switch a {
            case .noSTARTTLS, .tlsFailed: return .deliver(.plaintext)
            case .tlsUnverified, .tlsVerified: return .deliver(.tls)
            case .brokenAfterTLS, .noAnswer, .daneVerified, .daneTLS, .daneFailed: return .next(tlsPolicy: false)
            }
        case .forced, .verify, .tlsExclusive:
            switch a {
            case .noSTARTTLS, .tlsFailed: return .next(tlsPolicy: true)
            case .brokenAfterTLS, .noAnswer, .daneVerified, .daneTLS, .daneFailed: return .next(tlsPolicy: false)
            case .tlsUnverified: return verification ? .next(tlsPolicy: true) : .deliver(.tls)
            case .tlsVerified: return .deliver(verification ? .verifiedTLS : .tls)
            }
        }
    }

    /// What delivery at `level` (with or without verification) would do;
    /// nil with no address to judge by.
    public static func outcome(level: PolicyLevel, verification: Bool, _ addresses: [AddressTLS]) -> Outcome? {
        guard !addresses.isEmpty else { return nil }
        var tlsOnly = true
        for a in addresses {
            switch step(a, level: level, verification: verification) {
            case .deliver(let o): return o
            case .next(let tlsPolicy): tlsOnly = tlsOnly && tlsPolicy
            }
        }
        return level == .tlsExclusive && tlsOnly ? .dropped : .deferred
    }

    /// The level table: each level as SPEC.md defines it (tls-exclusive at
    /// its default, verify, strength).
    public static func levels(_ addresses: [AddressTLS]) -> [(level: PolicyLevel, outcome: Outcome?)] {
        PolicyLevel.allCases.map { level in
            (level, outcome(level: level, verification: DomainPolicy(level: level).requiresVerification, addresses))
        }
    }

    /// Fit for verify when every address that answered verified; for
    /// forced when every one did TLS; neither when one had no usable TLS;
    /// unknown when none answered.
    public static func fitness(_ addresses: [AddressTLS]) -> Fitness {
        let answered = addresses.filter { $0 != .noAnswer }
        guard !answered.isEmpty else { return .unknown }
        if answered.allSatisfy({ $0 == .tlsVerified || $0 == .daneVerified }) { return .verify }
        if answered.allSatisfy({ [.tlsVerified, .tlsUnverified, .daneVerified, .daneTLS].contains($0) }) { return .forcedOnly }
        return .neither
    }
}
