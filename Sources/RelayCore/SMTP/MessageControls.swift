// Per-message TLS controls carried in a message's header section: a
// configured tag in the Subject ("[secure]") or a configured escalate header
// ("X-Relayd-Escalate: verify") asks for stronger TLS handling of that one
// message, and RFC 8689's "TLS-Required: No" asks that the automatic TLS
// policies (MTA-STS, DANE, learned status) be relaxed for it. `scan` reads
// them; `strip` takes relayd's own controls out before the message leaves,
// so a recipient sees neither the tag nor the header, and every other byte
// of the message — other fields, their order and folding, the body — goes
// out exactly as it came in. TLS-Required is never stripped: RFC 8689 §5
// has it travel with the message.
//
// Choices, where the header section is ambiguous:
//  - Only the first Subject field is read and rewritten (RFC 5322 allows
//    one; a second is not what a mail client displays first).
//  - The escalate header's value is that of the first such field; strip
//    removes every one of them.
//  - TLS-Required: RFC 8689 §5's ABNF is `"TLS-Required:" [FWS] "No" CRLF`,
//    so blanks (and folds) before "No" are allowed and nothing else: no
//    comment ("No (why)" does not count), no other word ("Nope", "Yes").
//    Blanks after it are allowed too (invisible, and trailing white space is
//    common), and ABNF strings ignore case, so "no" counts. The first
//    TLS-Required field decides, as for the Subject.
//  - A plain Subject (no encoded-words) loses its tags in place: the bytes
//    before and after them stay, including raw 8-bit text; a fold next to a
//    removed tag is unfolded. An encoded Subject is decoded, loses its
//    tags, and is written back with EncodedWords.encode on one logical line
//    (its original folding is not kept). A Subject left empty is written as
//    "Subject: ", never removed.
//
// Cost: one pass over the header section to find the fields, one over the
// Subject to decode it (at most EncodedWords.maxWords words), one to match
// tags; the body is never looked at, only copied by strip.
public struct MessageControlsScan: Equatable, Sendable {
    /// The configured tags found in the Subject (configured spelling, in configuration order, each once).
    public var subjectTags: [String]
    /// The unfolded, trimmed value of the first escalate header field (nil: none, or no header configured).
    public var escalateHeaderValue: String?
    /// RFC 8689 §5: a TLS-Required field whose value is "No" (case-insensitive,
    /// blanks around it allowed, no comments).
    public var tlsRequiredNo: Bool

    public init(subjectTags: [String] = [], escalateHeaderValue: String? = nil, tlsRequiredNo: Bool = false) {
        self.subjectTags = subjectTags
        self.escalateHeaderValue = escalateHeaderValue
        self.tlsRequiredNo = tlsRequiredNo
    }
}

public enum MessageControls {
    public static func scan(_ message: [UInt8], tags: SubjectTagMatcher, escalateHeader: String?) -> MessageControlsScan {
        let fields = HeaderFields.parse(message)
        let escalate = escalateHeader.flatMap(fieldName)
        var result = MessageControlsScan()
        if let subject = fields.first(where: { $0.named(subjectName, in: message) }) {
            let decoded = EncodedWords.decodeBytes(subject.unfoldedValue(message)).bytes
            result.subjectTags = tags.found(decoded).map { tags.tags[$0] }
        }
        if let escalate, let field = fields.first(where: { $0.named(escalate, in: message) }) {
            result.escalateHeaderValue = String(decoding: trimmed(field.unfoldedValue(message)), as: UTF8.self)
        }
        if let field = fields.first(where: { $0.named(tlsRequiredName, in: message) }) {
            result.tlsRequiredNo = trimmed(field.unfoldedValue(message)).map(SubjectTagMatcher.lower) == Array("no".utf8)
        }
        return result
    }

    /// The same message with the matched tags removed from the first Subject
    /// and every escalate-header field removed; all other bytes unchanged.
    /// If nothing matched, the input itself.
    public static func strip(_ message: [UInt8], tags: SubjectTagMatcher, escalateHeader: String?) -> [UInt8] {
        let fields = HeaderFields.parse(message)
        let escalate = escalateHeader.flatMap(fieldName)
        // (bytes replaced, replacement), in message order.
        var edits: [(range: Range<Int>, with: [UInt8])] = []
        var subjectSeen = false
        for field in fields {
            if let escalate, field.named(escalate, in: message) {
                edits.append((field.start..<field.end, []))
            } else if !subjectSeen && field.named(subjectName, in: message) {
                subjectSeen = true
                if let value = strippedSubject(field, message, tags) {
                    edits.append((field.valueStart..<field.valueEnd, value))
                }
            }
        }
        guard !edits.isEmpty else { return message }
        var out: [UInt8] = []
        out.reserveCapacity(message.count)
        var i = 0
        for edit in edits {
            out += message[i..<edit.range.lowerBound]
            out += edit.with
            i = edit.range.upperBound
        }
        out += message[i...]
        return out
    }

    /// The Subject's new value (what follows the colon), or nil if no tag matched.
    static func strippedSubject(_ field: HeaderField, _ m: [UInt8], _ tags: SubjectTagMatcher) -> [UInt8]? {
        let (decoded, encoded) = EncodedWords.decodeBytes(field.unfoldedValue(m))
        if encoded {
            let hits = tags.scan(decoded)
            guard !hits.isEmpty else { return nil }
            let text = trimmed(tags.remove(hits, from: decoded))
            guard !text.isEmpty else { return [32] }
            let value = EncodedWords.encode(String(decoding: text, as: UTF8.self), fieldNameLength: field.nameEnd - field.start)
            return [32] + Array(value.utf8)
        }
        // Plain: edit the raw value, folds and 8-bit bytes included.
        let raw = m[field.valueStart..<field.valueEnd]
        let lead = raw.prefix(while: EncodedWords.isBlank).count
        let rest = Array(raw.dropFirst(lead))
        let hits = tags.scan(rest)
        guard !hits.isEmpty else { return nil }
        let kept = tags.remove(hits, from: rest)
        guard !kept.isEmpty else { return [32] }
        let unfolded = HeaderFields.unfold(kept[...])
        if EncodedWords.decodeBytes(unfolded).decodedAny {
            // Taking the tag out made literal text a valid encoded-word
            // ("=?UTF-8?B?QUJD+[secure]+QUJD?="): encode it, so it still
            // reads as the text it was.
            let text = String(decoding: trimmed(unfolded), as: UTF8.self)
            return [32] + Array(EncodedWords.encode(text, fieldNameLength: field.nameEnd - field.start).utf8)
        }
        return Array(raw.prefix(lead)) + kept
    }

    static let subjectName = Array("subject".utf8)
    static let tlsRequiredName = Array("tls-required".utf8)

    /// A configured header name as a field name to compare with (lower
    /// case; blanks and a trailing colon dropped), or nil if it cannot be one.
    static func fieldName(_ configured: String) -> [UInt8]? {
        var name = Array(configured.utf8)
        while let c = name.last, c == 32 || c == 9 || c == 58 { name.removeLast() }
        while let c = name.first, c == 32 || c == 9 { name.removeFirst() }
        guard !name.isEmpty, name.allSatisfy({ $0 >= 33 && $0 <= 126 && $0 != 58 }) else { return nil }
        return name.map(SubjectTagMatcher.lower)
    }

    static func trimmed(_ bytes: [UInt8]) -> [UInt8] {
        guard let first = bytes.firstIndex(where: { !EncodedWords.isBlank($0) }),
              let last = bytes.lastIndex(where: { !EncodedWords.isBlank($0) }) else { return [] }
        return Array(bytes[first...last])
    }
}
