// SharedDropAudit's backend on PostgreSQL (tls_exclusive_drops), and the
// read side of `relayd report drops`. An append inserts each drop unless
// this instance already stored the same one (queue id, domain, time,
// reason): a replay stores nothing twice. SQL text is static
// (StaticString), values go as parameters.
import Dispatch
import RelayDelivery
import RelayPostgres

/// One row of the shared drop audit, as `relayd report drops` lists it.
public struct SharedDropRow: Equatable, Sendable {
    public var instance: String
    public var drop: SharedDrop
}

public final class PGDropsBackend: SharedDropBackend {
    let pool: PGPool
    let instance: String
    let queue = DispatchQueue(label: "relayd.shared.drops")

    public init(pool: PGPool, instance: String) {
        self.pool = pool
        self.instance = instance
    }

    public func append(_ drops: [SharedDrop], completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        insert(drops[...], completion: completion)
    }

    private func insert(_ drops: ArraySlice<SharedDrop>, completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        guard let d = drops.first else { return completion(.success(())) }
        pool.query("""
            INSERT INTO tls_exclusive_drops (at, instance, queue_id, domain, reason)
            SELECT to_timestamp($1::double precision), $2::text, $3::text, $4::text, $5::text
            WHERE NOT EXISTS (SELECT 1 FROM tls_exclusive_drops
                              WHERE instance = $2::text AND queue_id = $3::text AND domain = $4::text
                                AND at = to_timestamp($1::double precision) AND reason = $5::text)
            """, ["\(d.at)", instance, d.queueID, d.domain, d.reason], on: queue) { [self] result in
            switch result {
            case .success: insert(drops.dropFirst(), completion: completion)
            case .failure(let error): completion(.failure(error))
            }
        }
    }

    /// Every instance's drops at or after `since` (Unix seconds), oldest
    /// first, at most `limit`.
    public func list(since: Int, limit: Int = 10_000, completion: @escaping @Sendable (Result<[SharedDropRow], any Error>) -> Void) {
        pool.query("""
            SELECT instance, queue_id, domain, reason, floor(extract(epoch FROM at))::bigint AS at
            FROM tls_exclusive_drops
            WHERE at >= to_timestamp($1::double precision)
            ORDER BY at, id
            LIMIT $2::integer
            """, ["\(since)", "\(limit)"], on: queue) { result in
            switch result {
            case .failure(let error): completion(.failure(error))
            case .success(let r):
                completion(.success(r.rows.indices.compactMap { i in
                    guard let instance = r.value(i, "instance"), let q = r.value(i, "queue_id"), let d = r.value(i, "domain"),
                          let why = r.value(i, "reason"), let at = r.value(i, "at").flatMap({ Int($0) }) else { return nil }
                    return SharedDropRow(instance: instance, drop: SharedDrop(at: at, queueID: q, domain: d, reason: why))
                }))
            }
        }
    }
}
