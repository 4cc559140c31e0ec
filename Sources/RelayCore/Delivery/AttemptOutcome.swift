// The `outcome` of a `delivery attempt` log line: one word that means one
// thing. A line either concludes the attempt for its domain — delivered,
// deferred, bounced, dropped, or mixed when the recipients of one
// transaction went different ways — or says what the attempt does next: the
// next address, the same address in plaintext, the fallback relay.
//
// A conclusion is computed from exactly what the queue files: each
// recipient's result and whether the message had outlived the queue
// lifetime when the attempt ended (decided once, in DomainDelivery, and
// handed to the queue in the report). So a transient failure past
// max_lifetime is logged `bounced`, with the 5.x.x status the DSN carries,
// because that is what the queue then does with it.
public enum AttemptOutcome: Equatable, Sendable {
    /// Every recipient accepted.
    case delivered
    /// Transient: the queue keeps the message and retries.
    case deferred(status: String)
    /// Permanent, or transient past the queue lifetime: the queue bounces.
    case bounced(status: String)
    /// tls-exclusive: no delivery and no bounce.
    case dropped
    /// Recipients of one attempt went different ways.
    case mixed(delivered: Int, deferred: Int, bounced: Int, dropped: Int)
    /// Not a conclusion: this address failed; the next one is tried.
    case nextAddress(status: String)
    /// Not a conclusion: TLS failed at `opportunistic`; the same address is
    /// tried again in plaintext.
    case plaintextRetry(status: String)
    /// Not a conclusion: TLS could not be had at the destination; the
    /// fallback relay is tried.
    case fallback(status: String)

    /// What the queue makes of one recipient's result.
    public enum Disposition: Equatable, Sendable {
        case delivered
        case deferred(status: String)
        case bounced(status: String)
        case dropped
    }

    public static func disposition(of result: RecipientResult, lifetimeExceeded: Bool) -> Disposition {
        switch result {
        case .delivered: return .delivered
        case .dropped: return .dropped
        case .failed(let f) where f.isPermanent: return .bounced(status: f.status)
        case .failed(let f) where lifetimeExceeded: return .bounced(status: DeliveryFailure.statusAfterLifetime(f.status))
        case .failed(let f): return .deferred(status: f.status)
        }
    }

    /// The conclusion of an attempt whose recipients ended as `results`
    /// (in recipient order; a shared status is the first recipient's).
    public static func concluding(_ results: [RecipientResult], lifetimeExceeded: Bool) -> AttemptOutcome {
        let each = results.map { disposition(of: $0, lifetimeExceeded: lifetimeExceeded) }
        var delivered = 0, deferred = 0, bounced = 0, dropped = 0
        var deferredStatus: String?, bouncedStatus: String?
        for d in each {
            switch d {
            case .delivered: delivered += 1
            case .dropped: dropped += 1
            case .deferred(let s): deferred += 1; deferredStatus = deferredStatus ?? s
            case .bounced(let s): bounced += 1; bouncedStatus = bouncedStatus ?? s
            }
        }
        switch (delivered, deferred, bounced, dropped) {
        case (let n, 0, 0, 0) where n > 0: return .delivered
        case (0, let n, 0, 0) where n > 0: return .deferred(status: deferredStatus!)
        case (0, 0, let n, 0) where n > 0: return .bounced(status: bouncedStatus!)
        case (0, 0, 0, let n) where n > 0: return .dropped
        default: return .mixed(delivered: delivered, deferred: deferred, bounced: bounced, dropped: dropped)
        }
    }

    /// The log's spelling.
    public var name: String {
        switch self {
        case .delivered: return "delivered"
        case .deferred: return "deferred"
        case .bounced: return "bounced"
        case .dropped: return "dropped"
        case .mixed: return "mixed"
        case .nextAddress: return "next-address"
        case .plaintextRetry: return "tls-failed-retrying-plaintext"
        case .fallback: return "fallback"
        }
    }

    /// The RFC 3463 status the outcome stands on, when it has one.
    public var status: String? {
        switch self {
        case .deferred(let s), .bounced(let s), .nextAddress(let s), .plaintextRetry(let s), .fallback(let s): return s
        case .delivered, .dropped, .mixed: return nil
        }
    }

    /// How the recipients of a `mixed` outcome went, e.g.
    /// "delivered:1,deferred:1"; nil for every other outcome.
    public var split: String? {
        guard case .mixed(let delivered, let deferred, let bounced, let dropped) = self else { return nil }
        return [("delivered", delivered), ("deferred", deferred), ("bounced", bounced), ("dropped", dropped)]
            .filter { $0.1 > 0 }.map { "\($0.0):\($0.1)" }.joined(separator: ",")
    }

    /// Whether the line ends the attempt for its domain.
    public var isConclusion: Bool {
        switch self {
        case .delivered, .deferred, .bounced, .dropped, .mixed: return true
        case .nextAddress, .plaintextRetry, .fallback: return false
        }
    }
}
