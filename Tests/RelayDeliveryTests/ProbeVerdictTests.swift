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
