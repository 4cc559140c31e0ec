// libFuzzer target for the MTA-STS parsers (RelaySTS, built by
// scripts/fuzz.sh together with Model): the policy file a remote HTTPS
// server sends, and the TXT records a remote DNS server sends. The first
// byte picks the parser; the rest is the input. Invariants:
//  - STSPolicy.parse never crashes; a policy it returns has max_age in
//    0...31557600, at least one mx unless its mode is none, only
//    normalized patterns (lower case, no trailing dot, valid), its `text`
//    parses to the same policy, and each exact pattern matches itself
//    while a wildcard matches one label below its base and not the base;
//  - LF and CRLF line ends give the same answer (for inputs without CR);
//  - STSRecord.select never crashes; a selected id is 1–32 letters and
//    digits; neither the order of the records nor where their strings are
//    split changes the answer. Records are separated by 0x1E and the
//    strings of a record by 0x1F in the input.
//  - TLSRPTRecord.select (RFC 8460 `_smtp._tls` TXT) never crashes, keeps
//    only mailto: and https: destinations, at least one, and neither the
//    order of the records nor where their strings are split changes the
//    answer.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSTS(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 1 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let input = Array(bytes.dropFirst())
    switch bytes[0] % 3 {
    case 0: checkPolicy(input)
    case 1: checkRecords(input)
    default: checkTLSRPT(input)
    }
    return 0
}

func checkPolicy(_ input: [UInt8]) {
    let result = STSPolicy.parse(input)
    if !input.contains(13) {
        let crlf = input.flatMap { $0 == 10 ? [13, 10] : [$0] }
        if crlf.count <= STSPolicy.maxBodySize {
            precondition(STSPolicy.parse(crlf) == result, "CRLF changed the answer")
        }
    }
    guard case .success(let p) = result else { return }
    precondition((0...31_557_600).contains(p.maxAge), "max_age out of range")
    precondition(p.mode == STSPolicy.Mode.none || !p.mx.isEmpty, "no mx outside mode none")
    precondition(STSPolicy.parse(Array(p.text.utf8)) == .success(p), "text does not round-trip")
    for pattern in p.mx {
        precondition(STSPolicy.mxPattern(pattern) == pattern, "pattern not normalized: \(pattern)")
        if pattern.hasPrefix("*.") {
            // (A base of 252 or 253 octets leaves no room for a host below it.)
            let base = String(pattern.dropFirst(2))
            guard base.utf8.count <= 249 else { continue }
            precondition(p.matches(mxHost: "x." + base), "wildcard misses one label")
            if p.mx.count == 1 {
                precondition(!p.matches(mxHost: "x.y." + base), "wildcard matches two labels")
                precondition(!p.matches(mxHost: base), "wildcard matches its base")
            }
        } else {
            precondition(p.matches(mxHost: pattern), "exact pattern misses itself")
        }
    }
    // Any line of the input as a host name: no crash, and only LDH names match.
    for line in input.split(separator: 10) {
        let host = String(decoding: line, as: UTF8.self)
        if p.matches(mxHost: host) {
            precondition(host.utf8.allSatisfy { $0 < 0x80 }, "non-ASCII host matched")
        }
    }
}

func checkRecords(_ input: [UInt8]) {
    let records: [[[UInt8]]] = input.split(separator: 0x1e, omittingEmptySubsequences: false).map { record in
        record.split(separator: 0x1f, omittingEmptySubsequences: false).map { Array($0) }
    }
    let result = STSRecord.select(records)
    if case .success(let r) = result {
        precondition((1...32).contains(r.id.utf8.count), "id length")
        precondition(r.id.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || (($0 | 0x20) >= 0x61 && ($0 | 0x20) <= 0x7a) }, "id not alnum")
    }
    precondition(STSRecord.select(Array(records.reversed())) == result, "record order changed the answer")
    let joined = records.map { [Array($0.joined())] }
    precondition(STSRecord.select(joined) == result, "string boundaries changed the answer")
}

func checkTLSRPT(_ input: [UInt8]) {
    let records: [[String]] = input.split(separator: 0x1e, omittingEmptySubsequences: false).map { record in
        record.split(separator: 0x1f, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    }
    let result = TLSRPTRecord.select(records)
    if let r = result {
        precondition(!r.destinations.isEmpty, "a record without destinations")
        for d in r.destinations {
            let text = d.description
            precondition(text.hasPrefix("mailto:") || text.hasPrefix("https://"), "unexpected scheme: \(text)")
        }
    }
    precondition(TLSRPTRecord.select(Array(records.reversed())) == result, "record order changed the answer")
    precondition(TLSRPTRecord.select(records.map { [$0.joined()] }) == result, "string boundaries changed the answer")
}
