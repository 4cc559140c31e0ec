// libFuzzer target for the per-message TLS controls (MessageControls,
// SubjectTagMatcher, EncodedWords; built by scripts/fuzz.sh with the rest
// of SMTP and Model): a header section a hostile sender wrote. The first
// byte picks the check; the rest is the input. Invariants:
//  - scan and strip never crash (bare LF, NUL, invalid UTF-8, broken or
//    unterminated encoded-words);
//  - strip changes nothing when scan found neither a tag nor the escalate
//    header, and never touches the bytes after the header section;
//  - after strip, scan finds no escalate header and no tag (the tags have
//    letters inside their brackets, so removing one cannot join two
//    pieces into a new one), and strip again changes nothing;
//  - EncodedWords.encode of any text decodes back to that text, its lines
//    stay within 78 characters, and its only CR and LF are the folds.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMessageControls(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 1 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let input = Array(bytes.dropFirst())
    if bytes[0] % 4 == 3 { checkEncode(input) } else { checkControls(input) }
    return 0
}

private let matcher = SubjectTagMatcher(tags: ["[secure]", "encrypt"])
private let escalate = "X-Relayd-Escalate"

func checkControls(_ m: [UInt8]) {
    let found = MessageControls.scan(m, tags: matcher, escalateHeader: escalate)
    let out = MessageControls.strip(m, tags: matcher, escalateHeader: escalate)
    if found.subjectTags.isEmpty && found.escalateHeaderValue == nil {
        precondition(out == m, "strip changed a message with nothing to strip")
    }
    let tail = m[(HeaderFields.parse(m).last?.end ?? 0)...]
    precondition(out.count >= tail.count && out[(out.count - tail.count)...].elementsEqual(tail),
                 "strip changed the body")
    let after = MessageControls.scan(out, tags: matcher, escalateHeader: escalate)
    precondition(after.escalateHeaderValue == nil, "escalate header left")
    precondition(after.subjectTags.isEmpty, "tag left: \(after.subjectTags)")
    precondition(after.tlsRequiredNo == found.tlsRequiredNo, "TLS-Required changed")
    precondition(MessageControls.strip(out, tags: matcher, escalateHeader: escalate) == out, "strip not idempotent")
}

func checkEncode(_ input: [UInt8]) {
    let text = String(decoding: input, as: UTF8.self)
    let encoded = EncodedWords.encode(text, fieldNameLength: 7)
    precondition(EncodedWords.decode(encoded) == text, "encode does not read back")
    let lines = encoded.utf8.split(separator: 10, omittingEmptySubsequences: false)
    for (n, line) in lines.enumerated() {
        var l = Array(line)
        if n < lines.count - 1 {
            precondition(l.last == 13, "bare LF")
            l.removeLast()
        }
        if n > 0 { precondition(l.first == 32, "fold without a space") }
        precondition(!l.contains(13), "bare CR")
        if encoded != text { precondition(l.count + (n == 0 ? 9 : 0) <= 78, "line too long") }
    }
}
