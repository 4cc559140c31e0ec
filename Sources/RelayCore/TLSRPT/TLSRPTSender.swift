// Sending the reports: for each UTC day that has ended and each policy
// domain with sessions on it, look up `_smtp._tls.<domain>`; when it names
// destinations, make the report and hand it to each (mailto: a message in
// relayd's own queue; https: a POST). RFC 8460 §5.
//
// When: not at midnight, when every sender on the Internet would send at
// once, but at a random moment in the first `TLSRPTSchedule.spread` after
// the day ends. A destination that fails is retried with doubling delays
// (five minutes, then 10, 20 … at most four hours apart) until 24 hours
// after the first attempt; then the report is given up and logged. A
// domain with no sessions that day has no counters, so no report; a domain
// without a TLS-RPT record is done at once. How each report is going is a
// `TLSRPTSendState` under the spool, so a restart neither repeats a
// destination that took the report nor forgets one that did not.
//
// The clock and the randomness are injected, and so are DNS, the queue
// and HTTPS (`TLSRPTSender.Transport`): `tick` is the whole timer's work,
// so the tests run it on a fake clock.
import Logging
import RelayModel
import RelayQueue
import RelaySync

public enum TLSRPTSchedule {
    /// Reports go out at a random moment this long after the day ends.
    public static let spread = 4 * 3600
    /// Not in the first minutes, when the last sessions of the day may
    /// still be being counted (and flushed).
    public static let settle = 300
    /// Retries end this long after the first attempt.
    public static let window = 24 * 3600
    static let firstRetry = 300
    static let maxRetry = 4 * 3600

    /// The first attempt for a day's report, given a random draw.
    public static func firstAttempt(day: TLSRPTDay, random: (ClosedRange<Int>) -> Int) -> Int {
        day.end + random(settle...spread)
    }

    /// After `attempts` failed attempts: when to try again, or nil when
    /// that would be past the window.
    public static func retry(first: Int, attempts: Int, now: Int) -> Int? {
        let delay = min(maxRetry, firstRetry << min(max(attempts - 1, 0), 16))
        let next = now + delay
        return next <= first + window ? next : nil
    }
}

public final class TLSRPTSender: Sendable {
    /// What the sender needs from the world.
    public struct Transport: Sendable {
        /// The TXT records (each as its strings) at a name. `.success([])`:
        /// none (NXDOMAIN or no TXT); `.failure`: try again later.
        public var lookupTXT: @Sendable (String, @escaping @Sendable (Result<[[String]], TLSRPTSendError>) -> Void) -> Void
        /// Puts a message into relayd's queue, durably.
        public var enqueue: @Sendable (QueuedMessage) throws -> Void
        /// POSTs the gzipped report; success is any 2xx.
        public var post: @Sendable (_ host: String, _ port: UInt16, _ path: String, _ body: [UInt8],
                                    _ completion: @escaping @Sendable (Result<Void, TLSRPTSendError>) -> Void) -> Void
        /// A fresh queue id.
        public var newID: @Sendable () -> String

        public init(lookupTXT: @escaping @Sendable (String, @escaping @Sendable (Result<[[String]], TLSRPTSendError>) -> Void) -> Void,
                    enqueue: @escaping @Sendable (QueuedMessage) throws -> Void,
                    post: @escaping @Sendable (String, UInt16, String, [UInt8], @escaping @Sendable (Result<Void, TLSRPTSendError>) -> Void) -> Void,
                    newID: @escaping @Sendable () -> String = { QueueID.generate() }) {
            self.lookupTXT = lookupTXT
            self.enqueue = enqueue
            self.post = post
            self.newID = newID
        }
    }

    public let ledger: TLSRPTLedger
    public let submitter: TLSRPTSubmitter
    let from: Mailbox?
    let hostname: String
    let transport: Transport
    let logger: Logger
    let now: @Sendable () -> Int
    let random: @Sendable (ClosedRange<Int>) -> Int
    private let inFlight = Locked<Set<String>>([])
    /// Reports known finished, so the minute's tick does not read their
    /// state files again (a week of days, thousands of domains each).
    private let finished = Locked<Set<String>>([])
    /// With `[state] backend = "postgres"`: reports from the counts of
    /// every instance, sent by the day's lease holder (TLSRPTShared).
    public let shared: TLSRPTSharedSending?
    /// Shared days already logged as waiting for the database, or given up.
    private let sharedLogged = Locked<Set<String>>([])
    /// Days whose states and counters are removed once this old.
    public static let keepDays = 7

