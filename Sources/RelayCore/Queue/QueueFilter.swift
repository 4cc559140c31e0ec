// What `relayd queue list` selects: a pure predicate over QueueEntry values
// (domain, age, folder, reason), so the selection is unit-tested without a
// spool. `--reason tls` is not a text search: it selects every message
// with a pending recipient waiting on a TLS failure (the last failure was a
// TLS-policy one, or carries an RFC 3463 4.7.x status other than 4.7.8, the
// remote's refusal of our AUTH); any other reason is a case-insensitive
// substring of a pending recipient's last error or TLS reason.
import RelayModel

extension DeliveryState.Recipient {
    /// Pending because of TLS: its last failure was a TLS-policy failure
    /// (the TLS reason is kept beside the last error and equals it), or its
    /// status says a security problem (4.7.x; 4.7.8 is an AUTH refusal).
    public var waitsOnTLS: Bool {
        guard status == .pending else { return false }
        if !tlsDetail.isEmpty && tlsDetail == detail { return true }
        return enhancedStatus.hasPrefix("4.7.") && enhancedStatus != "4.7.8"
    }

    /// The kind of TLS failure a pending recipient waits on, from its last
    /// error as DeliveryAttempt words it: `starttls-not-offered`,
    /// `starttls-refused`, a TLSFailure kind (`certificate-untrusted`,
    /// `hostname-mismatch`, …), `mta-sts-mx-not-listed`, `dane`, or
    /// `tls-policy` when the text names none of these. nil when not
    /// waiting on TLS.
    public var tlsFailureType: String? {
        guard waitsOnTLS else { return nil }
        let text = tlsDetail.isEmpty ? detail : tlsDetail
        if text.hasPrefix("TLS not offered") { return "starttls-not-offered" }
        if text.hasPrefix("STARTTLS refused") { return "starttls-refused" }
        if text.hasPrefix("TLS with "), let r = text.firstRange(of: " failed: ") {
            let rest = text[r.upperBound...]
            let kind = rest.prefix { $0 != ":" && $0 != " " }
            if TLSFailure.Kind(rawValue: String(kind)) != nil { return String(kind) }
        }
        if text.contains("MTA-STS policy") { return "mta-sts-mx-not-listed" }
        if text.hasSuffix("(DANE)") || text.contains("DANE") { return "dane" }
        return "tls-policy"
    }
}

public struct QueueFilter: Equatable, Sendable {
    /// A recipient's domain (lower case).
    public var domain: String?
    /// Only messages that arrived at least this many seconds ago.
    public var olderThan: Int?
    /// Only messages in this folder (incoming, active, deferred, hold).
    public var folder: Spool.Folder?
    /// "tls", or text to look for in a pending recipient's last error.
    public var reason: String?

    public init(domain: String? = nil, olderThan: Int? = nil, folder: Spool.Folder? = nil, reason: String? = nil) {
        self.domain = domain.map { DNSName.normalize($0) }
        self.olderThan = olderThan
        self.folder = folder
        self.reason = reason
    }

    /// The folders a listing needs to read.
    public var folders: [Spool.Folder] { folder.map { [$0] } ?? [.incoming, .active, .deferred, .hold] }

    public func matches(_ e: QueueEntry, now: Int) -> Bool {
        if let folder, e.folder != folder { return false }
        if let domain, !e.matches(domain: domain) { return false }
        if let olderThan, now - e.message.arrival < olderThan { return false }
        if let reason {
            let pending = e.recipients.compactMap { $0.1 }.filter { $0.status == .pending }
            if reason.lowercased() == "tls" {
                if !pending.contains(where: \.waitsOnTLS) { return false }
            } else {
                let needle = reason.lowercased()
                if !pending.contains(where: { $0.detail.lowercased().contains(needle) || $0.tlsDetail.lowercased().contains(needle) }) {
                    return false
                }
            }
        }
        return true
    }

    public func apply(_ entries: [QueueEntry], now: Int) -> [QueueEntry] { entries.filter { matches($0, now: now) } }
}
