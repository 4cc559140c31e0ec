// Fails if anyone builds SQL from strings. Scans every Swift file under
// Sources/ for (1) libpq calls that send SQL anywhere but PGConnection, or
// with a text not from a StaticString; (2) string literals that read as
// SQL (they start with SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP,
// WITH, BEGIN…) and hold an interpolation `\(`, or are joined with `+`.
// The scanner checks itself on planted offenders first.
import Foundation
import Testing

/// One string literal of a Swift file: its text (interpolations kept as
/// written) and what stands right before and after it.
struct SwiftLiteral {
    let text: String
    let line: Int
    let before: String
    let after: String
}

enum SQLSourceScan {
    static let keywords = ["SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP", "WITH", "TRUNCATE",
                           "GRANT", "COPY", "MERGE", "UPSERT"]
    /// libpq functions that take SQL text.
    static let sending = ["PQexec", "PQexecParams", "PQsendQuery", "PQsendQueryParams", "PQprepare", "PQsendPrepare",
                          "PQdescribePrepared"]

    static func literals(in source: String) -> [SwiftLiteral] {
        let s = Array(source.unicodeScalars)
        var out: [SwiftLiteral] = []
        var i = 0, line = 1
        func at(_ k: Int, _ text: String) -> Bool {
            let t = Array(text.unicodeScalars)
            return k + t.count <= s.count && Array(s[k..<k + t.count]) == t
        }
        func context(_ from: Int, _ to: Int) -> String {
            String(String.UnicodeScalarView(s[max(0, from)..<min(s.count, max(0, to))]))
        }
        /// Reads a literal opening at `k` (after any #s); returns its end.
        func read(_ k: Int, hashes: Int) -> Int {
            let multi = at(k, "\"\"\"")
            let close = (multi ? "\"\"\"" : "\"") + String(repeating: "#", count: hashes)
            var j = k + (multi ? 3 : 1)
            let start = j, startLine = line
            let escape = "\\" + String(repeating: "#", count: hashes)
            while j < s.count {
                if at(j, escape) {
                    j += escape.unicodeScalars.count
                    if j < s.count, s[j] == "(" {  // an interpolation: skip to its closing parenthesis
                        var depth = 1
                        j += 1
                        while j < s.count, depth > 0 {
                            if s[j] == "(" { depth += 1 } else if s[j] == ")" { depth -= 1 } else if s[j] == "\"" {
                                j += 1
                                while j < s.count, s[j] != "\"" { if s[j] == "\\" { j += 1 }; j += 1 }
                            }
                            j += 1
                        }
                    } else { j += 1 }
                    continue
                }
                if s[j] == "\n" { line += 1 }
                if at(j, close) {
                    out.append(SwiftLiteral(text: context(start, j), line: startLine, before: context(k - hashes - 12, k - hashes),
                                            after: context(j + close.unicodeScalars.count, j + close.unicodeScalars.count + 12)))
                    return j + close.unicodeScalars.count
                }
                j += 1
            }
            return j
        }
        while i < s.count {
            if at(i, "//") { while i < s.count, s[i] != "\n" { i += 1 }; continue }
            if at(i, "/*") {
                i += 2
                while i < s.count, !at(i, "*/") { if s[i] == "\n" { line += 1 }; i += 1 }
                i += 2
                continue
            }
            if s[i] == "\n" { line += 1; i += 1; continue }
            if s[i] == "#" {
                var h = i
                while h < s.count, s[h] == "#" { h += 1 }
                if h < s.count, s[h] == "\"" { i = read(h, hashes: h - i); continue }
            }
            if s[i] == "\"" { i = read(i, hashes: 0); continue }
            i += 1
        }
        return out
    }

    /// An uppercase keyword first (relayd's SQL convention), or SQL shape
    /// in any case ("select … from", "insert into", "delete from", …), so
    /// prose such as "select a relay" or "delete \(id)" is not SQL.
    static func looksLikeSQL(_ text: String) -> Bool {
        let body = String(text.drop(while: { $0.isWhitespace }))
        let head = body.prefix(9)
        if keywords.contains(where: { head.hasPrefix($0 + " ") || head.hasPrefix($0 + "\n") || head == $0 }) { return true }
        let shape = #"^(select\b[\s\S]*\bfrom\b|insert\s+into\b|delete\s+from\b|update\s+\S+\s+set\b|create\s+(table|index|sequence|function|domain|trigger|view)\b|drop\s+(table|index)\b|alter\s+table\b|truncate\b)"#
        return body.range(of: shape, options: [.regularExpression, .caseInsensitive]) != nil
    }

