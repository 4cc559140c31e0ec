import ArgumentParser
import Dispatch
import Foundation
import Logging
import RelayCore
#if canImport(Glibc)
import Glibc
#endif

extension TLSRPTSubmitter {
    init(_ c: Config.TLSRPT) {
        self.init(organization: c.organization, contact: c.contact, submitter: c.submitter)
    }
}

/// `relayd report …`: reports relayd sends about its own deliveries.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Send or show reports about delivery (TLS-RPT, the TLS tally, tls-exclusive drops).",
        subcommands: [TLSRPT.self, TLS.self, Drops.self])

    /// `relayd report tls --since 7d [--json]`: per destination domain, how
    /// mail left over the last days — messages and sessions by TLS outcome,
    /// the layer that decided, plaintext deliveries and what allowed them,
    /// drops and fallbacks — from the daemon's tally under
    /// spool/tls-tally/ (flushed every minute and at stop, so a running
    /// daemon's last minute may be missing).
    struct TLS: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "tls",
            abstract: "What left in the clear, and why: TLS outcomes per destination domain.")
        @OptionGroup var options: ConfigOption
        @Option(help: "How far back: a duration (1d, 7d, 12h); UTC days from the one that contains now minus this, to today.")
        var since: String = "7d"
        @Flag(help: "JSON instead of text.") var json = false

        func validate() throws {
            guard ConfigLoader.parseDuration(since) != nil else {
                throw ValidationError("--since: expected a duration such as 1d, 7d or 12h, not '\(since)'")
            }
        }

        func run() throws {
            let config: Config
            do { config = try ConfigLoader.load(path: options.config) } catch let e as ConfigErrors {
                for error in e.errors { printError(error.description) }
                throw ExitCode(1)
            }
            let spool = try Spool(root: config.server.spoolDirectory)
            let logger = Logger(label: "relayd.report") { _ in StreamLogHandler.standardError(label: "relayd.report") }
            let now = Int(time(nil))
            let days = TLSReport.days(since: ConfigLoader.parseDuration(since) ?? 0, now: now)
            let tally = TLSTally(spool: spool, logger: logger, now: { now }, setsAsideDamaged: false)
            let report = TLSReport(tally.counts(days: days), days: days)
            print(json ? try report.json() : report.text, terminator: json ? "\n" : "")
        }
    }

    /// `relayd report drops [--since 7d] [--json]`: the tls-exclusive drops
    /// of every instance, from the shared table (tls_exclusive_drops). Only
    /// with [state] backend = "postgres"; with the file backend each
    /// instance's drops are in its own log (audit=tls-exclusive-drop).
    struct Drops: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "drops",
            abstract: "The tls-exclusive drops of every instance, from the shared state (PostgreSQL).")
        @OptionGroup var options: ConfigOption
        @Option(help: "How far back: a duration (1d, 7d, 12h).") var since: String = "7d"
        @Flag(help: "JSON instead of text.") var json = false

        func validate() throws {
            guard ConfigLoader.parseDuration(since) != nil else {
                throw ValidationError("--since: expected a duration such as 1d, 7d or 12h, not '\(since)'")
            }
        }

        func run() throws {
            let config: Config
            do { config = try ConfigLoader.load(path: options.config) } catch let e as ConfigErrors {
                for error in e.errors { printError(error.description) }
                throw ExitCode(1)
            }
            guard var pool = PGPoolConfiguration(state: config.state, applicationName: "relayd-report") else {
                printError("relayd report drops needs the shared state: [state] backend = \"postgres\" (this config uses \"file\"; "
                           + "each instance's drops are in its own log, audit=tls-exclusive-drop)")
                throw ExitCode(1)
            }
            pool.size = 1
            let from = Int(time(nil)) - (ConfigLoader.parseDuration(since) ?? 0)
            let rows: [SharedDropRow]
            do { rows = try SharedStateQuery.run(pool) { pg, done in PGDropsBackend(pool: pg, instance: config.state.instance).list(since: from, completion: done) } } catch {
                printError("relayd report drops: \(error)")
                throw ExitCode(1)
            }
            if json {
                let all = rows.map { ["instance": $0.instance, "at": LearnedClock.utc($0.drop.at), "at_unix": $0.drop.at, "id": $0.drop.queueID,
                                      "domain": $0.drop.domain, "reason": $0.drop.reason] as [String: Any] }
                let data = try JSONSerialization.data(withJSONObject: ["since": LearnedClock.utc(from), "drops": all] as [String: Any],
                                                      options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else if rows.isEmpty {
                print("no tls-exclusive drops since \(LearnedClock.utc(from))")
            } else {
                for r in rows {
                    print("\(LearnedClock.utc(r.drop.at))  \(r.instance)  \(r.drop.queueID)  \(r.drop.domain)  \(r.drop.reason)")
                }
            }
        }
    }

    /// `relayd report tlsrpt --day YYYY-MM-DD [--dry-run] [--json]`: a
    /// day's TLS-RPT reports now, whatever the schedule. Through the running
    /// daemon when there is one (it flushes its counters first and queues
    /// the mail itself); otherwise here, under the spool lock, with report
    /// mail left in the queue for the next start.
    struct TLSRPT: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "tlsrpt",
            abstract: "Send a day's TLS-RPT (RFC 8460) reports now, or show them.")
        @OptionGroup var options: ConfigOption
        @Option(help: "The UTC day, YYYY-MM-DD (default: yesterday).") var day: String?
        @Flag(help: "Make the reports and say what would be sent; send nothing.") var dryRun = false
        @Flag(help: "Print each report's JSON too.") var json = false
        @Option(help: "Seconds to wait for the reports to be sent.") var timeout: Double = 120

        func run() throws {
            let config: Config
            do { config = try ConfigLoader.load(path: options.config) } catch let e as ConfigErrors {
                for error in e.errors { printError(error.description) }
                throw ExitCode(1)
            }
            guard config.tlsrpt.enabled else {
                printError("relayd report tlsrpt: TLS-RPT is not enabled ([tlsrpt] enabled = false)")
                throw ExitCode(1)
            }
            let reportDay: TLSRPTDay
            if let day {
                guard let d = TLSRPTDay(day) else { throw ValidationError("'\(day)' is not a day (YYYY-MM-DD)") }
                reportDay = d
            } else {
                reportDay = TLSRPTDay(containing: Int(time(nil))).previous
            }
            let request = TLSRPTRequest(day: reportDay, dryRun: dryRun, json: json)
            let spool = try Spool(root: config.server.spoolDirectory)
            do {
                switch try SpoolLock.probe(spoolRoot: spool.root) {
                case .daemon(let pid):
                    print(try TLSRPTRequests(spool: spool).hand(request, to: pid, timeoutSeconds: timeout), terminator: "")
                case .acquired(let lock):
                    defer { lock.release() }
                    print(try Self.standalone(request, config: config, spool: spool, timeout: timeout), terminator: "")
                case .busy(let owner):
                    printError("relayd report tlsrpt: the spool is locked by \(owner.map { "pid \($0)" } ?? "another process"); try again")
                    throw ExitCode(1)
                }
            } catch let e as ExitCode {
                throw e
            } catch {
                printError("relayd report tlsrpt: \(error)")
                throw ExitCode(1)
            }
        }

        static func standalone(_ request: TLSRPTRequest, config: Config, spool: Spool, timeout: Double) throws -> String {
            // With shared state a report is made from every instance's
            // counts by the day's lease holder: never from this spool alone.
            if config.state.backend == .postgres && !request.dryRun {
                printError("relayd report tlsrpt: relayd is not running here; with [state] backend = \"postgres\" the reports "
                           + "are sent by a running instance (the day's lease holder), from the counts of every instance")
                throw ExitCode(1)
            }
            let logger = Logger(label: "relayd") { LogfmtHandler(label: $0, level: .warning) }  // stderr
            let now: @Sendable () -> Int = { Int(time(nil)) }
            let ledger = TLSRPTLedger(store: TLSRPTStore(spool: spool, now: now), logger: logger, now: now)
            let resolver = try CAresResolver(servers: config.dns.servers)
            let fetcher = HTTPSFetcher(resolver: resolver, tlsContext: try OutboundSettings.clientTLSContext(config))
            let transport = TLSRPTSender.Transport.live(resolver: resolver, fetcher: fetcher) { message in try spool.store(message) }
            let sender = TLSRPTSender(ledger: ledger, submitter: TLSRPTSubmitter(config.tlsrpt), from: config.tlsrpt.from,
                                      hostname: config.server.hostname, transport: transport, logger: logger, now: now)
            let done = DispatchSemaphore(value: 0)
            let out = Locked<[String]>([])
            sender.sendNow(day: request.day, dryRun: request.dryRun, includeJSON: request.json) { lines in
                out.withLock { $0 = lines }
                done.signal()
            }
            guard done.wait(timeout: .now() + timeout) == .success else {
                throw SystemError("the reports were not sent within \(Int(timeout))s", ETIMEDOUT)
            }
            var lines = out.withLock { $0 }
            if lines.contains(where: { $0.hasPrefix("  mailto:") && $0.hasSuffix(": sent") }) {
                lines.append("(no relayd running: the report mail waits in the queue for its next start)")
            }
            return lines.joined(separator: "\n") + "\n"
        }
    }
}
