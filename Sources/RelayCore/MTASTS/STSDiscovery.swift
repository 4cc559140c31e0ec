// MTA-STS discovery and the policy layer (RFC 8461 §3–§5).
//
// Before a delivery attempt decides a domain's level, `prepare` makes sure
// the in-memory view of the cache (STSPolicies) holds what the domain
// publishes: the `_mta-sts.<domain>` TXT record through the c-ares
// resolver (the exact name, no walk to a parent); when its id differs from
// the cached one, or nothing unexpired is cached, the policy is fetched over
// HTTPS (RelayHTTPS: SNI, the chain and the name mta-sts.<domain> verified,
// status 200 and text/plain only, 64 KiB, one deadline), parsed
// (RelaySTS: an invalid policy is no policy) and stored. The layer then
// answers from memory, synchronously, as PolicyEngine asks.
//
// Failures never remove what is cached (RFC 8461 §5.1): no TXT record, a
// TXT lookup that fails, a policy host that does not answer properly — an
// unexpired cached policy still applies. With nothing cached, a failed
// lookup or fetch means "no policy known", logged as such; it never defers
// mail by itself. Concurrent prepares for one domain share one lookup.
import Dispatch
import Logging
import RelayDNS
import RelayHTTPS
import RelayModel
import RelayPolicy
import RelaySTS
import RelaySync

/// The cache as delivery sees it: every record loaded at start, updated as
/// discovery learns, read by the layer. Safe from any queue.
public final class STSPolicies: Sendable {
    private let table = Locked<[String: CachedSTSPolicy]>([:])

    public init(_ records: [CachedSTSPolicy] = []) {
        table.withLock { t in for r in records { t[r.domain] = r } }
    }

    /// The record for `domain`, expired or not (callers check).
    public func record(_ domain: String) -> CachedSTSPolicy? { table.withLock { $0[domain] } }

    public func set(_ record: CachedSTSPolicy) { table.withLock { $0[record.domain] = record } }

    public func remove(_ domain: String) { table.withLock { _ = $0.removeValue(forKey: domain) } }

    public var domains: [String] { table.withLock { $0.keys.sorted() } }
}

/// The MTA-STS upgrade layer: an unexpired enforce policy raises the domain
/// to verify (chain and MX host name) and binds the MX hosts; testing and
/// none raise nothing but are reported in the verdict.
public struct MTASTSLayer: PolicyUpgradeLayer {
    public let layer = PolicyLayer.mtaSTS
    let policies: STSPolicies
    let now: @Sendable () -> Int

    public init(policies: STSPolicies, now: @escaping @Sendable () -> Int) {
        self.policies = policies
        self.now = now
    }

    public func verdict(for domain: String) -> LayerVerdict? {
        guard let r = policies.record(domain), !r.isExpired(at: now()) else { return nil }
        let decision = STSDecision(policy: r.policy, id: r.id)
        let detail = "MTA-STS \(r.policy.mode.rawValue), policy id \(r.id)"
        switch r.policy.mode {
        case .enforce:
            return LayerVerdict(layer: .mtaSTS, level: .verify, detail: detail, requiresVerification: true, mtaSTS: decision)
        case .testing, .none:
            return LayerVerdict(layer: .mtaSTS, level: nil, detail: detail, mtaSTS: decision)
        }
    }
}

/// Fetches the policy body for a domain; HTTPSFetcher in the daemon.
public protocol STSPolicyFetching: Sendable {
    func fetchPolicy(domain: String, completion: @escaping @Sendable (Result<[UInt8], HTTPSFetchFailure>) -> Void)
}

extension HTTPSFetcher: STSPolicyFetching {
    public func fetchPolicy(domain: String, completion: @escaping @Sendable (Result<[UInt8], HTTPSFetchFailure>) -> Void) {
        fetch(host: "mta-sts." + domain, path: "/.well-known/mta-sts.txt", completion: completion)
    }
}

public final class STSDiscovery: Sendable {
    let resolver: any DNSResolving
    let fetcher: any STSPolicyFetching
    let store: any STSCacheStore
    public let policies: STSPolicies
    let logger: Logger
    let now: @Sendable () -> Int
    /// Domains with a prepare under way, and who waits for it.
    private let waiting = Locked<[String: [@Sendable () -> Void]]>([:])
    /// When each domain was last refetched because delivery failed under
    /// its policy (see recheckAfterFailure).
    private let lastRecheck = Locked<[String: Int]>([:])
    /// At most one refetch after a failure per domain in this many seconds.
    public static let recheckInterval = 300
    /// A fetch of a policy id that failed is not tried again for this long:
    /// each try can hold a delivery for the whole fetch timeout. Meanwhile
    /// the cached policy applies (or, with none, no policy is known).
    public static let failedFetchBackoff = 300
    private let failedFetches = Locked<[String: (id: String, at: Int)]>([:])
    /// Why the last fetch of a domain's policy gave none, until one
    /// succeeds (TLS-RPT counts sessions sent meanwhile, RFC 8460 §4.3.2.2).
    private let fetchProblems = Locked<[String: FetchProblem]>([:])