    /// Problems in one file's text.
    static func problems(file: String, source: String) -> [String] {
        var found: [String] = []
        for l in literals(in: source) where looksLikeSQL(l.text) {
            if l.text.contains("\\(") || l.text.contains("\\#(") {
                found.append("\(file):\(l.line): SQL built by interpolation: \(l.text.prefix(60))")
            }
            let after = l.after.drop(while: { $0 == " " || $0 == "\n" })
            let before = l.before.reversed().drop(while: { $0 == " " || $0 == "\n" })
            if after.hasPrefix("+") || before.first == "+" || after.hasPrefix(".appending") {
                found.append("\(file):\(l.line): SQL built by concatenation: \(l.text.prefix(60))")
            }
        }
        let lines = source.split(separator: "\n", omittingEmptySubsequences: false)
        for (n, text) in lines.enumerated() {
            let code = text.split(separator: "//", maxSplits: 1).first.map(String.init) ?? ""
            for f in sending where code.range(of: "\(f)(") != nil {
                // Whole-word match: PQsendQuery( is not PQsendQueryParams(.
                let hits = code.components(separatedBy: "\(f)(").count - 1
                guard hits > 0, code.range(of: "[A-Za-z_]\(f)\\(", options: .regularExpression) == nil else { continue }
                let where_ = "\(file):\(n + 1)"
                guard file.hasSuffix("RelayCore/Postgres/PGConnection.swift") else {
                    found.append("\(where_): \(f) outside PGConnection"); continue
                }
                switch f {
                case "PQsendQueryParams":
                    if !code.contains("PQsendQueryParams(conn, text,") { found.append("\(where_): PQsendQueryParams with a text not from a StaticString") }
                case "PQsendQuery":
                    if !(code.contains("PQsendQuery(conn, text)") && text.contains("sql-scan: migration script")) {
                        found.append("\(where_): PQsendQuery other than the migration script")
                    }
                default:
                    found.append("\(where_): \(f) is not used by relayd")
                }
            }
        }
        return found
    }
}

@Suite struct SQLSourceScanTests {
    static let sources: URL = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.appendingPathComponent("Sources")
    }()

    @Test func theScannerFindsPlantedOffenders() {
        let planted = ##"""
        let a = "SELECT * FROM t WHERE d = '\(domain)'"
        let b = "DELETE FROM t WHERE d = '" + domain + "'"
        let c = """
            INSERT INTO t VALUES ('\(x)')
            """
        let d = #"UPDATE t SET v = '\#(v)'"#
        let fine = "SELECT v FROM t WHERE d = $1"
        let prose = "select a relay: \(name)"
        let lower = "select v from t where d = '\(d)'"
        PQexec(conn, text)
        """##
        let p = SQLSourceScan.problems(file: "Sources/X.swift", source: planted)
        #expect(p.filter { $0.contains("interpolation") }.count == 4, "\(p)")
        #expect(p.filter { $0.contains("concatenation") }.count == 1, "\(p)")
        #expect(p.filter { $0.contains("PQexec outside") }.count == 1, "\(p)")
        #expect(p.count == 6, "\(p)")
    }

    @Test func noSwiftFileInSourcesBuildsSQLFromStrings() throws {
        let files = FileManager.default.enumerator(at: Self.sources, includingPropertiesForKeys: nil)!
            .compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" }
        #expect(files.count > 50)
        var problems: [String] = []
        var libpqCalls = 0
        for url in files {
            let text = try String(contentsOf: url, encoding: .utf8)
            problems += SQLSourceScan.problems(file: url.path, source: text)
            if url.path.hasSuffix("PGConnection.swift") {
                libpqCalls = text.components(separatedBy: "PQsendQueryParams(conn, text,").count - 1
                    + text.components(separatedBy: "PQsendQuery(conn, text)").count - 1
            }
        }
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        // The two sending calls exist (the scan is looking at the right code).
        #expect(libpqCalls == 2)
        // Every public entry point that takes SQL takes a StaticString.
        for url in files where url.path.contains("RelayCore/Postgres/") {
            let text = try String(contentsOf: url, encoding: .utf8)
            for line in text.split(separator: "\n") where line.contains("func ") && line.contains("sql:") {
                #expect(line.contains("sql: StaticString"), "\(url.lastPathComponent): \(line)")
            }
        }
    }
}
