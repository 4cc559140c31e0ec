// Operator actions on the queue (`relayd queue …`), safe while the daemon
// runs. Reading is direct: a queue file never changes while it has its
// queue name (a finished one may be reused under another name, Spool.swift;
// a read racing that fails its id or checksum check and is skipped) and
// state files are replaced atomically. Changing is done by the daemon's queue runner, the
// only writer of active messages: the CLI drops a request file into
// spool/requests/ and wakes the daemon (SIGUSR1, to the pid SpoolLock names);
// with no daemon running the CLI takes the spool lock and applies the
// request itself.
import RelayModel
#if canImport(Glibc)
import Glibc
#endif

public enum QueueTarget: Equatable, Sendable {
    case id(String)
    case domain(String)
    case all
}

public enum QueueRequest: Equatable, Sendable, CustomStringConvertible {
    case flush(QueueTarget)
    case hold(String)
    case release(String)
    case delete(QueueTarget)
    /// `relayd policy refresh|flush`: the MTA-STS cache record of a domain
    /// changed on disk; the daemon takes it (or its absence) into memory.
    case reloadSTS(String)
    /// `relayd policy pin|unpin|forget`: an operator change to a domain's
    /// learned TLS status, applied by the daemon (the records' one writer
    /// while it runs).
    case learned(LearnedChange)

    public var description: String { encode() }

    func encode() -> String {
        func t(_ target: QueueTarget) -> String {
            switch target {
            case .id(let id): return "id \(id)"
            case .domain(let d): return "domain \(d)"
            case .all: return "all"
            }
        }
        switch self {
        case .flush(let target): return "flush \(t(target))"
        case .hold(let id): return "hold id \(id)"
        case .release(let id): return "release id \(id)"
        case .delete(let target): return "delete \(t(target))"
        case .reloadSTS(let domain): return "reload-mta-sts domain \(domain)"
        case .learned(let change): return "learned " + change.encode()
        }
    }

    static func decode(_ line: String) -> QueueRequest? {
        let w = line.split(separator: " ").map(String.init)
        guard w.count >= 2 else { return nil }
        if w[0] == "learned" { return LearnedChange.decode(Array(w.dropFirst())).map { .learned($0) } }
        let target: QueueTarget?
        switch (w.count, w[1]) {
        case (3, "id") where QueueID.isValid(w[2]): target = .id(w[2])
        case (3, "domain"): target = .domain(DNSName.normalize(w[2]))
        case (2, "all"): target = .all
        default: target = nil
        }
        guard let target else { return nil }
        if w[0] == "reload-mta-sts", case .domain(let d) = target { return .reloadSTS(d) }
        switch (w[0], target) {
        case ("flush", _): return .flush(target)
        case ("delete", _): return .delete(target)
        case ("hold", .id(let id)): return .hold(id)
        case ("release", .id(let id)): return .release(id)
        default: return nil
        }
    }
}

/// An operator change to a domain's learned TLS status. The level is the
/// config word (RelayLearned checks it); free text travels as xtext.
public enum LearnedChange: Equatable, Sendable, CustomStringConvertible {
    case pin(domain: String, level: String, until: Int?, reason: String, by: String)
    case unpin(domain: String, by: String)
    case forget(domain: String, by: String)
    /// Not a change by itself: probe the domain now (its result updates
    /// the record as a daily probe's does).
    case reprobe(domain: String, by: String)

    public var domain: String {
        switch self {
        case .pin(let d, _, _, _, _), .unpin(let d, _), .forget(let d, _), .reprobe(let d, _): return d
        }
    }

    public var description: String { encode() }

    static func text(_ s: String) -> String { s.isEmpty ? "+" : XText.encode(s) }
    static func untext(_ s: String) -> String? { s == "+" ? "" : XText.decode(s) }

    func encode() -> String {
        switch self {
        case .pin(let d, let level, let until, let reason, let by):
            return "pin \(d) \(level) \(until.map(String.init) ?? "-") \(Self.text(by)) \(Self.text(reason))"
        case .unpin(let d, let by): return "unpin \(d) \(Self.text(by))"
        case .forget(let d, let by): return "forget \(d) \(Self.text(by))"
        case .reprobe(let d, let by): return "reprobe \(d) \(Self.text(by))"
        }
    }

