// MTA-STS discovery with a fake resolver and a fake policy host: what is
// fetched when, what a failure leaves in place (RFC 8461 §5.1: a cached,
// unexpired policy survives a vanished TXT record, a failed lookup and a
// failed fetch), and what the layer then answers.
import Dispatch
import Foundation
import Logging
import Testing
@testable import RelayDNS
@testable import RelayHTTPS
@testable import RelayModel
@testable import RelayMTASTS
@testable import RelayPolicy
@testable import RelaySTS
import RelaySync
import RelayTestSupport

/// Answers policy fetches from a script and counts them.
final class FakePolicyHost: STSPolicyFetching, @unchecked Sendable {
    private let lock = NSLock()
    private var answers: [String: Result<[UInt8], HTTPSFetchFailure>] = [:]
    private var asked: [String] = []
    /// While set, answers wait until `release()`.
    private var held: [@Sendable () -> Void]?

    func hold() { lock.lock(); held = []; lock.unlock() }
    func release() {
        lock.lock(); let h = held ?? []; held = nil; lock.unlock()
        for f in h { f() }
    }

    func serve(_ domain: String, _ body: String) { lock.lock(); answers[domain] = .success(Array(body.utf8)); lock.unlock() }
    func fail(_ domain: String, _ f: HTTPSFetchFailure) { lock.lock(); answers[domain] = .failure(f); lock.unlock() }
    var fetches: [String] { lock.lock(); defer { lock.unlock() }; return asked }

    func fetchPolicy(domain: String, completion: @escaping @Sendable (Result<[UInt8], HTTPSFetchFailure>) -> Void) {
        lock.lock()
        asked.append(domain)
        let a = answers[domain] ?? .failure(.timeout)
        if held != nil {
            held!.append { completion(a) }
            lock.unlock()
            return
        }
        lock.unlock()
        DispatchQueue.global().async { completion(a) }
    }
}

final class Clock: @unchecked Sendable {
    private let lock = NSLock()
    private var t = 1_800_000_000
    var now: Int { lock.lock(); defer { lock.unlock() }; return t }
    func advance(_ s: Int) { lock.lock(); t += s; lock.unlock() }
}

struct DiscoveryBed {
    let dns = FakeResolver()
    let host = FakePolicyHost()
    let clock = Clock()
    let spool: TemporarySpool
    let store: FileSTSCacheStore
    let lines = LogLines()
    var discovery: STSDiscovery

    init() throws {
        spool = try TemporarySpool()
        let clock = clock
        store = FileSTSCacheStore(spool: spool.spool, now: { clock.now }, onDamaged: { _, _ in })
        discovery = STSDiscovery(resolver: dns, fetcher: host, store: store, policies: STSPolicies(),
                                 logger: lines.logger, now: { clock.now })
    }

    func txt(_ domain: String, _ strings: [String]...) {
        dns.set("_mta-sts." + domain, .txt, strings.map { .txt($0.map { Array($0.utf8) }) })
    }

    func prepare(_ domain: String) async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            discovery.prepare(domain) { done.resume() }
        }
    }

    /// A restart: a fresh memory view loaded from the store.
    mutating func restart() {
        let clock = clock
        discovery = STSDiscovery(resolver: dns, fetcher: host, store: store, policies: STSPolicies(STSDiscovery.load(store)),
                                 logger: lines.logger, now: { clock.now })
    }

    var layer: MTASTSLayer {
        let clock = clock
        return MTASTSLayer(policies: discovery.policies, now: { clock.now })
    }
}

let enforceBody = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n"
let testingBody = "version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 86400\n"

@Suite struct STSDiscoveryRules {
    @Test func noRecordNoFetchNoPolicy() async throws {
        let bed = try DiscoveryBed()
        await bed.prepare("example.test")
        #expect(bed.host.fetches.isEmpty)
        #expect(bed.layer.verdict(for: "example.test") == nil)
        #expect(bed.dns.asked == ["_mta-sts.example.test/txt"], "the exact name, no walk to a parent")
    }

    @Test func aRecordFetchesStoresAndTheLayerEnforces() async throws {
        let bed = try DiscoveryBed()
        bed.txt("example.test", ["v=STSv1; id=2026"])
        bed.host.serve("example.test", enforceBody)
        await bed.prepare("example.test")
        #expect(bed.host.fetches == ["example.test"])
        let v = try #require(bed.layer.verdict(for: "example.test"))
        #expect(v.level == .verify && v.requiresVerification)
        #expect(v.mtaSTS?.id == "2026")
        #expect(try bed.store.get("example.test")?.id == "2026")
    }

