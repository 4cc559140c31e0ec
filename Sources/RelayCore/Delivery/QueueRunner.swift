// The queue manager (Postfix's qmgr role): takes messages from incoming/
// (fresh mail first, so a deferred backlog never starves it), delivers each
// pending recipient per destination domain under the policy engine, and
// files the result: delivered and bounced recipients are done, the rest
// wait in deferred/ for the retry schedule (plus jitter) until the queue
// lifetime turns them into bounces. A message leaves the spool only when
// every recipient has a final outcome (at-least-once delivery).
//
// All bookkeeping runs on one serial queue; deliveries run concurrently on
// their own queues, bounded globally and per domain.
//
// Confinement: every mutable property is touched only on `queue`. Public
// entry points hop onto it; the timer, the reports and the DispatchGroup's
// notify run on it; pump, begin and finish check it in debug builds. Hence
// @unchecked Sendable. Bodies held in memory
// are bounded by `[queue] memory_budget` (BodyCache); the rest are read
// from the spool as they are sent.
import RelayIO
import RelayLearned
import RelayMetrics
import RelayQueue
import RelaySMTP
import Dispatch
import RelaySync
import Logging
#if canImport(Glibc)
import Glibc
#endif

public final class QueueRunner: @unchecked Sendable {
    public let spool: Spool
    let logger: Logger
    let queue = DispatchQueue(label: "relayd.qmgr")
    let deliveryQueue = DispatchQueue(label: "relayd.delivery", attributes: .concurrent)
    private var environment: DeliveryEnvironment
    private var inFlight: Set<String> = []
    private var domainsInFlight: [String: Int] = [:]
    private var timer: (any DispatchSourceTimer)?
    private var stopped = false
    let now: @Sendable () -> Int
    let jitter: @Sendable (Int) -> Int
    /// Delivers one message's recipients at one domain and reports once.
    /// DomainDelivery in the daemon; unit tests put a fake here to check
    /// the scheduling alone (QueueRunnerSchedulingTests).
    typealias Deliver = (_ env: DeliveryEnvironment, _ message: SpooledMessage, _ domain: String, _ indexes: [Int],
                         _ report: @escaping (DomainDeliveryReport) -> Void) -> Void
    let deliver: Deliver

    public convenience init(spool: Spool, environment: DeliveryEnvironment, logger: Logger,
                            now: @escaping @Sendable () -> Int = { Int(time(nil)) },
                            jitter: @escaping @Sendable (Int) -> Int = { base in Int.random(in: 0...max(1, base / 10)) }) {
        self.init(spool: spool, environment: environment, logger: logger, now: now, jitter: jitter) { env, message, domain, indexes, report in
            DomainDelivery(env: env, message: message, domain: domain, recipientIndexes: indexes).run(completion: report)
        }
    }

    init(spool: Spool, environment: DeliveryEnvironment, logger: Logger, now: @escaping @Sendable () -> Int,
         jitter: @escaping @Sendable (Int) -> Int, deliver: @escaping Deliver) {
        self.spool = spool
        self.environment = environment
        self.cache = BodyCache(budget: environment.config.queue.memoryBudget)
        self.logger = logger
        self.now = now
        self.jitter = jitter
        self.deliver = deliver
    }

    public func start() {
        queue.async { [self] in
            let t = DispatchSource.makeTimerSource(queue: queue)
            t.setEventHandler { [weak self] in self?.timerFired() }
            t.schedule(deadline: .distantFuture)
            t.resume()
            timer = t
            rescan()
            pump()
            let g = DispatchSource.makeTimerSource(queue: queue)
            g.setEventHandler { [weak self] in self?.publishGauges() }
            g.schedule(deadline: .now(), repeating: .seconds(Self.gaugeInterval), leeway: .milliseconds(500))
            g.resume()
            gaugeTimer = g
        }
    }

