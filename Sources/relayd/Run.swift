import ArgumentParser
import Foundation
import Dispatch
import Logging
import RelayCore
#if canImport(Glibc)
import Glibc
#endif

/// `relayd run`: the daemon, in the foreground (systemd supervises it).
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the relay in the foreground, logging to stderr.")

    @OptionGroup var options: ConfigOption

    @Option(help: "Seconds to let sessions finish after SIGTERM/SIGINT.")
    var grace: Int = 30

    func run() throws {
        let config: Config
        do {
            config = try ConfigLoader.load(path: options.config)
        } catch let e as ConfigErrors {
            for error in e.errors { printError(error.description) }
            throw ExitCode(1)
        }
        LoggingSystem.bootstrap { label in LogfmtHandler(label: label, level: config.log.level) }
        let logger = Logger(label: "relayd")
        logger.info("starting", metadata: ["version": "\(RelaydVersion.string)", "config": "\(options.config)",
                                           "openssl": "\(TLSLibrary.runtimeVersion)", "c-ares": "\(CAresLibrary.runtimeVersion)"])
        signal(SIGPIPE, SIG_IGN)

        let daemon: Daemon
        do {
            daemon = try Daemon(config: config, configPath: options.config, logger: logger)
        } catch let held as SpoolLock.Held {
            // Another relayd owns this spool: touch nothing, say who.
            logger.critical("spool in use; not starting", metadata: ["problem": "\(held)"])
            printError("relayd: \(held)")
            throw ExitCode(1)
        }
        // Handlers first: start() tells `relayd queue` it may send SIGUSR1.
        daemon.installSignalHandlers(grace: Double(grace))
        do {
            try daemon.start()
        } catch let e as ListenError {
            // Listeners bound so far were closed; nothing was acknowledged.
            logger.critical("not starting", metadata: ["problem": "\(e)"])
            printError("relayd: \(e)")
            throw ExitCode(1)
        }
        dispatchMain()
    }
}

/// Process-level wiring: the spool lock, spool recovery, the inbound
/// server, signals.
///
/// Confinement: built and started on the main thread before any signal
/// source exists; from then on its mutable state (stopping, the signal
/// sources) is touched only by the signal handlers on `signalQueue`, and
/// stop() and reload() check that in debug builds. Hence @unchecked
/// Sendable.
final class Daemon: @unchecked Sendable {
    let configPath: String
    let logger: Logger
    /// Held for the life of the process: one relayd per spool.
    let spoolLock: SpoolLock
    let spool: Spool
    let inbound: InboundServer
    /// Every Prometheus metric, made once here and handed to the inbound
    /// server and the delivery environment (kept across reloads).
    let metrics: RelayMetrics
    /// The scrape listener ([metrics] address); nil when off.
    let metricsServer: MetricsServer?
    let resolver: CAresResolver
    let runner: QueueRunner
    /// The MTA-STS cache: on disk under the spool, in memory for the
    /// policy layer; kept across reloads.
    let stsStore: FileSTSCacheStore
    let stsPolicies: STSPolicies
    /// Learned TLS status: on disk under the spool, in memory for the
    /// policy layer; kept across reloads.
    let learned: LearnedStatus
    /// Every minute: learned records changed only in their counters are
    /// written (decisive changes are written at once).
    private var learnedFlushTimer: (any DispatchSourceTimer)?
    /// The daily re-probe of learned domains (and their sweep), ticked
    /// every five minutes.
    let learnedMonitor: LearnedMonitor
    private var learnedMonitorTimer: (any DispatchSourceTimer)?
    /// TLS-RPT ([tlsrpt] enabled): the counters delivery records into,
    /// flushed with the learned records every minute, and the sender, ticked
    /// on the same timer. Kept across reloads (a change needs a restart).
    let tlsrpt: (ledger: TLSRPTLedger, sender: TLSRPTSender, requests: TLSRPTRequests)?
    /// The TLS tally of `relayd report tls`: always on, flushed with the
    /// learned records every minute and at stop; kept across reloads.
    let tlsTally: TLSTally
    private var signalSources: [any DispatchSourceSignal] = []
    /// Every ten minutes (plus jitter): cached MTA-STS policies that are a
    /// day old or near expiry are fetched again.
    private var stsRefreshTimer: (any DispatchSourceTimer)?
    private let signalQueue = DispatchQueue(label: "relayd.signals")
    private var stopping = false
    /// `[state] backend = "postgres"`: the pool of the shared-state stores
    /// (learned status, MTA-STS, TLS-RPT). A database that is down never
    /// holds the start: migrations are retried, writes wait in outboxes.
    private var statePool: PGPool?
    /// MTA-STS policies shared through `statePool` (one fetch for all
    /// instances); kept across reloads, as the pool is.
    private var stsShared: PGSTSBackend?
    /// Pushes this instance's TLS-RPT counts (TLSRPTSync).
    private var tlsrptSyncTimer: (any DispatchSourceTimer)?
    /// Reads the shared state into the relayd_shared_state_* metrics.
    private var sharedMetricsTimer: (any DispatchSourceTimer)?
    /// Learned TLS status shared through `statePool` (LearnedSync), and
    /// the timer that pushes and pulls it.
    private var learnedSync: LearnedSync?
    /// Pins, unpins and forgets shared through `statePool`.
    private var actionSync: LearnedActionSync?
    /// Ticks the shared tls-exclusive drop audit's outbox.
    private var dropAuditTimer: (any DispatchSourceTimer)?
    private var learnedSyncTimer: (any DispatchSourceTimer)?
    /// The config relayd started with: what sockets, spool, resolver and
    /// log handler were made from, so each reload names what it cannot apply.
    private let started: Config

