// The `_mta-sts.<domain>` TXT record (RFC 8461 §3.1): which of the TXT
// records at the name announces MTA-STS, and the policy id it carries.
//
//   sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
//   sts-field       = sts-id / sts-extension        ; sts-id is required
//   sts-field-delim = *WSP ";" *WSP
//   sts-version     = %s"v=STSv1"
//   sts-id          = %s"id=" 1*32(ALPHA / DIGIT)
//   sts-extension   = sts-ext-name "=" sts-ext-value
//   sts-ext-name    = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
//   sts-ext-value   = 1*(%x21-3A / %x3C / %x3E-7E)  ; no "=", ";", SP, CTLs
//
// What was decided, and why:
//  - Selection follows the order of §3.1: first discard every record that
//    does not begin with "v=STSv1", then count. Not exactly one left → no
//    record (.noRecord / .multipleRecords), counted BEFORE validity: a
//    broken second STS record leaves the domain without a policy rather
//    than being skipped ("If the number of resulting records is not one, or
//    if the resulting record is syntactically invalid, senders MUST
//    assume ... no available MTA-STS Policy").
//  - "Begins with v=STSv1" means the exact bytes (%s: case-sensitive)
//    followed by the end, ";" or WSP. So "v=STSv10; …" (another version),
//    "V=STSv1", " v=STSv1" and the quoted zone-file form are not STS
//    records and are not counted.
//  - Erratum 6285 (reported, not verified) would make the delimiter
//    ";" *WSP, to agree with the prose "records that do not begin with
//    'v=STSv1;'". Not applied: the published ABNF allows "v=STSv1 ; id=…",
//    the erratum is unverified, and accepting it cannot weaken anything
//    (the record carries only an id).
//  - The strings of one record are concatenated without spaces (§3.1),
//    wherever the publisher split them.
//  - The ABNF is followed exactly otherwise: US-ASCII only (any other byte,
//    NUL or CTL → invalid); no whitespace after the last field unless a
//    ";" follows it; no empty field (";;"); "v=STSv1;" alone is invalid.
//  - A field named exactly "id" is always the id: "id=abc-def" or a 33-char
//    id makes the record invalid. The ABNF would let it pass as an
//    extension named "id", but IANA registers "id" as the id field, and
//    re-reading a malformed id as "some other field" is how a record with
//    a broken id would end up with a different one.
//  - Duplicates: §3.2 says parsers MUST accept syntactically valid TXT
//    records and policies and that of a duplicated non-mx field "all
//    entries except for the first SHALL be ignored". So the first id wins
//    (a later id must still be a well-formed id), and a later "v=…" is a
//    well-formed extension field and ignored.
//  - Unknown extension fields are ignored, but must match the extension
//    grammar: a malformed one makes the record invalid.
public struct STSRecord: Equatable, Sendable {
    public let id: String

    /// `records`: every TXT record at the name, each as its character-strings
    /// (DNSRecordData.txt gives [[UInt8]] per record; strings of one record
    /// are joined WITHOUT spaces). Records not starting with "v=STSv1" are
    /// ignored; anything but exactly one valid record left → .failure.
    public static func select(_ records: [[[UInt8]]]) -> Result<STSRecord, STSRecordError> {
        var found: [UInt8]?
        for strings in records {
            let record = Array(strings.joined())
            guard isSTSRecord(record) else { continue }
            guard found == nil else { return .failure(.multipleRecords) }
            found = record
        }
        guard let found else { return .failure(.noRecord) }
        return parse(found)
    }

    static let version = Array("v=STSv1".utf8)

    /// Whether a record counts as an MTA-STS record at all (see above).
    static func isSTSRecord(_ record: [UInt8]) -> Bool {
        guard record.starts(with: version) else { return false }
        guard record.count > version.count else { return true }
        let next = record[version.count]
        return next == STSSyntax.semicolon || STSSyntax.isWSP(next)
    }

    /// Parses one record that isSTSRecord accepted.
    static func parse(_ r: [UInt8]) -> Result<STSRecord, STSRecordError> {
        var id: String?
        var i = version.count
        while i < r.count {
            // sts-field-delim = *WSP ";" *WSP
            var j = i
            while j < r.count, STSSyntax.isWSP(r[j]) { j += 1 }
            guard j < r.count else { return .failure(.invalid("whitespace after the last field without ';'")) }
            guard r[j] == STSSyntax.semicolon else { return .failure(.invalid("expected ';' at offset \(j)")) }
            j += 1
            while j < r.count, STSSyntax.isWSP(r[j]) { j += 1 }
            if j == r.count { break }  // the optional final delimiter
            let start = j
            while j < r.count, r[j] != STSSyntax.semicolon, !STSSyntax.isWSP(r[j]) { j += 1 }
            switch field(r[start..<j]) {
            case .failure(let e): return .failure(e)
            case .success(let value?): if id == nil { id = value }
            case .success(nil): break
            }
            i = j
        }
        guard let id else { return .failure(.invalid("no id field")) }
        return .success(STSRecord(id: id))
    }

    /// One sts-field: the id's value, nil for a well-formed extension.
    private static func field(_ f: ArraySlice<UInt8>) -> Result<String?, STSRecordError> {
        guard !f.isEmpty else { return .failure(.invalid("empty field")) }
        guard let eq = f.firstIndex(of: STSSyntax.equals) else { return .failure(.invalid("field without '='")) }
        let name = f[f.startIndex..<eq], value = f[(eq + 1)...]
        if name.elementsEqual("id".utf8) {
            guard (1...32).contains(value.count), value.allSatisfy(STSSyntax.isAlnum) else {
                return .failure(.invalid("id must be 1 to 32 letters and digits"))
            }
            return .success(String(decoding: value, as: UTF8.self))
        }
        guard STSSyntax.isExtensionName(name) else { return .failure(.invalid("malformed field name")) }
        guard !value.isEmpty, value.allSatisfy(isExtensionValueByte) else {
            return .failure(.invalid("malformed value of field \(String(decoding: name, as: UTF8.self))"))
        }
        return .success(nil)
    }

    /// sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E)
    private static func isExtensionValueByte(_ b: UInt8) -> Bool {
        (b >= 0x21 && b <= 0x3a) || b == 0x3c || (b >= 0x3e && b <= 0x7e)
    }
}

public enum STSRecordError: Error, Equatable, Sendable {
    /// No TXT record at the name begins with "v=STSv1".
    case noRecord
    /// More than one does (valid or not).
    case multipleRecords
    /// Exactly one does, and it breaks the §3.1 grammar; the reason is for the log.
    case invalid(String)
}
