// libFuzzer target for ServerSession (built by scripts/fuzz.sh with
// `swiftc -sanitize=fuzzer` together with RelayCore/SMTP and Model, the
// stdlib-only part of RelayCore).
//
// Besides "no crash", it checks invariants that must hold for any input:
//  - the same bytes fed whole and in fuzzer-chosen chunks give identical
//    replies and identical stored messages (split-input bugs), unless the
//    input contains STARTTLS, or a DATA was refused with input behind it:
//    there chunking legitimately decides what is discarded (what arrived in
//    the same read as the command was sent before the client saw the
//    reply, and is dropped whole);
//  - every reply line is three digits and a separator;
//  - nothing is stored on a listener that requires AUTH unless the
//    session authenticated, and never with zero recipients.

struct Run {
    var session: ServerSession
    var output: [UInt8] = []
    var stored: [[UInt8]] = []
    var authenticated = false
    var discardedAfterRefusedData = false

    init(_ cfg: ServerSessionConfiguration) {
        session = ServerSession(configuration: cfg, clientAddress: "192.0.2.1")
        apply(session.start())
    }

    mutating func apply(_ actions: [ServerAction]) {
        var queue = actions
        while !queue.isEmpty {
            switch queue.removeFirst() {
            case .send(let r):
                for line in r.lines { precondition(!line.contains("\r") && !line.contains("\n"), "reply line break") }
                precondition((200...599).contains(r.code), "bad code")
                output += r.wire
            case .close: break
            case .startTLS:
                queue += session.tlsEstablished(TLSState(version: "TLSv1.3", cipher: "X", bits: 256))
            case .authenticate(let c, _):
                let ok = c.password == Array("pw".utf8)
                if ok { authenticated = true }
                queue += session.authenticationFinished(username: c.username, success: ok)
            case .discarded(_, let reason):
                if case .pipelinedAfterRefusedDATA = reason { discardedAfterRefusedData = true }
            case .store(let env, let body):
                precondition(!env.recipients.isEmpty, "stored without recipients")
                precondition(!body.contains(0), "stored a NUL byte")
                if session.configuration.requireAuth { precondition(authenticated, "stored without AUTH") }
                stored.append(body)
                queue += session.storeFinished(.queued(id: "Q"))
            }
        }
        // Compiled into one module with the session, so its phase is visible.
        if session.phase == .discardingRefusedData || session.bodyMayFollowRefusedDATA {
            discardedAfterRefusedData = true
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzServerSession(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 2 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let selector = bytes[0]
    let chunk = Int(bytes[1] % 17) + 1
    let input = Array(bytes[2...])
    let cfg = ServerSessionConfiguration(hostname: "relay.test", requireTLS: selector & 1 == 1,
                                         requireAuth: selector & 2 == 2, authAvailable: selector & 4 == 4,
                                         clientIsTrusted: selector & 8 == 8, relayDomains: ["example.org"],
                                         maxMessageSize: 4096, maxRecipients: 5)
    var whole = Run(cfg)
    whole.apply(whole.session.receive(input))

    var pieces = Run(cfg)
    var i = 0
    while i < input.count {
        let end = min(input.count, i + chunk)
        pieces.apply(pieces.session.receive(Array(input[i..<end])))
        i = end
    }
    let upper = String(decoding: input, as: UTF8.self).uppercased()
    if !upper.contains("STARTTLS") && !whole.discardedAfterRefusedData && !pieces.discardedAfterRefusedData {
        precondition(whole.output == pieces.output, "chunking changed the replies")
        precondition(whole.stored == pieces.stored, "chunking changed the stored messages")
    }
    return 0
}