    init(config: Config, configPath: String, logger: Logger) throws {
        self.configPath = configPath
        self.started = config
        self.logger = logger
        // Before anything touches the spool: recovery below would delete a
        // live daemon's tmp/ files and take back its active/ messages.
        spoolLock = try SpoolLock.acquire(spoolRoot: config.server.spoolDirectory)
        // Only the durability benchmark sets this: it measures what fsync
        // costs. It is an environment variable, not a config key, so it
        // cannot be left in a policy file by accident, and it is loud.
        let unsafeNoFsync = ProcessInfo.processInfo.environment["RELAYD_UNSAFE_NO_FSYNC"] == "1"
        if unsafeNoFsync {
            logger.critical("RELAYD_UNSAFE_NO_FSYNC=1: queue files are NOT fsynced; acknowledged mail can be lost on a crash. Benchmarks only.")
        }
        // The recycled-queue-file pool's size (Spool.swift); only the spool
        // benchmark sets it, to compare with recycling off (0). Safe either way.
        let freeFiles = ProcessInfo.processInfo.environment["RELAYD_SPOOL_FREE_FILES"].flatMap { Int($0) }.map { max(0, $0) }
        spool = try Spool(root: config.server.spoolDirectory, reserveBytes: UInt64(config.queue.minFreeSpace),
                          fsyncEnabled: !unsafeNoFsync, freePoolFiles: freeFiles ?? Spool.defaultFreePoolFiles,
                          syncMethod: config.queue.sync == .filesystem ? .filesystem : .file)
        let report = spool.recover()
        for id in report.discardedPartial {
            logger.warning("discarded incomplete queue file (never acknowledged)", metadata: ["file": "\(id)"])
        }
        for (id, reason) in report.quarantined {
            logger.error("queue file failed its self-check; moved to corrupt/", metadata: ["id": "\(id)", "reason": "\(reason)"])
        }
        logger.info("spool ready", metadata: ["path": "\(spool.root)", "messages": "\(report.intact)",
                                              "free_files": "\(report.freeFiles)/\(spool.freePoolFiles)"])
        let metrics = RelayMetrics(listeners: InboundServer.metricsLabels(config),
                                   build: RelayMetrics.BuildInfo(version: RelaydVersion.string, openssl: TLSLibrary.runtimeVersion,
                                                                 cares: CAresLibrary.runtimeVersion))
        self.metrics = metrics
        metricsServer = config.metrics.address.map { MetricsServer(address: $0, metrics: metrics, logger: logger) }
        inbound = InboundServer(settings: try InboundSettings(config: config), spool: spool, logger: logger, metrics: metrics)
        resolver = try CAresResolver(servers: config.dns.servers)
        stsStore = FileSTSCacheStore(spool: spool, now: { Int(time(nil)) }, onDamaged: { [logger] domain, aside in
            logger.warning("MTA-STS cache record damaged; set aside, the policy will be fetched again",
                           metadata: ["domain": "\(domain)", "file": "\(aside)"])
        })
        stsPolicies = STSPolicies(STSDiscovery.load(stsStore))
        let learnedStore = FileLearnedStore(spool: spool, now: { Int(time(nil)) }, onDamaged: { [logger] domain, aside in
            logger.warning("learned TLS record damaged; set aside, the domain is learned again from its next TLS session",
                           metadata: ["domain": "\(domain)", "file": "\(aside)"])
        })
        learned = LearnedStatus(store: learnedStore, settings: config.learned, logger: logger, now: { Int(time(nil)) })
        learned.load()
        // `[state] backend = "postgres"`: the pool is made here (started in
        // start()), so the delivery environment's MTA-STS discovery can
        // share policies through it from the first delivery.
        statePool = PGPoolConfiguration(state: config.state).map { PGPool($0, logger: logger) }
        stsShared = statePool.map { PGSTSBackend(pool: $0, instance: config.state.instance) }
        var environment = try OutboundSettings.environment(config: config, resolver: resolver, logger: logger,
                                                           stsStore: stsStore, stsPolicies: stsPolicies, learned: learned,
                                                           stsShared: stsShared)
        tlsTally = TLSTally(spool: spool, logger: logger, now: { Int(time(nil)) })
        tlsTally.load()
        environment.tlsTally = tlsTally
        environment.metrics = metrics
        var tlsrptLedger: TLSRPTLedger?
        if config.tlsrpt.enabled {
            let store = TLSRPTStore(spool: spool, now: { Int(time(nil)) }, onDamaged: { [logger] name, aside in
                logger.warning("TLS-RPT record damaged; set aside", metadata: ["record": "\(name)", "file": "\(aside)"])
            })
            let ledger = TLSRPTLedger(store: store, logger: logger, now: { Int(time(nil)) })
            ledger.load()
            environment.tlsrpt = ledger
            tlsrptLedger = ledger
        }
        runner = QueueRunner(spool: spool, environment: environment, logger: logger)
        let runner = self.runner
        // The TLS-RPT sender is built with the shared backend (the pool
        // made above, started in start()).
        let pool = statePool
        var sharedTLSRPT: TLSRPTSharedSending?
        if let pool, let ledger = tlsrptLedger {
            let backend = PGTLSRPTBackend(pool: pool, instance: config.state.instance)
            let sync = TLSRPTSync(ledger: ledger, backend: backend, spool: spool, logger: logger)
            sync.load()
            sharedTLSRPT = TLSRPTSharedSending(backend: backend, instance: config.state.instance, sync: sync)
        }
        if let ledger = tlsrptLedger {
            let fetcher = HTTPSFetcher(resolver: resolver, tlsContext: try OutboundSettings.clientTLSContext(config))
            let transport = TLSRPTSender.Transport.live(resolver: resolver, fetcher: fetcher) { [spool, runner] message in
                try spool.store(message)
                runner.wake(queued: message.id, message: message)
            }
            let sender = TLSRPTSender(ledger: ledger, submitter: TLSRPTSubmitter(config.tlsrpt), from: config.tlsrpt.from,
                                      hostname: config.server.hostname, transport: transport, logger: logger,
                                      now: { Int(time(nil)) }, shared: sharedTLSRPT)
            tlsrpt = (ledger, sender, TLSRPTRequests(spool: spool))
        } else {
            tlsrpt = nil
        }
        let prober = OutboundSettings.domainProber(config, resolver: resolver, tlsContext: try OutboundSettings.clientTLSContext(config),
                                                   timeoutSeconds: config.learned.probeTimeout)
        learnedMonitor = LearnedMonitor(status: learned,
                                        probe: LearnedProbing.probe(prober, queue: DispatchQueue(label: "relayd.learned.probes"),
                                                                    now: { Int(time(nil)) }),
                                        protected: { runner.upgradedAboveLearned($0) }, now: { Int(time(nil)) })
        runner.learnedMonitor = learnedMonitor
        inbound.onQueued = { message in runner.wake(queued: message.id, message: message) }
    }