    /// New mail arrived (its id, when the caller knows it), or the operator
    /// asked for something. The inbound side may hand over the message it
    /// just made durable, which saves reading the file back (kept within
    /// the memory budget; anything not kept is read from disk as usual).
    public func wake(queued id: String? = nil, message: QueuedMessage? = nil) {
        queue.async { [self] in
            if let id, QueueID.isValid(id), !known.contains(id) {
                known.insert(id)
                fresh.append(id)
                if let message, message.id == id { cache.offer(message) }
            } else if id == nil {
                // SIGUSR1: an operator request is waiting.
                processRequests()
                rescan()
            }
            pump()
        }
    }

    /// Deliveries started from now on use `env`; the old pool's kept
    /// connections are closed politely. `applied` runs once that is so.
    public func replaceEnvironment(_ env: DeliveryEnvironment, applied: (@Sendable () -> Void)? = nil) {
        queue.async { [self] in
            let old = environment.pool
            environment = env
            cache.setBudget(env.config.queue.memoryBudget)
            if let old, old !== env.pool { old.closeIdle() }
            applied?()
        }
    }

    /// What the timer does, done now and waited for: tests drive the
    /// runner with a fake clock instead of the timer.
    func runTimerWork() { queue.sync { tick() } }

    /// What start() does, without the timer.
    func scanWithoutTimer() { queue.sync { rescan(); pump() } }

    /// Waits until a report handed in before the call has been filed: the
    /// report is one block on the runner's queue, and the DispatchGroup's
    /// notify that files it is submitted while that block runs, so two
    /// rounds reach it.
    func settle() { queue.sync {}; queue.sync {} }

    /// Proactive MTA-STS refresh with the current environment (the daemon's
    /// timer calls this).
    public func refreshMTASTS() {
        queue.async { [self] in environment.mtaSTS?.refreshStale(age: environment.config.mtaSTS.refreshInterval) }
    }

    /// The daemon's daily prober of learned domains, for `relayd policy
    /// reprobe`; set before start.
    public var learnedMonitor: LearnedMonitor? {
        get { queue.sync { monitor } }
        set { queue.sync { monitor = newValue } }
    }
    private var monitor: LearnedMonitor?

    /// Told of each tls-exclusive drop after its local audit line (the
    /// shared drop audit, SharedDropAudit); set before start.
    public var dropObserver: (@Sendable (SharedDrop) -> Void)? {
        get { queue.sync { onDrop } }
        set { queue.sync { onDrop = newValue } }
    }
    private var onDrop: (@Sendable (SharedDrop) -> Void)?

    /// Whether DANE or MTA-STS decides the domain under the current
    /// environment: learned status never relaxes such a domain. Not to be
    /// called on the runner's queue.
    public func upgradedAboveLearned(_ domain: String) -> Bool {
        dispatchPrecondition(condition: .notOnQueue(queue))
        return queue.sync {
            environment.engine.decide(domain).verdicts.contains { ($0.layer == .dane || $0.layer == .mtaSTS) && $0.level != nil }
        }
    }

    /// Whether the current environment learns TLS status (`[learned] enabled`).
    public var learnsTLSStatus: Bool {
        dispatchPrecondition(condition: .notOnQueue(queue))
        return queue.sync { environment.learned != nil }
    }

    /// Stops starting new deliveries (those running finish and are filed).
    public func stop() { queue.sync { stopped = true; timer?.cancel(); gaugeTimer?.cancel() } }

    // MARK: scheduling
    //
    // The runner keeps its own view of the queue in memory — fresh ids in
    // arrival order, deferred ids with their due times — so each delivery
    // costs O(1) bookkeeping instead of a directory listing. The folders are
    // read in full only at start and when an operator request may have
    // changed them.

