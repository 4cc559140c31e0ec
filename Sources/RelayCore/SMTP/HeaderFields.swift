// The fields of a message's header section as byte offsets, for code that
// must read a few fields and rewrite or drop some while every other byte
// of the message stays as it was (MessageControls). The section is read as
// HopCount reads it: lines end at LF (a CR before it is not content, a bare
// LF still ends a line), and it ends at the first empty line or at the
// first line that is neither a field nor a continuation of one; a message
// with neither is all header. A continuation line (starting with SP or HT)
// belongs to the field before it. One pass, linear in the section.
struct HeaderField {
    /// The field name's first byte.
    var start: Int
    /// Just past the field name.
    var nameEnd: Int
    /// Just past the colon.
    var valueStart: Int
    /// The end of the last line's content (before its CR LF).
    var valueEnd: Int
    /// Just past the last line's LF (the message's end if it has none).
    var end: Int

    /// The field name equals `lowercased` (ASCII, lower case), ignoring case.
    func named(_ lowercased: [UInt8], in m: [UInt8]) -> Bool {
        guard nameEnd - start == lowercased.count else { return false }
        for k in 0..<lowercased.count where SubjectTagMatcher.lower(m[start + k]) != lowercased[k] { return false }
        return true
    }

    /// The value unfolded (RFC 5322 §2.2.3: the CRs and LFs of its folds
    /// removed, the blanks after them kept).
    func unfoldedValue(_ m: [UInt8]) -> [UInt8] {
        HeaderFields.unfold(m[valueStart..<valueEnd])
    }
}

enum HeaderFields {
    /// `value` without its line breaks: every LF, and a CR right before
    /// one. A bare CR elsewhere is content, as it was to the line split.
    static func unfold(_ value: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(value.count)
        var i = value.startIndex
        while i < value.endIndex {
            let b = value[i]
            if b == 13 && i + 1 < value.endIndex && value[i + 1] == 10 {
                i += 2
                continue
            }
            if b != 10 { out.append(b) }
            i += 1
        }
        return out
    }

    static func parse(_ m: [UInt8]) -> [HeaderField] {
        var fields: [HeaderField] = []
        var start = 0
        while start < m.count {
            let lf = m[start...].firstIndex(of: 10) ?? m.count
            let next = lf < m.count ? lf + 1 : m.count
            var end = lf
            if end > start && m[end - 1] == 13 { end -= 1 }
            if end == start { break }  // the empty line that ends the header
            let first = m[start]
            if first == 32 || first == 9 {
                guard !fields.isEmpty else { break }
                fields[fields.count - 1].valueEnd = end
                fields[fields.count - 1].end = next
            } else {
                guard let nameEnd = HopCount.fieldNameEnd(m, start, end) else { break }
                var colon = nameEnd
                while m[colon] != 58 { colon += 1 }
                fields.append(HeaderField(start: start, nameEnd: nameEnd, valueStart: colon + 1, valueEnd: end, end: next))
            }
            start = next
        }
        return fields
    }
}
