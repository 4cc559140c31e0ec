// The read side of the shared learned state, for `relayd policy explain`
// and `relayd policy list --learned` with [state] backend = "postgres":
// which instance saw what and when (learned_evidence, per instance and
// level: first and last seen, sessions, days) and the operator actions
// (learned_actions), oldest first. SQL text is static (StaticString),
// values go as parameters; a nil domain reads every domain.
import Dispatch
import Foundation
import RelayLearned
import RelayModel
import RelayPostgres
import RelayQueue

public struct SharedLearnedHistory: Sendable, Equatable {
    public struct Sighting: Sendable, Equatable {
        public var domain: String
        public var instance: String
        public var level: String
        public var firstSeen: Int
        public var lastSeen: Int
        public var count: Int
        public var days: Int
    }

    public var evidence: [Sighting] = []
    public var actions: [SharedAction] = []

    public func evidence(of domain: String) -> [Sighting] { evidence.filter { $0.domain == domain } }
    public func actions(of domain: String) -> [SharedAction] { actions.filter { $0.change.domain == domain } }

    /// The text block under a domain's explanation.
    public func text(_ domain: String) -> String {
        var lines = ["Shared state (PostgreSQL):"]
        let seen = evidence(of: domain)
        if seen.isEmpty {
            lines.append("  seen by: no instance")
        } else {
            lines.append("  seen by:")
            for s in seen {
                lines.append("    \(s.instance)  \(s.level)  first \(LearnedClock.utc(s.firstSeen))  last \(LearnedClock.utc(s.lastSeen))"
                             + "  \(s.count) session\(s.count == 1 ? "" : "s") on \(s.days) day\(s.days == 1 ? "" : "s")")
            }
        }
        let done = actions(of: domain)
        if done.isEmpty {
            lines.append("  operator actions: none")
        } else {
            lines.append("  operator actions:")
            for a in done { lines.append("    " + Self.describe(a)) }
        }
        return lines.joined(separator: "\n")
    }

    static func describe(_ a: SharedAction) -> String {
        let when = LearnedClock.utc(a.at)
        switch a.change {
        case .pin(_, let level, let until, let reason, let by):
            return "\(when)  \(a.instance)  pin \(level)" + (until.map { " until \(LearnedClock.utc($0))" } ?? "")
                + "  by \(by)" + (reason.isEmpty ? "" : "  reason: \(reason)")
        case .unpin(_, let by): return "\(when)  \(a.instance)  unpin  by \(by)"
        case .forget(_, let by): return "\(when)  \(a.instance)  forget  by \(by)"
        case .reprobe(_, let by): return "\(when)  \(a.instance)  reprobe  by \(by)"
        }
    }

    public func json(_ domain: String) -> [String: Any] {
        [
            "evidence": evidence(of: domain).map { s -> [String: Any] in
                ["instance": s.instance, "level": s.level, "first_seen": LearnedClock.utc(s.firstSeen),
                 "last_seen": LearnedClock.utc(s.lastSeen), "count": s.count, "days": s.days]
            },
            "actions": actions(of: domain).map { a -> [String: Any] in
                var o: [String: Any] = ["at": LearnedClock.utc(a.at), "instance": a.instance, "id": a.id]
                switch a.change {
                case .pin(_, let level, let until, let reason, let by):
                    o["action"] = "pin"; o["level"] = level; o["by"] = by; o["reason"] = reason
                    o["until"] = until.map { LearnedClock.utc($0) as Any } ?? NSNull()
                case .unpin(_, let by): o["action"] = "unpin"; o["by"] = by
                case .forget(_, let by): o["action"] = "forget"; o["by"] = by
                case .reprobe(_, let by): o["action"] = "reprobe"; o["by"] = by
                }
                return o
            },
        ]
    }

    public var domains: [String] { Array(Set(evidence.map(\.domain) + actions.map(\.change.domain))).sorted() }
}

public enum PGLearnedHistory {
    static let queue = DispatchQueue(label: "relayd.shared.history")

    /// The domain's (or every domain's) evidence per instance and its
    /// actions (the latest `actionLimit`, oldest first).
    public static func read(_ pool: PGPool, domain: String?, actionLimit: Int = 1000,
                            completion: @escaping @Sendable (Result<SharedLearnedHistory, any Error>) -> Void) {
        pool.query("""
            SELECT domain, instance, level,
                   floor(extract(epoch FROM first_seen))::bigint AS first_seen,
                   floor(extract(epoch FROM last_seen))::bigint AS last_seen, count, days
            FROM learned_evidence
            WHERE mx_host = '' AND ($1::text IS NULL OR domain = $1::text)
            ORDER BY domain, instance, level
            """, [domain], on: queue) { result in
            switch result {
            case .failure(let error): completion(.failure(error))
            case .success(let r):
                var found: [SharedLearnedHistory.Sighting] = []
                for i in r.rows.indices {
                    guard let d = r.value(i, "domain"), let inst = r.value(i, "instance"), let level = r.value(i, "level"),
                          let first = r.value(i, "first_seen").flatMap({ Int($0) }), let last = r.value(i, "last_seen").flatMap({ Int($0) }),
                          let count = r.value(i, "count").flatMap({ Int($0) }), let days = r.value(i, "days").flatMap({ Int($0) }) else { continue }
                    found.append(.init(domain: d, instance: inst, level: level, firstSeen: first, lastSeen: last, count: count, days: days))
                }
                let evidence = found
                pool.query("""
                    SELECT * FROM (
                        SELECT id, domain, action, level, by, reason, instance,
                               floor(extract(epoch FROM at))::bigint AS at,
                               floor(extract(epoch FROM until))::bigint AS until
                        FROM learned_actions
                        WHERE ($1::text IS NULL OR domain = $1::text)
                        ORDER BY id DESC
                        LIMIT $2::integer) latest
                    ORDER BY id
                    """, [domain, "\(actionLimit)"], on: queue) { result in
                    switch result {
                    case .failure(let error): completion(.failure(error))
                    case .success(let r):
                        completion(.success(SharedLearnedHistory(evidence: evidence, actions: PGActionsBackend.read(r, after: 0).actions)))
                    }
                }
            }
        }
    }
}
