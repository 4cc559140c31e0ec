// libFuzzer target for the learned-status record file (RelayLearned's
// LearnedRecordFormat, built by scripts/fuzz.sh with Model, SMTP, STS and
// Policy): the bytes a damaged or planted spool/learned/<domain> file could
// hold. Invariants:
//  - decode never crashes and refuses anything but printable ASCII lines;
//  - a record it returns has a valid domain, evidence with first ≤ last
//    and 1 ≤ days ≤ count, at most maxHosts hosts and maxKeys keys, a pin
//    only at a level a pin may name;
//  - what it returns encodes to bytes that decode to the same record, and
//    encoding is stable (encode ∘ decode ∘ encode = encode);
//  - the answer the record gives never names tls-exclusive.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLearnedRecord(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let r = try? LearnedRecordFormat.decode(bytes) else { return 0 }
    precondition(bytes.allSatisfy { ($0 >= 0x20 && $0 < 0x7f) || $0 == 10 })
    precondition(LearnedRecordFormat.isDomain(r.domain))
    for e in r.evidence.values + r.hosts.values.flatMap(\.values) {
        precondition(e.firstSeen <= e.lastSeen && e.days >= 1 && e.days <= e.count)
    }
    precondition(r.hosts.count <= LearnedRecord.maxHosts && r.keys.count <= LearnedRecord.maxKeys)
    if let pin = r.pin { precondition(LearnedRecord.Pin.levels.contains(pin.level)) }
    let encoded = LearnedRecordFormat.encode(r)
    guard let again = try? LearnedRecordFormat.decode(encoded) else { preconditionFailure("encoded record does not decode") }
    precondition(again == r)
    precondition(LearnedRecordFormat.encode(again) == encoded)
    for now in [0, r.created, r.lastConfirmed + 1, Int(Int32.max)] {
        precondition(r.answer(at: now, settings: LearnedSettings()).level != .tlsExclusive)
    }
    return 0
}
