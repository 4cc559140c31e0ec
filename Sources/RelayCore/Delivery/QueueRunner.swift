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
import Dispatch
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

    public init(spool: Spool, environment: DeliveryEnvironment, logger: Logger,
                now: @escaping @Sendable () -> Int = { Int(time(nil)) },
                jitter: @escaping @Sendable (Int) -> Int = { base in Int.random(in: 0...max(1, base / 10)) }) {
        self.spool = spool
        self.environment = environment
        self.logger = logger
        self.now = now
        self.jitter = jitter
    }

    public func start() {
        queue.async { [self] in
            let t = DispatchSource.makeTimerSource(queue: queue)
            t.setEventHandler { [weak self] in self?.pump() }
            t.schedule(deadline: .distantFuture)
            t.resume()
            timer = t
            pump()
        }
    }

    /// New mail arrived, or the operator asked for a flush.
    public func wake() { queue.async { [self] in pump() } }

    public func replaceEnvironment(_ env: DeliveryEnvironment) { queue.async { [self] in environment = env } }

    /// Stops starting new deliveries (those running finish and are filed).
    public func stop() { queue.sync { stopped = true; timer?.cancel() } }

    public var activeCount: Int { queue.sync { inFlight.count } }

    // MARK: scheduling

    private func pump() {
        guard !stopped else { return }
        processRequests()
        let limit = environment.config.outbound.maxConcurrentDeliveries
        // Fresh mail first: a backlog in deferred/ never delays it.
        for id in spool.list(.incoming) where inFlight.count < limit && !inFlight.contains(id) {
            guard QueueID.isValid(id) else { continue }
            begin(id, from: .incoming)
        }
        var nextDue = Int.max
        let t = now()
        for id in spool.list(.deferred) where !inFlight.contains(id) && QueueID.isValid(id) {
            let due = (try? spool.readState(id))??.nextAttempt ?? 0
            if due <= t && inFlight.count < limit {
                begin(id, from: .deferred)
            } else {
                nextDue = min(nextDue, max(due, t + 1))
            }
        }
        if let timer {
            if inFlight.count >= limit {
                timer.schedule(deadline: .now() + .seconds(1))
            } else if nextDue != Int.max {
                timer.schedule(deadline: .now() + .seconds(max(1, nextDue - t)))
            } else {
                timer.schedule(deadline: .distantFuture)
            }
        }
    }

    /// Operator requests from `relayd queue`, applied here where the set of
    /// messages in delivery is known.
    private func processRequests() {
        let admin = QueueAdmin(spool: spool)
        for (name, request) in admin.takeRequests() {
            guard let request else {
                admin.finishRequest(name, result: "error: unreadable request")
                continue
            }
            let result: String
            do { result = try admin.apply(request, inFlight: inFlight) } catch { result = "error: \(error)" }
            logger.info("queue request", metadata: ["request": "\(request)", "result": "\(result)"])
            admin.finishRequest(name, result: result)
        }
    }

    private func begin(_ id: String, from folder: Spool.Folder) {
        let message: QueuedMessage
        do {
            message = try spool.read(folder, id)
        } catch {
            logger.error("queue file failed its self-check; moved to corrupt/", metadata: ["id": "\(id)", "reason": "\(error)"])
            try? spool.move(id, from: folder, to: .corrupt)
            return
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
            return begin(afterResetting: id, message, from: folder)
        }
        let byDomain = Dictionary(grouping: state.pendingIndexes) { message.envelope.recipients[$0].mailbox.domain }
        let perDomain = environment.config.outbound.maxConcurrentPerDomain
        if byDomain.keys.contains(where: { domainsInFlight[$0, default: 0] >= perDomain }) {
            return  // picked up again by the next pump
        }
        do { try spool.move(id, from: folder, to: .active) } catch {
            logger.error("cannot move message to active/", metadata: ["id": "\(id)", "error": "\(error)"])
            return
        }
        inFlight.insert(id)
        for d in byDomain.keys { domainsInFlight[d, default: 0] += 1 }
        state.attempts += 1
        if byDomain.isEmpty { return finish(message, state: state, domains: []) }

        let group = DispatchGroup()
        final class Reports: @unchecked Sendable { var list: [DomainDeliveryReport] = [] }
        let reports = Reports()
        let env = environment
        for (domain, indexes) in byDomain {
            group.enter()
            let attemptQueue = DispatchQueue(label: "relayd.attempt", target: deliveryQueue)
            let attemptEnv = DeliveryEnvironment(config: env.config, engine: env.engine, mx: env.mx, dns: env.dns,
                                                 tlsContext: env.tlsContext, logger: env.logger, queue: attemptQueue)
            DomainDelivery(env: attemptEnv, message: message, domain: domain, recipientIndexes: indexes.sorted()).run { report in
                self.queue.async {
                    reports.list.append(report)
                    group.leave()
                }
            }
        }
        group.notify(queue: queue) { [self] in
            apply(reports.list, to: &state, message: message)
            finish(message, state: state, domains: Array(byDomain.keys))
        }
    }

    private func begin(afterResetting id: String, _ message: QueuedMessage, from folder: Spool.Folder) {
        spool.removeState(id)
        begin(id, from: folder)
    }

    // MARK: filing results

    private func apply(_ reports: [DomainDeliveryReport], to state: inout DeliveryState, message: QueuedMessage) {
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
                case .failed(let f) where f.isPermanent:
                    state.recipients[i] = .init(status: .bounced, detail: f.reason, enhancedStatus: f.status)
                case .failed(let f):
                    state.recipients[i] = .init(status: .pending, detail: f.reason, enhancedStatus: f.status)
                }
            }
        }
    }

    private func finish(_ message: QueuedMessage, state inState: DeliveryState, domains: [String]) {
        var state = inState
        defer {
            inFlight.remove(message.id)
            for d in domains {
                if let n = domainsInFlight[d], n > 1 { domainsInFlight[d] = n - 1 } else { domainsInFlight.removeValue(forKey: d) }
            }
            pump()
        }
        let t = now()
        let lifetime = environment.config.queue.maxLifetime
        if !state.isFinished && t - message.arrival >= lifetime {
            for i in state.pendingIndexes {
                let last = state.recipients[i].detail.isEmpty ? "delivery not possible" : state.recipients[i].detail
                var status = state.recipients[i].enhancedStatus
                status = status.isEmpty ? "5.4.7" : "5" + status.dropFirst()
                state.recipients[i] = .init(status: .bounced, detail: "gave up after \(lifetime / 3600)h in the queue; last error: \(last)",
                                            enhancedStatus: status)
            }
            logger.notice("queue lifetime exceeded", metadata: ["id": "\(message.id)", "attempts": "\(state.attempts)"])
        }
        if state.isFinished {
            let bounced = state.recipients.indices.filter { state.recipients[$0].status == .bounced }
            if !bounced.isEmpty && !sendBounce(message, state: state, indexes: bounced) {
                // Keep the message (its state final) and try the bounce again.
                state.nextAttempt = t + 300
                try? spool.writeState(message.id, state)
                try? spool.move(message.id, from: .active, to: .deferred)
                return
            }
            // The state goes first: a crash between the two leaves a message
            // without state, which is retried (a duplicate), never lost.
            spool.removeState(message.id)
            do { try spool.remove(message.id, from: .active) } catch {
                logger.error("cannot remove finished message", metadata: ["id": "\(message.id)", "error": "\(error)"])
            }
            logger.info("removed", metadata: ["id": "\(message.id)", "attempts": "\(state.attempts)",
                                              "delivered": "\(state.recipients.filter { $0.status == .delivered }.count)",
                                              "bounced": "\(bounced.count)",
                                              "dropped": "\(state.recipients.filter { $0.status == .dropped }.count)"])
            return
        }
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
        logger.info("deferred", metadata: ["id": "\(message.id)", "attempts": "\(state.attempts)",
                                           "next_in": "\(state.nextAttempt - t)s",
                                           "reason": "\(state.recipients.first { $0.status == .pending }?.detail ?? "")"])
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
            logger.info("bounce queued", metadata: ["id": "\(id)", "original": "\(message.id)", "to": "<\(message.envelope.sender)>",
                                                    "recipients": "\(indexes.count)"])
            return true
        } catch {
            logger.error("cannot queue bounce; keeping the message", metadata: ["id": "\(message.id)", "error": "\(error)"])
            return false
        }
    }
}
