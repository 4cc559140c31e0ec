import Testing
@testable import RelayModel
@testable import RelayPolicy
@testable import RelaySMTP
@testable import RelayTLS
@testable import RelayDelivery

/// One row of the probe's verdict table: what each address showed, in
/// delivery order, and what each level does with that.
struct VerdictRow: CustomTestStringConvertible, Sendable {
    let addresses: [ProbeVerdict.AddressTLS]
    let none, opportunistic, forced, verify, exclusive: ProbeVerdict.Outcome
    let fitness: ProbeVerdict.Fitness
    var testDescription: String { addresses.map(\.rawValue).joined(separator: ", ") }
}

@Suite struct ProbeVerdictTests {
    typealias A = ProbeVerdict.AddressTLS

    static let table: [VerdictRow] = [
        // address(es)                              none        opportunistic forced     verify        tls-exclusive  fit for
        .init(addresses: [.tlsVerified], none: .plaintext, opportunistic: .tls, forced: .tls, verify: .verifiedTLS, exclusive: .verifiedTLS, fitness: .verify),
        .init(addresses: [.tlsUnverified], none: .plaintext, opportunistic: .tls, forced: .tls, verify: .deferred, exclusive: .dropped, fitness: .forcedOnly),
        .init(addresses: [.noSTARTTLS], none: .plaintext, opportunistic: .plaintext, forced: .deferred, verify: .deferred, exclusive: .dropped, fitness: .neither),
        .init(addresses: [.tlsFailed], none: .plaintext, opportunistic: .plaintext, forced: .deferred, verify: .deferred, exclusive: .dropped, fitness: .neither),
        .init(addresses: [.noAnswer], none: .deferred, opportunistic: .deferred, forced: .deferred, verify: .deferred, exclusive: .deferred, fitness: .unknown),
        .init(addresses: [.brokenAfterTLS], none: .plaintext, opportunistic: .deferred, forced: .deferred, verify: .deferred, exclusive: .deferred, fitness: .neither),
        // A dead primary: the backup decides, and an unreachable address is no TLS failure.
        .init(addresses: [.noAnswer, .tlsVerified], none: .plaintext, opportunistic: .tls, forced: .tls, verify: .verifiedTLS, exclusive: .verifiedTLS, fitness: .verify),
        .init(addresses: [.noAnswer, .noSTARTTLS], none: .plaintext, opportunistic: .plaintext, forced: .deferred, verify: .deferred, exclusive: .deferred, fitness: .neither),
        // A plaintext primary is taken in plaintext by opportunistic, skipped by the strict levels.
        .init(addresses: [.noSTARTTLS, .tlsVerified], none: .plaintext, opportunistic: .plaintext, forced: .tls, verify: .verifiedTLS, exclusive: .verifiedTLS, fitness: .neither),
        .init(addresses: [.tlsUnverified, .tlsVerified], none: .plaintext, opportunistic: .tls, forced: .tls, verify: .verifiedTLS, exclusive: .verifiedTLS, fitness: .forcedOnly),
        .init(addresses: [.tlsFailed, .tlsUnverified], none: .plaintext, opportunistic: .plaintext, forced: .tls, verify: .deferred, exclusive: .dropped, fitness: .neither),
    ]

    @Test("each level's outcome and the fitness, by what the addresses showed", arguments: table)
    func verdict(_ row: VerdictRow) {
        let levels = ProbeVerdict.levels(row.addresses)
        #expect(levels.map(\.level) == [.none, .opportunistic, .forced, .verify, .tlsExclusive])
        #expect(levels.map(\.outcome) == [row.none, row.opportunistic, row.forced, row.verify, row.exclusive])
        #expect(ProbeVerdict.fitness(row.addresses) == row.fitness)
    }

    @Test func noAddressesIsNoVerdict() {
        #expect(ProbeVerdict.fitness([]) == .unknown)
        #expect(ProbeVerdict.outcome(level: .verify, verification: true, []) == nil)
    }

