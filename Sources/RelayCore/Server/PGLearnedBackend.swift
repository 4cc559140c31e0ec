// LearnedSync's backend on PostgreSQL (schema 0001: learned_evidence, one
// row per domain, instance and level; mx_host '' for the domain as a
// whole). A push is one upsert per level that keeps the larger of each
// field, so replaying a snapshot after an outage never double-counts; a
// pull asks which domains changed after the cursor and returns, for each,
// the evidence merged over every instance (earliest first seen, latest
// last seen, the sum of counts, the most days one instance saw). SQL text
// is static (StaticString), values go as parameters. Rows last seen before
// the domain's latest forget (learned_actions) are left out of a pull: an
// instance that pushed old evidence after the forget does not undo it.
//
// The cursor: the change sequence is allocated when a statement starts and
// becomes visible when it commits, so a row may appear with a number below
// one already read. Each pull therefore starts `overlap` numbers back;
// merging is idempotent, so reading a row twice costs a little work only.
import Dispatch
import RelayLearned
import RelayModel
import RelayPostgres

public final class PGLearnedBackend: SharedLearnedBackend {
    let pool: PGPool
    let instance: String
    let queue = DispatchQueue(label: "relayd.shared.learned")
    static let overlap: Int64 = 1000

    public init(pool: PGPool, instance: String) {
        self.pool = pool
        self.instance = instance
    }

    public func push(_ snapshots: [SharedEvidence], completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        let rows = snapshots.flatMap { s in
            TLSEvidence.allCases.compactMap { level in s.evidence[level].map { (s.domain, level, $0) } }
        }
        upsert(rows[...], completion: completion)
    }

    private func upsert(_ rows: ArraySlice<(String, TLSEvidence, LevelEvidence)>,
                        completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        guard let (domain, level, e) = rows.first else { return completion(.success(())) }
        pool.query("""
            INSERT INTO learned_evidence (domain, instance, level, mx_host, first_seen, last_seen, count, days)
            VALUES ($1, $2, $3, '', to_timestamp($4::double precision), to_timestamp($5::double precision), $6::bigint, $7::integer)
            ON CONFLICT (domain, instance, level, mx_host) DO UPDATE SET
                first_seen = LEAST(learned_evidence.first_seen, EXCLUDED.first_seen),
                last_seen = GREATEST(learned_evidence.last_seen, EXCLUDED.last_seen),
                count = GREATEST(learned_evidence.count, EXCLUDED.count),
                days = GREATEST(learned_evidence.days, EXCLUDED.days)
            """, [domain, instance, level.description, "\(e.firstSeen)", "\(e.lastSeen)", "\(e.count)", "\(e.days)"],
            on: queue) { [self] result in
            switch result {
            case .success: upsert(rows.dropFirst(), completion: completion)
            case .failure(let error): completion(.failure(error))
            }
        }
    }

    public func pull(since cursor: Int64, completion: @escaping @Sendable (Result<SharedEvidencePull, any Error>) -> Void) {
        let from = max(0, cursor - Self.overlap)
        pool.query("""
            SELECT domain, level,
                   floor(extract(epoch FROM min(first_seen)))::bigint AS first_seen,
                   floor(extract(epoch FROM max(last_seen)))::bigint AS last_seen,
                   sum(count)::bigint AS count, max(days) AS days,
                   (SELECT coalesce(max(change_seq), 0) FROM learned_evidence) AS cursor
            FROM learned_evidence
            WHERE mx_host = '' AND domain IN (SELECT domain FROM learned_evidence WHERE change_seq > $1::bigint)
              AND last_seen > coalesce((SELECT max(a.at) FROM learned_actions a
                                        WHERE a.domain = learned_evidence.domain AND a.action = 'forget'),
                                       '-infinity'::timestamptz)
            GROUP BY domain, level
            ORDER BY domain, level
            """, ["\(from)"], on: queue) { result in
            switch result {
            case .failure(let error): completion(.failure(error))
            case .success(let r): completion(.success(Self.read(r, cursor: cursor)))
            }
        }
    }

    /// The rows as merged evidence per domain; a row that does not read
    /// (a level this relayd does not know, numbers out of order) is left
    /// out rather than trusted.
    static func read(_ r: PGResult, cursor: Int64) -> SharedEvidencePull {
        var byDomain: [String: EvidenceByLevel] = [:]
        var next = cursor
        for i in r.rows.indices {
            if let c = r.value(i, "cursor").flatMap({ Int64($0) }) { next = max(next, c) }
            guard let domain = r.value(i, "domain"), let level = r.value(i, "level").flatMap(TLSEvidence.init(name:)),
                  let first = r.value(i, "first_seen").flatMap({ Int($0) }), let last = r.value(i, "last_seen").flatMap({ Int($0) }),
                  let count = r.value(i, "count").flatMap({ Int($0) }), let days = r.value(i, "days").flatMap({ Int($0) }),
                  first <= last, count >= 1, days >= 1 else { continue }
            byDomain[domain, default: [:]][level] = LevelEvidence(firstSeen: first, lastSeen: last, count: count,
                                                                  days: min(days, count))
        }
        return SharedEvidencePull(merged: byDomain.keys.sorted().map { SharedEvidence(domain: $0, evidence: byDomain[$0]!) },
                                  cursor: next)
    }
}