    /// The change from its one-line form (`description`), as kept in the
    /// shared-actions outbox; nil when it does not read.
    public static func decode(line: String) -> LearnedChange? {
        decode(line.split(separator: " ", omittingEmptySubsequences: false).map(String.init))
    }

    static func decode(_ w: [String]) -> LearnedChange? {
        switch (w.first, w.count) {
        case ("pin", 6):
            guard let by = untext(w[4]), let reason = untext(w[5]) else { return nil }
            let until: Int?
            if w[3] == "-" { until = nil } else if let n = Int(w[3]), n >= 0 { until = n } else { return nil }
            return .pin(domain: DNSName.normalize(w[1]), level: w[2], until: until, reason: reason, by: by)
        case ("unpin", 3):
            return untext(w[2]).map { .unpin(domain: DNSName.normalize(w[1]), by: $0) }
        case ("forget", 3):
            return untext(w[2]).map { .forget(domain: DNSName.normalize(w[1]), by: $0) }
        case ("reprobe", 3):
            return untext(w[2]).map { .reprobe(domain: DNSName.normalize(w[1]), by: $0) }
        default:
            return nil
        }
    }
}

public struct QueueEntry: Sendable {
    public let id: String
    public let folder: Spool.Folder
    public let message: QueuedMessage
    public let state: DeliveryState?

    public var recipients: [(Mailbox, DeliveryState.Recipient?)] {
        message.envelope.recipients.enumerated().map { ($0.element.mailbox, state?.recipients[safe: $0.offset]) }
    }

    /// The last failure recorded for any pending recipient.
    public var lastError: String? {
        guard let state else { return nil }
        return state.recipients.first { $0.status == .pending && !$0.detail.isEmpty }?.detail
    }

    public func matches(domain: String) -> Bool {
        message.envelope.recipients.contains { $0.mailbox.domain == domain }
    }
}

extension Array {
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}

public struct QueueAdmin {
    public let spool: Spool
    public init(spool: Spool) { self.spool = spool }

    var requestDirectory: String { spool.root + "/requests" }

    /// Every readable message (unreadable ones are the daemon's to quarantine).
    public func entries(folders: [Spool.Folder] = [.incoming, .active, .deferred, .hold]) -> [QueueEntry] {
        var out: [QueueEntry] = []
        for folder in folders {
            for id in spool.list(folder) where QueueID.isValid(id) {
                guard let message = try? spool.read(folder, id) else { continue }
                out.append(QueueEntry(id: id, folder: folder, message: message, state: (try? spool.readState(id)) ?? nil))
            }
        }
        return out.sorted { $0.id < $1.id }
    }

    public func find(_ id: String) -> QueueEntry? {
        entries().first { $0.id == id }
    }

    // MARK: requests

    /// Hands the request to the running daemon and waits (bounded) for it
    /// to be carried out; with no daemon, takes the spool lock and carries
    /// it out here. The only pid ever signalled is the one the kernel names
    /// as holding the daemon's "takes requests" record (SpoolLock), never
    /// one read from a file: a crashed daemon's pid file may now name an
    /// unrelated process, which SIGUSR1 would kill.
    /// `local`, when given, carries out the request instead of `apply`
    /// while no daemon runs (and the spool lock is held).
    public func submit(_ request: QueueRequest, timeoutSeconds: Double = 10,
                       local: ((QueueRequest) throws -> String)? = nil) throws -> String {
        let deadline = Self.monotonicSeconds() + timeoutSeconds
        while true {
            switch try SpoolLock.probe(spoolRoot: spool.root) {
            case .acquired(let lock):
                defer { lock.release() }
                return try local?(request) ?? apply(request, inFlight: [])
            case .daemon(let pid):
                return try hand(request, to: pid, timeoutSeconds: timeoutSeconds)
            case .busy(let owner):
                // A daemon starting or stopping, or another `relayd queue`:
                // wait for it to take requests or to go away.
                guard Self.monotonicSeconds() < deadline else {
                    let who = owner.map { "pid \($0)" } ?? "another process"
                    throw SystemError("spool \(spool.root) is locked by \(who), which takes no queue requests; try again", EAGAIN)
                }
                usleep(100_000)
            }
        }
    }