    @Test func tlsExclusiveAtForcedStrengthTakesAnUnverifiedCertificate() {
        #expect(ProbeVerdict.outcome(level: .tlsExclusive, verification: false, [.tlsUnverified]) == .tls)
        #expect(ProbeVerdict.outcome(level: .forced, verification: true, [.tlsUnverified]) == .deferred,
                "an enforce MTA-STS policy makes forced verify")
    }

    static func result(offered: Bool?, established: Bool = false, verification: TLSVerification? = nil,
                       failure: ProbeFailure? = nil) -> HostProbeResult {
        var f = ProbeFindings()
        f.starttlsOffered = offered
        f.tlsEstablished = established
        f.failure = failure
        let tls = verification.map {
            TLSSessionInfo(protocolVersion: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", cipherBits: 256, forwardSecret: true,
                           peerChainLength: 1, verification: $0, resumed: false)
        }
        return HostProbeResult(host: "mx.example", address: IPAddress("192.0.2.1")!, port: 25, findings: f, tls: tls)
    }

    @Test func classifiesFindings() {
        let untrusted = TLSVerification.failed(TLSFailure(kind: .hostnameMismatch, detail: "hostname mismatch"))
        #expect(ProbeVerdict.classify(Self.result(offered: nil, failure: ProbeFailure(step: .connect, detail: "refused"))) == .noAnswer)
        #expect(ProbeVerdict.classify(Self.result(offered: false)) == .noSTARTTLS)
        #expect(ProbeVerdict.classify(Self.result(offered: true, failure: ProbeFailure(step: .starttls, detail: "454"))) == .tlsFailed)
        #expect(ProbeVerdict.classify(Self.result(offered: true, established: true, verification: .trusted)) == .tlsVerified)
        #expect(ProbeVerdict.classify(Self.result(offered: true, established: true, verification: untrusted)) == .tlsUnverified)
        #expect(ProbeVerdict.classify(Self.result(offered: true, established: true, verification: .trusted,
                                                  failure: ProbeFailure(step: .ehloAfterTLS, detail: "closed"))) == .brokenAfterTLS)
    }
}

/// The daily probe's findings in the learned record's terms.
@Suite struct ProbeForLearnedStatus {
    typealias V = ProbeVerdictTests

    func domain(_ addresses: [HostProbeResult], mx: DomainProbeResult.MXLookup? = nil) -> DomainProbeResult {
        DomainProbeResult(domain: "example", mx: mx ?? .found([MXHost(name: "mx.example", preference: 10, addresses: [], implicit: false)]),
                          addresses: addresses)
    }

    @Test func theFirstAnsweringAddressIsTheDomainsLevel() {
        let down = V.result(offered: nil, failure: ProbeFailure(step: .connect, detail: "refused"))
        let plain = V.result(offered: false)
        let verified = V.result(offered: true, established: true, verification: .trusted)
        let r = domain([down, plain, verified]).learnedReport(at: 1_000)
        #expect(r.probe.answered && r.probe.seen == .plaintext && r.probe.at == 1_000)
        #expect(r.probe.starttlsOffered == false && !r.probe.handshake)
        #expect(r.hosts.map(\.seen) == [.plaintext, .verified], "the host that did not answer teaches nothing")
        #expect(r.mx == ["mx.example"])
        let tls = domain([verified, plain]).learnedReport(at: 1_000)
        #expect(tls.probe.seen == .verified && tls.probe.verified && tls.probe.version == "TLSv1.3")
    }

    @Test func nothingAnsweringIsNotAnAnswer() {
        let down = V.result(offered: nil, failure: ProbeFailure(step: .greeting, detail: "421 busy"))
        let r = domain([down]).learnedReport(at: 5)
        #expect(!r.probe.answered)
        #expect(r.probe.detail.contains("421 busy"))
        #expect(r.hosts.isEmpty)
        let dns = domain([], mx: .failed("SERVFAIL")).learnedReport(at: 5)
        #expect(!dns.probe.answered && dns.probe.detail.contains("SERVFAIL"))
    }

