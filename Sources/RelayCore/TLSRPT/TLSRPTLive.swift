// The sender's transport in the daemon and the CLI: TXT lookups through
// relayd's resolver, POSTs through HTTPSFetcher (verified TLS, one
// deadline), mail through the caller's enqueue (the spool, then the
// runner). And the request channel by which `relayd report tlsrpt` reaches
// a running daemon, which holds the unflushed counters: a request file in
// spool/tlsrpt-requests/, SIGUSR1 to the pid the spool lock names, the
// answer in `<name>.done` (the same handshake `relayd queue` uses).
import Dispatch
import RelayDNS
import RelayHTTPS
import RelayModel
import RelayQueue
#if canImport(Glibc)
import Glibc
#endif

extension TLSRPTSender.Transport {
    public static func live(resolver: any DNSResolving, fetcher: HTTPSFetcher,
                            enqueue: @escaping @Sendable (QueuedMessage) throws -> Void) -> TLSRPTSender.Transport {
        TLSRPTSender.Transport(
            lookupTXT: { name, done in
                resolver.query(name, .txt) { result in
                    switch result {
                    case .failure(let e): done(.failure(.dns("\(e)")))
                    case .success(let r) where r.rcode == .nxDomain: done(.success([]))
                    case .success(let r) where r.rcode != .noError: done(.failure(.dns("\(r.rcode)")))
                    case .success(let r):
                        let owners = DNSResponse.owners(of: name, in: r.answers)
                        done(.success(r.answers.compactMap { rec in
                            guard owners.contains(DNSName.normalize(rec.name)), case .txt(let strings) = rec.data else { return nil }
                            return strings.map { String(decoding: $0, as: UTF8.self) }
                        }))
                    }
                }
            },
            enqueue: enqueue,
            post: { host, port, path, body, done in
                let f = HTTPSFetcher(resolver: fetcher.resolver, tlsContext: fetcher.tlsContext,
                                     timeoutSeconds: fetcher.timeoutSeconds, port: port, sourceAddress: fetcher.sourceAddress)
                f.post(host: host, path: path, contentType: "application/tlsrpt+gzip", body: body) { result in
                    done(result.map { _ in () }.mapError { .https("\($0)") })
                }
            })
    }
}

/// `relayd report tlsrpt` as a request: what to do, for which day.
public struct TLSRPTRequest: Equatable, Sendable {
    public var day: TLSRPTDay
    public var dryRun: Bool
    public var json: Bool

    public init(day: TLSRPTDay, dryRun: Bool, json: Bool) {
        self.day = day
        self.dryRun = dryRun
        self.json = json
    }

    public func encode() -> String { "report \(day) \(dryRun ? 1 : 0) \(json ? 1 : 0)" }

    public static func decode(_ line: String) -> TLSRPTRequest? {
        let w = line.split(separator: " ").map(String.init)
        guard w.count == 4, w[0] == "report", let day = TLSRPTDay(w[1]), ["0", "1"].contains(w[2]), ["0", "1"].contains(w[3])
        else { return nil }
        return TLSRPTRequest(day: day, dryRun: w[2] == "1", json: w[3] == "1")
    }
}

public struct TLSRPTRequests: Sendable {
    public let spool: Spool
    static let folder = "tlsrpt-requests"

    public init(spool: Spool) { self.spool = spool }

    var directory: String { spool.root + "/" + Self.folder }

    /// The CLI's side: leaves the request, wakes the daemon, waits for its answer.
    public func hand(_ request: TLSRPTRequest, to pid: pid_t, timeoutSeconds: Double) throws -> String {
        let name = QueueID.generate()
        try spool.writeRecord(Self.folder, name, Array((request.encode() + "\n").utf8))
        kill(pid, SIGUSR1)
        var waited = 0.0
        while waited < timeoutSeconds {
            if let answer = try? spool.readRecord(Self.folder, name + ".done") {
                _ = try? spool.removeRecord(Self.folder, name + ".done")
                return String(decoding: answer, as: UTF8.self)
            }
            usleep(50_000)
            waited += 0.05
        }
        _ = try? spool.removeRecord(Self.folder, name)
        throw SystemError("relayd (pid \(pid)) did not answer the report request within \(Int(timeoutSeconds))s", ETIMEDOUT)
    }

    /// The daemon's side: pending requests (a malformed one answered at once).
    public func take() -> [(name: String, request: TLSRPTRequest)] {
        var out: [(String, TLSRPTRequest)] = []
        for name in spool.recordNames(Self.folder) where !name.hasSuffix(".done") {
            let text = (try? spool.readRecord(Self.folder, name)).flatMap { $0 }.map { String(decoding: $0, as: UTF8.self) }
            _ = try? spool.removeRecord(Self.folder, name)
            if let r = text.flatMap({ TLSRPTRequest.decode($0.filter { $0 != "\n" }) }) {
                out.append((name, r))
            } else {
                answer(name, "error: not a report request")
            }
        }
        return out
    }

    public func answer(_ name: String, _ text: String) {
        try? spool.writeRecord(Self.folder, name + ".done", Array(text.utf8))
    }
}
