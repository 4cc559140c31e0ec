import Testing
import Foundation
import Logging
@testable import RelayModel
@testable import RelayQueue
@testable import RelaySync
@testable import RelayTLSRPT

/// A fake world: the clock, the DNS answers, the queue and the HTTPS
/// server are all in memory, and every callback runs at once.
final class FakeWorld: Sendable {
    let clock = Locked(1_769_860_800) // 2026-01-31T12:00:00Z
    let txt = Locked<[String: Result<[[String]], TLSRPTSendError>]>([:])
    let queued = Locked<[QueuedMessage]>([])
    let posts = Locked<[(String, UInt16, String, [UInt8])]>([])
    let postResult = Locked<Result<Void, TLSRPTSendError>>(.success(()))
    let draws = Locked<[ClosedRange<Int>]>([])
    let ids = Locked(0)

    var now: @Sendable () -> Int { { [clock] in clock.withLock { $0 } } }
    func advance(_ s: Int) { clock.withLock { $0 += s } }

    var transport: TLSRPTSender.Transport {
        TLSRPTSender.Transport(
            lookupTXT: { [txt] name, done in done(txt.withLock { $0[name] } ?? .success([])) },
            enqueue: { [queued] m in queued.withLock { $0.append(m) } },
            post: { [posts, postResult] host, port, path, body, done in
                posts.withLock { $0.append((host, port, path, body)) }
                done(postResult.withLock { $0 })
            },
            newID: { [ids] in QueueID.make(microseconds: UInt64(ids.withLock { $0 += 1; return $0 }), random: 7) })
    }
}

@Suite struct TLSRPTSenderTests {
    let submitter = TLSRPTSubmitter(organization: "Org", contact: "mailto:pm@relay.example", submitter: "relay.example")

    func make(_ world: FakeWorld, random: Int = 3600) throws -> (String, TLSRPTSender) {
        let dir = NSTemporaryDirectory() + "relayd-tlsrpt-\(UUID().uuidString)"
        let spool = try Spool(root: dir, reserveBytes: 0, fsyncEnabled: false)
        let ledger = TLSRPTLedger(store: TLSRPTStore(spool: spool, now: world.now), logger: Logger(label: "t"), now: world.now)
        let sender = TLSRPTSender(ledger: ledger, submitter: submitter, from: nil, hostname: "relay.example",
                                  transport: world.transport, logger: Logger(label: "t"), now: world.now,
                                  random: { [draws = world.draws] r in draws.withLock { $0.append(r) }; return random })
        return (dir, sender)
    }