    @Test func aDANEAuthenticatedProbeTeachesTLSNotVerified() {
        let r = domain([ProbeVerdictUnderDANE.matched()]).learnedReport(at: 1)
        #expect(r.probe.seen == .tls && r.hosts.map(\.seen) == [.tls])
    }

    @Test func aFailedHandshakeIsPlaintextAndAnUnverifiedOneIsTLS() {
        let failed = V.result(offered: true, failure: ProbeFailure(step: .handshake, detail: "protocol-below-floor"))
        #expect(domain([failed]).learnedReport(at: 1).probe.seen == .plaintext)
        let unverified = V.result(offered: true, established: true,
                                  verification: .failed(TLSFailure(kind: .certificateUntrusted, detail: "")))
        #expect(domain([unverified]).learnedReport(at: 1).probe.seen == .tls)
    }
}

/// DANE decides per host before any level: what the probe then predicts.
@Suite struct ProbeVerdictUnderDANE {
    typealias V = ProbeVerdictTests
    static let record = TLSARecord(usage: 3, selector: 1, matchingType: 1, data: Array(repeating: 1, count: 32))
    static let usable = DANEHostState.usable(DANEPolicy(baseDomain: "mx.example", records: [record]))

    static func matched() -> HostProbeResult {
        var r = V.result(offered: true, established: true, verification: .trusted)
        let tls = r.tls!
        r = HostProbeResult(host: r.host, address: r.address, port: r.port, findings: r.findings,
                            tls: TLSSessionInfo(protocolVersion: tls.protocolVersion, cipher: tls.cipher, cipherBits: tls.cipherBits,
                                                forwardSecret: tls.forwardSecret, peerChainLength: 1, verification: .trusted,
                                                resumed: false, daneMatch: record))
        return r
    }

    @Test func classesFollowTheHostsTLSAState() {
        let plain = V.result(offered: false)
        let noMatch = V.result(offered: true, established: true,
                               verification: .failed(TLSFailure(kind: .daneNoMatch, detail: "")))
        #expect(ProbeVerdict.classify(Self.matched(), dane: Self.usable) == .daneVerified)
        #expect(ProbeVerdict.classify(noMatch, dane: Self.usable) == .daneFailed)
        #expect(ProbeVerdict.classify(plain, dane: Self.usable) == .daneFailed, "a stripped DANE host")
        #expect(ProbeVerdict.classify(noMatch, dane: .unusable([])) == .daneTLS)
        #expect(ProbeVerdict.classify(plain, dane: .unusable([])) == .daneFailed)
        #expect(ProbeVerdict.classify(Self.matched(), dane: .failed("SERVFAIL")) == .daneFailed)
        #expect(ProbeVerdict.classify(plain, dane: .insecure) == .noSTARTTLS)
    }

    @Test(arguments: [
        ([ProbeVerdict.AddressTLS.daneVerified], ["verified-tls", "verified-tls", "verified-tls", "verified-tls", "verified-tls"], ProbeVerdict.Fitness.verify),
        ([.daneFailed], ["defer", "defer", "defer", "defer", "drop"], .neither),
        ([.daneFailed, .noSTARTTLS], ["plaintext", "plaintext", "defer", "defer", "drop"], .neither),
        ([.daneTLS], ["tls", "tls", "tls", "tls", "tls"], .forcedOnly),
    ])
    func everyLevelYieldsToDANE(classes: [ProbeVerdict.AddressTLS], outcomes: [String], fitness: ProbeVerdict.Fitness) {
        #expect(ProbeVerdict.levels(classes).map { $0.outcome?.rawValue ?? "-" } == outcomes)
        #expect(ProbeVerdict.fitness(classes) == fitness)
    }
}