    public init(ledger: TLSRPTLedger, submitter: TLSRPTSubmitter, from: Mailbox?, hostname: String, transport: Transport,
                logger: Logger, now: @escaping @Sendable () -> Int,
                random: @escaping @Sendable (ClosedRange<Int>) -> Int = { Int.random(in: $0) },
                shared: TLSRPTSharedSending? = nil) {
        self.shared = shared
        self.ledger = ledger
        self.submitter = submitter
        self.from = from
        self.hostname = hostname
        self.transport = transport
        self.logger = logger
        self.now = now
        self.random = random
    }

    var store: TLSRPTStore { ledger.store }

    /// The timer's work (every minute): schedules the reports of days that
    /// have ended, sends those due, forgets days long done.
    public func tick() {
        let t = now()
        let today = TLSRPTDay(containing: t)
        for day in store.days() {
            if day.index < today.index - Self.keepDays {
                finished.withLock { $0 = $0.filter { !$0.hasPrefix("\(day)_") } }
                do { try store.removeDay(day) } catch {
                    logger.error("TLS-RPT: cannot remove an old day", metadata: ["day": "\(day)", "error": "\(error)"])
                }
                continue
            }
            guard day < today, shared == nil else { continue }
            schedule(day: day, domains: ledger.domains(day: day), at: t)
        }
        if shared != nil {
            for day in [today.previous.previous, today.previous] { sharedTick(day, now: t) }
        }
    }

    /// Each domain's report of `day`: its send state made on first sight
    /// (with a random first attempt), a finished one remembered, a due one
    /// sent (the local ledger's domains, or every instance's with shared
    /// state).
    private func schedule(day: TLSRPTDay, domains: [String], at t: Int) {
        for domain in domains where !finished.withLock({ $0.contains("\(day)_\(domain)") }) {
            guard var state = readState(day, domain) else {
                let first = TLSRPTSchedule.firstAttempt(day: day, random: random)
                save(TLSRPTSendState(day: day, domain: domain, first: first))
                continue
            }
            if state.finished {
                finished.withLock { _ = $0.insert("\(day)_\(domain)") }
                continue
            }
            guard state.next <= t else { continue }
            state.attempts += 1
            send(state, force: false) { _ in }
        }
    }

    /// A day that has ended, with shared counts: nothing until the first
    /// reports are due; then, each minute, the lease (taken or renewed),
    /// the day's domains over every instance, and the reports due among
    /// them. A database that does not answer delays the reports (they are
    /// never made from this instance's counts alone) until the 24-hour
    /// window after the latest first attempt has passed; then the day is
    /// given up, and said so once.
    private func sharedTick(_ day: TLSRPTDay, now t: Int) {
        guard let shared, t >= day.end + TLSRPTSchedule.settle else { return }
        if t > day.end + TLSRPTSchedule.spread + TLSRPTSchedule.window {
            if sharedLogged.withLock({ $0.insert("\(day) over").inserted }) {
                logger.debug("TLS-RPT: the day's sending window is over", metadata: ["day": "\(day)"])
            }
            return
        }
        sharedDomains(day, shared) { [self] result in
            switch result {
            case .failure(let why) where why.heldBy != nil:
                return  // another instance holds the lease and sends
            case .failure(let why):
                let first = sharedLogged.withLock { $0.insert("\(day) waiting").inserted }
                if first {
                    logger.warning("TLS-RPT: shared state unreachable; the day's reports wait for it (never sent from this instance's counts alone)",
                                   metadata: ["day": "\(day)", "error": "\(why)"])
                }
            case .success(nil):
                return  // another instance holds the lease
            case .success(let domains?):
                if sharedLogged.withLock({ $0.remove("\(day) waiting") != nil }) {
                    logger.notice("TLS-RPT: shared state reachable again; the day's reports go on", metadata: ["day": "\(day)"])
                }
                schedule(day: day, domains: domains, at: t)
            }
        }
    }

