// The c-ares channel's end: destroyed on its own queue after every socket
// source is cancelled, pending queries answered, and no descriptor left
// open behind it.
import Dispatch
import Foundation
import Testing
@testable import RelayModel
@testable import RelayDNS
import RelayTestSupport

/// Socket inodes of this process's UDP sockets connected to 127.0.0.1:9,
/// the dead server the test points c-ares at. Counting only these keeps
/// the test exact while other suites open and close sockets in parallel.
private func socketsToPort9() -> Set<String> {
    guard let table = try? String(contentsOfFile: "/proc/self/net/udp", encoding: .utf8) else { return [] }
    var inodes: Set<String> = []
    for line in table.split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ")
        if fields.count > 9, fields[2] == "0100007F:0009" { inodes.insert(String(fields[9])) }
    }
    let mine = Set(((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).compactMap {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0)
    })
    return inodes.filter { mine.contains("socket:[\($0)]") }
}

@Suite(.serialized) struct ResolverLifecycle {
    @Test("releasing a resolver with a query in flight answers it and closes its sockets")
    func releaseWithQueryInFlight() throws {
        #expect(socketsToPort9().isEmpty)
        let answered = DispatchSemaphore(value: 0)
        let outcome = OutcomeBox()
        do {
            // Port 9 on loopback: nothing answers, so the query stays pending.
            let resolver = try CAresResolver(servers: [HostPort("127.0.0.1:9", defaultPort: 53)!],
                                             timeoutMilliseconds: 30_000, tries: 1)
            resolver.query("example.test", .mx) { result in
                outcome.set("\(result)")
                answered.signal()
            }
            // Wait until c-ares has opened its socket.
            let deadline = Date().addingTimeInterval(5)
            while socketsToPort9().isEmpty && Date() < deadline { usleep(5_000) }
            #expect(!socketsToPort9().isEmpty, "c-ares opened no socket")
        }
        #expect(answered.wait(timeout: .now() + 5) == .success, "the pending query was never answered")
        #expect(outcome.get().contains("failure"))
        let deadline = Date().addingTimeInterval(5)
        while !socketsToPort9().isEmpty && Date() < deadline { usleep(5_000) }
        #expect(socketsToPort9().isEmpty, "c-ares sockets left open after the resolver went away")
    }
}

private final class OutcomeBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value = ""
    func set(_ v: String) { lock.lock(); value = v; lock.unlock() }
    func get() -> String { lock.lock(); defer { lock.unlock() }; return value }
}
