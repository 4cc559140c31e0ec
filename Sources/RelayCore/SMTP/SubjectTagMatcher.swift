// The Subject tags of per-message TLS escalation: a user who cannot set a
// header types "[secure]" into the Subject, relayd sees it, raises the TLS
// handling of that one message, and takes the tag out before the message
// leaves (MessageControls).
//
// A tag counts only as a whole bracketed token, so that it is found where a
// user would put it and nowhere else: the character before it is the
// start of the text or neither a letter nor a digit, and so is the one
// after it ("Re:[secure]", "([secure])" count; "x[secure]y", "[secure]d"
// do not). Letters and digits are Unicode's (alphabetic, or with a numeric
// value), so "é[secure]" does not count either; a byte that is not valid
// UTF-8 is neither. Case is ignored for ASCII letters only: tags are
// configuration, and full Unicode case folding is not worth its tables here.
//
// Matching runs on UTF-8 bytes, so a Subject sent as raw 8-bit text is
// matched and rewritten without ever being re-encoded. The text is read
// once from left to right; at each "[" every tag is tried, first configured
// first, so the work is linear in the text for a fixed configuration.
public struct SubjectTagMatcher: Sendable {
    /// The tags as configured (bracketed), each once, in configuration order.
    public let tags: [String]
    /// Each tag's UTF-8, ASCII letters lower-cased.
    let patterns: [[UInt8]]

    /// `tags` as configured, e.g. ["[secure]", "[encrypt]"]; a tag given
    /// without brackets gets them ("secure" is "[secure]"). Blanks around a
    /// tag are dropped, and so are empty tags and repeats (ignoring case).
    public init(tags: [String]) {
        var kept: [String] = []
        var patterns: [[UInt8]] = []
        for tag in tags {
            var t = Substring(tag)
            while let c = t.first, c == " " || c == "\t" { t.removeFirst() }
            while let c = t.last, c == " " || c == "\t" { t.removeLast() }
            if !(t.count >= 2 && t.hasPrefix("[") && t.hasSuffix("]")) {
                while t.first == "[" { t.removeFirst() }
                while t.last == "]" { t.removeLast() }
                t = "[" + t + "]"
            }
            let bracketed = String(t)
            let pattern = bracketed.utf8.map(SubjectTagMatcher.lower)
            // Nothing between the brackets, or a line break: a tag that
            // could not be typed into a Subject.
            guard pattern.count > 2, !pattern.contains(where: { $0 == 13 || $0 == 10 }),
                  !patterns.contains(pattern) else { continue }
            kept.append(bracketed)
            patterns.append(pattern)
        }
        self.tags = kept
        self.patterns = patterns
    }

    /// Tags found in an unstructured Subject value (already RFC 2047-decoded
    /// text): configured spelling, configuration order, each once.
    public func matches(in subject: String) -> [String] {
        found(Array(subject.utf8)).map { tags[$0] }
    }

    /// The subject with every matched tag removed and the white space around
    /// each collapsed to one space, or to none at either end of the text
    /// ("[secure] Lab results" → "Lab results", "Lab [SECURE] results" →
    /// "Lab results", "Re: [secure]" → "Re:"). Unchanged when no tag matched.
    public func removing(from subject: String) -> String {
        let bytes = Array(subject.utf8)
        let hits = scan(bytes)
        guard !hits.isEmpty else { return subject }
        return String(decoding: remove(hits, from: bytes), as: UTF8.self)
    }

    // MARK: - Bytes

    /// Indices of the tags found in `text`, in configuration order.
    func found(_ text: [UInt8]) -> [Int] {
        var seen = [Bool](repeating: false, count: patterns.count)
        for hit in scan(text) { seen[hit.tag] = true }
        return seen.indices.filter { seen[$0] }
    }

    /// Every tag occurrence, left to right, none overlapping.
    func scan(_ text: [UInt8]) -> [(range: Range<Int>, tag: Int)] {
        guard !patterns.isEmpty else { return [] }
        var hits: [(range: Range<Int>, tag: Int)] = []
        var i = 0
        while i < text.count {
            guard text[i] == UInt8(ascii: "[") else { i += 1; continue }
            var matched: (range: Range<Int>, tag: Int)?
            for (t, p) in patterns.enumerated() where i + p.count <= text.count {
                var k = 0
                while k < p.count, SubjectTagMatcher.lower(text[i + k]) == p[k] { k += 1 }
                guard k == p.count else { continue }
                let end = i + p.count
                if !SubjectTagMatcher.wordCharacter(before: i, in: text) && !SubjectTagMatcher.wordCharacter(at: end, in: text) {
                    matched = (i..<end, t)
                    break
                }
            }
            if let m = matched {
                hits.append(m)
                i = m.range.upperBound
            } else {
                i += 1
            }
        }
        return hits
    }

    /// `text` without the `hits`; the blanks (SP, HT, CR, LF) on both sides
    /// of a removed tag become one space between text, nothing at an end.
    /// Folds elsewhere are kept; a fold next to a tag is unfolded.
    func remove(_ hits: [(range: Range<Int>, tag: Int)], from text: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.count)
        var i = 0
        for hit in hits {
            out += text[i..<hit.range.lowerBound]
            var hadBlank = false
            while let last = out.last, EncodedWords.isBlank(last) { out.removeLast(); hadBlank = true }
            i = hit.range.upperBound
            while i < text.count, EncodedWords.isBlank(text[i]) { i += 1; hadBlank = true }
            if hadBlank && !out.isEmpty && i < text.count { out.append(32) }
        }
        out += text[i...]
        return out
    }

    static func lower(_ b: UInt8) -> UInt8 { b >= 65 && b <= 90 ? b | 0x20 : b }

    /// Whether the character that ends just before `index` is a letter or digit.
    static func wordCharacter(before index: Int, in text: [UInt8]) -> Bool {
        guard index > 0 else { return false }
        var start = index - 1
        // Back over at most three UTF-8 continuation bytes to the lead byte.
        while start > 0, index - start < 4, text[start] & 0xC0 == 0x80 { start -= 1 }
        return isWordScalar(text[start..<index], wholly: true)
    }

    /// Whether the character that starts at `index` is a letter or digit.
    static func wordCharacter(at index: Int, in text: [UInt8]) -> Bool {
        guard index < text.count else { return false }
        return isWordScalar(text[index..<min(text.count, index + 4)], wholly: false)
    }

    /// Decodes one scalar from the front of `bytes` (all of them if
    /// `wholly`); not valid UTF-8 is not a letter or digit.
    static func isWordScalar(_ bytes: ArraySlice<UInt8>, wholly: Bool) -> Bool {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        guard case .scalarValue(let s) = decoder.decode(&iterator) else { return false }
        if wholly && s.utf8.count != bytes.count { return false }
        return s.properties.isAlphabetic || s.properties.numericType != nil
    }
}
