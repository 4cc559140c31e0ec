import Dispatch
import Testing
@testable import RelayModel
@testable import RelaySTS
@testable import RelayDNS
@testable import RelayHTTPS
@testable import RelayMTASTS
import RelayTestSupport

/// A policy host answering from a table, counting its fetches.
final class TablePolicyHost: STSPolicyFetching, @unchecked Sendable {
    let answer: Result<[UInt8], HTTPSFetchFailure>
    init(_ answer: Result<[UInt8], HTTPSFetchFailure>) { self.answer = answer }
    func fetchPolicy(domain: String, completion: @escaping @Sendable (Result<[UInt8], HTTPSFetchFailure>) -> Void) {
        completion(answer)
    }
}

@Suite struct STSCheckTests {
    func check(_ dns: FakeResolver, _ host: TablePolicyHost) -> STSCheck.Finding? {
        let done = DispatchSemaphore(value: 0)
        final class Box: @unchecked Sendable { var f: STSCheck.Finding? }
        let box = Box()
        STSCheck.run(domain: "example.test", resolver: dns, fetcher: host) { box.f = $0; done.signal() }
        _ = done.wait(timeout: .now() + 5)
        return box.f
    }

    let policy = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n"

    @Test func publishedPolicyIsFetchedAndParsed() throws {
        let dns = FakeResolver()
        dns.set("_mta-sts.example.test", .txt, [.txt([Array("v=STSv1; id=abc123;".utf8)])])
        guard case .policy(let id, let p) = check(dns, TablePolicyHost(.success(Array(policy.utf8)))) else {
            Issue.record("no policy")
            return
        }
        #expect(id == "abc123")
        #expect(p.mode == .enforce)
        #expect(p.matches(mxHost: "mx.example.test"))
    }

    @Test func eachWayOfFailingIsNamed() {
        let none = FakeResolver()
        if case .noRecord = check(none, TablePolicyHost(.success(Array(policy.utf8)))) {} else { Issue.record("no record expected") }

        let servfail = FakeResolver()
        servfail.setRcode("_mta-sts.example.test", .txt, .servFail)
        if case .lookupFailed(let why) = check(servfail, TablePolicyHost(.success([]))) {
            #expect(why.contains("_mta-sts.example.test"))
        } else { Issue.record("lookup failure expected") }

        let dns = FakeResolver()
        dns.set("_mta-sts.example.test", .txt, [.txt([Array("v=STSv1; id=x1;".utf8)])])
        #expect(check(dns, TablePolicyHost(.failure(.status(404)))) == .fetchFailed(id: "x1", "\(HTTPSFetchFailure.status(404))"))
        if case .invalidPolicy(let id, _) = check(dns, TablePolicyHost(.success(Array("mode: enforce\n".utf8)))) {
            #expect(id == "x1")
        } else { Issue.record("invalid policy expected") }
    }
}