    @Test func anUnchangedIdDoesNotRefetchAChangedOneDoes() async throws {
        let bed = try DiscoveryBed()
        bed.txt("example.test", ["v=STSv1; id=1"])
        bed.host.serve("example.test", enforceBody)
        await bed.prepare("example.test")
        await bed.prepare("example.test")
        #expect(bed.host.fetches.count == 1)
        bed.txt("example.test", ["v=STSv1; id=2"])
        bed.host.serve("example.test", testingBody)
        await bed.prepare("example.test")
        #expect(bed.host.fetches.count == 2)
        #expect(bed.layer.verdict(for: "example.test")?.mtaSTS?.policy.mode == .testing)
        #expect(bed.layer.verdict(for: "example.test")?.level == nil, "testing raises nothing")
    }

    @Test func theCacheSurvivesARestartAndAVanishedRecord() async throws {
        var bed = try DiscoveryBed()
        bed.txt("example.test", ["v=STSv1; id=1"])
        bed.host.serve("example.test", enforceBody)
        await bed.prepare("example.test")
        bed.restart()
        bed.dns.setRcode("_mta-sts.example.test", .txt, .nxDomain)
        bed.host.fail("example.test", .timeout)
        await bed.prepare("example.test")
        #expect(bed.layer.verdict(for: "example.test")?.level == .verify, "a vanished TXT record never removes a cached policy")
        #expect(bed.host.fetches.count == 1)
    }

    @Test func aFailedFetchKeepsTheCachedPolicyAndSaysSo() async throws {
        let bed = try DiscoveryBed()
        bed.txt("example.test", ["v=STSv1; id=1"])
        bed.host.serve("example.test", enforceBody)
        await bed.prepare("example.test")
        bed.txt("example.test", ["v=STSv1; id=2"])
        bed.host.fail("example.test", .status(500))
        await bed.prepare("example.test")
        let r = try #require(bed.discovery.policies.record("example.test"))
        #expect(r.id == "1" && r.policy.mode == .enforce)
        #expect(r.lastResult != "ok")
        #expect(bed.lines.all.contains { $0.contains("MTA-STS refresh failed; applying the cached policy") })
    }

    @Test func aTXTLookupFailureWithNothingCachedIsNoPolicyAndIsLogged() async throws {
        let bed = try DiscoveryBed()
        bed.dns.fail("_mta-sts.example.test", .txt, .timeout)
        await bed.prepare("example.test")
        #expect(bed.layer.verdict(for: "example.test") == nil)
        #expect(bed.lines.all.contains { $0.contains("MTA-STS: no policy known") && $0.contains("TXT lookup failed") })
    }

    @Test func anInvalidPolicyIsNoPolicy() async throws {
        let bed = try DiscoveryBed()
        bed.txt("example.test", ["v=STSv1; id=1"])
        bed.host.serve("example.test", "version: STSv1\nmode: enforce\nmx: bad_host!\nmax_age: 86400\n")
        await bed.prepare("example.test")
        #expect(bed.layer.verdict(for: "example.test") == nil)
        #expect(try bed.store.get("example.test") == nil)
    }

    @Test func fetchProblemsAreKeptByKindUntilAFetchSucceeds() async throws {
        var bed = try DiscoveryBed()
        bed.txt("example.test", ["v=STSv1; id=1"])
        bed.host.fail("example.test", .tls(TLSFailure(kind: .certificateUntrusted, detail: "self-signed")))
        await bed.prepare("example.test")
        guard case .webPKI? = bed.discovery.fetchProblem("example.test") else { Issue.record("not webPKI"); return }
        bed.restart()
        bed.txt("example.test", ["v=STSv1; id=2"])
        bed.host.serve("example.test", "version: STSv1\nmode: enforce\nmx: bad_host!\nmax_age: 86400\n")
        await bed.prepare("example.test")
        guard case .invalid? = bed.discovery.fetchProblem("example.test") else { Issue.record("not invalid"); return }
        bed.restart()
        bed.txt("example.test", ["v=STSv1; id=3"])
        bed.host.fail("example.test", .timeout)
        await bed.prepare("example.test")
        guard case .fetchError? = bed.discovery.fetchProblem("example.test") else { Issue.record("not a fetch error"); return }
        bed.txt("example.test", ["v=STSv1; id=4"])
        bed.host.serve("example.test", enforceBody)
        await bed.prepare("example.test")
        #expect(bed.discovery.fetchProblem("example.test") == nil)
    }

