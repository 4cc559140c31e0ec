// The per-message controls' settings: `[escalation]` (a subject tag or a
// header raises one message's level), `[forwarding]` (the alias table and
// its TLS-only rule) and `[smime]` (where recipients' certificates are).
// Validated by ConfigLoader+MessageControls; see README "Message-level
// controls" for what each does.
import RelayModel
import RelayPolicy

extension Config {
    /// What replaces plaintext or failure when a message's level cannot be
    /// met: an upstream relay (a secure portal or escrow gateway), or
    /// relayd's own S/MIME encryption.
    public enum SecureChannel: Equatable, Sendable, CustomStringConvertible {
        case relay(String)
        case smime

        public var description: String {
            switch self {
            case .relay(let name): return "relay:\(name)"
            case .smime: return "smime"
            }
        }
    }

    public struct Escalation: Sendable {
        /// Who may escalate a message.
        public enum Senders: String, Sendable {
            /// Clients that authenticated (SMTP AUTH).
            case authenticated
            /// Clients that authenticated, or connect from `networks`.
            case networks
            case everyone
        }
        /// Bracketed tokens, e.g. "[secure]"; empty: no tag escalates.
        public var subjectTags: [String] = []
        /// A header field whose presence escalates (its value may name a
        /// level: forced, verify or tls-exclusive; "yes" means `level`).
        public var header: String?
        /// What a tag raises to.
        public var level: PolicyLevel = .verify
        public var senders: Senders = .authenticated
        public var networks: [IPNetwork] = []
        /// nil: an escalated message that cannot get its level defers, and
        /// bounces at the queue lifetime.
        public var channel: SecureChannel?

        public var enabled: Bool { !subjectTags.isEmpty || header != nil }

        public init() {}

        /// Whether a client may escalate.
        public func permits(authenticatedUser: String?, clientAddress: String) -> Bool {
            switch senders {
            case .everyone: return true
            case .authenticated: return authenticatedUser != nil
            case .networks:
                if authenticatedUser != nil { return true }
                guard let ip = IPAddress(clientAddress) else { return false }
                return networks.contains { $0.contains(ip) }
            }
        }
    }

    public struct Forwarding: Sendable {
        public struct Alias: Sendable {
            public var targets: [Mailbox]
            /// Every copy travels at least at `Forwarding.level`.
            public var tlsOnly: Bool
        }
        /// The table's default for entries that do not say.
        public var tlsOnly = false
        /// The floor of a TLS-only copy: forced (default) or verify.
        public var level: PolicyLevel = .forced
        /// Lower-cased address → where its mail goes instead.
        public var aliases: [String: Alias] = [:]

        public init() {}

        public func alias(for mailbox: Mailbox) -> Alias? {
            aliases[mailbox.description.lowercased()]
        }
    }

    public struct SMIME: Sendable {
        /// Recipients' certificates, one PEM file per address
        /// ("<address>.pem"); nil: no S/MIME channel can be used.
        public var certificateDirectory: String?

        public init() {}
    }
}
