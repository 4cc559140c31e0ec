// DANE in delivery (RFC 7672), without the network: what a TLSA lookup
// makes of each answer, what the attempt does with each host's state, and
// that the AD bit counts only from a resolver the operator declared
// validating.
import Testing
@testable import RelayConfig
@testable import RelayDelivery
@testable import RelayDNS
@testable import RelayModel
@testable import RelayMTASTS
@testable import RelayPolicy
@testable import RelaySMTP
@testable import RelaySTS
@testable import RelayTLS
import RelayTestSupport

private let key = [UInt8](repeating: 0xab, count: 32)
private let usable = DNSRecordData.tlsa(usage: 3, selector: 1, matchingType: 1, data: key)
private let pkix = DNSRecordData.tlsa(usage: 1, selector: 1, matchingType: 1, data: key)

private func host(_ name: String, secure: Bool = true, canonical: String? = nil, ip: String = "192.0.2.10") -> MXHost {
    MXHost(name: name, preference: 10, addresses: [IPAddress(ip)!], implicit: false, secure: secure, canonicalName: canonical)
}

private func lookup(_ dns: FakeResolver, _ h: MXHost) async -> DANEHostState {
    await withCheckedContinuation { c in TLSALookup(resolver: dns).lookup(h, port: 25) { c.resume(returning: $0) } }
}

@Suite struct TLSALookupAnswers {
    @Test func anInsecureHostIsNeverAsked() async {
        let dns = FakeResolver()
        dns.setSecure("_25._tcp.mx.far.test", .tlsa, [usable])
        #expect(await lookup(dns, host("mx.far.test", secure: false)) == .insecure)
        #expect(dns.askedNames.isEmpty)
    }

    @Test func usableRecordsAuthenticate() async {
        let dns = FakeResolver()
        dns.setSecure("_25._tcp.mx.far.test", .tlsa, [usable, pkix])
        let state = await lookup(dns, host("mx.far.test"))
        #expect(state == .usable(DANEPolicy(baseDomain: "mx.far.test", records: [
            TLSARecord(usage: 3, selector: 1, matchingType: 1, data: key)])), "the PKIX record is filtered out")
    }

    @Test func onlyUnusableRecordsMeanTLSWithoutAuthentication() async {
        let dns = FakeResolver()
        dns.setSecure("_25._tcp.mx.far.test", .tlsa, [pkix])
        guard case .unusable(let records) = await lookup(dns, host("mx.far.test")) else { Issue.record("not unusable"); return }
        #expect(records.count == 1)
    }

    @Test(arguments: [DNSRCode.servFail, .refused, .formErr])
    func aFailedLookupIsNeverNoDANE(rcode: DNSRCode) async {
        let dns = FakeResolver()
        dns.setRcode("_25._tcp.mx.far.test", .tlsa, rcode)
        guard case .failed(let why) = await lookup(dns, host("mx.far.test")) else { Issue.record("not failed"); return }
        #expect(why.contains("_25._tcp.mx.far.test"))
    }

    @Test func aTimeoutIsAFailure() async {
        let dns = FakeResolver()
        dns.fail("_25._tcp.mx.far.test", .tlsa, .timeout)
        guard case .failed = await lookup(dns, host("mx.far.test")) else { Issue.record("not failed"); return }
    }

    @Test func anUnsignedAnswerOrADenialIsNoDANE() async {
        let dns = FakeResolver()
        dns.set("_25._tcp.mx.far.test", .tlsa, [usable])  // no AD: the TLSA zone is unsigned
        #expect(await lookup(dns, host("mx.far.test")) == .noRecords)
        let denial = FakeResolver()
        denial.setSecure("_25._tcp.mx.far.test", .tlsa, [], rcode: .nxDomain)
        #expect(await lookup(denial, host("mx.far.test")) == .noRecords)
    }

    @Test func aCNAMEdHostIsAskedAtItsTargetFirst() async {
        let dns = FakeResolver()
        dns.setSecure("_25._tcp.real.far.test", .tlsa, [usable])
        dns.setSecure("_25._tcp.mx.far.test", .tlsa, [usable])
        let state = await lookup(dns, host("mx.far.test", canonical: "real.far.test"))
        guard case .usable(let p) = state else { Issue.record("not usable"); return }
        #expect(p.baseDomain == "real.far.test" && p.extraNames == ["mx.far.test"])
        let onlyOriginal = FakeResolver()
        onlyOriginal.setSecure("_25._tcp.mx.far.test", .tlsa, [usable])
        guard case .usable(let q) = await lookup(onlyOriginal, host("mx.far.test", canonical: "real.far.test")) else {
            Issue.record("not usable"); return
        }
        #expect(q.baseDomain == "mx.far.test" && q.extraNames.isEmpty)
        #expect(onlyOriginal.askedNames == ["_25._tcp.real.far.test/tlsa", "_25._tcp.mx.far.test/tlsa"])
    }

    @Test func recordsOfAnotherOwnerDoNotCount() {
        let other = DNSRecord(name: "_25._tcp.evil.test", type: DNSType.tlsa.rawValue, ttl: 60, data: usable)
        let r = DNSResponse(id: 1, rcode: .noError, authenticated: true, truncated: false, questionName: "_25._tcp.mx.far.test",
                            questionType: DNSType.tlsa.rawValue, answers: [other])
        #expect(TLSALookup.read(.success(r), qname: "_25._tcp.mx.far.test") == .none)
    }
}

