// TOMLKit gives values but not where they came from. Operators need "line
// 12, key tls.certificate", so this scanner maps every key path of a TOML
// document to the line it is written on. It understands tables, arrays of
// tables, dotted and quoted keys, and skips the bodies of multi-line strings
// and arrays; it never judges validity (TOMLKit already did).
struct TOMLKeyLocator {
    private var lines: [String: Int] = [:]

    init(source: String) {
        var table: [String] = []
        var arrayCounts: [String: Int] = [:]
        var inMultiline: String?     // the closing delimiter we wait for
        var bracketDepth = 0         // open [ of a multi-line array value
        var lineNumber = 0

        for raw in source.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = Substring(raw)
            if let delim = inMultiline {
                guard let r = line.range(of: delim) else { continue }
                inMultiline = nil
                line = line[r.upperBound...]
                bracketDepth += Self.bracketDelta(line)
                continue
            }
            if bracketDepth > 0 {
                bracketDepth += Self.bracketDelta(line)
                continue
            }
            let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }

            if trimmed.hasPrefix("[[") {
                guard let end = trimmed.range(of: "]]") else { continue }
                let name = Self.splitKey(trimmed[trimmed.index(trimmed.startIndex, offsetBy: 2)..<end.lowerBound])
                let joined = name.joined(separator: ".")
                let index = arrayCounts[joined, default: 0]
                arrayCounts[joined] = index + 1
                table = name.dropLast() + ["\(name.last ?? "")[\(index)]"]
                lines[Self.join(table)] = lineNumber
                continue
            }
            if trimmed.hasPrefix("[") {
                guard let end = trimmed.firstIndex(of: "]") else { continue }
                table = Self.splitKey(trimmed[trimmed.index(after: trimmed.startIndex)..<end])
                lines[Self.join(table)] = lineNumber
                continue
            }
            guard let eq = Self.firstUnquoted("=", in: trimmed) else { continue }
            let key = Self.splitKey(trimmed[..<eq])
            let path = Self.join(table + key)
            if lines[path] == nil { lines[path] = lineNumber }
            let value = trimmed[trimmed.index(after: eq)...].drop(while: { $0 == " " || $0 == "\t" })
            for delim in ["\"\"\"", "'''"] where value.hasPrefix(delim) {
                let rest = value.dropFirst(3)
                if rest.range(of: delim) == nil { inMultiline = delim }
            }
            if inMultiline == nil, value.hasPrefix("[") {
                bracketDepth = max(0, Self.bracketDelta(value))
            }
        }
    }

    /// The line of `path` ("tls.certificate", "listener[1].kind"), or of the
    /// nearest enclosing key or table that is written down.
    func line(for path: String) -> Int? {
        var p = path
        while true {
            if let l = lines[p] { return l }
            guard let dot = Self.lastSeparator(in: p) else { return nil }
            p = String(p[..<dot])
        }
    }

    static func join(_ parts: [String]) -> String {
        parts.map { $0.contains(".") && !$0.hasSuffix("]") ? "\"\($0)\"" : $0 }.joined(separator: ".")
    }

    /// Where the parent of a path ends: the last unquoted "." or, for
    /// "listener[1]", the "[" (so the array's own line is the fallback).
    private static func lastSeparator(in path: String) -> String.Index? {
        var inQuote = false
        var lastDot: String.Index?
        var lastBracket: String.Index?
        var i = path.startIndex
        while i < path.endIndex {
            switch path[i] {
            case "\"": inQuote.toggle()
            case "." where !inQuote: lastDot = i
            case "[" where !inQuote && i != path.startIndex: lastBracket = i
            default: break
            }
            i = path.index(after: i)
        }
        switch (lastDot, lastBracket) {
        case let (d?, b?): return max(d, b)
        case let (d?, nil): return d
        case let (nil, b?): return b
        default: return nil
        }
    }

    private static func splitKey(_ text: Substring) -> [String] {
        var parts: [String] = []
        var current = ""
        var quote: Character?
        for c in text {
            if let q = quote {
                if c == q { quote = nil } else { current.append(c) }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "." {
                parts.append(current.trimmingSpaces)
                current = ""
            } else {
                current.append(c)
            }
        }
        parts.append(current.trimmingSpaces)
        return parts
    }

    private static func firstUnquoted(_ target: Character, in text: Substring) -> Substring.Index? {
        var quote: Character?
        var i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            if let q = quote { if c == q { quote = nil } } else if c == "\"" || c == "'" { quote = c } else if c == target { return i }
            i = text.index(after: i)
        }
        return nil
    }

    /// Net count of [ minus ] outside strings and comments.
    private static func bracketDelta(_ text: Substring) -> Int {
        var depth = 0
        var quote: Character?
        for c in text {
            if let q = quote { if c == q { quote = nil }; continue }
            switch c {
            case "\"", "'": quote = c
            case "#": return depth
            case "[": depth += 1
            case "]": depth -= 1
            default: break
            }
        }
        return depth
    }
}
