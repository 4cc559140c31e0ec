// One log line per event, logfmt style (`key=value`, values quoted only
// when they must be), on stderr so journald keeps it under systemd. Under
// systemd (JOURNAL_STREAM set) the timestamp is left to the journal.
//
// Log/ may import only swift-log and the C library.
import Logging
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct LogfmtHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    public let label: String
    private let timestamps: Bool
    private let sink: @Sendable (String) -> Void

    public init(label: String, level: Logger.Level, timestamps: Bool? = nil,
                sink: @escaping @Sendable (String) -> Void = LogfmtHandler.writeToStderr) {
        self.label = label
        self.logLevel = level
        self.timestamps = timestamps ?? (getenv("JOURNAL_STREAM") == nil)
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var out = ""
        if timestamps { out += "ts=\(Self.timestamp()) " }
        out += "level=\(event.level.rawValue) msg=\(Self.quote(event.message.description))"
        var merged = metadata
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        if let error = event.error { merged["error"] = .string("\(error)") }
        for key in merged.keys.sorted() {
            out += " \(key)=\(Self.quote(Self.render(merged[key]!)))"
        }
        sink(out + "\n")
    }

    static func render(_ value: Logger.MetadataValue) -> String {
        switch value {
        case .string(let s): return s
        case .stringConvertible(let c): return c.description
        case .array(let a): return a.map(render).joined(separator: ",")
        case .dictionary(let d): return d.keys.sorted().map { "\($0):\(render(d[$0]!))" }.joined(separator: ",")
        }
    }

    /// Quotes a value that is empty or holds a space, quote, '=' or a control
    /// character; control characters are escaped so a hostile EHLO name can
    /// never forge a second log line.
    static func quote(_ s: String) -> String {
        let needsQuotes = s.isEmpty || s.unicodeScalars.contains { $0 == " " || $0 == "\"" || $0 == "=" || $0.value < 0x20 || $0.value == 0x7f }
        guard needsQuotes else { return s }
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7f {
                    out += "\\x" + String(scalar.value, radix: 16)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        let ms = Int(ts.tv_nsec / 1_000_000)
        func pad(_ v: Int32, _ n: Int) -> String { let s = String(v); return String(repeating: "0", count: max(0, n - s.count)) + s }
        return "\(pad(tmv.tm_year + 1900, 4))-\(pad(tmv.tm_mon + 1, 2))-\(pad(tmv.tm_mday, 2))T\(pad(tmv.tm_hour, 2)):\(pad(tmv.tm_min, 2)):\(pad(tmv.tm_sec, 2)).\(pad(Int32(ms), 3))Z"
    }

    /// One write(2) per line: lines from different queues never interleave.
    public static let writeToStderr: @Sendable (String) -> Void = { line in
        var bytes = Array(line.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
            if n <= 0 { if errno == EINTR { continue }; return }
            offset += n
        }
    }
}
