// Queue ids: time-ordered and unique without coordination, like Postfix's
// long queue ids. 11 base-32 characters of microseconds since the epoch
// followed by 5 of randomness; safe as a file name, sortable by arrival.
#if canImport(Glibc)
import Glibc
#endif

public enum QueueID {
    static let alphabet = Array("0123456789BCDFGHJKLMNPQRSTVWXYZb".utf8)

    public static func make(microseconds: UInt64, random: UInt32) -> String {
        var out = [UInt8](repeating: 0, count: 16)
        var t = microseconds
        for i in stride(from: 10, through: 0, by: -1) {
            out[i] = alphabet[Int(t & 31)]
            t >>= 5
        }
        var r = random
        for i in 11..<16 {
            out[i] = alphabet[Int(r & 31)]
            r >>= 5
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func generate() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let micros = UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec / 1000)
        return make(microseconds: micros, random: UInt32.random(in: 0...UInt32.max))
    }

    /// The arrival time an id carries, in whole seconds since the epoch;
    /// nil for anything `make` did not produce.
    public static func seconds(of id: String) -> Int? {
        guard isValid(id) else { return nil }
        var t: UInt64 = 0
        for b in id.utf8.prefix(11) {
            guard let v = alphabet.firstIndex(of: b) else { return nil }
            t = t << 5 | UInt64(v)
        }
        return Int(t / 1_000_000)
    }

    /// Exactly what `make` produces; anything else in a queue folder is
    /// not ours (or was tampered with) and is never read as a message.
    public static func isValid(_ s: String) -> Bool {
        s.utf8.count == 16 && s.utf8.allSatisfy { alphabet.contains($0) }
    }
}
