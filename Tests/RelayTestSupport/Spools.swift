// Spools in temporary folders and deterministic message bodies.
import Foundation
import Logging
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayPolicy
@testable import RelayLog
@testable import RelayTLS
@testable import RelayDNS
@testable import RelayAuth
@testable import RelayIO
@testable import RelayQueue
@testable import RelayConfig
@testable import RelayDelivery
@testable import RelayCore

public final class TemporarySpool {
    public let dir = NSTemporaryDirectory() + "relayd-stream-\(UUID().uuidString)"
    public let spool: Spool
    public init() throws { spool = try Spool(root: dir, reserveBytes: 0, fsyncEnabled: false) }
    deinit { try? FileManager.default.removeItem(atPath: dir) }

    /// Flips one bit of the stored file at `offset` (negative: from the end).
    public func corrupt(_ folder: Spool.Folder, _ id: String, at offset: Int) throws {
        let p = spool.path(folder, id)
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: p)))
        bytes[offset < 0 ? bytes.count + offset : offset] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: p))
    }

    public func fileSize(_ folder: Spool.Folder, _ id: String) throws -> Int {
        try FileManager.default.attributesOfItem(atPath: spool.path(folder, id))[.size] as! Int
    }
}

public func bigMessage(bodySize: Int, recipients: Int = 1, seed: UInt64 = 1) -> QueuedMessage {
    var rng = SplitMix64(state: seed)
    var body: [UInt8] = Array("Subject: big\r\n\r\n".utf8)
    while body.count < bodySize {
        body += randomBody(&rng, lines: 50)
    }
    body.removeSubrange(bodySize...)
    var env = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<a@sender.test>")!),
                       origin: Envelope.Origin(clientAddress: "192.0.2.1", heloName: "client.test", esmtp: true))
    for i in 0..<recipients {
        let local = "user\(i)-" + String(repeating: "x", count: 50)
        env.recipients.append(Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<\(local)@far.test>")!,
                                                 originalRecipient: "rfc822;" + String(repeating: "+", count: 300)))
    }
    return QueuedMessage(id: QueueID.generate(), arrival: 1_700_000_000,
                         envelope: env, body: body)
}

/// A tiny deterministic generator (SplitMix64), so a failure names a seed
/// that reproduces it.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64
    public init(state: UInt64) { self.state = state }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// CRLF lines, many of them starting with one or more dots, some empty,
/// and sometimes no CRLF at the end.
public func randomBody(_ rng: inout SplitMix64, lines: Int) -> [UInt8] {
    var body: [UInt8] = []
    for _ in 0..<lines {
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: body += [46]
        case 1: body += [46, 46]
        case 2: body += Array(".x.y".utf8)
        case 3: break
        default: body += Array("text.".utf8)
        }
        for _ in 0..<Int.random(in: 0..<40, using: &rng) {
            body.append([UInt8(ascii: "a"), 46, 32, 9, 0xC3, 0xA9][Int.random(in: 0..<6, using: &rng)])
        }
        body += [13, 10]
    }
    if Bool.random(using: &rng) { body += Array(".tail".utf8) }
    return body
}
