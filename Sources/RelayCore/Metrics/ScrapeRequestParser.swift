// The request head of one metrics scrape, sans IO: bytes in, a verdict out.
//
// Only what a scraper sends is accepted: `GET /metrics` (a query string is
// ignored) over HTTP/1.1 or 1.0, header fields after it, an empty line. The
// head is bounded (`maxHeadBytes`) before anything is kept, the request
// line and the field lines must be printable ASCII with single spaces
// where the grammar has them, a body is refused (a GET has none here), and
// every answer is final: the connection closes after it, so nothing past
// the head is ever read.
public struct ScrapeRequestParser: Sendable {
    public enum Verdict: Equatable, Sendable {
        /// The head is not complete yet.
        case needMore
        /// `GET /metrics`: send the exposition.
        case metrics
        /// Answer with this status and close.
        case reject(Status)
    }

    public enum Status: Int, Sendable {
        case badRequest = 400
        case notFound = 404
        case methodNotAllowed = 405
        case headTooLarge = 431
        case versionNotSupported = 505

        public var reason: String {
            switch self {
            case .badRequest: return "Bad Request"
            case .notFound: return "Not Found"
            case .methodNotAllowed: return "Method Not Allowed"
            case .headTooLarge: return "Request Header Fields Too Large"
            case .versionNotSupported: return "HTTP Version Not Supported"
            }
        }
    }

    public static let defaultMaxHeadBytes = 8 * 1024
    public static let maxFields = 64

    public let maxHeadBytes: Int
    private var buffer: [UInt8] = []
    private var done: Verdict?

    public init(maxHeadBytes: Int = Self.defaultMaxHeadBytes) {
        self.maxHeadBytes = maxHeadBytes
    }

    /// Feeds bytes; once a verdict other than needMore is given, it is
    /// given again for any later bytes.
    public mutating func receive(_ bytes: some Sequence<UInt8>) -> Verdict {
        if let done { return done }
        for b in bytes {
            buffer.append(b)
            if let end = headEnd() {
                let verdict = Self.judge(Array(buffer[..<end]))
                done = verdict
                return verdict
            }
            if buffer.count >= maxHeadBytes {
                // A request line this long is not a scrape; a head this long
                // is too large either way.
                let verdict: Verdict = buffer.firstIndex(of: 0x0A) == nil ? .reject(.badRequest) : .reject(.headTooLarge)
                done = verdict
                return verdict
            }
        }
        return .needMore
    }

    /// The head ends at the first empty line: CRLF CRLF, or LF LF from a
    /// lenient client (RFC 9112 §2.2 lets a recipient accept bare LF).
    private func headEnd() -> Int? {
        let n = buffer.count
        guard let last = buffer.last, last == 0x0A else { return nil }
        if n >= 2, buffer[n - 2] == 0x0A { return n - 2 }
        if n >= 3, buffer[n - 2] == 0x0D, buffer[n - 3] == 0x0A { return n - 3 }
        // A head that starts with a bare line end (no request line).
        if n == 1 || (n == 2 && buffer[0] == 0x0D) { return 0 }
        return nil
    }

    static func judge(_ head: [UInt8]) -> Verdict {
        var lines: [ArraySlice<UInt8>] = head.split(separator: 0x0A, omittingEmptySubsequences: false)
        lines = lines.map { $0.last == 0x0D ? $0.dropLast() : $0 }
        guard let requestLine = lines.first, !requestLine.isEmpty else { return .reject(.badRequest) }
        // Printable ASCII only, and no CR left inside a line.
        for line in lines where line.contains(where: { $0 < 0x20 && $0 != 0x09 || $0 >= 0x7F }) {
            return .reject(.badRequest)
        }
        let parts = requestLine.split(separator: 0x20, omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty }) else { return .reject(.badRequest) }
        let method = String(decoding: parts[0], as: UTF8.self)
        let target = String(decoding: parts[1], as: UTF8.self)
        let version = String(decoding: parts[2], as: UTF8.self)
        guard method.utf8.allSatisfy(isTokenByte) else { return .reject(.badRequest) }
        guard version.hasPrefix("HTTP/"), version.utf8.count == 8 else { return .reject(.badRequest) }
        guard version == "HTTP/1.1" || version == "HTTP/1.0" else { return .reject(.versionNotSupported) }
        guard target.hasPrefix("/"), !target.contains(where: { $0 == "\t" }) else { return .reject(.badRequest) }

        let fields = lines.dropFirst()
        guard fields.count <= maxFields else { return .reject(.headTooLarge) }
        var hosts = 0
        for line in fields {
            // No obs-fold, a name of token bytes, a colon right after it.
            guard let colon = line.firstIndex(of: 0x3A), colon > line.startIndex,
                  line[line.startIndex..<colon].allSatisfy(isTokenByte) else { return .reject(.badRequest) }
            let name = String(decoding: line[line.startIndex..<colon], as: UTF8.self).lowercased()
            let value = String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingSpaces()
            switch name {
            case "host": hosts += 1
            case "content-length" where value != "0": return .reject(.badRequest)
            case "transfer-encoding": return .reject(.badRequest)
            default: break
            }
        }
        // HTTP/1.1 requires exactly one Host (RFC 9112 §3.2); 1.0 at most one.
        if hosts > 1 || (version == "HTTP/1.1" && hosts != 1) { return .reject(.badRequest) }

        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? target
        guard path == "/metrics" else { return .reject(.notFound) }
        return method == "GET" ? .metrics : .reject(.methodNotAllowed)
    }

    /// RFC 9110 §5.6.2 tchar.
    static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"):
            return true
        default:
            return Array("!#$%&'*+-.^_`|~".utf8).contains(b)
        }
    }

    /// The whole response for a verdict: status line, the fields a scraper
    /// needs, `Connection: close`, and the body.
    public static func response(_ verdict: Verdict, body: () -> [UInt8]) -> [UInt8] {
        let status: Int, reason: String, payload: [UInt8], type: String
        var extra = ""
        switch verdict {
        case .needMore:
            return []
        case .metrics:
            (status, reason, type) = (200, "OK", "text/plain; version=0.0.4; charset=utf-8")
            payload = body()
        case .reject(let s):
            (status, reason, type) = (s.rawValue, s.reason, "text/plain; charset=utf-8")
            payload = Array("\(s.reason)\n".utf8)
            if s == .methodNotAllowed { extra = "Allow: GET\r\n" }
        }
        let text = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(type)\r\nContent-Length: \(payload.count)\r\n"
            + extra + "Connection: close\r\n\r\n"
        return Array(text.utf8) + payload
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
