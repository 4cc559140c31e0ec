// Where TLS-RPT keeps its state under the spool, through the spool's
// record helpers (tmp → fsync → rename → directory fsync, each record
// sealed by a check line):
//
//   spool/tlsrpt/<YYYY-MM-DD>_<domain>        the day's counters (TLSRPTCounts)
//   spool/tlsrpt-sent/<YYYY-MM-DD>_<domain>   how sending that report went (TLSRPTSendState)
//
// A day and a domain never contain "_" before the domain, so the name
// splits at its first "_". A damaged record is set aside and reported
// through `onDamaged`, then treated as absent.
import RelayModel
import RelayQueue

public enum TLSRPTStoreError: Error, Equatable, Sendable {
    case notADomain(String)
    case unreadable(String)
}

public struct TLSRPTStore: Sendable {
    public let spool: Spool
    let now: @Sendable () -> Int
    let onDamaged: @Sendable (String, String) -> Void

    static let countsFolder = "tlsrpt"
    static let sentFolder = "tlsrpt-sent"

    public init(spool: Spool, now: @escaping @Sendable () -> Int,
                onDamaged: @escaping @Sendable (_ name: String, _ aside: String) -> Void = { _, _ in }) {
        self.spool = spool
        self.now = now
        self.onDamaged = onDamaged
    }

    static func name(_ day: TLSRPTDay, _ domain: String) throws -> String {
        guard DomainRecordName.isValid(domain) else { throw TLSRPTStoreError.notADomain(domain) }
        return "\(day)_\(domain)"
    }

    static func split(_ name: String) -> (TLSRPTDay, String)? {
        guard let u = name.firstIndex(of: "_"), let day = TLSRPTDay(String(name[..<u])) else { return nil }
        let domain = String(name[name.index(after: u)...])
        return DomainRecordName.isValid(domain) ? (day, domain) : nil
    }

    // MARK: counters

    public func put(_ counts: TLSRPTCounts) throws {
        try spool.writeRecord(Self.countsFolder, Self.name(counts.day, counts.domain), counts.encode())
    }

    public func get(day: TLSRPTDay, domain: String) throws -> TLSRPTCounts? {
        let name = try Self.name(day, domain)
        guard let data = try read(Self.countsFolder, name) else { return nil }
        guard let c = TLSRPTCounts.decode(data), c.day == day, c.domain == domain else {
            setAside(Self.countsFolder, name)
            return nil
        }
        return c
    }

    public func domains(day: TLSRPTDay) -> [String] {
        spool.recordNames(Self.countsFolder).compactMap { Self.split($0) }.filter { $0.0 == day }.map(\.1)
    }

    /// Days with counters on disk, oldest first.
    public func days() -> [TLSRPTDay] {
        Set(spool.recordNames(Self.countsFolder).compactMap { Self.split($0)?.0 }).sorted()
    }

    /// Removes a day's counters and send states (after its reports are done with).
    public func removeDay(_ day: TLSRPTDay) throws {
        for folder in [Self.countsFolder, Self.sentFolder] {
            for name in spool.recordNames(folder) where Self.split(name)?.0 == day {
                try spool.removeRecord(folder, name)
            }
        }
    }

    // MARK: send states

    public func putState(_ state: TLSRPTSendState) throws {
        try spool.writeRecord(Self.sentFolder, Self.name(state.day, state.domain), state.encode())
    }

    public func state(day: TLSRPTDay, domain: String) throws -> TLSRPTSendState? {
        let name = try Self.name(day, domain)
        guard let data = try read(Self.sentFolder, name) else { return nil }
        guard let s = TLSRPTSendState.decode(data), s.day == day, s.domain == domain else {
            setAside(Self.sentFolder, name)
            return nil
        }
        return s
    }

    private func read(_ folder: String, _ name: String) throws -> [UInt8]? {
        do { return try spool.readRecord(folder, name) } catch SpoolRecordError.damaged {
            setAside(folder, name)
            return nil
        }
    }

    private func setAside(_ folder: String, _ name: String) {
        if let aside = try? spool.setRecordAside(folder, name, now: now()) { onDamaged(folder + "/" + name, aside) }
    }
}
