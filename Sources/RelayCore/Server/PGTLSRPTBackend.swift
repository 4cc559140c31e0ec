// TLSRPTSync's and TLSRPTSender's backend on PostgreSQL (schema 0001 and
// 0002: tlsrpt_counts, tlsrpt_report_leases, tlsrpt_reports_sent).
//
//   push:    one upsert per row (TLSRPTCountRow), keeping the larger count:
//            an instance's values are absolute, so replaying is harmless;
//   lease:   INSERT … ON CONFLICT (day) DO UPDATE … WHERE the lease has
//            run out or is this instance's own, RETURNING holder; no row
//            back means another instance holds it (then it is read);
//   domains: the day's distinct policy domains, over every instance;
//   counts:  the day's rows for a domain summed over instances;
//   claim:   INSERT INTO tlsrpt_reports_sent … ON CONFLICT DO NOTHING, then
//            whoever has the row (this instance when the insert took).
//
// SQL text is static (StaticString), values go as parameters.
import Dispatch
import RelayPostgres
import RelayTLSRPT

public final class PGTLSRPTBackend: TLSRPTSharedBackend {
    let pool: PGPool
    let instance: String
    let queue = DispatchQueue(label: "relayd.shared.tlsrpt")

    public struct Unexpected: Error, CustomStringConvertible {
        public let description: String
    }

    public init(pool: PGPool, instance: String) {
        self.pool = pool
        self.instance = instance
    }

    public func push(_ snapshots: [TLSRPTCounts], completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        let rows = snapshots.flatMap { c in c.rows.map { (c.day, c.domain.lowercased(), $0) } }
        upsert(rows[...], completion: completion)
    }

    private func upsert(_ rows: ArraySlice<(TLSRPTDay, String, TLSRPTCountRow)>,
                        completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        guard let (day, domain, row) = rows.first else { return completion(.success(())) }
        pool.query("""
            INSERT INTO tlsrpt_counts (day, policy_domain, instance, policy_type, policy_strings, result_type,
                                       receiving_mx_hostname, detail, count, row_key)
            VALUES ($1::date, $2, $3, $4, $5, $6, $7, $8, $9::bigint,
                    md5(jsonb_build_array($4::text, $5::text, $6::text, $7::text, $8::text)::text))
            ON CONFLICT (day, policy_domain, instance, row_key) DO UPDATE SET
                count = GREATEST(tlsrpt_counts.count, EXCLUDED.count)
            WHERE tlsrpt_counts.count < EXCLUDED.count
            """, ["\(day)", domain, instance, row.policy.type.rawValue, row.policyStrings, row.resultType, row.receivingMX,
                  row.detail, "\(row.count)"],
            on: queue) { [self] result in
            switch result {
            case .success: upsert(rows.dropFirst(), completion: completion)
            case .failure(let error): completion(.failure(error))
            }
        }
    }

    public func lease(day: TLSRPTDay, seconds: Int, completion: @escaping @Sendable (Result<String, any Error>) -> Void) {
        pool.query("""
            INSERT INTO tlsrpt_report_leases (day, holder, until)
            VALUES ($1::date, $2, now() + make_interval(secs => $3::integer))
            ON CONFLICT (day) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
            WHERE tlsrpt_report_leases.until < now() OR tlsrpt_report_leases.holder = EXCLUDED.holder
            RETURNING holder
            """, ["\(day)", instance, "\(seconds)"], on: queue) { [self] result in
            switch result {
            case .failure(let error): completion(.failure(error))
            case .success(let r):
                if let holder = r.rows.indices.first.flatMap({ r.value($0, "holder") }) { return completion(.success(holder)) }
                pool.query("SELECT holder FROM tlsrpt_report_leases WHERE day = $1::date", ["\(day)"], on: queue) { result in
                    switch result {
                    case .failure(let error): completion(.failure(error))
                    case .success(let r):
                        // Gone between the two statements: not ours; the next tick asks again.
                        completion(.success(r.rows.indices.first.flatMap { r.value($0, "holder") } ?? ""))
                    }
                }
            }
        }
    }

    public func domains(day: TLSRPTDay, completion: @escaping @Sendable (Result<[String], any Error>) -> Void) {
        pool.query("SELECT DISTINCT policy_domain FROM tlsrpt_counts WHERE day = $1::date ORDER BY 1", ["\(day)"],
                   on: queue) { result in
            completion(result.map { r in r.rows.indices.compactMap { r.value($0, "policy_domain") } }.mapError { $0 })
        }
    }

    public func counts(day: TLSRPTDay, domain: String, completion: @escaping @Sendable (Result<TLSRPTCounts, any Error>) -> Void) {
        pool.query("""
            SELECT policy_type, policy_strings, result_type, detail, sum(count)::bigint AS count
            FROM tlsrpt_counts WHERE day = $1::date AND policy_domain = $2
            GROUP BY policy_type, policy_strings, result_type, detail
            ORDER BY min(change_seq), policy_type, policy_strings, result_type, detail
            """, ["\(day)", domain.lowercased()], on: queue) { result in
            switch result {
            case .failure(let error): completion(.failure(error))
            case .success(let r):
                let rows = r.rows.indices.compactMap { i -> TLSRPTCountRow? in
                    guard let type = r.value(i, "policy_type"), let strings = r.value(i, "policy_strings"),
                          let result = r.value(i, "result_type"), let detail = r.value(i, "detail"),
                          let n = r.value(i, "count").flatMap({ Int($0) }) else { return nil }
                    return TLSRPTCountRow(domain: domain, policyType: type, policyStrings: strings, resultType: result,
                                          detail: detail, count: n)
                }
                completion(.success(TLSRPTCounts(day: day, domain: domain, summing: rows)))
            }
        }
    }

    public func claim(day: TLSRPTDay, domain: String, reportID: String,
                      completion: @escaping @Sendable (Result<String, any Error>) -> Void) {
        pool.query("""
            WITH ins AS (
                INSERT INTO tlsrpt_reports_sent (day, policy_domain, sent_by, report_id)
                VALUES ($1::date, $2, $3, $4)
                ON CONFLICT (day, policy_domain) DO NOTHING
                RETURNING sent_by)
            SELECT sent_by FROM ins
            UNION ALL
            SELECT sent_by FROM tlsrpt_reports_sent WHERE day = $1::date AND policy_domain = $2
            LIMIT 1
            """, ["\(day)", domain.lowercased(), instance, reportID], on: queue) { result in
            switch result {
            case .failure(let error): completion(.failure(error))
            case .success(let r):
                guard let by = r.rows.indices.first.flatMap({ r.value($0, "sent_by") }) else {
                    return completion(.failure(Unexpected(description: "claim returned no row")))
                }
                completion(.success(by))
            }
        }
    }
}