    @Test func sentAfterTheRandomDelayToMailAndHTTPS() throws {
        let world = FakeWorld()
        world.txt.withLock { $0["_smtp._tls.example.com"] = .success([["v=TLSRPTv1; rua=mailto:rpt@example.com,https://rpt.example.com/in"]]) }
        let (dir, sender) = try make(world)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let day = TLSRPTDay(containing: world.now())
        sender.ledger.record(.success(stsPolicy))
        sender.ledger.record(.failure(stsPolicy, mismatch))
        sender.ledger.flush()

        sender.tick()
        #expect(world.queued.withLock { $0 }.isEmpty, "nothing while the day runs")
        world.advance(12 * 3600) // midnight
        sender.tick()
        #expect(world.draws.withLock { $0 } == [TLSRPTSchedule.settle...TLSRPTSchedule.spread])
        #expect(world.queued.withLock { $0 }.isEmpty && world.posts.withLock { $0 }.isEmpty, "not before the drawn delay")
        world.advance(3599)
        sender.tick()
        #expect(world.queued.withLock { $0 }.isEmpty)
        world.advance(1)
        sender.tick()

        let mail = try #require(world.queued.withLock { $0 }.first)
        #expect(mail.envelope.tlsReport)
        #expect(mail.envelope.sender == .null)
        #expect(mail.envelope.recipients.map(\.mailbox.description) == ["rpt@example.com"])
        let text = String(decoding: mail.body, as: UTF8.self)
        #expect(text.contains("Subject: Report Domain: example.com Submitter: relay.example Report-ID: <\(day.startDateTime)_example.com_relay.example>\r\n"))
        #expect(text.contains("TLS-Report-Domain: example.com\r\n"))
        #expect(text.contains("TLS-Report-Submitter: relay.example\r\n"))
        #expect(text.contains("Content-Type: multipart/report; report-type=\"tlsrpt\";"))
        #expect(text.contains("Content-Type: application/tlsrpt+gzip"))
        #expect(text.contains("filename=\"relay.example!example.com!\(day.start)!\(day.end - 1).json.gz\""))
        // The attachment decodes to the report.
        let b64 = try #require(text.components(separatedBy: "filename=").last?.components(separatedBy: "\r\n\r\n")[1])
        let gz = try #require(Data(base64Encoded: b64, options: .ignoreUnknownCharacters))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(try Gzip.decompress([UInt8](gz)))) as? [String: Any])
        #expect(json["report-id"] as? String == "\(day.startDateTime)_example.com_relay.example")

        let post = try #require(world.posts.withLock { $0 }.first)
        #expect(post.0 == "rpt.example.com" && post.1 == 443 && post.2 == "/in")
        #expect(try Gzip.decompress(post.3) == (try TLSRPTReport.json(#require(sender.ledger.counts(day: day, domain: "example.com")), from: submitter)))

        // Done: later ticks send nothing more.
        world.advance(3600)
        sender.tick()
        #expect(world.queued.withLock { $0 }.count == 1 && world.posts.withLock { $0 }.count == 1)
        #expect(try sender.store.state(day: day, domain: "example.com")?.finished == true)
    }

    @Test func httpsFailureRetriedWithBackoffForADayThenGivenUp() throws {
        let world = FakeWorld()
        world.txt.withLock { $0["_smtp._tls.example.com"] = .success([["v=TLSRPTv1; rua=https://rpt.example.com/in,mailto:rpt@example.com"]]) }
        world.postResult.withLock { $0 = .failure(.https("HTTP status 503")) }
        let (dir, sender) = try make(world, random: 300)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let day = TLSRPTDay(containing: world.now())
        sender.ledger.record(.success(stsPolicy))
        sender.ledger.flush()
        world.advance(12 * 3600)
        sender.tick()
        world.advance(300)
        sender.tick()
        #expect(world.posts.withLock { $0.count } == 1)
        #expect(world.queued.withLock { $0.count } == 1)
        let first = try #require(try sender.store.state(day: day, domain: "example.com"))
        #expect(!first.finished && first.next == world.now() + 300 && first.done == ["mailto:rpt@example.com"])

        // Minute by minute for 25 hours: retries at growing gaps, mail never repeated.
        var times: [Int] = []
        for _ in 0..<(25 * 60) {
            world.advance(60)
            let before = world.posts.withLock { $0.count }
            sender.tick()
            if world.posts.withLock({ $0.count }) > before { times.append(world.now()) }
        }
        #expect(world.queued.withLock { $0.count } == 1)
        let gaps = zip(times.dropFirst(), times).map { $0 - $1 }
        #expect(gaps.first == 600 && gaps.dropFirst().first == 1200)
        #expect(gaps.allSatisfy { $0 <= 4 * 3600 })
        #expect(zip(gaps.dropFirst(), gaps).allSatisfy { $0 >= $1 }, "never shorter than the one before")
        let last = try #require(times.last)
        #expect(last <= first.first + TLSRPTSchedule.window)
        let end = try #require(try sender.store.state(day: day, domain: "example.com"))
        #expect(end.finished && end.note.hasPrefix("given up"))
    }

