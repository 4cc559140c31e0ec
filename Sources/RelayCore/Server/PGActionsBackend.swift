// LearnedActionSync's backend on PostgreSQL (learned_actions, schema 0001
// and 0002's `until`). An append is one statement per action that inserts
// it unless the same instance already stored the same action (domain,
// action, by, time): a replay after a lost answer stores nothing twice. A
// forget, in the same statement, deletes the domain's evidence rows last
// seen before it (their history is what was forgotten; rows seen since
// stay). SQL text is static (StaticString), values go as parameters.
import Dispatch
import RelayLearned
import RelayModel
import RelayPostgres
import RelayQueue

public final class PGActionsBackend: SharedActionBackend {
    let pool: PGPool
    let instance: String
    let queue = DispatchQueue(label: "relayd.shared.actions")
    static let batch = 500

    public init(pool: PGPool, instance: String) {
        self.pool = pool
        self.instance = instance
    }

    /// The row's fields: action, level, by, reason, until.
    static func fields(_ c: LearnedChange) -> (String, String?, String, String, Int?) {
        switch c {
        case .pin(_, let level, let until, let reason, let by): return ("pin", level, by, reason, until)
        case .unpin(_, let by): return ("unpin", nil, by, "", nil)
        case .forget(_, let by): return ("forget", nil, by, "", nil)
        case .reprobe(_, let by): return ("reprobe", nil, by, "", nil)
        }
    }

    public func append(_ actions: [SharedAction], completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        insert(actions[...], completion: completion)
    }

    private func insert(_ actions: ArraySlice<SharedAction>, completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        guard let a = actions.first else { return completion(.success(())) }
        let (action, level, by, reason, until) = Self.fields(a.change)
        guard action != "reprobe" else { return insert(actions.dropFirst(), completion: completion) }
        pool.query("""
            WITH added AS (
                INSERT INTO learned_actions (domain, action, level, by, at, instance, reason, until)
                SELECT $1::text, $2::text, $3::text, $4::text, to_timestamp($5::double precision), $6::text, $7::text, to_timestamp($8::double precision)
                WHERE NOT EXISTS (SELECT 1 FROM learned_actions
                                  WHERE domain = $1::text AND action = $2::text AND by = $4::text AND instance = $6::text
                                    AND at = to_timestamp($5::double precision))
                RETURNING id),
            gone AS (
                DELETE FROM learned_evidence
                WHERE $2::text = 'forget' AND domain = $1::text AND last_seen <= to_timestamp($5::double precision)
                RETURNING 1)
            SELECT (SELECT count(*) FROM added) AS added, (SELECT count(*) FROM gone) AS gone
            """, [a.change.domain, action, level, by, "\(a.at)", instance, reason, until.map { "\($0)" }], on: queue) { [self] result in
            switch result {
            case .success: insert(actions.dropFirst(), completion: completion)
            case .failure(let error): completion(.failure(error))
            }
        }
    }

    public func actions(after: Int64, completion: @escaping @Sendable (Result<SharedActionPull, any Error>) -> Void) {
        pool.query("""
            SELECT id, domain, action, level, by, reason, instance,
                   floor(extract(epoch FROM at))::bigint AS at,
                   floor(extract(epoch FROM until))::bigint AS until
            FROM learned_actions
            WHERE id > $1::bigint
            ORDER BY id
            LIMIT 500
            """, ["\(after)"], on: queue) { result in
            switch result {
            case .failure(let error): completion(.failure(error))
            case .success(let r): completion(.success(Self.read(r, after: after)))
            }
        }
    }

    /// The rows as actions; one that does not read is skipped (the cursor
    /// still moves past it).
    static func read(_ r: PGResult, after: Int64) -> SharedActionPull {
        var out: [SharedAction] = []
        var cursor = after
        for i in r.rows.indices {
            guard let id = r.value(i, "id").flatMap({ Int64($0) }) else { continue }
            cursor = max(cursor, id)
            guard let domain = r.value(i, "domain"), let by = r.value(i, "by"), let instance = r.value(i, "instance"),
                  let at = r.value(i, "at").flatMap({ Int($0) }) else { continue }
            let change: LearnedChange
            switch r.value(i, "action") {
            case "pin":
                guard let level = r.value(i, "level") else { continue }
                change = .pin(domain: domain, level: level, until: r.value(i, "until").flatMap { Int($0) },
                              reason: r.value(i, "reason") ?? "", by: by)
            case "unpin": change = .unpin(domain: domain, by: by)
            case "forget": change = .forget(domain: domain, by: by)
            default: continue
            }
            out.append(SharedAction(id: id, change: change, at: at, instance: instance))
        }
        return SharedActionPull(actions: out, cursor: cursor)
    }
}