    @Test func anExpiredPolicyIsNotApplied() async throws {
        let bed = try DiscoveryBed()
        bed.txt("example.test", ["v=STSv1; id=1"])
        bed.host.serve("example.test", enforceBody)
        await bed.prepare("example.test")
        bed.clock.advance(86_400)
        #expect(bed.layer.verdict(for: "example.test") == nil)
    }

    @Test func twoRecordsMeanNoPolicy() async throws {
        let bed = try DiscoveryBed()
        bed.txt("example.test", ["v=STSv1; id=1"], ["v=STSv1; id=2"])
        bed.host.serve("example.test", enforceBody)
        await bed.prepare("example.test")
        #expect(bed.host.fetches.isEmpty)
        #expect(bed.layer.verdict(for: "example.test") == nil)
    }

    @Test func preparesDuringALookupWaitForItInsteadOfStartingTheirOwn() async throws {
        let bed = try DiscoveryBed()
        bed.txt("example.test", ["v=STSv1; id=1"])
        bed.host.serve("example.test", enforceBody)
        bed.host.hold()
        let done = Locked(0)
        for _ in 0..<3 { bed.discovery.prepare("example.test") { done.withLock { $0 += 1 } } }
        #expect(bed.host.fetches == ["example.test"], "one fetch for three prepares")
        #expect(done.withLock { $0 } == 0, "nobody is told before the fetch ends")
        bed.host.release()
        #expect(waitUntil(5) { done.withLock { $0 } == 3 })
        #expect(bed.layer.verdict(for: "example.test")?.level == .verify)
    }

    @Test func aFailureUnderThePolicyRefetchesItAtMostOncePerInterval() async throws {
        let bed = try DiscoveryBed()
        bed.txt("example.test", ["v=STSv1; id=1"])
        bed.host.serve("example.test", enforceBody)
        await bed.prepare("example.test")
        #expect(bed.host.fetches.count == 1)
        // The domain moved its MX without bumping the id: the refetch finds it.
        bed.host.serve("example.test", "version: STSv1\nmode: enforce\nmx: new-mx.example.test\nmax_age: 86400\n")
        bed.discovery.recheckAfterFailure("example.test")
        #expect(waitUntil(5) { bed.discovery.policies.record("example.test")?.policy.mx == ["new-mx.example.test"] })
        // A prepare joins the refetch if it is still finishing and returns
        // when it is done (without a fetch of its own: the id is cached).
        await bed.prepare("example.test")
        bed.discovery.recheckAfterFailure("example.test")
        #expect(bed.host.fetches.count == 2, "not again within the interval")
        bed.clock.advance(STSDiscovery.recheckInterval)
        bed.discovery.recheckAfterFailure("example.test")
        #expect(waitUntil(5) { bed.host.fetches.count == 3 })
    }

    @Test func proactiveRefreshFetchesOldPoliciesOnly() async throws {
        let bed = try DiscoveryBed()
        bed.txt("old.test", ["v=STSv1; id=1"])
        bed.host.serve("old.test", enforceBody)
        await bed.prepare("old.test")
        bed.clock.advance(3_600)
        bed.txt("new.test", ["v=STSv1; id=1"])
        bed.host.serve("new.test", enforceBody)
        await bed.prepare("new.test")
        #expect(bed.host.fetches == ["old.test", "new.test"])
        bed.discovery.refreshStale(age: 3_600, jitter: { _ in 0 })
        #expect(waitUntil(5) { bed.host.fetches.count == 3 })
        #expect(bed.host.fetches.last == "old.test", "only the policy an hour old")
    }

    @Test func aFailedFetchOfAnIdIsNotRetriedOnEveryDelivery() async throws {
        let bed = try DiscoveryBed()
        bed.txt("example.test", ["v=STSv1; id=1"])
        bed.host.fail("example.test", .timeout)
        await bed.prepare("example.test")
        await bed.prepare("example.test")
        #expect(bed.host.fetches.count == 1, "each try could hold a delivery for the whole fetch timeout")
        bed.clock.advance(STSDiscovery.failedFetchBackoff)
        bed.host.serve("example.test", enforceBody)
        await bed.prepare("example.test")
        #expect(bed.host.fetches.count == 2)
        #expect(bed.layer.verdict(for: "example.test")?.level == .verify)
        bed.txt("example.test", ["v=STSv1; id=2"])
        bed.host.fail("example.test", .status(503))
        await bed.prepare("example.test")
        await bed.prepare("example.test")
        #expect(bed.host.fetches.count == 3, "a new id is fetched once, then backs off")
        #expect(bed.layer.verdict(for: "example.test")?.mtaSTS?.id == "1", "the cached policy applies meanwhile")
    }
}
