// An SMTP reply (RFC 5321 §4.2) with its enhanced status code (RFC 2034,
// RFC 3463). SMTP/ is stdlib-only and does no I/O.
public struct Reply: Equatable, Sendable, CustomStringConvertible {
    public let code: Int
    /// "2.0.0" style; nil for replies that carry none (220 greeting, 354).
    public let enhanced: String?
    public let lines: [String]

    public init(_ code: Int, _ enhanced: String?, _ lines: [String]) {
        self.code = code
        self.enhanced = enhanced
        self.lines = lines.isEmpty ? [""] : lines
    }

    public init(_ code: Int, _ enhanced: String?, _ text: String) {
        self.init(code, enhanced, [text])
    }

    public var isPermanent: Bool { code >= 500 }

    /// Wire form: "250-first\r\n250 last\r\n"; the enhanced code on every
    /// line as RFC 2034 asks.
    public var wire: [UInt8] {
        var out: [UInt8] = []
        for (i, line) in lines.enumerated() {
            let sep = i == lines.count - 1 ? " " : "-"
            var text = "\(code)\(sep)"
            if let enhanced { text += enhanced + (line.isEmpty ? "" : " ") }
            text += line
            out.append(contentsOf: text.utf8)
            out.append(13); out.append(10)
        }
        return out
    }

    public var description: String {
        let e = enhanced.map { " \($0)" } ?? ""
        return "\(code)\(e) \(lines.joined(separator: " / "))"
    }
}
