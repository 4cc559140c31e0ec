// Delivery under learned TLS status: a domain that learned TLS is tried at
// `forced`, so a stripped STARTTLS or a failed handshake defers instead of
// going on in plaintext, and the failure says why; a domain with nothing
// learned keeps opportunistic's plaintext retry. And what each session
// teaches the record, as a table.
import Logging
import Testing
@testable import RelayConfig
@testable import RelayDelivery
@testable import RelayLearned
@testable import RelayModel
@testable import RelayPolicy
@testable import RelaySMTP
@testable import RelayTLS
import RelayTestSupport

private struct NoStore: LearnedStore {
    func get(_ domain: String) throws -> LearnedRecord? { nil }
    func put(_ record: LearnedRecord) throws {}
    func list() throws -> [String] { [] }
    func delete(_ domain: String) throws -> Bool { false }
    func audit(_ line: String) throws {}
}

private func machine(learnedTLS: Bool) throws -> DeliveryAttempt {
    let config = try configForTests("""
        [outbound]
        mx_port = 2500
        default_level = "opportunistic"
        """)
    let status = LearnedStatus(store: NoStore(), settings: LearnedSettings(), logger: Logger(label: "test"), now: { 1_800_000_000 })
    if learnedTLS { status.observeSession(domain: "far.test", host: "mx.far.test", seen: .tls, reason: "TLS", key: nil) }
    let engine = OutboundSettings.engine(config, learned: status, now: { 1_800_000_000 })
    let plan = DeliveryAttempt.Plan(domain: "far.test", decision: engine.decide("far.test"), indexes: [0], config: config, credentials: [:])
    return DeliveryAttempt(plan: plan) { _ in nil }
}

private let hosts = [MXHost(name: "mx.far.test", preference: 10, addresses: [IPAddress("127.0.0.11")!], implicit: false)]

private func failed(_ f: ClientFailure) -> DeliveryAttempt.Event {
    .ran(ClientRunResult(outcome: .failed(f), tls: nil, tlsFailure: nil))
}

@Suite struct DeliveryAttemptUnderLearnedStatus {
    @Test(arguments: [
        ClientFailure.tlsNotOffered,
        .tlsRefused(Reply(454, "4.7.0", "TLS not available")),
        .tls(TLSFailure(kind: .protocolError, detail: "garbage")),
    ])
    func aDowngradeDefersWithTheReason(failure: ClientFailure) throws {
        var m = try machine(learnedTLS: true)
        #expect(m.plan.decision.layer == .learned && m.plan.decision.level == .forced)
        _ = m.handle(.start)
        guard case .run(let hop, let tls) = m.handle(.resolved(.hosts(hosts))).first else { Issue.record("no run"); return }
        #expect(hop.level == .forced && tls == .required)
        let end = m.handle(failed(failure))
        guard case .conclude(let results, _, _, _, _) = end.last, case .failed(let f) = results[0] else {
            Issue.record("no conclusion: \(end)")
            return
        }
        #expect(!f.isPermanent)
        #expect(f.status.hasPrefix("4.7."))
        #expect(f.reason.contains("required by relayd's learned TLS status of far.test"))
        #expect(!end.contains { if case .run = $0 { return true }; return false }, "no plaintext retry")
    }

    @Test func withNothingLearnedAFailedHandshakeIsRetriedInPlaintext() throws {
        var m = try machine(learnedTLS: false)
        #expect(m.plan.decision.layer == .defaultLevel)
        _ = m.handle(.start)
        _ = m.handle(.resolved(.hosts(hosts)))
        let next = m.handle(failed(.tls(TLSFailure(kind: .protocolError, detail: "garbage"))))
        guard case .run(let hop, let tls) = next.last else { Issue.record("no retry: \(next)"); return }
        #expect(tls == .never && hop.via.contains("plaintext"))
    }
}

private func info(_ verification: TLSVerification) -> TLSSessionInfo {
    TLSSessionInfo(protocolVersion: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", cipherBits: 256, forwardSecret: true,
                   peerChainLength: 2, verification: verification, resumed: false)
}