    private func hand(_ request: QueueRequest, to pid: pid_t, timeoutSeconds: Double) throws -> String {
        try Spool.makeDirectory(requestDirectory)
        let name = QueueID.generate()
        let tmp = spool.path(.tmp, name + ".req")
        try spool.writeFile(tmp, Array((request.encode() + "\n").utf8))
        try spool.rename(tmp, to: requestDirectory + "/" + name)
        kill(pid, SIGUSR1)
        var waited = 0.0
        while waited < timeoutSeconds {
            if access(requestDirectory + "/" + name, F_OK) != 0 {
                let result = try? spool.readFileIfExists(requestDirectory + "/" + name + ".done")
                _ = spool.unlinkPath(requestDirectory + "/" + name + ".done")
                return result.map { String(decoding: $0, as: UTF8.self) } ?? "done"
            }
            usleep(50_000)
            waited += 0.05
        }
        throw SystemError("relayd (pid \(pid)) did not take the request within \(Int(timeoutSeconds))s", ETIMEDOUT)
    }

    static func monotonicSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    /// Pending request files, oldest first (the daemon's side).
    public func takeRequests() -> [(name: String, request: QueueRequest?)] {
        guard let dir = opendir(requestDirectory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let e = readdir(dir) {
            let n = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if QueueID.isValid(n) { names.append(n) }
        }
        return names.sorted().map { name in
            let text = (try? spool.readFileIfExists(requestDirectory + "/" + name)).map { String(decoding: $0, as: UTF8.self) }
            return (name, text.flatMap { QueueRequest.decode($0.trimmingSpaces.filter { $0 != "\n" }) })
        }
    }

    public func finishRequest(_ name: String, result: String) {
        try? spool.writeFile(requestDirectory + "/" + name + ".done", Array(result.utf8), replacing: true)
        _ = spool.unlinkPath(requestDirectory + "/" + name)
    }

    /// Carries out a request. Messages in `inFlight` are being delivered;
    /// the runner applies hold/delete to them after the attempt.
    public func apply(_ request: QueueRequest, inFlight: Set<String>) throws -> String {
        func targets(_ t: QueueTarget, _ folders: [Spool.Folder]) -> [QueueEntry] {
            let all = entries(folders: folders)
            switch t {
            case .id(let id): return all.filter { $0.id == id }
            case .domain(let d): return all.filter { $0.matches(domain: d) }
            case .all: return all
            }
        }
        switch request {
        case .flush(let t):
            var n = 0
            for e in targets(t, [.deferred]) where !inFlight.contains(e.id) {
                if var state = e.state {
                    state.nextAttempt = 0
                    try spool.writeState(e.id, state)
                }
                n += 1
            }
            return "flushed \(n) message\(n == 1 ? "" : "s")"
        case .hold(let id):
            guard let e = find(id) else { return "no message \(id)" }
            if e.folder == .hold { return "\(id) is already held" }
            if inFlight.contains(id) || e.folder == .active { return "\(id) is being delivered now; try again in a moment" }
            try spool.move(id, from: e.folder, to: .hold)
            return "held \(id)"
        case .release(let id):
            guard let e = find(id), e.folder == .hold else { return "\(id) is not on hold" }
            if var state = e.state {
                state.nextAttempt = 0
                try spool.writeState(id, state)
                try spool.move(id, from: .hold, to: .deferred)
            } else {
                try spool.move(id, from: .hold, to: .incoming)
            }
            return "released \(id)"
        case .delete(let t):
            var n = 0, busy = 0
            for e in targets(t, [.incoming, .active, .deferred, .hold]) {
                if inFlight.contains(e.id) || e.folder == .active { busy += 1; continue }
                try spool.remove(e.id, from: e.folder)
                spool.removeState(e.id)
                n += 1
            }
            return "deleted \(n) message\(n == 1 ? "" : "s")" + (busy > 0 ? "; \(busy) being delivered now, not deleted" : "")
        case .reloadSTS:
            // No daemon: the record on disk is what the next start loads.
            return "no relayd running; the cache on disk is what it loads at start"
        case .learned:
            // Applied by the caller's `local` handler (RelayLearned), which
            // this layer cannot reach.
            return "error: no handler for learned-status changes without a running relayd"
        }
    }
}
