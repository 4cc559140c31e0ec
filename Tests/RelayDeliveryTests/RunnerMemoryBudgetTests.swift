// The queue runner keeps handed-over bodies only within [queue]
// memory_budget, and reads everything else back from the spool. Which one
// it used shows in what happens to a message whose file was damaged after
// the hand-over: a kept body is delivered intact; one read back fails its
// check and is quarantined without ever being delivered.
import Dispatch
import Foundation
import Logging
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayPolicy
@testable import RelayLog
@testable import RelayTLS
@testable import RelayDNS
@testable import RelayIO
@testable import RelayQueue
@testable import RelayConfig
@testable import RelayDelivery
import RelayTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Accepts connections on 127.0.0.1 (an ephemeral port) and runs a
/// ScriptedSMTPServer on each, one at a time.
final class ScriptedSMTPListener: @unchecked Sendable {
    let port: UInt16
    private let fd: Int32
    private let lock = NSLock()
    private var servers: [ScriptedSMTPServer] = []
    private var stopped = false

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, len) == 0 && listen(fd, 8) == 0 && getsockname(fd, sa, &len) == 0
            }
        }
        guard ok else { throw SystemError("bind") }
        port = UInt16(bigEndian: addr.sin_port)
        Thread { [self] in
            while true {
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let r = poll(&pfd, 1, 100)
                lock.lock(); let stop = stopped; lock.unlock()
                if stop { close(fd); return }
                guard r > 0 else { continue }
                let c = accept(fd, nil, nil)
                guard c >= 0 else { continue }
                let s = ScriptedSMTPServer(fd: c)
                lock.lock(); servers.append(s); lock.unlock()
                s.start()
            }
        }.start()
    }

    func records() -> [ScriptedSMTPServer.Record] {
        lock.lock(); let list = servers; lock.unlock()
        return list.compactMap { $0.finish(timeout: 10) }
    }

    func stop() { lock.lock(); stopped = true; lock.unlock() }
}

private func runnerConfig(spool: String, port: UInt16, budget: Int) throws -> Config {
    try configForTests("""
    [queue]
    memory_budget = \(budget)
    [outbound]
    smarthost = "sink"
    connection_reuse = 0
    [[outbound.relay]]
    name = "sink"
    address = "127.0.0.1:\(port)"
    level = "none"
    """, spool: spool)
}

struct BudgetCase: CustomTestStringConvertible, Sendable {
    let budget: Int
    let bodySize: Int
    let kept: Bool
    var testDescription: String { "budget \(budget), body \(bodySize): \(kept ? "kept in memory" : "read from the spool")" }
}

@Suite(.serialized) struct RunnerMemoryBudget {
    // Each message's file is damaged on disk after it was handed over: a
    // kept body is delivered intact from memory; one read back from the
    // spool fails its check and is quarantined, never delivered.
    static let cases: [BudgetCase] = [
        .init(budget: 1 << 20, bodySize: 4096, kept: true),
        .init(budget: 1 << 20, bodySize: 60_000, kept: true),       // under a sixteenth of the budget
        .init(budget: 1 << 20, bodySize: 100_000, kept: false),     // over it: streamed from the file
        .init(budget: 0, bodySize: 4096, kept: false),
    ]

    @Test(arguments: cases)
    func keptOrReadBack(_ c: BudgetCase) throws {
        let t = try TemporarySpool()
        let sink = try ScriptedSMTPListener()
        defer { sink.stop() }
        let config = try runnerConfig(spool: t.dir, port: sink.port, budget: c.budget)
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let env = try OutboundSettings.environment(config: config, resolver: FakeResolver(), logger: logger)
        let runner = QueueRunner(spool: t.spool, environment: env, logger: logger)
        defer { runner.stop() }

        let m = bigMessage(bodySize: c.bodySize, seed: UInt64(c.bodySize))
        try t.spool.store(m)
        try t.corrupt(.incoming, m.id, at: QueueFile.encodeHeader(m).count + c.bodySize / 2)
        runner.wake(queued: m.id, message: m)

        let settled = waitUntil(20) {
            t.spool.list(.incoming).isEmpty && t.spool.list(.active).isEmpty
        }
        #expect(settled)
        let delivered = sink.records().filter(\.sawEndOfData)
        if c.kept {
            #expect(t.spool.list(.corrupt).isEmpty)
            #expect(delivered.count == 1)
            let intact = delivered.first.flatMap { unstuff($0.rawData) } == m.body + (m.body.last == 10 ? [] : [13, 10])
            #expect(intact)
        } else {
            #expect(t.spool.list(.corrupt) == [m.id])
            #expect(delivered.isEmpty, "a body read back from a damaged file was delivered")
        }
    }
}

@Suite struct BodyCacheAccounting {
    func message(_ n: Int, size: Int) -> QueuedMessage {
        QueuedMessage(id: "id\(n)", arrival: 0, envelope: Envelope(sender: .null, origin: .init(clientAddress: "", heloName: "", esmtp: true)),
                      body: [UInt8](repeating: 120, count: size))
    }

    @Test func keepsOnlyWhatFits() {
        var cache = BodyCache(budget: 1600)           // largest kept: 100
        var kept = cache.offer(message(1, size: 100))
        #expect(kept)
        kept = cache.offer(message(2, size: 101))
        #expect(!kept, "over a sixteenth of the budget")
        for n in 3...17 {
            kept = cache.offer(message(n, size: 100))
            #expect(kept)
        }
        #expect(cache.used == 1600)
        kept = cache.offer(message(18, size: 1))
        #expect(!kept, "the budget is full")
        kept = cache.offer(message(1, size: 100))
        #expect(!kept, "no id is charged twice")
        #expect(cache.used == 1600)
    }

    @Test func aBodyStaysChargedWhileItIsDelivered() {
        var cache = BodyCache(budget: 1600)
        cache.offer(message(1, size: 100))
        cache.offer(message(2, size: 100))
        cache.startDelivery("id1")
        #expect(cache.peek("id1") == nil)
        #expect(cache.used == 200, "delivering from memory still holds the bytes")
        cache.dropWaiting()
        #expect(cache.used == 100, "an operator request forgets waiting bodies only")
        cache.release("id1")
        #expect(cache.used == 0)
        cache.release("id1")
        #expect(cache.used == 0, "release is idempotent")
    }

    @Test func aSmallerBudgetAppliesToLaterOffers() {
        var cache = BodyCache(budget: 1600)
        cache.offer(message(1, size: 100))
        cache.setBudget(0)
        let kept = cache.offer(message(2, size: 1))
        #expect(!kept)
        #expect(cache.peek("id1") != nil)
        #expect(cache.used == 100)
    }
}
