// Reading OpenSSL's thread-local error queue. Every failing OpenSSL call is
// followed by a drain, so a stale entry can never be blamed on a later call.
import COpenSSL

struct OpenSSLErrorEntry: Equatable {
    let code: UInt
    let library: Int32
    let reason: Int32
    let text: String
}

enum OpenSSLErrorQueue {
    /// Removes every entry from the calling thread's queue, oldest first.
    static func drain() -> [OpenSSLErrorEntry] {
        var entries: [OpenSSLErrorEntry] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            let text = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            entries.append(OpenSSLErrorEntry(code: code,
                                             library: ERR_GET_LIB(code),
                                             reason: ERR_GET_REASON(code),
                                             text: text))
        }
        return entries
    }

    static func clear() { ERR_clear_error() }

    /// One human line: the reason strings of every entry, deduplicated.
    static func describe(_ entries: [OpenSSLErrorEntry]) -> String {
        var seen = Set<String>()
        var parts: [String] = []
        for e in entries {
            let reason = e.text.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
            let short = reason.count >= 5 ? String(reason[4]) : e.text
            if seen.insert(short).inserted { parts.append(short) }
        }
        return parts.joined(separator: "; ")
    }
}