    @Test func noSessionsNoRecordAndDNSFailure() throws {
        let world = FakeWorld()
        world.txt.withLock { $0["_smtp._tls.broken.example"] = .failure(.dns("SERVFAIL")) }
        world.txt.withLock { $0["_smtp._tls.two.example"] = .success([["v=TLSRPTv1; rua=mailto:a@two.example"], ["v=TLSRPTv1; rua=mailto:b@two.example"]]) }
        let (dir, sender) = try make(world, random: 300)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let day = TLSRPTDay(containing: world.now())
        for d in ["none.example", "broken.example", "two.example"] {
            sender.ledger.record(.success(TLSRPTPolicy(type: .noPolicyFound, domain: d)))
        }
        sender.ledger.flush()
        world.advance(12 * 3600 + 300)
        sender.tick()
        sender.tick()
        #expect(world.queued.withLock { $0 }.isEmpty && world.posts.withLock { $0 }.isEmpty)
        #expect(try sender.store.state(day: day, domain: "none.example")?.finished == true)
        #expect(try sender.store.state(day: day, domain: "two.example")?.finished == true)
        let broken = try #require(try sender.store.state(day: day, domain: "broken.example"))
        #expect(!broken.finished && broken.note.contains("SERVFAIL"))
        // A day with no sessions has no counters: nothing scheduled for it.
        #expect(sender.ledger.domains(day: day.next).isEmpty)
    }

    @Test func sendNowAndDryRun() throws {
        let world = FakeWorld()
        world.txt.withLock { $0["_smtp._tls.example.com"] = .success([["v=TLSRPTv1; rua=mailto:rpt@example.com"]]) }
        let (dir, sender) = try make(world)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let day = TLSRPTDay(containing: world.now())
        sender.ledger.record(.success(stsPolicy))
        sender.ledger.flush()
        let out = Locked<[String]>([])
        sender.sendNow(day: day, dryRun: true, includeJSON: true) { lines in out.withLock { $0 = lines } }
        #expect(world.queued.withLock { $0 }.isEmpty)
        #expect(out.withLock { $0 }.contains { $0.hasPrefix("{\"contact-info\"") })
        #expect(out.withLock { $0 }.contains("  (dry run: nothing sent)"))
        sender.sendNow(day: day, dryRun: false, includeJSON: false) { lines in out.withLock { $0 = lines } }
        #expect(world.queued.withLock { $0.count } == 1)
        #expect(out.withLock { $0 }.contains("  mailto:rpt@example.com: sent"))
        // Not twice to the same destination.
        sender.sendNow(day: day, dryRun: false, includeJSON: false) { lines in out.withLock { $0 = lines } }
        #expect(world.queued.withLock { $0.count } == 1)
        sender.sendNow(day: day.next, dryRun: false, includeJSON: false) { lines in out.withLock { $0 = lines } }
        #expect(out.withLock { $0 } == ["\(day.next): no sessions counted; nothing to report"])
    }

    @Test func oldDaysForgotten() throws {
        let world = FakeWorld()
        let (dir, sender) = try make(world, random: 300)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        sender.ledger.record(.success(stsPolicy))
        sender.ledger.flush()
        world.advance(12 * 3600 + 300)
        sender.tick()
        sender.tick()
        #expect(sender.store.days().count == 1)
        world.advance((TLSRPTSender.keepDays + 1) * 86400)
        sender.tick()
        #expect(sender.store.days().isEmpty)
        #expect(sender.store.spool.recordNames("tlsrpt-sent").isEmpty)
    }

    @Test func sendStateFileForm() {
        let s = TLSRPTSendState(day: TLSRPTDay("2026-01-31")!, domain: "example.com", attempts: 3, first: 100, next: 200,
                                finished: false, done: ["mailto:a@example.com"], note: "HTTPS: status 503\r\nx")
        #expect(TLSRPTSendState.decode(s.encode()) == s)
        for bad in ["", "tlsrpt-sent 1\n", String(decoding: s.encode(), as: UTF8.self) + "zzz\n",
                    String(decoding: s.encode(), as: UTF8.self).replacingOccurrences(of: "finished 0", with: "finished 2"),
                    String(decoding: s.encode(), as: UTF8.self).replacingOccurrences(of: "domain example.com", with: "domain a/b")] {
            #expect(TLSRPTSendState.decode(Array(bad.utf8)) == nil)
        }
    }
}
