// A report covers one UTC day (RFC 8460 §4.1: midnight to midnight UTC).
// Days are written YYYY-MM-DD; conversions are civil-calendar arithmetic
// on Unix seconds (CivilDate), with no time zone and no Foundation.
import RelayModel

public struct TLSRPTDay: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Days since 1970-01-01.
    public let index: Int

    public init(index: Int) { self.index = index }

    /// The UTC day that contains `time` (Unix seconds).
    public init(containing time: Int) { index = Int((Double(time) / 86400).rounded(.down)) }

    /// "YYYY-MM-DD" with a real date; nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard text.utf8.count == 10, parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
              parts.allSatisfy({ $0.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }),
              let y = Int(parts[0]), let m = Int(parts[1]), let d = Int(parts[2]),
              y >= 1970, (1...12).contains(m), d >= 1, d <= Self.daysIn(month: m, year: y) else { return nil }
        index = CivilDate.days(year: y, month: m, day: d)
    }

    public var start: Int { index * 86400 }
    public var end: Int { start + 86400 }
    public var next: TLSRPTDay { TLSRPTDay(index: index + 1) }
    public var previous: TLSRPTDay { TLSRPTDay(index: index - 1) }

    public var description: String {
        let (y, m, d) = CivilDate.civil(index)
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(y)-\(two(m))-\(two(d))"
    }

    /// RFC 3339 date-time of midnight starting this day ("…T00:00:00Z").
    public var startDateTime: String { "\(self)T00:00:00Z" }
    /// The range's end as the RFC's example writes it: the last second of the day.
    public var endDateTime: String { "\(self)T23:59:59Z" }

    public static func < (a: TLSRPTDay, b: TLSRPTDay) -> Bool { a.index < b.index }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

}
