// libFuzzer target for relayd's own record files, the bytes a damaged or
// planted spool file could hold (built by scripts/fuzz.sh with Model, SMTP,
// the queue file format and the TLS-RPT record formats). The first byte
// picks the decoder:
//   0: a queue file (QueueFile: envelope, DSN fields, the per-message
//      controls — REQUIRETLS, TLS-Required: No, escalation, a forwarded
//      copy's floor — body and end record);
//   1: a TLS-RPT day's counters (TLSRPTCounts);
//   2: a TLS-RPT send state (TLSRPTSendState).
// Invariants: decoding never crashes; whatever decodes re-encodes to bytes
// that decode to the same value, and encoding is stable; a queue file that
// decodes is one whose header decodes alike on its own.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRecords(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 1 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    switch data[0] % 3 {
    case 0:
        // As fuzzers rarely find a matching checksum, also try the bytes
        // with a correct end record appended: the header grammar is what
        // is under test then.
        for candidate in [bytes, sealed(bytes)] {
            guard let m = try? QueueFile.decode(candidate) else { continue }
            let header = try? QueueFile.decodeHeader(candidate, end: candidate.count)
            precondition(header?.envelope == m.envelope && header?.id == m.id)
            let encoded = QueueFile.encode(m)
            guard let again = try? QueueFile.decode(encoded) else { preconditionFailure("an encoded queue file does not decode") }
            precondition(again == m)
            precondition(QueueFile.encode(again) == encoded)
            precondition(!m.envelope.recipients.isEmpty)
        }
    case 1:
        guard let c = TLSRPTCounts.decode(bytes) else { return 0 }
        let encoded = c.encode()
        guard let again = TLSRPTCounts.decode(encoded) else { preconditionFailure("encoded counts do not decode") }
        precondition(again == c)
        precondition(again.encode() == encoded)
    default:
        guard let s = TLSRPTSendState.decode(bytes) else { return 0 }
        let encoded = s.encode()
        guard let again = TLSRPTSendState.decode(encoded) else { preconditionFailure("encoded send state does not decode") }
        precondition(again == s)
        precondition(again.encode() == encoded)
    }
    return 0
}

/// `bytes` (a header and body as a queue file holds them) with the end
/// record that makes its checksum match.
func sealed(_ bytes: [UInt8]) -> [UInt8] {
    bytes + QueueFile.trailer(checksumOfHeaderAndBody: QueueFile.fnv1a64(bytes[...]))
}