    func start() throws {
        // Before the listeners log "listening": whoever waits for that line
        // finds the pid file already there.
        writePIDFile()
        do {
            // Metrics first: a scraper may watch the start itself, and a
            // metrics address in use stops the start before any SMTP
            // listener accepts mail.
            try metricsServer?.start()
            try inbound.start()
        } catch {
            metricsServer?.stop()
            unlink(spool.root + "/relayd.pid")
            throw error
        }
        // Before the runner: the learned observer is in place for the first
        // delivery.
        startSharedState()
        runner.start()
        let timer = DispatchSource.makeTimerSource(queue: signalQueue)
        timer.schedule(deadline: .now() + .seconds(60 + Int.random(in: 0...60)), repeating: .seconds(600), leeway: .seconds(30))
        timer.setEventHandler { [runner] in runner.refreshMTASTS() }
        timer.resume()
        stsRefreshTimer = timer
        let flush = DispatchSource.makeTimerSource(queue: signalQueue)
        flush.schedule(deadline: .now() + .seconds(60), repeating: .seconds(60), leeway: .seconds(5))
        flush.setEventHandler { [learned, tlsrpt, tlsTally] in
            learned.flush()
            tlsTally.flush()
            if let tlsrpt {
                tlsrpt.ledger.flush()
                tlsrpt.sender.tick()
            }
        }
        flush.resume()
        learnedFlushTimer = flush
        let probes = DispatchSource.makeTimerSource(queue: signalQueue)
        probes.schedule(deadline: .now() + .seconds(120 + Int.random(in: 0...60)), repeating: .seconds(300), leeway: .seconds(30))
        probes.setEventHandler { [runner, learnedMonitor] in
            if runner.learnsTLSStatus { learnedMonitor.tick() }
        }
        probes.resume()
        learnedMonitorTimer = probes
        checkForwarding(started)
        if !spoolLock.acceptRequests() {
            logger.warning("cannot mark the spool lock; `relayd queue` will not reach this daemon",
                           metadata: ["lock": "\(spoolLock.path)"])
        }
    }

