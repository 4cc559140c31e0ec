// Every metric relayd exports, created in one place when the daemon starts.
//
// swift-prometheus stops the process when one name is registered twice with
// different help, type or label names, so nothing else creates a metric:
// callers get a small typed API whose label values come from closed enums
// (or from the configuration, for `listener`), never from what a peer sent
// (no domains, addresses or user names). Each labelled family has every
// combination made up front, so a scrape shows all series from the start,
// at 0.
//
// A value, not a global: the daemon makes one and hands it down through
// the settings and environment objects; a test makes its own and reads it
// back with `render()`. The same registry is open to swift-metrics users
// through `factory`.
import CoreMetrics
import RelayModel
import Prometheus
#if canImport(Glibc)
import Glibc
#endif

public final class RelayMetrics: Sendable {
    /// Where an inbound message was refused, from the reply relayd sent.
    public enum RefusalReason: String, CaseIterable, Sendable {
        case relayDenied = "relay_denied"
        case size
        case syntax
        case authRequired = "auth_required"
        case tlsRequired = "tls_required"
        case rateLimited = "rate_limited"
        case storage
        case other
    }

    /// How an outbound attempt concluded, or a hand-over to the fallback relay.
    public enum AttemptResult: String, CaseIterable, Sendable {
        case delivered, deferred, bounced, dropped, fallback
    }

    /// The policy layer that decided an outbound session.
    public enum Layer: String, CaseIterable, Sendable {
        case `operator`, dane
        case mtaSTS = "mta_sts"
        case learned
        case `default`
        /// The message raised its own level (escalation, a forwarded
        /// copy's floor, REQUIRETLS).
        case message
    }

    /// What an outbound session showed of TLS.
    public enum TLSOutcome: String, CaseIterable, Sendable {
        case daneVerified = "dane_verified"
        case pkixVerified = "pkix_verified"
        case unauthenticated
        case plaintext
        case failed
    }


    public enum QueueState: String, CaseIterable, Sendable {
        case incoming, active, deferred, hold
    }

    public enum PolicyCache: String, CaseIterable, Sendable {
        case mtaSTS = "mta_sts"
        case learned
    }

    public struct BuildInfo: Sendable {
        public let version: String
        public let openssl: String
        public let cares: String
        public init(version: String, openssl: String, cares: String) {
            self.version = version
            self.openssl = openssl
            self.cares = cares
        }
    }

    /// Delivery of one domain's recipients, first DNS lookup to conclusion.
    public static let deliveryBuckets: [Double] = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
    /// One spool group commit: write, fsync, rename, directory fsync.
    public static let spoolCommitBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

    public let registry: PrometheusCollectorRegistry
    /// swift-metrics over the same registry, for code that speaks its API.
    public let factory: PrometheusMetricsFactory
    public let listeners: [String]

    private let sessionsTotal: [String: (yes: Prometheus.Counter, no: Prometheus.Counter)]
    private let sessionsActive: [String: Prometheus.Gauge]
    private let messagesReceived: [String: Prometheus.Counter]
    private let refused: [RefusalReason: Prometheus.Counter]
    private let authFailures: Prometheus.Counter
    private let attempts: [AttemptResult: Prometheus.Counter]
    private let outboundTLS: [String: Prometheus.Counter]
    private let tlsFailures: [TLSRPTResultType: Prometheus.Counter]
    private let queueMessages: [QueueState: Prometheus.Gauge]
    private let queueOldest: Prometheus.Gauge
    private let deliveryDuration: Prometheus.DurationHistogram
    private let spoolCommitDuration: Prometheus.DurationHistogram
    private let exclusiveDrops: Prometheus.Counter
    private let downgrades: Prometheus.Counter
    private let policyCache: [PolicyCache: Prometheus.Gauge]
    private let sharedReachable: Prometheus.Gauge
    private let sharedQueued: [SharedStore: Prometheus.Gauge]
    private let sharedOutages: Prometheus.Counter
    private let sharedReplayed: [SharedStore: Prometheus.Counter]

    /// What the shared state (`[state] backend = "postgres"`) keeps in an
    /// outbox while the database is unreachable.
    public enum SharedStore: String, CaseIterable, Sendable {
        case learned
        case actions
        case tlsrpt
        case drops
    }