    /// This instance's counts pushed, then the lease: the day's domains
    /// over every instance when this instance holds it, a failure with
    /// `heldBy` when another does. A dry run reads without taking the lease.
    private func sharedDomains(_ day: TLSRPTDay, _ shared: TLSRPTSharedSending, takeLease: Bool = true,
                               _ done: @escaping @Sendable (Result<[String]?, TLSRPTSharedError>) -> Void) {
        shared.sync.flush { result in
            if case .failure(let e) = result { return done(.failure(TLSRPTSharedError(text: "push: \(e)"))) }
            let lease: (@escaping @Sendable (Result<String, any Error>) -> Void) -> Void = { reply in
                if takeLease { shared.backend.lease(day: day, seconds: shared.leaseSeconds, completion: reply) } else {
                    reply(.success(shared.instance))
                }
            }
            lease { result in
                switch result {
                case .failure(let e): done(.failure(TLSRPTSharedError(text: "lease: \(e)")))
                case .success(let holder) where holder != shared.instance:
                    done(.failure(TLSRPTSharedError(text: "the day's lease is held by \(holder)", heldBy: holder)))
                case .success:
                    shared.backend.domains(day: day) { result in
                        switch result {
                        case .failure(let e): done(.failure(TLSRPTSharedError(text: "domains: \(e)")))
                        case .success(let d): done(.success(d))
                        }
                    }
                }
            }
        }
    }

    /// `relayd report tlsrpt`: the day's reports now, whatever the
    /// schedule (a destination that already took its report is not sent
    /// again). `dryRun`: make them and say what would be sent, send nothing.
    /// The completion gets one line per domain, then the reports' JSON
    /// when `includeJSON`.
    public func sendNow(day: TLSRPTDay, dryRun: Bool, includeJSON: Bool,
                        completion: @escaping @Sendable ([String]) -> Void) {
        guard let shared else {
            return sendNow(day: day, domains: ledger.domains(day: day), dryRun: dryRun, includeJSON: includeJSON,
                           completion: completion)
        }
        sharedDomains(day, shared, takeLease: !dryRun) { [self] result in
            switch result {
            case .failure(let why) where why.heldBy != nil:
                completion(["\(day): \(why.text); that instance sends the reports (from every instance's counts)"])
            case .failure(let why):
                completion(["\(day): shared state unreachable (\(why.text)); no report sent from this instance's counts alone"])
            case .success(let domains):
                sendNow(day: day, domains: domains ?? [], dryRun: dryRun, includeJSON: includeJSON, completion: completion)
            }
        }
    }

    private func sendNow(day: TLSRPTDay, domains: [String], dryRun: Bool, includeJSON: Bool,
                         completion: @escaping @Sendable ([String]) -> Void) {
        guard !domains.isEmpty else { return completion(["\(day): no sessions counted; nothing to report"]) }
        let lines = Locked<[String]>([])
        let left = Locked(domains.count)
        for domain in domains {
            var state = readState(day, domain) ?? TLSRPTSendState(day: day, domain: domain, first: now())
            state.attempts += dryRun ? 0 : 1
            if state.finished && !dryRun { state.finished = false }
            send(state, force: true, dryRun: dryRun, includeJSON: includeJSON) { line in
                lines.withLock { $0 += line }
                if left.withLock({ $0 -= 1; return $0 }) == 0 { completion(lines.withLock { $0 }) }
            }
        }
    }

    // MARK: one report

    private func send(_ initial: TLSRPTSendState, force: Bool, dryRun: Bool = false, includeJSON: Bool = false,
                      done: @escaping @Sendable ([String]) -> Void) {
        let key = "\(initial.day)_\(initial.domain)"
        guard inFlight.withLock({ $0.insert(key).inserted }) else { return done(["\(initial.domain): already being sent"]) }
        let finish: @Sendable (TLSRPTSendState, [String]) -> Void = { [self] state, lines in
            if !dryRun { save(state) }
            inFlight.withLock { _ = $0.remove(key) }
            done(lines)
        }
        counts(initial.day, initial.domain) { [self] result in
            var state = initial
            switch result {
            case .failure(let e):
                state.note = "shared state unreachable: \(e)"
                return finish(failed(state, force: force), ["\(state.domain): \(state.note); retried later, not sent from local counts"])
            case .success(let counts):
                guard let counts, counts.sessionTotal > 0 else {
                    state.finished = true
                    state.note = "no sessions"
                    return finish(state, ["\(state.domain): no sessions"])
                }
                lookup(counts, state: state, force: force, dryRun: dryRun, includeJSON: includeJSON, finish: finish)
            }
        }
    }

