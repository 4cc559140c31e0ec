// STSDiscovery's shared table on PostgreSQL (schema 0001:
// mta_sts_policies, mta_sts_fetch_leases). The lease is one statement: a
// row is inserted, or taken over when it expired or is already this
// instance's, and the holder comes back; publishing a policy replaces the
// domain's row and ends the lease. SQL text is static, values parameters.
import Dispatch
import RelayMTASTS
import RelayModel
import RelayPostgres

public final class PGSTSBackend: SharedSTSBackend {
    let pool: PGPool
    let instance: String
    let queue = DispatchQueue(label: "relayd.shared.mta-sts")

    public init(pool: PGPool, instance: String) {
        self.pool = pool
        self.instance = instance
    }

    public func lookup(domain: String, id: String, completion: @escaping @Sendable (Result<SharedSTSPolicy?, any Error>) -> Void) {
        pool.query("""
            SELECT domain, policy_id, policy_text, fetched_by,
                   floor(extract(epoch FROM fetched_at))::bigint AS fetched
            FROM mta_sts_policies
            WHERE domain = $1 AND policy_id = $2 AND expires_at > now()
            """, [domain, id], on: queue) { result in
            switch result {
            case .failure(let error): completion(.failure(error))
            case .success(let r):
                guard !r.rows.isEmpty, let d = r.value(0, "domain"), let pid = r.value(0, "policy_id"),
                      let text = r.value(0, "policy_text"), let by = r.value(0, "fetched_by"),
                      let fetched = r.value(0, "fetched").flatMap({ Int($0) }) else { return completion(.success(nil)) }
                completion(.success(SharedSTSPolicy(domain: d, id: pid, text: text, fetched: fetched, fetchedBy: by)))
            }
        }
    }

    public func lease(domain: String, seconds: Int, completion: @escaping @Sendable (Result<Bool, any Error>) -> Void) {
        let instance = self.instance
        pool.query("""
            INSERT INTO mta_sts_fetch_leases (domain, holder, until)
            VALUES ($1, $2, now() + make_interval(secs => $3::double precision))
            ON CONFLICT (domain) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
                WHERE mta_sts_fetch_leases.until < now() OR mta_sts_fetch_leases.holder = EXCLUDED.holder
            RETURNING holder
            """, [domain, instance, "\(seconds)"], on: queue) { result in
            switch result {
            case .failure(let error): completion(.failure(error))
            case .success(let r): completion(.success(r.value(0, "holder") == instance))
            }
        }
    }

    public func publish(_ policy: SharedSTSPolicy, expires: Int, completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        let instance = self.instance
        pool.query("""
            WITH stored AS (
                INSERT INTO mta_sts_policies (domain, policy_id, policy_text, fetched_at, expires_at, fetched_by)
                VALUES ($1, $2, $3, to_timestamp($4::double precision), to_timestamp($5::double precision), $6)
                ON CONFLICT (domain) DO UPDATE SET policy_id = EXCLUDED.policy_id, policy_text = EXCLUDED.policy_text,
                    fetched_at = EXCLUDED.fetched_at, expires_at = EXCLUDED.expires_at, fetched_by = EXCLUDED.fetched_by
                RETURNING domain
            )
            DELETE FROM mta_sts_fetch_leases WHERE domain = $1 AND holder = $6
            """, [policy.domain, policy.id, policy.text, "\(policy.fetched)", "\(expires)", instance], on: queue) { result in
            switch result {
            case .failure(let error): completion(.failure(error))
            case .success: completion(.success(()))
            }
        }
    }
}
