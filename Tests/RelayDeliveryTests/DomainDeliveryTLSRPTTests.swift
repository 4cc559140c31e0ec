// What one MX session becomes for TLS-RPT: the pure mapping behind
// DomainDelivery.countForTLSRPT.
import Testing
@testable import RelayDelivery
@testable import RelayMTASTS
@testable import RelayModel
@testable import RelaySMTP
@testable import RelaySTS
@testable import RelayTLS
@testable import RelayTLSRPT

private func session(_ verification: TLSVerification?, _ outcome: ClientOutcome = .completed([0: Reply(250, "2.0.0", "ok")]),
                     failure: TLSFailure? = nil) -> ClientRunResult {
    ClientRunResult(outcome: outcome,
                    tls: verification.map {
                        TLSSessionInfo(protocolVersion: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", cipherBits: 256, forwardSecret: true,
                                       peerChainLength: 2, verification: $0, resumed: false)
                    },
                    tlsFailure: failure)
}

private let sts: STSPolicy = {
    guard case .success(let p) = STSPolicy.parse(Array("version: STSv1\nmode: enforce\nmx: *.example.com\nmax_age: 86400\n".utf8)) else {
        fatalError("test policy")
    }
    return p
}()

private func event(_ r: ClientRunResult, sts policy: STSPolicy? = nil, host: String = "mx1.example.com",
                   tls: TLSRequirement = .opportunistic, verify: Bool = false) -> TLSRPTEvent? {
    DomainDelivery.tlsrptEvent(domain: "example.com", sts: policy, host: host, ip: "192.0.2.25", tls: tls,
                               verificationRequired: verify, result: r)
}

@Suite struct DomainDeliveryTLSRPTTests {
    @Test func verifiedUnderSTSIsASuccessOfTheSTSPolicy() throws {
        let e = try #require(event(session(.trusted), sts: sts, tls: .required, verify: true))
        #expect(e.result == .success)
        #expect(e.policy.type == .sts)
        #expect(e.policy.strings == ["version: STSv1", "mode: enforce", "mx: *.example.com", "max_age: 86400"])
        #expect(e.policy.mxHosts == ["*.example.com"])
    }

    @Test func opportunisticTLSWithoutPolicyIsASuccess() {
        #expect(event(session(.failed(TLSFailure(kind: .certificateUntrusted, detail: "self-signed"))))
                == .success(TLSRPTPolicy(type: .noPolicyFound, domain: "example.com")))
    }

    @Test func failuresByKind() throws {
        let mismatch = TLSFailure(kind: .hostnameMismatch, detail: "name")
        let e = try #require(event(session(nil, .failed(.tls(mismatch)), failure: mismatch), sts: sts, tls: .required, verify: true))
        guard case .failure(let f) = e.result else { Issue.record("\(e)"); return }
        #expect(f.resultType == .certificateHostMismatch)
        #expect(f.receivingMXHostname == "mx1.example.com" && f.receivingIP == "192.0.2.25")
        #expect(f.failureReasonCode == "hostname-mismatch")

        let expired = TLSFailure(kind: .certificateUntrusted, detail: "certificate has expired")
        #expect(DomainDelivery.resultType(expired) == .certificateExpired)
        #expect(DomainDelivery.resultType(TLSFailure(kind: .certificateUntrusted, detail: "unable to get local issuer")) == .certificateNotTrusted)
        #expect(DomainDelivery.resultType(TLSFailure(kind: .noSharedCipher, detail: "")) == .validationFailure)
    }

    @Test func missingSTARTTLS() throws {
        for r in [session(nil), session(nil, .failed(.tlsNotOffered)), session(nil, .failed(.tlsRefused(Reply(454, "4.7.0", "no"))))] {
            let e = try #require(event(r))
            guard case .failure(let f) = e.result else { Issue.record("\(e)"); continue }
            #expect(f.resultType == .starttlsNotSupported)
            #expect(e.policy.type == .noPolicyFound)
        }
    }

    @Test func hostOutsideTheSTSPolicy() throws {
        let e = try #require(event(session(.trusted), sts: sts, host: "mx.elsewhere.test"))
        guard case .failure(let f) = e.result else { Issue.record("\(e)"); return }
        #expect(f.resultType == .validationFailure)
    }

    @Test func sessionsThatSayNothingAboutTLS() {
        #expect(event(session(nil), tls: .never) == nil)
        #expect(event(session(nil, .failed(.connectFailed("refused")))) == nil)
        #expect(event(session(nil, .failed(.greeting(Reply(554, "5.0.0", "go away"))))) == nil)
    }
}

