// Dates as the learned-status CLI and log write and read them, in UTC,
// without Foundation (this target stays pure): "2026-12-02 14:05:09 UTC"
// out, "2026-12-31" or "2026-12-31T08:00:00Z" in; days are converted by
// CivilDate (Model).
import RelayModel

public enum LearnedClock {
    static func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }

    public static func utc(_ t: Int) -> String {
        let (y, m, d) = CivilDate.civil(utcDay(t))
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
        let day = CivilDate.days(year: y, month: m, day: d)
        guard CivilDate.civil(day) == (y, m, d) else { return nil }  // no 31 February
        var t = day * 86_400
        if b.count == 20 {
            guard b[10] == 0x54, b[13] == 0x3a, b[16] == 0x3a, b[19] == 0x5a, let h = num(11..<13), let mi = num(14..<16),
                  let s = num(17..<19), h < 24, mi < 60, s < 60 else { return nil }
            t += h * 3600 + mi * 60 + s
        }
        return t
    }
}
