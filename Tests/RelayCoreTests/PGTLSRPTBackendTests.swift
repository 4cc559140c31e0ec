// PGTLSRPTBackend's SQL against a real PostgreSQL (started by the test, as
// in RelayPostgresTests): two instances push, a push replayed does not
// count twice, hostile policy strings and failure particulars round-trip,
// the sum covers both instances, one lease holder per day, one claim per
// report.
import Dispatch
import Foundation
import Testing
import RelayModel
import RelayPostgres
import RelaySync
import RelayTestSupport
import RelayTLSRPT
@testable import RelayCore

@Suite struct PGTLSRPTBackendTests {
    static let migrations: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.appendingPathComponent("migrations").path
    }()

    func wait<T: Sendable>(_ call: (@escaping @Sendable (Result<T, any Error>) -> Void) -> Void) async throws -> T {
        try await withCheckedThrowingContinuation { c in call { c.resume(with: $0) } }
    }

    @Test func pushTwiceSumOverInstancesLeaseAndClaim() async throws {
        guard PostgresServer.binaries != nil else { print("skipped: \(PostgresServer.skipReason)"); return }
        let pg = try PostgresServer()
        defer { pg.stop() }
        let pool = PGPool(PGPoolConfiguration(connect: PGConnectOptions(url: pg.url(), sslMode: .disable,
                                                                        statementTimeoutMilliseconds: 5000,
                                                                        connectTimeoutSeconds: 5, applicationName: "relayd-tests"),
                                              size: 2))
        pool.start()
        defer { pool.shutdown() }
        let q = DispatchQueue(label: "t")
        let applied: PGMigrationReport = try await wait { done in
            PGMigrations.migrate(pool, migrations: try! PGMigrations.load(directory: Self.migrations), on: q) {
                done($0.mapError { $0 })
            }
        }
        #expect(applied.applied.map(\.version).starts(with: [1, 2]), "schema 2 (the TLS-RPT rows) among those applied")

        let day = TLSRPTDay(index: 20_000)
        let domain = "o'brien.example"
        let policy = TLSRPTPolicy(type: .sts, strings: ["version: STSv1", "mode: enforce", "'; DROP TABLE tlsrpt_counts; --",
                                                        "ünïcödé \u{10FFFF} \\ \" $1", String(repeating: "x", count: 5000)],
                                  domain: domain, mxHosts: ["*.o'brien.example"])
        let failure = TLSRPTFailure(resultType: .certificateHostMismatch, sendingMTAIP: "192.0.2.1",
                                    receivingMXHostname: "mx.o'brien.example", receivingIP: "2001:db8::1",
                                    failureReasonCode: "x509 \"name\"", additionalInformation: "-")
        var mine = TLSRPTCounts(day: day, domain: domain)
        mine.add(.success(policy), count: 5)
        mine.add(.failure(policy, failure), count: 2)
        var theirs = TLSRPTCounts(day: day, domain: domain)
        theirs.add(.success(policy), count: 1)
        theirs.add(.failure(TLSRPTPolicy(type: .noPolicyFound, domain: domain), TLSRPTFailure(resultType: .starttlsNotSupported)))

        let a = PGTLSRPTBackend(pool: pool, instance: "a")
        let b = PGTLSRPTBackend(pool: pool, instance: "b")
        for _ in 0..<2 { let _: Void = try await wait { a.push([mine], completion: $0) } }   // replayed: counted once
        let _: Void = try await wait { b.push([theirs], completion: $0) }
        var smaller = TLSRPTCounts(day: day, domain: domain)
        smaller.add(.success(policy), count: 3)   // an older snapshot arriving late: kept at the larger value
        let _: Void = try await wait { a.push([smaller], completion: $0) }

        let domains: [String] = try await wait { a.domains(day: day, completion: $0) }
        #expect(domains == [domain])
        let summed: TLSRPTCounts = try await wait { b.counts(day: day, domain: domain, completion: $0) }
        #expect(summed.sessionTotal == 9)
        #expect(summed.counts[policy]?.successes == 6 && summed.counts[policy]?.failures[failure] == 2)
        #expect(summed.policies.first == policy, "strings and mx patterns round-trip unchanged")

        let holderA: String = try await wait { a.lease(day: day, seconds: 600, completion: $0) }
        let holderB: String = try await wait { b.lease(day: day, seconds: 600, completion: $0) }
        let renewed: String = try await wait { a.lease(day: day, seconds: 600, completion: $0) }
        #expect([holderA, holderB, renewed] == ["a", "a", "a"])

        let claimA: String = try await wait { a.claim(day: day, domain: domain, reportID: "r1", completion: $0) }
        let claimB: String = try await wait { b.claim(day: day, domain: domain, reportID: "r1", completion: $0) }
        let again: String = try await wait { a.claim(day: day, domain: domain, reportID: "r1", completion: $0) }
        #expect([claimA, claimB, again] == ["a", "a", "a"])
    }
}
