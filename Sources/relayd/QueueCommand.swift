import ArgumentParser
import Foundation
import RelayCore

/// `relayd queue …`: inspect and steer the queue, also while relayd runs.
struct QueueCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract: "List, show, flush, hold, release or delete queued messages.",
        subcommands: [List.self, Show.self, Flush.self, Hold.self, Release.self, Delete.self])

    static func admin(_ options: ConfigOption) throws -> QueueAdmin {
        do {
            let config = try ConfigLoader.load(path: options.config)
            return QueueAdmin(spool: try Spool(root: config.server.spoolDirectory))
        } catch let e as ConfigErrors {
            for error in e.errors { printError(error.description) }
            throw ExitCode(1)
        }
    }

    static func run(_ options: ConfigOption, _ request: QueueRequest) throws {
        let admin = try admin(options)
        do {
            print(try admin.submit(request))
        } catch {
            printError("relayd queue: \(error)")
            throw ExitCode(1)
        }
    }

    static func validID(_ id: String) throws -> String {
        guard QueueID.isValid(id) else { throw ValidationError("'\(id)' is not a queue id") }
        return id
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One line per message (or JSON), optionally filtered.",
            discussion: """
                Filters combine (all must hold): --domain D (a recipient in D), --older-than 2h \
                (arrived at least that long ago), --state incoming|active|deferred|hold, --reason TEXT \
                (a pending recipient's last error contains TEXT; --reason tls selects every message \
                waiting on a TLS failure and shows its type).
                """)
        @OptionGroup var options: ConfigOption
        @Flag(help: "Only deferred messages (the same as --state deferred).") var deferred = false
        @Option(help: "Only messages with a recipient in this domain.") var domain: String?
        @Option(name: .customLong("older-than"), help: "Only messages queued at least this long ago (30s, 5m, 4h, 2d).")
        var olderThan: String?
        @Option(help: "Only messages in this state: incoming, active, deferred or hold.") var state: String?
        @Option(help: "Only messages with a pending recipient whose last error contains this text; 'tls': waiting on TLS.")
        var reason: String?
        @Flag(help: "JSON array instead of text.") var json = false

        func filter() throws -> QueueFilter {
            var folder: Spool.Folder? = deferred ? .deferred : nil
            if let state {
                guard let f = Spool.Folder(rawValue: state.lowercased()), [.incoming, .active, .deferred, .hold].contains(f) else {
                    throw ValidationError("--state: expected incoming, active, deferred or hold, not '\(state)'")
                }
                if deferred && f != .deferred { throw ValidationError("--deferred and --state \(state) contradict each other") }
                folder = f
            }
            var age: Int?
            if let olderThan {
                guard let seconds = ConfigLoader.parseDuration(olderThan) else {
                    throw ValidationError("--older-than: expected a duration such as 30s, 5m, 4h or 2d, not '\(olderThan)'")
                }
                age = seconds
            }
            if let reason, reason.isEmpty { throw ValidationError("--reason: give some text, or 'tls'") }
            return QueueFilter(domain: domain, olderThan: age, folder: folder, reason: reason)
        }

        func validate() throws { _ = try filter() }

        func orNull(_ v: Any?) -> Any { v ?? NSNull() }
        func nonEmpty(_ s: String?) -> String? { s.flatMap { $0.isEmpty ? nil : $0 } }

        func run() throws {
            let admin = try QueueCommand.admin(options)
            let filter = try filter()
            let now = Int(Date().timeIntervalSince1970)
            let entries = filter.apply(admin.entries(folders: filter.folders), now: now)
            if json {
                // Every key is always present (null when it does not apply),
                // so scripts need not test for them.
                let rows: [[String: Any]] = entries.map { e in
                    [
                        "id": e.id, "state": e.folder.rawValue, "age_seconds": now - e.message.arrival,
                        "arrival": e.message.arrival,
                        "sender": e.message.envelope.sender.description,
                        "recipients": e.recipients.map { r -> [String: Any] in
                            [
                                "address": r.0.description, "status": r.1?.status.rawValue ?? "pending", "detail": r.1?.detail ?? "",
                                "enhanced_status": orNull(nonEmpty(r.1?.enhancedStatus)),
                                "tls_failure": orNull(r.1?.tlsFailureType),
                                "tls_detail": orNull(nonEmpty(r.1?.tlsDetail)),
                            ]
                        },
                        "attempts": e.state?.attempts ?? 0,
                        "next_attempt": orNull(e.folder == .deferred ? e.state?.nextAttempt : nil),
                        "last_error": orNull(e.lastError),
                        "waiting_on_tls": e.recipients.contains { $0.1?.waitsOnTLS == true },
                        "delay_notice_sent": orNull(e.state.flatMap { $0.delayNoticeSent == 0 ? nil : $0.delayNoticeSent }),
                    ]
                }
                let data = try JSONSerialization.data(withJSONObject: rows, options: [.prettyPrinted, .sortedKeys])
                print(String(decoding: data, as: UTF8.self))
                return
            }
            for e in entries {
                let age = now - e.message.arrival
                let next = e.folder == .deferred ? " next-in=\(max(0, (e.state?.nextAttempt ?? now) - now))s" : ""
                print("\(e.id) \(e.folder.rawValue) age=\(age)s attempts=\(e.state?.attempts ?? 0)\(next) from=<\(e.message.envelope.sender)>")
                for (rcpt, status) in e.recipients {
                    let tls = status?.tlsFailureType.map { " tls-failure=\($0)" } ?? ""
                    let detail = status?.detail.isEmpty == false ? " (\(status!.detail))" : ""
                    print("    <\(rcpt)> \(status?.status.rawValue ?? "pending")\(tls)\(detail)")
                }
            }
            print("\(entries.count) message\(entries.count == 1 ? "" : "s")")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Envelope, delivery state and headers of one message.")
        @OptionGroup var options: ConfigOption
        @Argument var id: String

        func run() throws {
            let admin = try QueueCommand.admin(options)
            guard let e = admin.find(try QueueCommand.validID(id)) else {
                printError("no message \(id)")
                throw ExitCode(1)
            }
            let env = e.message.envelope
            print("id: \(e.id)\nstate: \(e.folder.rawValue)\narrival: \(e.message.arrival)\nsender: <\(env.sender)>")
            print("client: \(env.origin.clientAddress) helo=\(env.origin.heloName) tls=\(env.origin.tlsVersion ?? "none") user=\(env.origin.authenticatedUser ?? "-")")
            print("attempts: \(e.state?.attempts ?? 0)")
            if let x = env.escalation { print("escalated=\(x)") }
            if env.requireTLS { print("requiretls: yes (RFC 8689)") }
            if env.tlsRequiredNo { print("tls-required: no (RFC 8689 §5 header)") }
            for (i, (rcpt, status)) in e.recipients.enumerated() {
                var line = "recipient: <\(rcpt)> \(status?.status.rawValue ?? "pending") \(status?.enhancedStatus ?? "") \(status?.detail ?? "")"
                if i < env.recipients.count {
                    let r = env.recipients[i]
                    if let from = r.forwardedFrom { line += " forwarded-from=<\(from)>" }
                    if let floor = r.tlsFloor { line += " floor=\(floor.rawValue)" }
                }
                print(line)
            }
            let headers = e.message.body.firstRange(of: Array("\r\n\r\n".utf8)).map { Array(e.message.body[..<$0.lowerBound]) } ?? e.message.body
            print("\n" + String(decoding: headers, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n"))
        }
    }

    struct Flush: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Retry deferred mail now (all, one id, or one domain).")
        @OptionGroup var options: ConfigOption
        @Argument var id: String?
        @Option(help: "Only messages for this domain.") var domain: String?

        func run() throws {
            let target: QueueTarget = try id.map { .id(try QueueCommand.validID($0)) } ?? domain.map { .domain($0.lowercased()) } ?? .all
            try QueueCommand.run(options, .flush(target))
        }
    }

    struct Hold: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Keep a message from being delivered until released.")
        @OptionGroup var options: ConfigOption
        @Argument var id: String
        func run() throws { try QueueCommand.run(options, .hold(try QueueCommand.validID(id))) }
    }

    struct Release: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Release a held message for delivery now.")
        @OptionGroup var options: ConfigOption
        @Argument var id: String
        func run() throws { try QueueCommand.run(options, .release(try QueueCommand.validID(id))) }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete messages without a bounce (one id, or --all).")
        @OptionGroup var options: ConfigOption
        @Argument var id: String?
        @Flag(help: "Delete every queued message.") var all = false

        func validate() throws {
            if (id == nil) == !all { throw ValidationError("give a queue id or --all") }
        }

        func run() throws {
            try QueueCommand.run(options, .delete(all ? .all : .id(try QueueCommand.validID(id!))))
        }
    }
}
