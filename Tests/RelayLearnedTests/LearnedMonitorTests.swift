// The daily probes on a fake clock with a fake probe: each domain once per
// interval at its own offset, never more than probe_concurrency at once,
// a probe's result lands in the record, and a forgotten domain stays
// forgotten when its probe returns late.
import RelayModel
import RelayPolicy
import RelaySync
import RelayTestSupport
import Testing
@testable import RelayLearned

/// Probes that finish only when the test says so.
final class HeldProbes: Sendable {
    let pending = Locked<[(domain: String, done: @Sendable (LearnedProbeReport) -> Void)]>([])
    let started = Locked<[String]>([])
    var probe: LearnedMonitor.Probe {
        { [self] domain, done in
            started.withLock { $0.append(domain) }
            pending.withLock { $0.append((domain, done)) }
        }
    }
    func finish(_ domain: String, seen: TLSEvidence, at: Int) {
        let done = pending.withLock { p -> (@Sendable (LearnedProbeReport) -> Void)? in
            guard let i = p.firstIndex(where: { $0.domain == domain }) else { return nil }
            return p.remove(at: i).done
        }
        let probe = LearnedRecord.Probe(at: at, seen: seen, host: "mx.\(domain)", starttlsOffered: seen > .plaintext,
                                        handshake: seen > .plaintext, verified: seen == .verified, version: "TLSv1.3", detail: "")
        done?(LearnedProbeReport(probe: probe, hosts: [("mx.\(domain)", seen)], mx: ["mx.\(domain)"], keys: []))
    }
}

@Suite struct LearnedMonitorTests {
    func fixture(domains: [String], concurrency: Int = 2) -> (LearnedFixture, HeldProbes, LearnedMonitor) {
        let f = LearnedFixture { $0.probeConcurrency = concurrency }
        for d in domains { f.session(.tls, domain: d, host: "mx.\(d)") }
        let probes = HeldProbes()
        let monitor = LearnedMonitor(status: f.status, probe: probes.probe, protected: { _ in false }, jitter: { _ in 0 },
                                     now: f.clock.function)
        return (f, probes, monitor)
    }

    @Test func nothingIsDueBeforeTheInterval() {
        let (f, probes, monitor) = fixture(domains: ["a.example"])
        f.clock.advance(day - 1)
        monitor.tick()
        #expect(probes.started.withLock { $0 }.isEmpty)
        f.clock.advance(1)
        monitor.tick()
        #expect(probes.started.withLock { $0 } == ["a.example"])
    }

    @Test func atMostTheConcurrencyLimitRunAtOnce() {
        let (f, probes, monitor) = fixture(domains: ["a.example", "b.example", "c.example", "d.example", "e.example"])
        f.clock.advance(day)
        monitor.tick()
        #expect(probes.started.withLock { $0.count } == 2)
        #expect(monitor.inProgress.waiting.count == 3)
        // A second tick while they run starts nothing twice.
        monitor.tick()
        #expect(probes.started.withLock { $0.count } == 2)
        let first = probes.started.withLock { $0[0] }
        probes.finish(first, seen: .tls, at: f.clock.now)
        #expect(probes.started.withLock { $0.count } == 3)
        for d in probes.started.withLock({ $0 }).dropFirst() { probes.finish(d, seen: .tls, at: f.clock.now) }
        for d in probes.started.withLock({ $0 }).dropFirst(3) { probes.finish(d, seen: .tls, at: f.clock.now) }
        #expect(Set(probes.started.withLock { $0 }).count == 5)
        #expect(monitor.inProgress.running.isEmpty && monitor.inProgress.waiting.isEmpty)
        // Probed now: not again until a day later.
        monitor.tick()
        #expect(probes.started.withLock { $0.count } == 5)
        f.clock.advance(day)
        monitor.tick()
        #expect(probes.started.withLock { $0.count } == 7)
    }

    @Test func theResultLandsInTheRecord() {
        let (f, probes, monitor) = fixture(domains: ["a.example"])
        f.clock.advance(day)
        monitor.tick()
        probes.finish("a.example", seen: .plaintext, at: f.clock.now)
        let r = f.status.record("a.example")!
        #expect(r.lastProbe?.seen == .plaintext)
        #expect(r.probesBelowSince == f.clock.now)
        #expect(f.logs.count("probe") >= 1)
    }

    @Test func aRecordForgottenDuringItsProbeStaysForgotten() {
        let (f, probes, monitor) = fixture(domains: ["a.example"])
        f.clock.advance(day)
        monitor.tick()
        _ = f.status.apply(.forget(domain: "a.example", by: "ops"))
        probes.finish("a.example", seen: .tls, at: f.clock.now)
        #expect(f.status.record("a.example") == nil)
    }

    @Test func fifteenDaysOfProbesWithoutTLSRelaxThroughTheMonitor() {
        let (f, probes, monitor) = fixture(domains: ["a.example"])
        for _ in 0..<16 {
            f.clock.advance(day)
            monitor.tick()
            probes.finish("a.example", seen: .plaintext, at: f.clock.now)
        }
        monitor.tick()
        #expect(f.status.record("a.example")?.learned == nil)
        #expect(f.status.counters.withLock { $0.relaxed } == 1)
    }

    @Test(arguments: ["a.example", "bank.example", "x.test", "mail.partner.example"])
    func jitterStaysWithinATenth(domain: String) {
        let j = ProbeSchedule.jitter(domain, interval: day)
        #expect(abs(j) <= day / 10)
        #expect(ProbeSchedule.jitter(domain, interval: day) == j)
    }

    @Test func jitterSpreadsDomains() {
        let offsets = Set((0..<200).map { ProbeSchedule.jitter("d\($0).example", interval: day) })
        #expect(offsets.count > 150)
    }

    @Test func probeNowGoesFirstAndOnlyOnce() {
        let (f, probes, monitor) = fixture(domains: ["a.example", "b.example", "c.example"], concurrency: 1)
        f.clock.advance(day)
        monitor.tick()
        #expect(probes.started.withLock { $0 } == ["a.example"])
        #expect(monitor.probeNow("c.example").contains("probe started"))
        #expect(monitor.probeNow("a.example").contains("already running"))
        #expect(monitor.probeNow("unknown.example").contains("no learned record"))
        probes.finish("a.example", seen: .tls, at: f.clock.now)
        #expect(probes.started.withLock { $0 } == ["a.example", "c.example"], "the operator's probe jumps the line")
    }
}