    public enum FetchProblem: Equatable, Sendable {
        /// The policy host could not be reached or answered badly.
        case fetchError(String)
        /// What it served is not a valid policy.
        case invalid(String)
        /// Its certificate chain or name did not verify.
        case webPKI(String)
    }

    /// The domain's last fetch problem, if no fetch has succeeded since.
    public func fetchProblem(_ domain: String) -> FetchProblem? { fetchProblems.withLock { $0[domain] } }

    /// Shared state (STSShared.swift): nil with the file backend.
    let shared: (any SharedSTSBackend)?
    /// How long an instance waits for another's fetch before fetching
    /// itself, and how long it awaits any one answer of the shared table.
    let sharedWait: Int
    static let answerTimeout = 1.0
    static let sharedPollInterval = 0.25

    public init(resolver: any DNSResolving, fetcher: any STSPolicyFetching, store: any STSCacheStore,
                policies: STSPolicies, logger: Logger, now: @escaping @Sendable () -> Int,
                shared: (any SharedSTSBackend)? = nil, sharedWait: Int = 10) {
        self.shared = shared
        self.sharedWait = sharedWait
        self.resolver = resolver
        self.fetcher = fetcher
        self.store = store
        self.policies = policies
        self.logger = logger
        self.now = now
    }

    /// Loads every stored record into memory (at start).
    public static func load(_ store: any STSCacheStore) -> [CachedSTSPolicy] {
        ((try? store.list()) ?? []).compactMap { try? store.get($0) }
    }

    /// Delivery under the domain's enforce policy failed: the policy may be
    /// stale (the domain moved its MX and the id was not bumped, which
    /// operators of other implementations had to fix by hand). Refetch it —
    /// HTTPS is authenticated, so this cannot downgrade — at most once per
    /// domain every `recheckInterval` seconds. The retry then uses what was
    /// found.
    public func recheckAfterFailure(_ domain: String) {
        let t = now()
        let due = lastRecheck.withLock { last -> Bool in
            if let at = last[domain], t - at < Self.recheckInterval { return false }
            last[domain] = t
            return true
        }
        guard due else { return }
        logger.info("MTA-STS: delivery failed under the policy; fetching it again", metadata: ["domain": "\(domain)"])
        refresh(domain) {}
    }

