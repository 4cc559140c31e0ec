// Where learned records live, behind the same small store protocol as the
// MTA-STS cache (get / put / list / delete by domain) so a shared backend
// can replace the file store later without touching the rules or the
// layer. The file store keeps one sealed record per domain under
// spool/learned/ (SpoolRecords: tmp → fsync → rename → directory fsync), so
// the daemon and a `relayd policy` command never see a torn record; one
// that fails its check or does not parse is set aside as
// `<domain>.damaged-<time>` and reported, never half-read.
//
// Operator changes (pin, unpin, forget) are also appended to an audit log,
// spool/audit/learned.log, one line each with who and when.
#if canImport(Glibc)
import Glibc
#endif
import RelayModel
import RelayQueue

public protocol LearnedStore: Sendable {
    func get(_ domain: String) throws -> LearnedRecord?
    func put(_ record: LearnedRecord) throws
    func list() throws -> [String]
    @discardableResult
    func delete(_ domain: String) throws -> Bool
    /// Appends one line to the audit trail of operator changes.
    func audit(_ line: String) throws
}

public struct FileLearnedStore: LearnedStore {
    static let folder = "learned"
    let spool: Spool
    let now: @Sendable () -> Int
    /// Told about a damaged record after it was set aside (domain, new name and why).
    let onDamaged: @Sendable (String, String) -> Void

    public init(spool: Spool, now: @escaping @Sendable () -> Int, onDamaged: @escaping @Sendable (String, String) -> Void) {
        self.spool = spool
        self.now = now
        self.onDamaged = onDamaged
    }

    public var auditPath: String { spool.root + "/audit/learned.log" }

    public func get(_ domain: String) throws -> LearnedRecord? {
        guard LearnedRecordFormat.isDomain(domain) else { throw LearnedRecordError.badDomain(domain) }
        do {
            guard let content = try spool.readRecord(Self.folder, domain) else { return nil }
            let record = try LearnedRecordFormat.decode(content)
            guard record.domain == domain else { throw LearnedRecordError.malformed("domain does not match file name") }
            return record
        } catch let e as SpoolRecordError where e == .damaged {
            onDamaged(domain, try spool.setRecordAside(Self.folder, domain, now: now()) + " (check line does not match)")
            return nil
        } catch let e as LearnedRecordError {
            onDamaged(domain, try spool.setRecordAside(Self.folder, domain, now: now()) + " (\(e))")
            return nil
        }
    }

    public func put(_ record: LearnedRecord) throws {
        guard LearnedRecordFormat.isDomain(record.domain) else { throw LearnedRecordError.badDomain(record.domain) }
        try spool.writeRecord(Self.folder, record.domain, LearnedRecordFormat.encode(record))
    }

    public func list() throws -> [String] {
        spool.recordNames(Self.folder).filter(LearnedRecordFormat.isDomain)
    }

    @discardableResult
    public func delete(_ domain: String) throws -> Bool {
        guard LearnedRecordFormat.isDomain(domain) else { throw LearnedRecordError.badDomain(domain) }
        return try spool.removeRecord(Self.folder, domain)
    }

    public func audit(_ line: String) throws {
        let dir = spool.root + "/audit"
        try Spool.makeDirectory(dir)
        let fd = open(auditPath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw SystemError("open \(auditPath)") }
        defer { close(fd) }
        let bytes = Array((line.filter { $0 != "\n" && $0 != "\r" } + "\n").utf8)
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw SystemError("write \(auditPath)") }
        guard fsync(fd) == 0 else { throw SystemError("fsync \(auditPath)") }
    }
}