    /// The counters a report is made from: this instance's, or with shared
    /// state the sum over every instance.
    private func counts(_ day: TLSRPTDay, _ domain: String,
                        _ done: @escaping @Sendable (Result<TLSRPTCounts?, any Error>) -> Void) {
        guard let shared else { return done(.success(ledger.counts(day: day, domain: domain))) }
        shared.backend.counts(day: day, domain: domain) { done($0.map { $0 }) }
    }

    private func lookup(_ counts: TLSRPTCounts, state: TLSRPTSendState, force: Bool, dryRun: Bool, includeJSON: Bool,
                        finish: @escaping @Sendable (TLSRPTSendState, [String]) -> Void) {
        let looked = state
        transport.lookupTXT("_smtp._tls.\(looked.domain)") { [self] result in
            var state = looked
            switch result {
            case .failure(let e):
                state.note = "TLSRPT record lookup: \(e)"
                return finish(failed(state, force: force), ["\(state.domain): \(state.note); retried later"])
            case .success(let records):
                guard let record = TLSRPTRecord.select(records) else {
                    state.finished = true
                    state.note = "no TLSRPT record"
                    if !dryRun { logger.info("TLS-RPT: no report wanted", metadata: ["day": "\(state.day)", "domain": "\(state.domain)"]) }
                    return finish(state, ["\(state.domain): no usable TLSRPT record; no report"])
                }
                claim(counts, state: state, force: force, dryRun: dryRun) { [self] state, lines in
                    if let lines { return finish(state, lines) }
                    deliver(counts, record: record, state: state, force: force, dryRun: dryRun, includeJSON: includeJSON,
                            finish: finish)
                }
            }
        }
    }

    /// With shared state: the report is claimed before any destination
    /// gets it, so no other instance (nor this one after a restart) sends
    /// it again. A claim that is already this instance's goes on (a retry
    /// of destinations that failed); another's ends the report here.
    private func claim(_ counts: TLSRPTCounts, state: TLSRPTSendState, force: Bool, dryRun: Bool,
                       then: @escaping @Sendable (TLSRPTSendState, [String]?) -> Void) {
        guard let shared, !dryRun else { return then(state, nil) }
        let id = TLSRPTReport.reportID(day: counts.day, domain: counts.domain, submitter: submitter.submitter)
        shared.backend.claim(day: state.day, domain: state.domain, reportID: id) { [self] result in
            var s = state
            switch result {
            case .failure(let e):
                s.note = "shared state unreachable: \(e)"
                then(failed(s, force: force), ["\(s.domain): \(s.note); retried later, not sent from local counts"])
            case .success(let holder) where holder != shared.instance:
                s.finished = true
                s.note = "sent by \(holder)"
                logger.info("TLS-RPT: report already sent by another instance", metadata: [
                    "day": "\(s.day)", "domain": "\(s.domain)", "by": "\(holder)"])
                then(s, ["\(s.domain): already sent by \(holder)"])
            case .success:
                then(s, nil)
            }
        }
    }