    /// `listeners`: the `listener` label's values, one per configured
    /// inbound listener (its address as configured).
    public init(listeners: [String], build: BuildInfo, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        self.factory = PrometheusMetricsFactory(registry: registry)
        self.listeners = listeners
        let r = registry

        var total: [String: (yes: Prometheus.Counter, no: Prometheus.Counter)] = [:]
        var active: [String: Prometheus.Gauge] = [:]
        var received: [String: Prometheus.Counter] = [:]
        for l in listeners {
            let help = "SMTP sessions ended, by listener and whether they ended under TLS."
            let d = Self.descriptor("relayd_smtp_sessions_total", help)
            total[l] = (r.makeCounter(descriptor: d, labels: [("listener", l), ("tls", "yes")]),
                        r.makeCounter(descriptor: d, labels: [("listener", l), ("tls", "no")]))
            active[l] = r.makeGauge(descriptor: Self.descriptor("relayd_smtp_sessions_active", "SMTP sessions open now, by listener."), labels: [("listener", l)])
            received[l] = r.makeCounter(descriptor: Self.descriptor("relayd_messages_received_total", "Messages durably queued from SMTP clients, by listener."), labels: [("listener", l)])
        }
        sessionsTotal = total
        sessionsActive = active
        messagesReceived = received
        refused = Dictionary(uniqueKeysWithValues: RefusalReason.allCases.map {
            ($0, r.makeCounter(descriptor: Self.descriptor("relayd_messages_refused_total", "MAIL, RCPT, DATA or message refusals sent to SMTP clients, by reason."), labels: [("reason", $0.rawValue)]))
        })
        authFailures = r.makeCounter(descriptor: Self.descriptor("relayd_auth_failures_total", "Failed SMTP AUTH attempts."))
        attempts = Dictionary(uniqueKeysWithValues: AttemptResult.allCases.map {
            ($0, r.makeCounter(descriptor: Self.descriptor("relayd_delivery_attempts_total", "Outbound delivery attempts by how they concluded; fallback counts hand-overs to the fallback relay."), labels: [("result", $0.rawValue)]))
        })
        var tls: [String: Prometheus.Counter] = [:]
        for layer in Layer.allCases {
            for outcome in TLSOutcome.allCases {
                tls["\(layer.rawValue)/\(outcome.rawValue)"] = r.makeCounter(
                    descriptor: Self.descriptor("relayd_outbound_tls_sessions_total",
                                                "Outbound SMTP sessions by deciding policy layer and what TLS showed."),
                    labels: [("layer", layer.rawValue), ("outcome", outcome.rawValue)])
            }
        }
        outboundTLS = tls
        tlsFailures = Dictionary(uniqueKeysWithValues: TLSRPTResultType.allCases.map {
            ($0, r.makeCounter(descriptor: Self.descriptor("relayd_tls_failures_total", "Outbound TLS failures by RFC 8460 result type."), labels: [("result_type", $0.rawValue)]))
        })
        queueMessages = Dictionary(uniqueKeysWithValues: QueueState.allCases.map {
            ($0, r.makeGauge(descriptor: Self.descriptor("relayd_queue_messages", "Messages in the queue, by state."), labels: [("state", $0.rawValue)]))
        })
        queueOldest = r.makeGauge(descriptor: Self.descriptor("relayd_queue_oldest_message_age_seconds", "Age of the oldest message in the queue (0 when empty)."))
        deliveryDuration = r.makeDurationHistogram(descriptor: Self.descriptor("relayd_delivery_duration_seconds", "Time from start to conclusion of one domain's delivery attempt."), buckets: Self.deliveryBuckets.map(Self.duration))
        spoolCommitDuration = r.makeDurationHistogram(descriptor: Self.descriptor("relayd_spool_commit_duration_seconds", "Time to make one batch of received messages durable."), buckets: Self.spoolCommitBuckets.map(Self.duration))
        exclusiveDrops = r.makeCounter(descriptor: Self.descriptor("relayd_tls_exclusive_drops_total", "Recipients dropped under tls-exclusive because no TLS session was possible."))
        downgrades = r.makeCounter(descriptor: Self.descriptor("relayd_downgrades_suspected_total", "Sessions that showed less TLS than learned status expects (suspected downgrades)."))
        policyCache = Dictionary(uniqueKeysWithValues: PolicyCache.allCases.map {
            ($0, r.makeGauge(descriptor: Self.descriptor("relayd_policy_cache_entries", "Entries in the policy caches, by kind."), labels: [("kind", $0.rawValue)]))
        })
        sharedReachable = r.makeGauge(descriptor: Self.descriptor("relayd_shared_state_reachable",
                                                                  "1 while the shared-state database answers ([state] backend = \"postgres\"); 0 while it does not, and always with the file backend."))
        sharedQueued = Dictionary(uniqueKeysWithValues: SharedStore.allCases.map {
            ($0, r.makeGauge(descriptor: Self.descriptor("relayd_shared_state_queued_writes", "Writes waiting in the spool for the shared-state database, by store."), labels: [("store", $0.rawValue)]))
        })
        sharedOutages = r.makeCounter(descriptor: Self.descriptor("relayd_shared_state_outages_total", "Times the shared-state database stopped answering."))
        sharedReplayed = Dictionary(uniqueKeysWithValues: SharedStore.allCases.map {
            ($0, r.makeCounter(descriptor: Self.descriptor("relayd_shared_state_replayed_total", "Writes sent to the shared-state database, by store (after an outage: the replay)."), labels: [("store", $0.rawValue)]))
        })
        r.makeGauge(descriptor: Self.descriptor("relayd_build_info", "Always 1; the labels name the build."), labels: [("version", build.version), ("openssl", build.openssl), ("cares", build.cares)]).set(to: 1.0)
    }

