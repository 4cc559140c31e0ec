// MTA-STS policies shared between relayd instances (issue 17): when a
// domain's policy must be fetched (a new id, nothing unexpired cached),
// discovery first asks the shared table for the policy published under that
// id; if another instance has it, it is taken (no fetch). Otherwise one
// instance takes the domain's fetch lease and fetches, while the others
// wait for its result, asking the table again at short intervals; if the
// result does not come within `wait`, they fetch themselves. Whatever a
// fetch finds is published for the others.
//
// The table is never on a path that can hold mail longer than discovery
// already may: every backend answer is awaited at most `answerTimeout`
// seconds, and a backend that errs or is slow is treated as absent (the
// instance fetches itself, exactly as without shared state). A policy from
// the table is parsed again here, so a damaged or planted row is no policy
// (and the instance fetches itself), never a half-trusted one.
import Dispatch
import RelaySTS
import RelaySync

/// A policy as the shared table holds it.
public struct SharedSTSPolicy: Equatable, Sendable {
    public var domain: String
    public var id: String
    /// The policy file's text (STSPolicy.text).
    public var text: String
    /// Seconds since the epoch.
    public var fetched: Int
    public var fetchedBy: String

    public init(domain: String, id: String, text: String, fetched: Int, fetchedBy: String) {
        self.domain = domain
        self.id = id
        self.text = text
        self.fetched = fetched
        self.fetchedBy = fetchedBy
    }
}

public protocol SharedSTSBackend: Sendable {
    /// The unexpired policy the table holds for `domain` under `id`.
    func lookup(domain: String, id: String, completion: @escaping @Sendable (Result<SharedSTSPolicy?, any Error>) -> Void)
    /// Takes the domain's fetch lease for `seconds`; true when this
    /// instance holds it now (it was free, expired, or already its own).
    func lease(domain: String, seconds: Int, completion: @escaping @Sendable (Result<Bool, any Error>) -> Void)
    /// Stores a fetched policy for the others (and ends the lease).
    func publish(_ policy: SharedSTSPolicy, expires: Int, completion: @escaping @Sendable (Result<Void, any Error>) -> Void)
}

/// Calls `body` with a completion that runs `done` once: with the answer,
/// or with nil when `seconds` pass first.
func firstOf<T: Sendable>(seconds: Double, _ body: (@escaping @Sendable (T) -> Void) -> Void,
                          done: @escaping @Sendable (T?) -> Void) {
    let answered = Locked(false)
    let once: @Sendable (T?) -> Void = { value in
        let first = answered.withLock { a -> Bool in
            if a { return false }
            a = true
            return true
        }
        if first { done(value) }
    }
    DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { once(nil) }
    body { once($0) }
}