    private func deliver(_ counts: TLSRPTCounts, record: TLSRPTRecord, state initial: TLSRPTSendState, force: Bool,
                         dryRun: Bool, includeJSON: Bool, finish: @escaping @Sendable (TLSRPTSendState, [String]) -> Void) {
        let json: [UInt8], gz: [UInt8]
        do {
            json = try TLSRPTReport.json(counts, from: submitter)
            gz = try Gzip.compress(json)
        } catch {
            var s = initial
            s.finished = true
            s.note = "cannot make the report: \(error)"
            logger.error("TLS-RPT: cannot make the report", metadata: ["domain": "\(s.domain)", "error": "\(error)"])
            return finish(s, ["\(s.domain): \(s.note)"])
        }
        let pending = record.destinations.filter { !initial.done.contains($0.description) }
        var header = ["\(initial.domain): \(counts.sessionTotal) sessions; report \(gz.count) bytes gzipped to "
                      + record.destinations.map(\.description).joined(separator: ", ")]
        if includeJSON { header.append(String(decoding: json, as: UTF8.self)) }
        if dryRun || pending.isEmpty {
            var s = initial
            if !dryRun { s.finished = true }
            return finish(s, header + (dryRun ? ["  (dry run: nothing sent)"] : ["  every destination already has it"]))
        }
        let state = Locked(initial)
        let lines = Locked(header)
        let left = Locked(pending.count)
        let one: @Sendable (TLSRPTRecord.Destination, Result<Void, TLSRPTSendError>) -> Void = { [self] dest, result in
            switch result {
            case .success:
                state.withLock { $0.done.append(dest.description) }
                lines.withLock { $0.append("  \(dest): sent") }
                logger.info("TLS-RPT report sent", metadata: ["day": "\(initial.day)", "domain": "\(initial.domain)", "to": "\(dest)"])
            case .failure(let e):
                state.withLock { $0.note = "\(dest): \(e)" }
                lines.withLock { $0.append("  \(dest): failed: \(e)") }
                logger.warning("TLS-RPT report not sent", metadata: ["day": "\(initial.day)", "domain": "\(initial.domain)",
                                                                     "to": "\(dest)", "error": "\(e)"])
            }
            guard left.withLock({ $0 -= 1; return $0 }) == 0 else { return }
            var s = state.withLock { $0 }
            if record.destinations.allSatisfy({ s.done.contains($0.description) }) {
                s.finished = true
                s.note = "sent"
            } else {
                s = failed(s, force: force)
            }
            finish(s, lines.withLock { $0 })
        }
        for dest in pending {
            switch dest {
            case .mailto(let to):
                let message = TLSRPTMail.message(counts: counts, gzipped: gz, to: to, submitter: submitter, from: from,
                                                 hostname: hostname, id: transport.newID(), now: now())
                do {
                    try transport.enqueue(message)
                    one(dest, .success(()))
                } catch {
                    one(dest, .failure(.queue("\(error)")))
                }
            case .https(let host, let port, let path):
                transport.post(host, port, path, gz) { one(dest, $0) }
            }
        }
    }

    /// The state after a failed attempt: the next retry, or given up.
    private func failed(_ state: TLSRPTSendState, force: Bool) -> TLSRPTSendState {
        var s = state
        if let next = TLSRPTSchedule.retry(first: s.first, attempts: s.attempts, now: now()) {
            s.next = next
        } else if !force {
            s.finished = true
            logger.warning("TLS-RPT: report given up after 24 hours of retries", metadata: [
                "day": "\(s.day)", "domain": "\(s.domain)", "attempts": "\(s.attempts)", "last": "\(s.note)"])
            s.note = "given up: " + s.note
        }
        return s
    }

    private func readState(_ day: TLSRPTDay, _ domain: String) -> TLSRPTSendState? {
        do { return try store.state(day: day, domain: domain) } catch {
            logger.error("TLS-RPT: cannot read a send state", metadata: ["day": "\(day)", "domain": "\(domain)", "error": "\(error)"])
            return nil
        }
    }

    private func save(_ state: TLSRPTSendState) {
        let key = "\(state.day)_\(state.domain)"
        finished.withLock { if state.finished { $0.insert(key) } else { $0.remove(key) } }
        do { try store.putState(state) } catch {
            logger.error("TLS-RPT: cannot write a send state", metadata: ["day": "\(state.day)", "domain": "\(state.domain)",
                                                                          "error": "\(error)"])
        }
    }
}

/// Why shared reports cannot go on now.
public struct TLSRPTSharedError: Error, Sendable, CustomStringConvertible {
    public var text: String
    /// Set when another instance holds the day's lease.
    public var heldBy: String?

    public init(text: String, heldBy: String? = nil) {
        self.text = text
        self.heldBy = heldBy
    }

    public var description: String { text }
}

public enum TLSRPTSendError: Error, Equatable, Sendable, CustomStringConvertible {
    case dns(String)
    case queue(String)
    case https(String)

    public var description: String {
        switch self {
        case .dns(let s): return "DNS: \(s)"
        case .queue(let s): return "queue: \(s)"
        case .https(let s): return "HTTPS: \(s)"
        }
    }
}
