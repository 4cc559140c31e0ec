// libFuzzer target for ProbeSession, the TLS probe's dialogue, fed replies
// a hostile server might send. The first byte picks where the input is cut
// into reads and whether the handshake succeeds, fails or the connection
// drops. Invariants:
//  - the session never sends MAIL, RCPT, DATA or anything but EHLO,
//    STARTTLS and QUIT, and asks for TLS at most once;
//  - it finishes at most once, and after finishing does nothing more;
//  - a finished probe that failed names a step, and TLS counts as
//    established only if the driver said so;
//  - up to STARTTLS, the findings do not depend on how the input was
//    split into reads (after it, a cut decides which bytes arrived with
//    the 220 and are discarded, so they may).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProbeSession(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 1 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let control = bytes[0]
    let input = Array(bytes.dropFirst())
    let whole = drive(input, cuts: [], control: control)
    let cut = input.isEmpty ? 0 : Int(control) % (input.count + 1)
    let split = drive(input, cuts: [cut], control: control)
    if !whole.askedTLS && !split.askedTLS {
        precondition(whole.findings == split.findings, "a split read changed the findings")
    }
    return 0
}

/// Feeds `input` in reads cut at `cuts`; returns the findings if finished.
func drive(_ input: [UInt8], cuts: [Int], control: UInt8) -> (findings: ProbeFindings, askedTLS: Bool) {
    var s = ProbeSession(heloName: "probe.test")
    var finished: ProbeFindings?
    var tlsAsked = 0
    var told = false
    let allowed = ["EHLO probe.test\r\n", "STARTTLS\r\n", "QUIT\r\n"].map { Array($0.utf8) }
    func apply(_ actions: [ProbeAction]) -> Bool {
        var handshake = false
        for a in actions {
            precondition(finished == nil || { if case .finished = a { return false } else { return true } }(),
                         "finished twice")
            switch a {
            case .send(let cmd): precondition(allowed.contains(cmd), "sent \(cmd)")
            case .startTLS:
                tlsAsked += 1
                precondition(tlsAsked == 1, "TLS asked twice")
                handshake = true
            case .close: break
            case .finished(let f):
                finished = f
                if f.tlsEstablished { precondition(told, "TLS established without the driver") }
                if !f.tlsEstablished && f.failure == nil { precondition(f.starttlsOffered == false, "ended without a reason") }
            }
        }
        return handshake
    }
    var pieces: [[UInt8]] = []
    var start = 0
    for c in cuts where c > start && c < input.count { pieces.append(Array(input[start..<c])); start = c }
    pieces.append(Array(input[start...]))
    for piece in pieces {
        if apply(s.receive(piece)) {
            switch control % 4 {
            case 0, 1:
                told = true
                _ = apply(s.tlsEstablished())
            case 2: _ = apply(s.tlsFailed(TLSFailure(kind: .protocolBelowFloor, detail: "fuzz")))
            default: _ = apply(s.connectionClosed())
            }
        }
    }
    if finished == nil { _ = apply(control % 2 == 0 ? s.connectionClosed() : s.timedOut(after: 1)) }
    guard let findings = finished else { preconditionFailure("not finished after close or timeout") }
    precondition(s.receive(Array("250 more\r\n".utf8)).isEmpty && s.connectionClosed().isEmpty, "acted after the end")
    return (findings, tlsAsked > 0)
}