    /// Proactive refresh (RFC 8461 §5.1 advises refreshing well before
    /// expiry): every cached policy fetched more than `age` seconds ago, or
    /// within a quarter of its max_age of expiring, is fetched again. The
    /// daemon calls this from a timer; `jitter` spreads the work.
    public func refreshStale(age: Int = 86_400, jitter: @escaping @Sendable (Int) -> Int = { Int.random(in: 0...max(1, $0)) }) {
        let t = now()
        for domain in policies.domains {
            guard let r = policies.record(domain) else { continue }
            let quarter = max(1, r.policy.maxAge / 4)
            guard t - r.fetched >= age || r.expires - t <= quarter else { continue }
            let delay = jitter(60)
            // With shared state, a policy another instance refreshed since
            // this copy was fetched is taken instead of fetching again.
            DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(delay)) { [self] in
                discover(domain, force: true, sharedNewerThan: r.fetched) {}
            }
        }
    }

    /// Takes the stored record of `domain` (or its absence) into memory:
    /// `relayd policy refresh|flush` changed it on disk.
    public func reload(_ domain: String) -> String {
        do {
            if let r = try store.get(domain) {
                policies.set(r)
                return "reloaded the MTA-STS policy of \(domain) (id \(r.id), mode \(r.policy.mode.rawValue))"
            }
            policies.remove(domain)
            return "no MTA-STS policy cached for \(domain) any more"
        } catch {
            return "error: \(error)"
        }
    }

    /// Brings the domain's policy up to date as far as DNS and the policy
    /// host allow, then calls `done` (always, exactly once).
    public func prepare(_ domain: String, done: @escaping @Sendable () -> Void) {
        discover(domain, force: false, done: done)
    }

    /// `relayd policy refresh`: as prepare, but the policy is fetched even
    /// when the TXT id has not changed.
    public func refresh(_ domain: String, done: @escaping @Sendable () -> Void) {
        discover(domain, force: true, done: done)
    }

    private func discover(_ domain: String, force: Bool, sharedNewerThan: Int? = nil, done: @escaping @Sendable () -> Void) {
        let first = waiting.withLock { w -> Bool in
            if w[domain] != nil { w[domain]!.append(done); return false }
            w[domain] = [done]
            return true
        }
        guard first else { return }
        resolver.query("_mta-sts." + domain, .txt) { [self] result in
            lookedUp(domain, result, force: force, sharedNewerThan: sharedNewerThan)
        }
    }

    private func finish(_ domain: String) {
        let all = waiting.withLock { $0.removeValue(forKey: domain) ?? [] }
        for d in all { d() }
    }

    private func lookedUp(_ domain: String, _ result: Result<DNSResponse, DNSError>, force: Bool, sharedNewerThan: Int? = nil) {
        let cached = policies.record(domain)
        let usable = cached.map { !$0.isExpired(at: now()) } ?? false
        let records: [[[UInt8]]]
        switch result {
        case .failure(let e):
            report(domain, "TXT lookup failed: \(e)", cached: usable ? cached : nil)
            return finish(domain)
        case .success(let r) where r.rcode != .noError && r.rcode != .nxDomain:
            report(domain, "TXT lookup failed: \(r.rcode)", cached: usable ? cached : nil)
            return finish(domain)
        case .success(let r):
            let owner = "_mta-sts." + domain
            records = r.answers.compactMap { rec in
                guard DNSName.normalize(rec.name) == owner, case .txt(let strings) = rec.data else { return nil }
                return strings
            }
        }
        switch STSRecord.select(records) {
        case .failure(let why):
            // No (single, valid) record: a cached policy stays (§5.1); with
            // none, the domain has no policy, which is no failure.
            if !records.isEmpty || cached != nil {
                logger.debug("MTA-STS record not usable", metadata: ["domain": "\(domain)", "reason": "\(why)",
                                                                   "cached": "\(usable)"])
            }
            return finish(domain)
        case .success(let record):
            if !force, let cached, usable, cached.id == record.id { return finish(domain) }
            let t = now()
            if !force, let failed = failedFetches.withLock({ $0[domain] }), failed.id == record.id,
               t - failed.at < Self.failedFetchBackoff {
                return finish(domain)
            }
            if shared != nil, !force || sharedNewerThan != nil {
                fromShared(domain, id: record.id, cached: usable ? cached : nil, newerThan: sharedNewerThan)
            } else {
                fetch(domain, id: record.id, cached: usable ? cached : nil)
            }
        }
    }

    // MARK: shared state

    enum LeaseAnswer: Sendable { case held, heldByAnother, unavailable }

    /// The policy under `id` from the shared table, or this instance's
    /// fetch when it holds the lease, or the lease holder's result, or,
    /// when none of that comes in time, a fetch of its own.
    private func fromShared(_ domain: String, id: String, cached: CachedSTSPolicy?, newerThan: Int? = nil) {
        guard let shared else { return fetch(domain, id: id, cached: cached) }
        askShared(domain, id: id, newerThan: newerThan) { [self] found in
            if let found { return take(found, cached: cached) }
            firstOf(seconds: Self.answerTimeout, { (done: @escaping @Sendable (LeaseAnswer) -> Void) in
                shared.lease(domain: domain, seconds: sharedWait + 5) { r in
                    switch r {
                    case .success(true): done(.held)
                    case .success(false): done(.heldByAnother)
                    case .failure: done(.unavailable)
                    }
                }
            }, done: { [self] answer in
                switch answer {
                case .heldByAnother?:
                    waitForOthers(domain, id: id, cached: cached, newerThan: newerThan, until: Double(now()) + Double(sharedWait))
                case .held?, .unavailable?, nil:
                    // Ours, or the table is down or slow: fetch as if alone.
                    fetch(domain, id: id, cached: cached)
                }
            })
        }
    }

    /// Asks the table for the policy under `id`; nil for none, an error, no
    /// answer in time, or a row that does not parse.
    /// `newerThan`: only a row fetched after this (a proactive refresh
    /// takes another instance's newer fetch, not its own old copy).
    private func askShared(_ domain: String, id: String, newerThan: Int? = nil,
                           _ then: @escaping @Sendable (CachedSTSPolicy?) -> Void) {
        guard let shared else { return then(nil) }
        firstOf(seconds: Self.answerTimeout, { done in
            shared.lookup(domain: domain, id: id) { done(try? $0.get()) }
        }, done: { [self] (answer: SharedSTSPolicy??) in
            guard let row = answer ?? nil, row.domain == domain, row.id == id, row.fetched > (newerThan ?? Int.min),
                  case .success(let policy) = STSPolicy.parse(Array(row.text.utf8)) else { return then(nil) }
            let record = CachedSTSPolicy(domain: domain, id: id, policy: policy, fetched: row.fetched)
            guard !record.isExpired(at: now()) else { return then(nil) }
            logger.info("MTA-STS policy taken from shared state", metadata: [
                "domain": "\(domain)", "id": "\(id)", "mode": "\(policy.mode.rawValue)", "fetched_by": "\(row.fetchedBy)"])
            then(record)
        })
    }

    private func waitForOthers(_ domain: String, id: String, cached: CachedSTSPolicy?, newerThan: Int?, until deadline: Double) {
        DispatchQueue.global().asyncAfter(deadline: .now() + Self.sharedPollInterval) { [self] in
            askShared(domain, id: id, newerThan: newerThan) { [self] found in
                if let found { return take(found, cached: cached) }
                if Double(now()) >= deadline {
                    logger.info("MTA-STS: another instance's fetch did not come in time; fetching", metadata: ["domain": "\(domain)"])
                    return fetch(domain, id: id, cached: cached)
                }
                waitForOthers(domain, id: id, cached: cached, newerThan: newerThan, until: deadline)
            }
        }
    }

    private func take(_ record: CachedSTSPolicy, cached: CachedSTSPolicy?) {
        failedFetches.withLock { _ = $0.removeValue(forKey: record.domain) }
        fetchProblems.withLock { _ = $0.removeValue(forKey: record.domain) }
        keep(record)
        finish(record.domain)
    }

    /// Fetches and stores the policy published under `id`.
    func fetch(_ domain: String, id: String, cached: CachedSTSPolicy?) {
        fetcher.fetchPolicy(domain: domain) { [self] result in
            let t = now()
            switch result {
            case .failure(let f):
                let problem = "policy fetch failed: \(f)"
                if case .tls = f { noteProblem(domain, .webPKI(problem)) } else { noteProblem(domain, .fetchError(problem)) }
                failed(domain, id: id, at: t, problem: problem, cached: cached)
            case .success(let body):
                switch STSPolicy.parse(body) {
                case .failure(let e):
                    noteProblem(domain, .invalid("invalid policy: \(e)"))
                    failed(domain, id: id, at: t, problem: "invalid policy: \(e)", cached: cached)
                case .success(let policy):
                    failedFetches.withLock { _ = $0.removeValue(forKey: domain) }
                    fetchProblems.withLock { _ = $0.removeValue(forKey: domain) }
                    let record = CachedSTSPolicy(domain: domain, id: id, policy: policy, fetched: t)
                    keep(record)
                    if let shared {
                        let row = SharedSTSPolicy(domain: domain, id: id, text: policy.text, fetched: t, fetchedBy: "")
                        shared.publish(row, expires: record.expires) { [logger] result in
                            if case .failure(let error) = result {
                                logger.info("MTA-STS: policy not published to shared state", metadata: [
                                    "domain": "\(domain)", "error": "\(error)"])
                            }
                        }
                    }
                    logger.info("MTA-STS policy fetched", metadata: [
                        "domain": "\(domain)", "id": "\(id)", "mode": "\(policy.mode.rawValue)",
                        "max_age": "\(policy.maxAge)", "mx": "\(policy.mx.joined(separator: ","))"])
                }
            }
            finish(domain)
        }
    }

    private func noteProblem(_ domain: String, _ problem: FetchProblem) {
        fetchProblems.withLock { $0[domain] = problem }
    }

    /// A fetch under `id` that gave no policy: not tried again for a while,
    /// reported, and noted on the cached record (which stays).
    private func failed(_ domain: String, id: String, at t: Int, problem: String, cached: CachedSTSPolicy?) {
        failedFetches.withLock { $0[domain] = (id, t) }
        report(domain, problem, cached: cached)
        if var kept = cached {
            kept.lastAttempt = t
            kept.lastResult = problem
            keep(kept)
        }
    }

    private func keep(_ record: CachedSTSPolicy) {
        policies.set(record)
        do { try store.put(record) } catch {
            // Memory still has it; the next start refetches.
            logger.warning("cannot store MTA-STS policy", metadata: ["domain": "\(record.domain)", "error": "\(error)"])
        }
    }

    /// A discovery problem: with a cached policy it is applied (and the
    /// problem logged unless its mode is none); without, no policy is known.
    private func report(_ domain: String, _ problem: String, cached: CachedSTSPolicy?) {
        if let cached {
            if cached.policy.mode != .none {
                logger.warning("MTA-STS refresh failed; applying the cached policy", metadata: [
                    "domain": "\(domain)", "problem": "\(problem)", "id": "\(cached.id)",
                    "mode": "\(cached.policy.mode.rawValue)", "expires_in": "\(cached.expires - now())s"])
            }
        } else {
            logger.info("MTA-STS: no policy known", metadata: ["domain": "\(domain)", "problem": "\(problem)"])
        }
    }
}
