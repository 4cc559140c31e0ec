// The c-ares channel's end: destroyed on its own queue after every socket
// source is cancelled, pending queries answered, and no descriptor left
// open behind it.
import Dispatch
import Foundation
import Testing
@testable import RelayCore

private func openDescriptors() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

@Suite(.serialized) struct ResolverLifecycle {
    @Test("releasing a resolver with a query in flight answers it and closes its sockets")
    func releaseWithQueryInFlight() throws {
        let before = openDescriptors()
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
            while openDescriptors() <= before && Date() < deadline { usleep(5_000) }
            #expect(openDescriptors() > before, "c-ares opened no socket")
        }
        #expect(answered.wait(timeout: .now() + 5) == .success, "the pending query was never answered")
        #expect(outcome.get().contains("failure"))
        let deadline = Date().addingTimeInterval(5)
        while openDescriptors() > before && Date() < deadline { usleep(5_000) }
        #expect(openDescriptors() == before, "descriptors left open after the resolver went away")
    }
}

private final class OutcomeBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value = ""
    func set(_ v: String) { lock.lock(); value = v; lock.unlock() }
    func get() -> String { lock.lock(); defer { lock.unlock() }; return value }
}