private let accepted = ClientOutcome.completed([0: Reply(250, "2.0.0", "ok")])

private func daneInfo() -> TLSSessionInfo {
    TLSSessionInfo(protocolVersion: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", cipherBits: 256, forwardSecret: true,
                   peerChainLength: 1, verification: .trusted, resumed: false,
                   daneMatch: TLSARecord(usage: 3, selector: 1, matchingType: 1, data: Array(repeating: 1, count: 32)))
}

struct EvidenceCase: Sendable, CustomStringConvertible {
    let name: String
    let result: ClientRunResult
    let tls: TLSRequirement
    let seen: TLSEvidence?
    let missing: String
    var description: String { name }
}

@Suite struct WhatASessionTeaches {
    static let cases: [EvidenceCase] = [
        .init(name: "verified", result: ClientRunResult(outcome: accepted, tls: info(.trusted), tlsFailure: nil),
              tls: .opportunistic, seen: .verified, missing: ""),
        .init(name: "DANE-authenticated teaches TLS, not verified", result: ClientRunResult(outcome: accepted, tls: daneInfo(), tlsFailure: nil),
              tls: .required, seen: .tls, missing: ""),
        .init(name: "unverified", result: ClientRunResult(outcome: accepted, tls: info(.failed(TLSFailure(kind: .hostnameMismatch, detail: ""))), tlsFailure: nil),
              tls: .opportunistic, seen: .tls, missing: "verification"),
        .init(name: "no STARTTLS at opportunistic", result: ClientRunResult(outcome: accepted, tls: nil, tlsFailure: nil),
              tls: .opportunistic, seen: .plaintext, missing: "starttls-not-offered"),
        .init(name: "plaintext at none says nothing", result: ClientRunResult(outcome: accepted, tls: nil, tlsFailure: nil),
              tls: .never, seen: nil, missing: ""),
        .init(name: "no STARTTLS at forced", result: ClientRunResult(outcome: .failed(.tlsNotOffered), tls: nil, tlsFailure: nil),
              tls: .required, seen: .plaintext, missing: "starttls-not-offered"),
        .init(name: "STARTTLS refused", result: ClientRunResult(outcome: .failed(.tlsRefused(Reply(454, "4.7.0", "no"))), tls: nil, tlsFailure: nil),
              tls: .required, seen: .plaintext, missing: "starttls-refused"),
        .init(name: "handshake failed", result: ClientRunResult(outcome: .failed(.tls(TLSFailure(kind: .protocolError, detail: ""))), tls: nil, tlsFailure: nil),
              tls: .required, seen: .plaintext, missing: "handshake-failed"),
        .init(name: "verification refused", result: ClientRunResult(outcome: .failed(.tls(TLSFailure(kind: .certificateUntrusted, detail: ""))), tls: nil, tlsFailure: nil),
              tls: .required, seen: .tls, missing: "verification"),
        .init(name: "DANE mismatch: the host does TLS", result: ClientRunResult(outcome: .failed(.tls(TLSFailure(kind: .daneNoMatch, detail: ""))), tls: nil, tlsFailure: nil),
              tls: .required, seen: .tls, missing: "verification"),
        .init(name: "unreachable says nothing", result: ClientRunResult(outcome: .failed(.connectFailed("refused")), tls: nil, tlsFailure: nil),
              tls: .required, seen: nil, missing: ""),
        .init(name: "421 greeting says nothing", result: ClientRunResult(outcome: .failed(.greeting(Reply(421, "4.3.2", "busy"))), tls: nil, tlsFailure: nil),
              tls: .opportunistic, seen: nil, missing: ""),
    ]

    @Test(arguments: cases)
    func evidence(_ c: EvidenceCase) {
        let e = DomainDelivery.evidence(c.result, tls: c.tls)
        #expect(e?.seen == c.seen)
        if let e { #expect(e.missing == c.missing) }
    }
}