    private var fresh: [String] = []
    private var freshHead = 0
    private var deferredDue: [String: Int] = [:]
    private var known: Set<String> = []
    /// Destination domains of messages waiting for a per-domain slot.
    private var waitingDomains: [String: Set<String>] = [:]
    /// Fresh messages as the inbound side wrote them (see wake).
    private var cache: BodyCache
    /// Per destination domain at its limit: the fresh ids waiting for it.
    private var blocked: [String: [String]] = [:]
    /// Ids released from a domain's line, tried before other fresh mail.
    private var ready: [String] = []

    private func nextFresh() -> String? {
        if !ready.isEmpty { return ready.removeFirst() }
        guard freshHead < fresh.count else { return nil }
        let id = fresh[freshHead]
        freshHead += 1
        if freshHead > 1024 && freshHead * 2 > fresh.count {
            fresh.removeFirst(freshHead)
            freshHead = 0
        }
        return id
    }

    private var hasFresh: Bool { !ready.isEmpty || freshHead < fresh.count }

    /// The timer: due deferred mail, requests that arrived without a
    /// signal, and, when idle for a minute, a rescan that picks up files put
    /// in the folders behind the runner's back.
    private func tick() {
        processRequests()
        if inFlight.isEmpty && !hasFresh && now() - lastRescan >= 60 { rescan() }
        pump()
    }

    /// Reads the queue folders for the gauges every `gaugeInterval` seconds.
    private var gaugeTimer: (any DispatchSourceTimer)?
    static let gaugeInterval = 5

