// Reads SMTP replies from a server (RFC 5321 §4.2): "250-..." continuation
// lines up to "250 ...", one code for the whole reply. The server is
// untrusted: lines are length-capped, replies line-capped, and anything not
// shaped like a reply is a protocol error rather than a guess.
public struct ReplyParser: Sendable {
    public enum Failure: Error, Equatable, Sendable {
        case lineTooLong
        case tooManyLines
        case malformed(String)
    }

    static let maxLineLength = 4096
    static let maxLines = 200

    private var buffer: [UInt8] = []
    private var lines: [String] = []
    private var code: Int?

    public init() {}

    /// Bytes appended but not yet read as part of a reply.
    public var bufferedByteCount: Int { buffer.count }

    /// Adds bytes; returns every reply they complete, in order.
    public mutating func feed(_ bytes: [UInt8]) throws -> [Reply] {
        append(bytes)
        var replies: [Reply] = []
        while let reply = try next() { replies.append(reply) }
        return replies
    }

    /// Adds bytes without parsing them yet.
    public mutating func append(_ bytes: [UInt8]) {
        buffer.append(contentsOf: bytes)
    }

    /// The next complete reply in what was appended, if any. Parsing one
    /// reply at a time lets the caller stop (at STARTTLS) before bytes
    /// that must not be read as SMTP at all.
    public mutating func next() throws -> Reply? {
        while let lf = buffer.firstIndex(of: 10) {
            var line = Array(buffer[..<lf])
            buffer.removeFirst(lf + 1)
            if line.last == 13 { line.removeLast() }
            guard line.count <= Self.maxLineLength else { throw Failure.lineTooLong }
            if let reply = try takeLine(line) { return reply }
        }
        if buffer.count > Self.maxLineLength { throw Failure.lineTooLong }
        return nil
    }

    private mutating func takeLine(_ line: [UInt8]) throws -> Reply? {
        guard line.count >= 3, line[0...2].allSatisfy({ $0 >= 48 && $0 <= 57 }),
              (2...5).contains(line[0] - 48), line[1] - 48 <= 5 else {
            throw Failure.malformed(String(decoding: line.prefix(40), as: UTF8.self))
        }
        let c = Int(line[0] - 48) * 100 + Int(line[1] - 48) * 10 + Int(line[2] - 48)
        let separator: UInt8 = line.count > 3 ? line[3] : 32
        guard separator == 32 || separator == 45 else { throw Failure.malformed("bad separator") }
        if let code, code != c { throw Failure.malformed("code changed inside a multi-line reply") }
        code = c
        let text = line.count > 4 ? String(decoding: line[4...], as: UTF8.self) : ""
        guard !text.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\t" }) else {
            throw Failure.malformed("control character in reply")
        }
        lines.append(text)
        guard lines.count <= Self.maxLines else { throw Failure.tooManyLines }
        guard separator == 32 else { return nil }
        defer { lines = []; code = nil }
        // Split an enhanced status code off the first line when present.
        var enhanced: String?
        var texts = lines
        if let first = texts.first, let space = first.firstIndex(of: " ") ?? (first.isEmpty ? nil : first.endIndex) {
            let candidate = String(first[..<space])
            if Self.isEnhancedCode(candidate, class: c / 100) {
                enhanced = candidate
                texts = texts.map { line in
                    line.hasPrefix(candidate) ? String(line.dropFirst(candidate.count)).trimmingSpaces : line
                }
            }
        }
        return Reply(c, enhanced, texts)
    }

    static func isEnhancedCode(_ s: String, class cls: Int) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == Substring(String(cls)),
              parts[1].count <= 3, parts[2].count <= 3, !parts[1].isEmpty, !parts[2].isEmpty else { return false }
        // ASCII digits only: Character.isNumber also takes "٣" and "½", and
        // the code is copied into DSN Status fields.
        return parts.dropFirst().allSatisfy { $0.utf8.allSatisfy { $0 >= 48 && $0 <= 57 } }
    }
}
