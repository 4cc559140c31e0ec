// The MTA-STS policy cache (RFC 8461 §5.1): one record per policy domain,
// durable under the spool so it survives restarts, behind a small store
// protocol (get / put / list / delete, keyed by domain) so a shared backend
// can replace the file store without touching discovery or the policy
// layer.
//
// A record keeps what the RFC needs — the policy, its id and when it
// expires — and what an operator asks about: when it was fetched and what
// the last attempt to fetch it said. The file form is one "key value" line
// per field, values xtext-encoded (RFC 3461), the policy as its own text,
// sealed by the spool's check line; a damaged record is set aside and
// reported, never half-read.
import RelayModel
import RelayQueue
import RelaySTS

public struct CachedSTSPolicy: Equatable, Sendable {
    /// The recipient domain the policy is for (lower case, no trailing dot).
    public let domain: String
    /// The id of the TXT record the policy was fetched under.
    public var id: String
    public var policy: STSPolicy
    /// Seconds since the epoch: when the policy was fetched.
    public var fetched: Int
    /// fetched + max_age: after this the policy is not applied.
    public var expires: Int
    /// The last fetch attempt, successful or not, and what it said
    /// ("ok", or the failure).
    public var lastAttempt: Int
    public var lastResult: String

    public init(domain: String, id: String, policy: STSPolicy, fetched: Int, lastAttempt: Int? = nil, lastResult: String = "ok") {
        self.domain = domain
        self.id = id
        self.policy = policy
        self.fetched = fetched
        self.expires = fetched + policy.maxAge
        self.lastAttempt = lastAttempt ?? fetched
        self.lastResult = lastResult
    }

    public func isExpired(at now: Int) -> Bool { now >= expires }

    // MARK: file form

    static let magic = "relayd-mta-sts 1"

    public func encoded() -> [UInt8] {
        let lines = [
            Self.magic,
            "domain \(domain)",
            "id \(id)",
            "fetched \(fetched)",
            "expires \(expires)",
            "attempt \(lastAttempt) \(XText.encode(lastResult))",
            "policy \(XText.encode(policy.text))",
        ]
        return Array((lines.joined(separator: "\n") + "\n").utf8)
    }

    public static func decode(_ content: [UInt8]) throws -> CachedSTSPolicy {
        // Split on bytes: a Swift String joins "\r\n" into one Character,
        // so a CR before a newline would hide the line break. Every field
        // is printable ASCII (free text is xtext); anything else is damage.
        guard content.allSatisfy({ ($0 >= 0x20 && $0 < 0x7f) || $0 == 10 }) else { throw STSCacheError.malformed("encoding") }
        let lines = content.split(separator: 10, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard lines.count == 8, lines[0] == magic, lines[7].isEmpty else { throw STSCacheError.malformed("layout") }
        func field(_ i: Int, _ key: String) throws -> String {
            let line = lines[i]
            guard line.hasPrefix(key + " ") else { throw STSCacheError.malformed(key) }
            return String(line.dropFirst(key.count + 1))
        }
        func number(_ text: Substring) throws -> Int {
            guard let n = Int(text), n >= 0 else { throw STSCacheError.malformed("number") }
            return n
        }
        let domain = try field(1, "domain")
        let id = try field(2, "id")
        let fetched = try number(Substring(try field(3, "fetched")))
        let expires = try number(Substring(try field(4, "expires")))
        let attempt = try field(5, "attempt").split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
        guard attempt.count == 2, let result = XText.decode(String(attempt[1])) else { throw STSCacheError.malformed("attempt") }
        guard let text = XText.decode(try field(6, "policy")),
              case .success(let policy) = STSPolicy.parse(Array(text.utf8)) else { throw STSCacheError.malformed("policy") }
        guard STSCacheKey.isValid(domain), !id.isEmpty else { throw STSCacheError.malformed("domain or id") }
        var record = CachedSTSPolicy(domain: domain, id: id, policy: policy, fetched: fetched,
                                     lastAttempt: try number(attempt[0]), lastResult: result)
        record.expires = expires
        return record
    }
}

public enum STSCacheError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformed(String)
    /// Not a domain name that can be a cache key (and a file name).
    case badDomain(String)

    public var description: String {
        switch self {
        case .malformed(let what): return "malformed cache record (\(what))"
        case .badDomain(let d): return "not a domain name: \(d)"
        }
    }
}

/// Cache keys are domain names, also used as file names (DomainRecordName).
public enum STSCacheKey {
    public static func isValid(_ domain: String) -> Bool { DomainRecordName.isValid(domain) }
}

/// Where cached policies live. Implementations must be safe to call from
/// any queue; a file store is one relayd's, a shared one many relayds'.
public protocol STSCacheStore: Sendable {
    func get(_ domain: String) throws -> CachedSTSPolicy?
    func put(_ record: CachedSTSPolicy) throws
    func list() throws -> [String]
    /// False when there was nothing to delete.
    @discardableResult
    func delete(_ domain: String) throws -> Bool
}

/// Records in spool/mta-sts/<domain>. Each operation is one small file
/// operation: atomic and durable (see SpoolRecords), so a `relayd policy`
/// command and the daemon can both use the store at once without ever
/// seeing a torn record.
public struct FileSTSCacheStore: STSCacheStore {
    static let folder = "mta-sts"
    let spool: Spool
    let now: @Sendable () -> Int
    /// Told about a damaged record after it was set aside (domain, new name).
    let onDamaged: @Sendable (String, String) -> Void

    public init(spool: Spool, now: @escaping @Sendable () -> Int,
                onDamaged: @escaping @Sendable (String, String) -> Void) {
        self.spool = spool
        self.now = now
        self.onDamaged = onDamaged
    }

    public func get(_ domain: String) throws -> CachedSTSPolicy? {
        guard STSCacheKey.isValid(domain) else { throw STSCacheError.badDomain(domain) }
        do {
            guard let content = try spool.readRecord(Self.folder, domain) else { return nil }
            let record = try CachedSTSPolicy.decode(content)
            guard record.domain == domain else { throw STSCacheError.malformed("domain does not match file name") }
            return record
        } catch let e as SpoolRecordError where e == .damaged {
            let aside = try spool.setRecordAside(Self.folder, domain, now: now())
            onDamaged(domain, aside)
            return nil
        } catch let e as STSCacheError {
            let aside = try spool.setRecordAside(Self.folder, domain, now: now())
            onDamaged(domain, "\(aside) (\(e))")
            return nil
        }
    }

    public func put(_ record: CachedSTSPolicy) throws {
        guard STSCacheKey.isValid(record.domain) else { throw STSCacheError.badDomain(record.domain) }
        try spool.writeRecord(Self.folder, record.domain, record.encoded())
    }

    public func list() throws -> [String] {
        spool.recordNames(Self.folder).filter(STSCacheKey.isValid)
    }

    @discardableResult
    public func delete(_ domain: String) throws -> Bool {
        guard STSCacheKey.isValid(domain) else { throw STSCacheError.badDomain(domain) }
        return try spool.removeRecord(Self.folder, domain)
    }
}
