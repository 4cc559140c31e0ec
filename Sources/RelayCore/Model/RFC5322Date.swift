// The date-time of RFC 5322 §3.3 in UTC ("Tue, 01 Dec 2026 10:00:00 +0000"),
// for Received: headers and DSNs.
#if canImport(Glibc)
import Glibc
#endif

public enum RFC5322Date {
    /// "Sun, 29 Nov 2026 07:50:00 +0000"
    public static func format(_ unixTime: Int) -> String {
        var t = time_t(unixTime)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[Int(tmv.tm_wday)]), \(two(tmv.tm_mday)) \(months[Int(tmv.tm_mon)]) \(tmv.tm_year + 1900) "
            + "\(two(tmv.tm_hour)):\(two(tmv.tm_min)):\(two(tmv.tm_sec)) +0000"
    }
}