    /// The queue and policy-cache gauges, owned here: the queue folders'
    /// valid queue files counted (the spool is the truth, whatever is in
    /// flight), the oldest one's age from its id (ids are arrival times),
    /// and the sizes of the MTA-STS and learned caches. At most every
    /// `gaugeInterval` seconds, on the gauge timer.
    func publishGauges() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let metrics = environment.metrics, !stopped else { return }
        let t = now()
        var counts: [RelayMetrics.QueueState: Int] = [:]
        var oldest: String?
        for (state, folder) in [(RelayMetrics.QueueState.incoming, Spool.Folder.incoming), (.active, .active),
                                (.deferred, .deferred), (.hold, .hold)] {
            let ids = spool.list(folder).filter(QueueID.isValid)
            counts[state] = ids.count
            if let first = ids.min(), oldest.map({ first < $0 }) ?? true { oldest = first }
        }
        let age = oldest.flatMap(QueueID.seconds(of:)).map { Double(t - $0) } ?? 0
        metrics.setQueue(counts, oldestAgeSeconds: age)
        if let sts = environment.mtaSTS { metrics.setPolicyCacheEntries(.mtaSTS, sts.policies.domains.count) }
        if let learned = environment.learned { metrics.setPolicyCacheEntries(.learned, learned.domains.count) }
    }

    private var lastRescan = 0
    /// A lower bound of the earliest due time in deferredDue, so a large
    /// deferred backlog is walked only when something in it may be due.
    private var earliestDeferred = Int.max

    private func rescan() {
        lastRescan = now()
        for id in spool.list(.incoming) where QueueID.isValid(id) && !known.contains(id) {
            known.insert(id)
            fresh.append(id)
        }
        deferredDue = [:]
        for id in spool.list(.deferred) where QueueID.isValid(id) && !inFlight.contains(id) {
            deferredDue[id] = ((try? spool.readState(id)) ?? nil)?.nextAttempt ?? 0
            known.insert(id)
        }
        earliestDeferred = deferredDue.values.min() ?? Int.max
    }

    private func pump() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !stopped else { return }
        let limit = environment.config.outbound.maxConcurrentDeliveries
        // Fresh mail first: a backlog in deferred/ never delays it. Mail for
        // a domain at its concurrency limit waits in that domain's line and
        // goes back to the front when a slot frees, so a busy destination
        // costs nothing per pump and never blocks mail for other domains.
        let perDomain = environment.config.outbound.maxConcurrentPerDomain
        while inFlight.count < limit, let id = nextFresh() {
            if let domains = waitingDomains[id],
               let full = domains.first(where: { domainsInFlight[$0, default: 0] >= perDomain }) {
                blocked[full, default: []].append(id)
                continue
            }
            if !begin(id, from: .incoming), let domains = waitingDomains[id],
               let full = domains.first(where: { domainsInFlight[$0, default: 0] >= perDomain }) {
                blocked[full, default: []].append(id)
            }
        }
        let t = now()
        var nextDue = earliestDeferred
        if earliestDeferred <= t && inFlight.count < limit {
            nextDue = Int.max
            for (id, due) in deferredDue {
                if due <= t && inFlight.count < limit {
                    deferredDue.removeValue(forKey: id)
                    if !begin(id, from: .deferred) { deferredDue[id] = t + 1; nextDue = min(nextDue, t + 1) }
                } else {
                    nextDue = min(nextDue, due)
                }
            }
            earliestDeferred = nextDue
        }
        nextDue = nextDue == Int.max ? Int.max : max(nextDue, t + 1)
        if timer != nil {
            if inFlight.count >= limit || hasFresh {
                armTimer(seconds: 1)
            } else if nextDue != Int.max {
                armTimer(seconds: max(1, nextDue - t))
            } else {
                // Nothing due: a slow rescan catches anything put in the
                // folders behind the runner's back.
                armTimer(seconds: 60)
            }
        }
    }

    /// When the timer should next run, kept lazy (RelayIO's LazyDeadline):
    /// pump() runs for every message and used to reschedule the dispatch
    /// timer each time, a trip through libdispatch's manager thread; now
    /// only a deadline earlier than the armed one reschedules it.
    private var timerDeadline = LazyDeadline()

    private func armTimer(seconds: Int) {
        let at = DispatchTime.now().uptimeNanoseconds &+ UInt64(seconds) * 1_000_000_000
        if let armAt = timerDeadline.set(at) { timer?.schedule(deadline: DispatchTime(uptimeNanoseconds: armAt)) }
    }

    private func timerFired() {
        switch timerDeadline.fired(now: DispatchTime.now().uptimeNanoseconds) {
        case .rearm(let at): timer?.schedule(deadline: DispatchTime(uptimeNanoseconds: at))
        case .due, .none: tick()
        }
    }

    /// Operator requests from `relayd queue`, applied here where the set of
    /// messages in delivery is known.
    private func processRequests() {
        let admin = QueueAdmin(spool: spool)
        requestsApplied = false
        for (name, request) in admin.takeRequests() {
            guard let request else {
                admin.finishRequest(name, result: "error: unreadable request")
                continue
            }
            let result: String
            if case .reloadSTS(let domain) = request {
                result = environment.mtaSTS?.reload(domain) ?? "MTA-STS is disabled ([mta_sts] enabled = false)"
            } else if case .learned(let change) = request {
                if environment.learned == nil {
                    result = "error: learned TLS status is disabled ([learned] enabled = false)"
                } else if case .reprobe(let domain, _) = change {
                    result = monitor?.probeNow(domain) ?? "error: no learned-status monitor in this process"
                } else {
                    result = environment.learned!.apply(change)
                }
            } else {
                do { result = try admin.apply(request, inFlight: inFlight) } catch { result = "error: \(error)" }
            }
            logger.info("queue request", metadata: ["request": "\(request)", "result": "\(result)"])
            admin.finishRequest(name, result: result)
            requestsApplied = true
        }
        if requestsApplied {
            known.subtract(known.filter { !inFlight.contains($0) })
            cache.dropWaiting()
            fresh = []
            freshHead = 0
            blocked = [:]
            ready = []
            rescan()
        }
    }

    private var requestsApplied = false

    /// Starts delivering one message; false when it must wait (its domain
    /// is at its concurrency limit). A message that is gone or broken
    /// counts as handled.
    @discardableResult
    private func begin(_ id: String, from folder: Spool.Folder) -> Bool {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !inFlight.contains(id) else { return true }
        let message: SpooledMessage
        // A kept body is used only while its file is where it should be
        // (the operator may have deleted or moved it).
        let kept = folder == .incoming ? cache.peek(id) : nil
        do {
            if let kept, access(spool.path(folder, id), F_OK) == 0 {
                message = SpooledMessage(kept)
            } else {
                cache.release(id)
                message = try spool.openMessage(folder, id)
            }
        } catch {
            if access(spool.path(folder, id), F_OK) != 0 {
                known.remove(id)  // deleted or moved by the operator
                return true
            }
            quarantine(id, from: folder, reason: error)
            return true
        }
        var state: DeliveryState
        do {
            state = try spool.readState(id) ?? DeliveryState(recipientCount: message.envelope.recipients.count)
        } catch {
            // A torn state file: start over. Delivered recipients may get
            // the message twice; none is skipped.
            logger.warning("delivery state unreadable; retrying every recipient", metadata: ["id": "\(id)", "reason": "\(error)"])
            state = DeliveryState(recipientCount: message.envelope.recipients.count)
        }
        guard state.recipients.count == message.envelope.recipients.count else {
            logger.error("delivery state does not match message; retrying every recipient", metadata: ["id": "\(id)"])
            spool.removeState(id)
            return begin(id, from: folder)
        }
        bounceIfLooping(message, &state)
        let byDomain = Dictionary(grouping: state.pendingIndexes) { message.envelope.recipients[$0].mailbox.domain }
        let perDomain = environment.config.outbound.maxConcurrentPerDomain
        if byDomain.keys.contains(where: { domainsInFlight[$0, default: 0] >= perDomain }) {
            waitingDomains[id] = Set(byDomain.keys)
            return false  // picked up again by the next pump
        }
        waitingDomains.removeValue(forKey: id)
        do { try spool.move(id, from: folder, to: .active, durable: false) } catch {
            logger.error("cannot move message to active/", metadata: ["id": "\(id)", "error": "\(error)"])
            cache.release(id)
            known.remove(id)
            return true
        }
        cache.startDelivery(id)
        inFlight.insert(id)
        for d in byDomain.keys { domainsInFlight[d, default: 0] += 1 }
        state.attempts += 1
        if byDomain.isEmpty {
            finish(message, state: state, domains: [])
            return true
        }

        let group = DispatchGroup()
        let reports = Locked<[DomainDeliveryReport]>([])
        let env = environment
        for (domain, indexes) in byDomain {
            group.enter()
            let attemptQueue = DispatchQueue(label: "relayd.attempt", target: deliveryQueue)
            let attemptEnv = env.with(queue: attemptQueue, now: now)
            deliver(attemptEnv, message, domain, indexes.sorted()) { report in
                self.queue.async {
                    reports.withLock { $0.append(report) }
                    group.leave()
                }
            }
        }
        group.notify(queue: queue) { [self] in
            let lifetimeVerdicts = apply(reports.withLock { $0 }, to: &state, message: message)
            finish(message, state: state, domains: Array(byDomain.keys), lifetimeVerdicts: lifetimeVerdicts)
        }
        return true
    }

    /// A message with more Received headers than max_hops has circled too
    /// often: every pending recipient bounces with 5.4.6, none is attempted.
    /// Mail accepted since is within the limit (the inbound check counts the
    /// header relayd adds); this catches mail queued before max_hops was
    /// lowered, or put in the spool by other means.
    private func bounceIfLooping(_ message: SpooledMessage, _ state: inout DeliveryState) {
        let limit = environment.config.limits.maxHops
        let hops = HopCount.receivedFields(in: message.body.prefix())
        guard hops > limit, !state.pendingIndexes.isEmpty else { return }
        let reason = "too many hops (\(hops) Received headers, max_hops \(limit)); mail loop?"
        logger.warning("too many hops; bouncing undelivered",
                       metadata: ["id": "\(message.id)", "received": "\(hops)", "max_hops": "\(limit)", "status": "5.4.6"])
        for i in state.pendingIndexes {
            state.recipients[i] = .init(status: .bounced, detail: reason, enhancedStatus: "5.4.6")
        }
    }

    // MARK: filing results

    /// Files each recipient's result. Returns, for each recipient left
    /// pending, whether its attempt concluded past the queue lifetime.
    private func apply(_ reports: [DomainDeliveryReport], to state: inout DeliveryState, message: SpooledMessage) -> [Int: Bool] {
        var lifetimeVerdicts: [Int: Bool] = [:]
        for report in reports {
            for (i, result) in report.results {
                let rcpt = message.envelope.recipients[i].mailbox
                switch result {
                case .delivered(let reply):
                    state.recipients[i] = .init(status: .delivered, detail: reply.description)
                    logger.info("delivered", metadata: ["id": "\(message.id)", "to": "<\(rcpt)>", "layer": "\(report.decision.layer.rawValue)",
                                                        "level": "\(report.decision.level.rawValue)", "reply": "\(reply)"])
                case .dropped(let why):
                    state.recipients[i] = .init(status: .dropped, detail: why)
                    // SPEC: tls-exclusive drops silently, with an audit record.
                    logger.warning("audit: message dropped by tls-exclusive policy; no delivery, no bounce",
                                   metadata: ["id": "\(message.id)", "to": "<\(rcpt)>", "from": "<\(message.envelope.sender)>",
                                              "layer": "\(report.decision.layer.rawValue)", "reason": "\(why)", "audit": "tls-exclusive-drop"])
                    if let onDrop {
                        var domain = rcpt.domain.lowercased()
                        if domain.hasSuffix(".") { domain.removeLast() }
                        onDrop(SharedDrop(at: now(), queueID: message.id, domain: domain, reason: why))
                    }
                case .failed(let f) where f.isPermanent:
                    state.recipients[i] = .init(status: .bounced, detail: f.reason, enhancedStatus: f.status)
                case .failed(let f):
                    let tls = f.tlsPolicy ? f.reason : state.recipients[i].tlsDetail
                    state.recipients[i] = .init(status: .pending, detail: f.reason, enhancedStatus: f.status, tlsDetail: tls)
                    lifetimeVerdicts[i] = report.lifetimeExceeded
                }
            }
        }
        return lifetimeVerdicts
    }

    /// `lifetimeVerdicts`: for pending recipients, whether the attempt that
    /// just ended judged the queue lifetime over. Its `delivery attempt`
    /// line said `bounced` exactly then, so that verdict is final here; the
    /// clock decides only for a recipient no attempt judged.
    private func finish(_ message: SpooledMessage, state inState: DeliveryState, domains: [String], lifetimeVerdicts: [Int: Bool] = [:]) {
        dispatchPrecondition(condition: .onQueue(queue))
        var state = inState
        defer {
            cache.release(message.id)
            inFlight.remove(message.id)
            for d in domains {
                if let n = domainsInFlight[d], n > 1 { domainsInFlight[d] = n - 1 } else { domainsInFlight.removeValue(forKey: d) }
                if var line = blocked[d], !line.isEmpty {
                    ready.append(line.removeFirst())
                    blocked[d] = line.isEmpty ? nil : line
                }
            }
            pump()
        }
        if case .spool(let file) = message.body, let bad = file.failedCheck {
            // Found while sending; no transaction was completed with it.
            // The state keeps whatever was delivered before the check failed.
            try? spool.writeState(message.id, state)
            quarantine(message.id, from: .active, reason: bad)
            return
        }
        let t = now()
        let lifetime = environment.config.queue.maxLifetime
        let pastLifetime = state.pendingIndexes.filter { lifetimeVerdicts[$0] ?? (t - message.arrival >= lifetime) }
        if !pastLifetime.isEmpty {
            for i in pastLifetime {
                let last = state.recipients[i].detail.isEmpty ? "delivery not possible" : state.recipients[i].detail
                let status = DeliveryFailure.statusAfterLifetime(state.recipients[i].enhancedStatus)
                let tls = state.recipients[i].tlsDetail
                var detail = "gave up after \(Self.duration(lifetime)) in the queue; last error: \(last)"
                if !tls.isEmpty && tls != last { detail += "; TLS could not be had: \(tls)" }
                state.recipients[i] = .init(status: .bounced, detail: detail, enhancedStatus: status, tlsDetail: tls)
            }
            logger.notice("queue lifetime exceeded", metadata: ["id": "\(message.id)", "attempts": "\(state.attempts)"])
        }
        if state.isFinished {
            let bounced = state.recipients.indices.filter { state.recipients[$0].status == .bounced }
            var original: QueuedMessage?
            if !bounced.isEmpty {
                // The bounce may quote the body: the only place the runner
                // reads one whole, and only for this rare case.
                do { original = try wholeMessage(message) } catch {
                    quarantine(message.id, from: .active, reason: error)
                    return
                }
            }
            if let original, !sendBounce(original, state: state, indexes: bounced) {
                // Keep the message (its state final) and try the bounce again.
                state.nextAttempt = t + 300
                try? spool.writeState(message.id, state)
                try? spool.move(message.id, from: .active, to: .deferred)
                deferredDue[message.id] = state.nextAttempt
                earliestDeferred = min(earliestDeferred, state.nextAttempt)
                return
            }
            known.remove(message.id)
            // The state goes first: a crash between the two leaves a message
            // without state, which is retried (a duplicate), never lost.
            spool.removeState(message.id)
            do { try spool.remove(message.id, from: .active, durable: false) } catch {
                logger.error("cannot remove finished message", metadata: ["id": "\(message.id)", "error": "\(error)"])
            }
            logger.info("removed", metadata: ["id": "\(message.id)", "attempts": "\(state.attempts)",
                                              "delivered": "\(state.recipients.filter { $0.status == .delivered }.count)",
                                              "bounced": "\(bounced.count)",
                                              "dropped": "\(state.recipients.filter { $0.status == .dropped }.count)"])
            return
        }
        sendDelayNoticeIfDue(message, state: &state, now: t)
        let schedule = environment.config.queue.retrySchedule
        let delay = schedule[min(state.attempts - 1, schedule.count - 1)]
        state.nextAttempt = t + delay + jitter(delay)
        do {
            try spool.writeState(message.id, state)
            try spool.move(message.id, from: .active, to: .deferred)
        } catch {
            logger.error("cannot file deferred message; it stays in active/ and is retried at restart",
                         metadata: ["id": "\(message.id)", "error": "\(error)"])
            return
        }
        deferredDue[message.id] = state.nextAttempt
        earliestDeferred = min(earliestDeferred, state.nextAttempt)
        logger.info("deferred", metadata: ["id": "\(message.id)", "attempts": "\(state.attempts)",
                                           "next_in": "\(state.nextAttempt - t)s",
                                           "reason": "\(state.recipients.first { $0.status == .pending }?.detail ?? "")"])
    }

    private func wholeMessage(_ message: SpooledMessage) throws -> QueuedMessage {
        if case .memory(let body) = message.body {
            return QueuedMessage(id: message.id, arrival: message.arrival, envelope: message.envelope, body: body)
        }
        return try spool.read(.active, message.id)
    }

    private func quarantine(_ id: String, from folder: Spool.Folder, reason: any Error) {
        logger.error("queue file failed its self-check; moved to corrupt/", metadata: ["id": "\(id)", "reason": "\(reason)"])
        try? spool.move(id, from: folder, to: .corrupt)
        cache.release(id)
        known.remove(id)
    }

    static func duration(_ seconds: Int) -> String {
        seconds >= 86400 && seconds % 86400 == 0 ? "\(seconds / 86400)d"
            : seconds >= 3600 ? "\(seconds / 3600)h" : seconds >= 60 ? "\(seconds / 60)m" : "\(seconds)s"
    }

    /// The delay notice (`[queue] delay_warning`): once the message has
    /// waited that long with recipients pending, its sender is told once,
    /// at the end of the first attempt past the mark. That it was sent is
    /// kept in the state, written with the deferral right after, so a
    /// restart does not send it again. Nothing is marked when nobody may
    /// get one (null sender, no pending recipient's NOTIFY has DELAY): the
    /// state says only what was sent, and that check reads no body. A
    /// notice that cannot be written is tried again after the next attempt.
    private func sendDelayNoticeIfDue(_ message: SpooledMessage, state: inout DeliveryState, now t: Int) {
        let warning = environment.config.queue.delayWarning
        let pending = state.pendingIndexes
        guard warning > 0, state.delayNoticeSent == 0, !pending.isEmpty, t - message.arrival >= warning,
              case .mailbox = message.envelope.sender,
              pending.contains(where: { DSN.wantsDelayNotice(message.envelope.recipients[$0]) }) else { return }
        let delays = pending.map { i -> DSN.Delay in
            let r = state.recipients[i]
            // Waiting on TLS: the last failure was a TLS-policy one (the
            // same test as `relayd queue list --reason tls`).
            return DSN.Delay(recipientIndex: i, status: r.enhancedStatus, diagnostic: r.detail.isEmpty ? "not yet delivered" : r.detail,
                             tlsReason: r.waitsOnTLS ? (r.tlsDetail.isEmpty ? r.detail : r.tlsDetail) : nil)
        }
        let id = QueueID.generate()
        let headersOnly = QueuedMessage(id: message.id, arrival: message.arrival, envelope: message.envelope, body: message.body.prefix())
        guard let notice = DSN.delayNotice(for: headersOnly, delays: delays, waited: t - message.arrival,
                                           retryUntil: message.arrival + environment.config.queue.maxLifetime,
                                           hostname: environment.config.server.hostname, id: id, now: t) else { return }
        do {
            try spool.store(notice)
        } catch {
            logger.error("cannot queue delay notice; trying after the next attempt", metadata: ["id": "\(message.id)", "error": "\(error)"])
            return
        }
        state.delayNoticeSent = t
        known.insert(id)
        fresh.append(id)
        logger.info("delay notice queued", metadata: ["id": "\(id)", "original": "\(message.id)", "to": "<\(message.envelope.sender)>",
                                                      "recipients": "\(delays.filter { DSN.wantsDelayNotice(message.envelope.recipients[$0.recipientIndex]) }.count)"])
    }

    /// Queues the DSN; false only when it could not be written.
    private func sendBounce(_ message: QueuedMessage, state: DeliveryState, indexes: [Int]) -> Bool {
        let failures = indexes.map { DSN.Failure(recipientIndex: $0, status: state.recipients[$0].enhancedStatus.isEmpty ? "5.0.0" : state.recipients[$0].enhancedStatus,
                                                 diagnostic: state.recipients[$0].detail) }
        let id = QueueID.generate()
        guard let dsn = DSN.bounce(for: message, failures: failures, hostname: environment.config.server.hostname, id: id, now: now()) else {
            logger.info("no bounce sent (null sender or NOTIFY)", metadata: ["id": "\(message.id)"])
            return true
        }
        do {
            try spool.store(dsn)
            known.insert(id)
            fresh.append(id)
            logger.info("bounce queued", metadata: ["id": "\(id)", "original": "\(message.id)", "to": "<\(message.envelope.sender)>",
                                                    "recipients": "\(indexes.count)"])
            return true
        } catch {
            logger.error("cannot queue bounce; keeping the message", metadata: ["id": "\(message.id)", "error": "\(error)"])
            return false
        }
    }
}