/// Sessions with a host DANE decided for are counted under its TLSA policy.
@Suite struct DANESessionsForTLSRPT {
    static let record = TLSARecord(usage: 3, selector: 1, matchingType: 1, data: Array(repeating: 0xab, count: 32))
    static let usable = DANEHostState.usable(DANEPolicy(baseDomain: "mx1.example.com", records: [record]))

    func event(_ r: ClientRunResult, _ state: DANEHostState = usable) -> TLSRPTEvent? {
        DomainDelivery.tlsrptEvent(domain: "example.com", sts: sts, host: "mx1.example.com", ip: "192.0.2.25", tls: .required,
                                   verificationRequired: true, result: r, dane: state)
    }

    func matched() -> ClientRunResult {
        ClientRunResult(outcome: .completed([0: Reply(250, "2.0.0", "ok")]),
                        tls: TLSSessionInfo(protocolVersion: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", cipherBits: 256,
                                            forwardSecret: true, peerChainLength: 1, verification: .trusted, resumed: false,
                                            daneMatch: Self.record), tlsFailure: nil)
    }

    @Test func aMatchIsASuccessOfTheTLSAPolicy() throws {
        let e = try #require(event(matched()))
        #expect(e.result == .success)
        #expect(e.policy.type == .tlsa && e.policy.strings == [Self.record.presentation], "DANE, not the MTA-STS policy")
    }

    @Test(arguments: [
        (ClientFailure.tls(TLSFailure(kind: .daneNoMatch, detail: "no matching DANE TLSA records")), TLSRPTResultType.tlsaInvalid),
        (.tls(TLSFailure(kind: .hostnameMismatch, detail: "name")), .certificateHostMismatch),
        (.tls(TLSFailure(kind: .certificateUntrusted, detail: "certificate has expired")), .certificateExpired),
        (.tlsNotOffered, .starttlsNotSupported),
        (.tls(TLSFailure(kind: .protocolError, detail: "")), .validationFailure),
    ])
    func failures(failure: ClientFailure, type: TLSRPTResultType) throws {
        let e = try #require(event(ClientRunResult(outcome: .failed(failure), tls: nil, tlsFailure: nil)))
        guard case .failure(let f) = e.result else { Issue.record("\(e)"); return }
        #expect(f.resultType == type)
        #expect(e.policy.type == .tlsa)
    }

    @Test func unusableRecordsWithTLSAreASuccess() throws {
        let unverified = ClientRunResult(outcome: .completed([0: Reply(250, "2.0.0", "ok")]),
                                         tls: TLSSessionInfo(protocolVersion: "TLSv1.3", cipher: "x", cipherBits: 256, forwardSecret: true,
                                                             peerChainLength: 1, verification: .failed(TLSFailure(kind: .certificateUntrusted, detail: "")),
                                                             resumed: false), tlsFailure: nil)
        let e = try #require(event(unverified, .unusable([Self.record])))
        #expect(e.result == .success && e.policy.type == .tlsa)
    }
}

/// Sessions sent while the domain's MTA-STS policy could not be fetched.
@Suite struct STSFetchProblemsForTLSRPT {
    @Test(arguments: [
        (STSDiscovery.FetchProblem.fetchError("policy fetch failed: timeout"), TLSRPTResultType.stsPolicyFetchError),
        (.invalid("invalid policy: no mx"), .stsPolicyInvalid),
        (.webPKI("policy fetch failed: certificate-untrusted"), .stsWebpkiInvalid),
    ])
    func eachProblemIsItsResultType(problem: STSDiscovery.FetchProblem, type: TLSRPTResultType) throws {
        let r = ClientRunResult(outcome: .completed([0: Reply(250, "2.0.0", "ok")]), tls: nil, tlsFailure: nil)
        let e = try #require(DomainDelivery.tlsrptEvent(domain: "example.com", sts: nil, host: "mx1.example.com", ip: "192.0.2.25",
                                                        tls: .opportunistic, verificationRequired: false, result: r, stsProblem: problem))
        guard case .failure(let f) = e.result else { Issue.record("\(e)"); return }
        #expect(f.resultType == type && e.policy.type == .sts)
    }

    @Test func aConnectFailureSaysNothingEvenThen() {
        let r = ClientRunResult(outcome: .failed(.connectFailed("refused")), tls: nil, tlsFailure: nil)
        #expect(DomainDelivery.tlsrptEvent(domain: "example.com", sts: nil, host: "mx1.example.com", ip: "192.0.2.25",
                                           tls: .opportunistic, verificationRequired: false, result: r,
                                           stsProblem: .fetchError("x")) == nil)
    }
}