    /// spool/relayd.pid, for people and service managers; written under
    /// the spool lock. `relayd queue` asks the lock, not this file.
    private func writePIDFile() {
        let path = spool.root + "/relayd.pid"
        let text = "\(getpid())\n"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return logger.warning("cannot write pid file", metadata: ["path": "\(path)"]) }
        _ = text.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }

    func installSignalHandlers(grace: Double) {
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGUSR1] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: signalQueue)
            source.setEventHandler { [self] in
                switch sig {
                case SIGHUP: reload()
                case SIGUSR1:
                    runner.wake()  // `relayd queue flush` and friends
                    takeTLSRPTRequests()  // `relayd report tlsrpt`
                default: stop(signal: sig, grace: grace)
                }
            }
            source.resume()
            signalSources.append(source)
        }
    }

    /// `relayd report tlsrpt` while this daemon runs: the counters are
    /// flushed first, so the report has every session counted so far.
    private func takeTLSRPTRequests() {
        dispatchPrecondition(condition: .onQueue(signalQueue))
        guard let tlsrpt else {
            for (name, _) in TLSRPTRequests(spool: spool).take() {
                TLSRPTRequests(spool: spool).answer(name, "error: TLS-RPT is not enabled ([tlsrpt] enabled = false)")
            }
            return
        }
        let pending = tlsrpt.requests.take()
        guard !pending.isEmpty else { return }
        tlsrpt.ledger.flush()
        for (name, request) in pending {
            logger.info("TLS-RPT: report requested", metadata: ["day": "\(request.day)", "dry_run": "\(request.dryRun)"])
            tlsrpt.sender.sendNow(day: request.day, dryRun: request.dryRun, includeJSON: request.json) { [requests = tlsrpt.requests] lines in
                requests.answer(name, lines.joined(separator: "\n") + "\n")
            }
        }
    }

    /// Opens the shared-state pool and applies the migrations not yet
    /// applied (under the advisory lock, so instances starting together
    /// apply each once); the outcome is logged, never fatal.
    private func startSharedState() {
        guard let pool = statePool else { return }
        pool.start()
        let migrations: [PGMigration]
        do { migrations = try PGMigrations.load(directory: started.state.migrations) } catch {
            logger.error("shared state: \(error)")
            return
        }
        let logger = self.logger
        if started.learned.enabled {
            // Learned evidence is shared from the start; until the schema is
            // there, pushes fail and wait in the outbox like any outage.
            let sync = LearnedSync(status: learned, backend: PGLearnedBackend(pool: pool, instance: started.state.instance),
                                   spool: spool, logger: logger)
            sync.load()
            learned.setSessionObserver { domain, seen, at in sync.observe(domain: domain, seen: seen, at: at) }
            learnedSync = sync
            let actions = LearnedActionSync(status: learned, evidence: sync,
                                            backend: PGActionsBackend(pool: pool, instance: started.state.instance),
                                            instance: started.state.instance, spool: spool, logger: logger)
            actions.load()
            learned.setChangeObserver { change, at in actions.record(change, at: at) }
            actionSync = actions
            let timer = DispatchSource.makeTimerSource(queue: signalQueue)
            let every = started.state.syncInterval
            timer.schedule(deadline: .now() + .seconds(1), repeating: .seconds(every), leeway: .milliseconds(200))
            timer.setEventHandler { sync.tick(); actions.tick() }
            timer.resume()
            learnedSyncTimer = timer
        }
        if let sync = tlsrpt?.sender.shared?.sync {
            // TLS-RPT counts: pushed on the same interval; until the schema
            // is there, pushes fail and wait in the outbox like any outage.
            let timer = DispatchSource.makeTimerSource(queue: signalQueue)
            timer.schedule(deadline: .now() + .seconds(1), repeating: .seconds(started.state.syncInterval), leeway: .milliseconds(200))
            timer.setEventHandler { sync.tick() }
            timer.resume()
            tlsrptSyncTimer = timer
        }
        // The tls-exclusive drop audit: every drop also goes to the shared
        // table, through SharedDropAudit's outbox in the spool.
        let drops = SharedDropAudit(backend: PGDropsBackend(pool: pool, instance: started.state.instance), spool: spool, logger: logger)
        drops.load(now: Int(time(nil)))
        runner.dropObserver = { drops.record($0) }
        let dropTimer = DispatchSource.makeTimerSource(queue: signalQueue)
        dropTimer.schedule(deadline: .now() + .seconds(1), repeating: .seconds(started.state.syncInterval), leeway: .milliseconds(200))
        dropTimer.setEventHandler { drops.tick() }
        dropTimer.resume()
        dropAuditTimer = dropTimer
        startSharedStateMetrics(pool, drops: drops)
        migrateSharedState(pool, migrations, attempt: 1)
    }

    /// Every sync interval: whether the database answers, what waits in
    /// each outbox, how many writes each store sent since the last look,
    /// and an outage each time it stopped answering (relayd_shared_state_*).
    private func startSharedStateMetrics(_ pool: PGPool, drops: SharedDropAudit) {
        struct Seen { var reachable = false; var sent: [RelayMetrics.SharedStore: Int] = [:] }
        let seen = Locked(Seen())
        let (metrics, learnedSync, actionSync, tlsrptSync) = (metrics, learnedSync, actionSync, tlsrpt?.sender.shared?.sync)
        let timer = DispatchSource.makeTimerSource(queue: signalQueue)
        timer.schedule(deadline: .now() + .seconds(1), repeating: .seconds(started.state.syncInterval), leeway: .milliseconds(200))
        timer.setEventHandler {
            let reachable = pool.stats.healthy
            let sent: [RelayMetrics.SharedStore: Int] = [
                .learned: learnedSync?.counters.pushed ?? 0, .actions: actionSync?.counters.appended ?? 0,
                .tlsrpt: tlsrptSync?.counters.pushed ?? 0, .drops: drops.counters.appended]
            let before = seen.withLock { s -> Seen in
                defer { s = Seen(reachable: reachable, sent: sent) }
                return s
            }
            if before.reachable && !reachable { metrics.sharedStateOutage() }
            for (store, n) in sent { metrics.sharedStateWritten(store, n - (before.sent[store] ?? 0)) }
            metrics.setSharedState(reachable: reachable, queued: [
                .learned: learnedSync?.pendingDomains.count ?? 0, .actions: actionSync?.pending.count ?? 0,
                .tlsrpt: tlsrptSync?.pendingKeys.count ?? 0, .drops: drops.pending.count])
        }
        timer.resume()
        sharedMetricsTimer = timer
    }

    /// Applies the schema; a database that is down at start is retried
    /// every 30 seconds until it answers (shared writes wait in the outbox
    /// meanwhile), never fatal.
    private func migrateSharedState(_ pool: PGPool, _ migrations: [PGMigration], attempt: Int) {
        let logger = self.logger
        PGMigrations.migrate(pool, migrations: migrations, on: signalQueue) { [weak self] result in
            switch result {
            case .success(let report):
                logger.info("shared state: schema ready", metadata: [
                    "applied": "\(report.applied.map(\.file).joined(separator: ","))",
                    "already": "\(report.alreadyApplied.count)"])
            case .failure(let error):
                logger.error("shared state: migrations not applied; retried in 30 s", metadata: [
                    "error": "\(error)", "attempt": "\(attempt)"])
                guard let self else { return }
                signalQueue.asyncAfter(deadline: .now() + 30) { [weak self] in
                    guard let self, !stopping else { return }
                    migrateSharedState(pool, migrations, attempt: attempt + 1)
                }
            }
        }
    }

    private func stop(signal sig: Int32, grace: Double) {
        dispatchPrecondition(condition: .onQueue(signalQueue))
        if stopping {
            logger.warning("second stop signal; exiting now")
            exit(0)
        }
        stopping = true
        spoolLock.withdrawRequests()
        logger.info("stopping", metadata: ["signal": "\(sig == SIGTERM ? "TERM" : "INT")"])
        runner.stop()
        metricsServer?.stop()
        learnedSyncTimer?.cancel()
        tlsrptSyncTimer?.cancel()
        sharedMetricsTimer?.cancel()
        dropAuditTimer?.cancel()
        learnedSync?.persistPending()
        actionSync?.persistPending()
        statePool?.shutdown()
        inbound.stop(grace: grace) { [logger, spool, learned, tlsrpt, tlsTally] in
            learned.flush()
            tlsrpt?.ledger.flush()
            tlsTally.flush()
            unlink(spool.root + "/relayd.pid")
            logger.info("stopped")
            exit(0)
        }
    }

    /// TLS-only forwarding targets known not to take TLS (ForwardingCheck),
    /// logged once the learned records and a probe have answered.
    private func checkForwarding(_ config: Config) {
        guard !ForwardingCheck.targets(config.forwarding).isEmpty else { return }
        let prober = try? OutboundSettings.domainProber(config, resolver: resolver,
                                                        tlsContext: OutboundSettings.clientTLSContext(config),
                                                        timeoutSeconds: config.learned.probeTimeout)
        ForwardingCheck.run(config.forwarding, learned: { [learned] in learned.record($0) }, prober: prober,
                            now: Int(time(nil)), queue: DispatchQueue(label: "relayd.forwarding.check")) { [logger] warnings in
            for w in warnings { logger.warning("forwarding target cannot take TLS", metadata: ["check": "\(w)"]) }
        }
    }

    private func reload() {
        dispatchPrecondition(condition: .onQueue(signalQueue))
        do {
            // Every piece is built before any is swapped in, so a reload
            // that fails part-way changes nothing.
            let config = try ConfigLoader.load(path: configPath)
            let inboundSettings = try InboundSettings(config: config)
            var environment = try OutboundSettings.environment(config: config, resolver: resolver, logger: logger,
                                                               stsStore: stsStore, stsPolicies: stsPolicies,
                                                               learned: learned, stsShared: stsShared)
            environment.tlsrpt = tlsrpt?.ledger
            environment.tlsTally = tlsTally
            environment.metrics = metrics
            for key in config.changesNeedingRestart(from: started) {
                logger.warning("needs a restart; keeping the running value", metadata: ["key": "\(key)"])
            }
            inbound.replaceSettings(inboundSettings)
            spool.reserveBytes = UInt64(config.queue.minFreeSpace)
            // "reloaded" only once the delivery side uses the new settings
            // too (and the old pool's kept connections are closing).
            runner.replaceEnvironment(environment) { [logger, configPath] in
                logger.info("reloaded", metadata: ["config": "\(configPath)"])
            }
            checkForwarding(config)
        } catch let e as ConfigErrors {
            for error in e.errors { logger.error("reload refused; keeping the running config", metadata: ["problem": "\(error)"]) }
        } catch {
            logger.error("reload refused; keeping the running config", metadata: ["problem": "\(error)"])
        }
    }
}
