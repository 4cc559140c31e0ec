// Small text helpers shared by the parsers (stdlib only).
extension String {
    /// Without leading and trailing spaces and tabs (not other whitespace:
    /// SMTP and TOML both mean exactly these two).
    package var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
