// Dates as the learned-status CLI and log write and read them, in UTC,
// without Foundation (this target stays pure): "2026-12-02 14:05:09 UTC"
// out, "2026-12-31" or "2026-12-31T08:00:00Z" in. Days are converted with
// the proleptic Gregorian civil-from-days algorithm (H. Hinnant's
// formulation), exact for every date the record can hold.
public enum LearnedClock {
    /// Days since 1970-01-01 → (year, month, day).
    static func civil(_ days: Int) -> (Int, Int, Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }

    /// (year, month, day) → days since 1970-01-01.
    static func days(_ y: Int, _ m: Int, _ d: Int) -> Int {
        let y = m <= 2 ? y - 1 : y
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }

    public static func utc(_ t: Int) -> String {
        let (y, m, d) = civil(utcDay(t))
        let s = t - utcDay(t) * 86_400
        return "\(y)-\(two(m))-\(two(d)) \(two(s / 3600)):\(two(s / 60 % 60)):\(two(s % 60)) UTC"
    }

    /// "YYYY-MM-DD" (the start of that day, UTC) or "YYYY-MM-DDTHH:MM:SSZ".
    public static func parse(_ text: String) -> Int? {
        let b = Array(text.utf8)
        guard b.count == 10 || b.count == 20 else { return nil }
        func num(_ r: Range<Int>) -> Int? {
            guard b[r].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            return b[r].reduce(0) { $0 * 10 + Int($1 - 0x30) }
        }
        guard b[4] == 0x2d, b[7] == 0x2d, let y = num(0..<4), let m = num(5..<7), let d = num(8..<10),
              (1...12).contains(m), d >= 1 else { return nil }
        let day = days(y, m, d)
        guard civil(day) == (y, m, d) else { return nil }  // no 31 February
        var t = day * 86_400
        if b.count == 20 {
            guard b[10] == 0x54, b[13] == 0x3a, b[16] == 0x3a, b[19] == 0x5a, let h = num(11..<13), let mi = num(14..<16),
                  let s = num(17..<19), h < 24, mi < 60, s < 60 else { return nil }
            t += h * 3600 + mi * 60 + s
        }
        return t
    }
}