@Suite struct MXSecurity {
    func resolve(trustAD: Bool) async -> [MXHost] {
        let dns = FakeResolver()
        dns.setSecure("far.test", .mx, [.mx(preference: 10, exchange: "mx.far.test")])
        dns.setSecure("mx.far.test", .a, [.a(IPAddress("192.0.2.10")!)])
        dns.setSecure("mx.far.test", .aaaa, [])
        dns.set("other.far.test", .a, [.a(IPAddress("192.0.2.11")!)])
        let r = await withCheckedContinuation { c in MXResolver(resolver: dns, trustAD: trustAD).resolve("far.test") { c.resume(returning: $0) } }
        guard case .hosts(let hosts) = r else { return [] }
        return hosts
    }

    @Test func theADBitCountsOnlyFromATrustedValidator() async {
        #expect(await resolve(trustAD: true).map(\.secure) == [true])
        #expect(await resolve(trustAD: false).map(\.secure) == [false])
    }

    /// The MX answer's own AD bit is kept apart (`mxSecure`): a host in a
    /// signed zone named by an unsigned (forgeable) MX answer is a secure
    /// host for DANE, but not a securely found MX for REQUIRETLS.
    @Test func theMXAnswersADBitIsKeptApartFromTheHosts() async {
        let dns = FakeResolver()
        dns.set("far.test", .mx, [.mx(preference: 10, exchange: "mx.signed.test")])
        dns.setSecure("mx.signed.test", .a, [.a(IPAddress("192.0.2.10")!)])
        dns.setSecure("mx.signed.test", .aaaa, [])
        let r = await withCheckedContinuation { c in MXResolver(resolver: dns, trustAD: true).resolve("far.test") { c.resume(returning: $0) } }
        guard case .hosts(let hosts) = r else { Issue.record("\(r)"); return }
        #expect(hosts.map(\.secure) == [true] && hosts.map(\.mxSecure) == [false])
        #expect(await resolve(trustAD: true).map(\.mxSecure) == [true])
        #expect(await resolve(trustAD: false).map(\.mxSecure) == [false])
    }
}

private func machine(dnssec: Bool = true, domains: String = "", defaultLevel: String = "opportunistic",
                     sts: CachedSTSPolicy? = nil) throws -> DeliveryAttempt {
    let config = try configForTests("""
        [dns]
        servers = ["127.0.0.1"]
        dnssec = \(dnssec)
        [outbound]
        mx_port = 25
        default_level = "\(defaultLevel)"
        [outbound.domains]
        \(domains)
        """)
    let layers: [any PolicyUpgradeLayer] = sts.map { [MTASTSLayer(policies: STSPolicies([$0]), now: { 1_800_000_100 })] } ?? []
    let engine = PolicyEngine(defaultPolicy: config.outbound.defaultPolicy, domains: config.outbound.domains, upgrades: layers)
    let plan = DeliveryAttempt.Plan(domain: "far.test", decision: engine.decide("far.test"), indexes: [0], config: config, credentials: [:])
    return DeliveryAttempt(plan: plan) { _ in nil }
}

private let policy = DANEPolicy(baseDomain: "mx1.far.test", records: [TLSARecord(usage: 3, selector: 1, matchingType: 1, data: key)])
private let hosts = [host("mx1.far.test", ip: "192.0.2.1"), host("mx2.far.test", ip: "192.0.2.2")]

private func runs(_ actions: [DeliveryAttempt.Action]) -> [DeliveryAttempt.Hop] {
    actions.compactMap { if case .run(let hop, _) = $0 { return hop } else { return nil } }
}

private func conclusion(_ actions: [DeliveryAttempt.Action]) -> DeliveryFailure? {
    guard case .conclude(let r, _, _, _, _)? = actions.last, case .failed(let f)? = r[0] else { return nil }
    return f
}

