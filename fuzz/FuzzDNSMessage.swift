// libFuzzer target for the DNS answer parser and the SMTP reply parser /
// client session: the two parsers fed by remote servers. Invariants:
//  - DNSMessage.parse never crashes; what it returns only holds names of at
//    most 255 octets and as many answers as the header claimed;
//  - a TLSA record it returns holds its whole RDATA, and the RFC 7672
//    filter only passes DANE-TA/DANE-EE records with a known selector and
//    a digest of exactly the right length;
//  - ReplyParser gives the same replies however the input is split;
//  - ClientSession never asks to send the body before the server's 354,
//    and never sends MAIL before TLS when TLS is required.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRemoteParsers(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 1 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let input = Array(bytes.dropFirst())
    switch bytes[0] % 3 {
    case 0:
        if let r = try? DNSMessage.parse(input) {
            precondition(r.questionName.utf8.count <= 255)
            for a in r.answers {
                precondition(a.name.utf8.count <= 255)
                if case .tlsa(let u, let sel, let m, let d) = a.data {
                    let record = TLSARecord(usage: u, selector: sel, matchingType: m, data: d)
                    if record.isUsableForSMTP {
                        precondition((u == 2 || u == 3) && sel <= 1)
                        precondition(m == 0 ? !d.isEmpty : d.count == (m == 1 ? 32 : 64))
                    }
                    precondition(record.presentation.hasPrefix("\(u) \(sel) \(m) "))
                }
            }
        }
    case 1:
        var whole = ReplyParser()
        let a = try? whole.feed(input)
        let cut = input.isEmpty ? 0 : Int(bytes[0]) % input.count
        var split = ReplyParser()
        let b1 = try? split.feed(Array(input[..<cut]))
        let b2 = try? split.feed(Array(input[cut...]))
        if let a, let b1, let b2 { precondition(a == b1 + b2, "split changed replies") }
    default:
        var env = Envelope(sender: .null, origin: Envelope.Origin(clientAddress: "127.0.0.1"))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<a@b.test>")!)]
        var s = ClientSession(configuration: ClientSessionConfiguration(heloName: "r.test", tls: .required, envelope: env, bodySize: 10))
        var tls = false
        var saw354 = false
        for chunk in input.split(separator: 10, omittingEmptySubsequences: false) {
            let line = Array(chunk) + [10]
            if line.starts(with: Array("354".utf8)) { saw354 = true }
            for action in s.receive(line) {
                switch action {
                case .startTLS:
                    tls = true
                    _ = s.tlsEstablished()
                case .send(let cmd):
                    if cmd.starts(with: Array("MAIL".utf8)) { precondition(tls, "MAIL before TLS") }
                case .sendBody:
                    precondition(saw354 && tls, "body before 354 or without TLS")
                default: break
                }
            }
        }
    }
    return 0
}
