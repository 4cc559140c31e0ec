// [limits] max_message_size has a hard upper limit (512 MiB), and
// [queue] memory_budget a default.
import Foundation
import Testing
@testable import RelayModel
@testable import RelayPolicy
@testable import RelayTLS
@testable import RelayAuth
@testable import RelayDNS
@testable import RelayConfig
@testable import RelayDelivery
import RelayTestSupport

private func load(limits: String = "", queue: String = "") throws -> Config {
    try ConfigLoader.parse("""
    [server]
    hostname = "relay.example.test"
    spool_dir = "spool"
    [[listener]]
    address = "127.0.0.1:2525"
    kind = "smtp"
    [tls]
    certificate = "\(Fixtures.path("mx.pem"))"
    key = "\(Fixtures.path("mx.key"))"
    [queue]
    \(queue)
    [limits]
    \(limits)
    """, file: "/nonexistent/relayd.conf")
}

private func problems(limits: String = "", queue: String = "") -> [String] {
    do {
        _ = try load(limits: limits, queue: queue)
        return []
    } catch let e as ConfigErrors {
        return e.errors.map { "\($0)" }
    } catch {
        return ["\(error)"]
    }
}

struct SizeCase: CustomTestStringConvertible, Sendable {
    let line: String
    let accepted: Int?
    var testDescription: String { line }
}

@Suite struct MessageSizeLimit {
    static let cases: [SizeCase] = [
        .init(line: "", accepted: 36_700_160),
        .init(line: "max_message_size = 1", accepted: 1),
        .init(line: "max_message_size = 536870912", accepted: 536_870_912),     // 512 MiB: the cap itself
        .init(line: "max_message_size = 536870913", accepted: nil),
        .init(line: "max_message_size = 2147483648", accepted: nil),            // 2 GiB
        .init(line: "max_message_size = 0", accepted: nil),
    ]

    @Test(arguments: cases)
    func capped(_ c: SizeCase) throws {
        if let size = c.accepted {
            #expect(try load(limits: c.line).limits.maxMessageSize == size)
        } else {
            let found = problems(limits: c.line)
            #expect(found.count == 1)
            #expect(found.first?.contains("limits.max_message_size") == true, "\(found)")
        }
    }

    @Test func theCapLeavesRoomUnderInt32() {
        // Stuffing adds at most a third ("." lines), and a bounce wraps the
        // whole message in a few KB of report.
        #expect(Config.Limits.maxMessageSizeCap / 3 * 4 + 64 * 1024 < Int(Int32.max))
    }
}

@Suite struct QueueMemoryBudget {
    @Test func defaultsAnd0AndBadValues() throws {
        #expect(try load().queue.memoryBudget == 128 * 1024 * 1024)
        #expect(try load(queue: "memory_budget = 0").queue.memoryBudget == 0)
        #expect(try load(queue: "memory_budget = 1048576").queue.memoryBudget == 1_048_576)
        #expect(problems(queue: "memory_budget = -1").first?.contains("queue.memory_budget: must not be negative") == true)
        #expect(problems(queue: #"memory_budget = "1G""#).first?.contains("queue.memory_budget") == true)
    }
}

@Suite struct QueueSyncMethod {
    @Test func defaultsToFileAndTakesEitherName() throws {
        #expect(try load().queue.sync == .file)
        #expect(try load(queue: #"sync = "file""#).queue.sync == .file)
        #expect(try load(queue: #"sync = "filesystem""#).queue.sync == .filesystem)
    }

    @Test(arguments: [#"sync = "fsync""#, #"sync = "none""#, "sync = true", #"sync = """#])
    func refusesAnythingElse(line: String) {
        #expect(problems(queue: line).first?.contains("queue.sync") == true)
    }
}