@Suite struct DeliveryAttemptUnderDANE {
    @Test func usableRecordsMakeTheHostDANEVerified() throws {
        var m = try machine()
        _ = m.handle(.start)
        let ask = m.handle(.resolved(.hosts(hosts)))
        guard case .resolveTLSA(let asked)? = ask.first else { Issue.record("no TLSA lookup: \(ask)"); return }
        #expect(asked.map(\.name) == ["mx1.far.test", "mx2.far.test"])
        let first = runs(m.handle(.tlsaResolved(["mx1.far.test": .usable(policy), "mx2.far.test": .noRecords])))
        #expect(first.count == 1)
        #expect(first[0].danePolicy == policy && first[0].level == .verify && first[0].layer == .dane)
        // No match: no plaintext retry, the next host at the domain's level.
        let next = m.handle(.ran(ClientRunResult(outcome: .failed(.tls(TLSFailure(kind: .daneNoMatch, detail: "no match"))),
                                                 tls: nil, tlsFailure: nil)))
        let second = runs(next)
        #expect(second.count == 1 && second[0].host == "mx2.far.test" && second[0].level == .opportunistic && second[0].danePolicy == nil)
    }

    @Test func aFailedTLSALookupLeavesTheHostOutWith475() throws {
        var m = try machine()
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts(hosts)))
        let actions = m.handle(.tlsaResolved(["mx1.far.test": .failed("SERVFAIL"), "mx2.far.test": .failed("SERVFAIL")]))
        #expect(runs(actions).isEmpty, "never contacted, never plaintext")
        let f = try #require(conclusion(actions))
        #expect(f.status == "4.7.5" && !f.isPermanent)
    }

    @Test func allHostsFailingDANEDeferNeverPlaintext() throws {
        var m = try machine()
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([hosts[0]])))
        _ = m.handle(.tlsaResolved(["mx1.far.test": .usable(policy)]))
        let end = m.handle(.ran(ClientRunResult(outcome: .failed(.tlsNotOffered), tls: nil, tlsFailure: nil)))
        #expect(runs(end).isEmpty)
        let f = try #require(conclusion(end))
        #expect(f.status.hasPrefix("4.7.") && f.reason.contains("required by the DANE TLSA records of mx1.far.test"))
    }

    @Test func unusableRecordsMeanTLSWithoutAuthentication() throws {
        var m = try machine()
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts([hosts[0]])))
        let hop = try #require(runs(m.handle(.tlsaResolved(["mx1.far.test": .unusable([])]))).first)
        #expect(hop.level == .forced && !hop.requiresVerification && hop.danePolicy == nil && hop.layer == .dane)
    }

    @Test func theOperatorEntryWinsAndSkipsTheLookup() throws {
        var m = try machine(domains: "\"far.test\" = \"opportunistic\"")
        _ = m.handle(.start)
        let actions = m.handle(.resolved(.hosts(hosts)))
        #expect(!actions.contains { if case .resolveTLSA = $0 { return true } else { return false } })
        #expect(runs(actions).first?.level == .opportunistic)
    }

    @Test func withoutDNSSECThereIsNoLookup() throws {
        var m = try machine(dnssec: false)
        _ = m.handle(.start)
        #expect(runs(m.handle(.resolved(.hosts(hosts)))).first?.host == "mx1.far.test")
    }

    @Test func mtaSTSDoesNotOverrideDANE() throws {
        let text = "version: STSv1\nmode: enforce\nmx: mx2.far.test\nmax_age: 86400\n"
        guard case .success(let p) = STSPolicy.parse(Array(text.utf8)) else { Issue.record("policy"); return }
        var m = try machine(sts: CachedSTSPolicy(domain: "far.test", id: "s1", policy: p, fetched: 1_800_000_000))
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts(hosts)))
        // mx1 is not in the policy but has DANE: DANE decides for it.
        let hop = try #require(runs(m.handle(.tlsaResolved(["mx1.far.test": .usable(policy), "mx2.far.test": .noRecords]))).first)
        #expect(hop.host == "mx1.far.test" && hop.danePolicy == policy)
        // Its DANE failure is not rescued by PKIX: the next host is mx2,
        // under the MTA-STS policy's own verification.
        let next = try #require(runs(m.handle(.ran(ClientRunResult(outcome: .failed(.tls(TLSFailure(kind: .daneNoMatch, detail: ""))),
                                                                 tls: nil, tlsFailure: nil)))).first)
        #expect(next.host == "mx2.far.test" && next.requiresVerification && next.danePolicy == nil)
    }
}

@Suite struct DNSSECConfig {
    @Test(arguments: [
        ("servers = [\"127.0.0.53\"]\ndnssec = true", true),
        ("servers = [\"::1\"]\ndnssec = true", true),
        ("servers = [\"127.0.0.1\", \"192.0.2.53\"]\ndnssec = true", false),
        ("dnssec = true", false),
        ("servers = [\"192.0.2.53\"]\ndnssec = false", true),
    ])
    func theADBitIsTrustedOnlyFromLoopback(dns: String, valid: Bool) {
        let loaded = Result { try configForTests("[dns]\n\(dns)\n") }
        if valid { #expect((try? loaded.get()) != nil, "\(loaded)") } else {
            guard case .failure(let e) = loaded else { Issue.record("accepted: \(dns)"); return }
            #expect("\(e)".contains("dns.dnssec"))
        }
    }
}