    /// The full name in `metricName`: relayd's names are written out whole.
    static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// CLOCK_MONOTONIC in seconds: what callers time durations with.
    public static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func duration(_ seconds: Double) -> Duration {
        .nanoseconds(Int64((seconds * 1e9).rounded()))
    }

    // MARK: inbound

    public func sessionOpened(listener: String) {
        sessionsActive[listener]?.increment()
    }

    public func sessionClosed(listener: String, tls: Bool) {
        sessionsActive[listener]?.decrement()
        guard let pair = sessionsTotal[listener] else { return }
        (tls ? pair.yes : pair.no).increment()
    }

    public func messageReceived(listener: String) {
        messagesReceived[listener]?.increment()
    }

    public func messageRefused(_ reason: RefusalReason) {
        refused[reason]!.increment()
    }

    public func authFailed() {
        authFailures.increment()
    }

    public func spoolCommitted(seconds: Double) {
        spoolCommitDuration.record(Self.duration(max(0, seconds)))
    }

    // MARK: outbound

    public func deliveryAttempt(_ result: AttemptResult) {
        attempts[result]!.increment()
    }

    public func outboundSession(layer: Layer, outcome: TLSOutcome) {
        outboundTLS["\(layer.rawValue)/\(outcome.rawValue)"]!.increment()
    }

    public func tlsFailure(_ type: TLSRPTResultType) {
        tlsFailures[type]!.increment()
    }

    public func deliveryFinished(seconds: Double) {
        deliveryDuration.record(Self.duration(max(0, seconds)))
    }

    public func tlsExclusiveDropped(recipients: Int = 1) {
        exclusiveDrops.increment(by: Int64(recipients))
    }

    public func downgradeSuspected() {
        downgrades.increment()
    }

    // MARK: gauges, set by their owners

    public func setQueue(_ counts: [QueueState: Int], oldestAgeSeconds: Double) {
        for state in QueueState.allCases { queueMessages[state]!.set(to: Double(counts[state] ?? 0)) }
        queueOldest.set(to: max(0, oldestAgeSeconds))
    }

    public func setPolicyCacheEntries(_ kind: PolicyCache, _ count: Int) {
        policyCache[kind]!.set(to: Double(count))
    }

    /// The shared state as the daemon sees it every sync interval.
    public func setSharedState(reachable: Bool, queued: [SharedStore: Int]) {
        sharedReachable.set(to: reachable ? 1 : 0)
        for store in SharedStore.allCases { sharedQueued[store]!.set(to: Double(queued[store] ?? 0)) }
    }

    /// The database stopped answering (the daemon saw it go down).
    public func sharedStateOutage() { sharedOutages.increment() }

    /// Writes the shared-state database took, by store.
    public func sharedStateWritten(_ store: SharedStore, _ count: Int) {
        guard count > 0 else { return }
        sharedReplayed[store]!.increment(by: Int64(count))
    }

    // MARK: exposition

    /// The Prometheus text format (0.0.4) of every metric.
    public func render() -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 * 1024)
        registry.emit(into: &buffer)
        return buffer
    }
}
