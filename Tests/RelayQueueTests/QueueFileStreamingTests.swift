// Queue files read for delivery without holding the body: the header from
// the first read, the body in chunks with the checksum checked over exactly
// the bytes handed out, and the last chunk only after the end record
// matched. Also: the file the spool writes without concatenating is the one
// QueueFile.encode describes.
import Foundation
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayLog
@testable import RelayAuth
@testable import RelayQueue
@testable import RelayCore
import RelayTestSupport

private func readAll(_ body: MessageBody, chunk: Int) throws -> [UInt8] {
    let stream = body.makeStream()
    var out: [UInt8] = []
    while let c = try stream.next(maxBytes: chunk) { out += c }
    return out
}

@Suite struct QueueFileStreaming {
    @Test("the spool writes exactly the encoded file", arguments: [0, 1, 4096, 200_000])
    func writevMatchesEncode(_ size: Int) throws {
        let t = try TemporarySpool()
        let m = bigMessage(bodySize: size)
        try t.spool.store(m)
        let written = try [UInt8](Data(contentsOf: URL(fileURLWithPath: t.spool.path(.incoming, m.id))))
        #expect(written == QueueFile.encode(m))
        #expect(try QueueFile.decode(written) == m)
    }

    @Test("small files are read and checked whole; big ones are streamed", arguments: [100, 60_000, 70_000, 1_000_000])
    func smallWholeBigStreamed(_ size: Int) throws {
        let t = try TemporarySpool()
        let m = bigMessage(bodySize: size)
        try t.spool.store(m)
        let opened = try t.spool.openMessage(.incoming, m.id)
        #expect(opened.envelope == m.envelope)
        #expect(opened.body.count == size)
        let fileSize = try t.fileSize(.incoming, m.id)
        switch opened.body {
        case .memory: #expect(fileSize <= Spool.wholeFileLimit)
        case .spool: #expect(fileSize > Spool.wholeFileLimit)
        }
        for chunk in [1000, 64 * 1024, 10_000_000] where size < 100_000 || chunk >= 1000 {
            #expect(try readAll(opened.body, chunk: chunk) == m.body, "chunk \(chunk)")
        }
    }

    @Test func aHeaderLongerThanTheFirstReadIsFound() throws {
        let t = try TemporarySpool()
        let m = bigMessage(bodySize: 100_000, recipients: 400)  // header ≈ 400 × 1 KB
        try t.spool.store(m)
        let opened = try t.spool.openMessage(.incoming, m.id)
        guard case .spool(let file) = opened.body else { Issue.record("expected a streamed body"); return }
        #expect(file.header.bodyOffset > Spool.wholeFileLimit)
        #expect(opened.envelope.recipients.count == 400)
        #expect(try readAll(opened.body, chunk: 65536) == m.body)
    }

    /// Where the bit flips, counted in the file: in the header, early in the
    /// body, in the body's last byte, in the end record.
    enum Spot: String, CaseIterable, CustomTestStringConvertible {
        case header, earlyBody, lastBodyByte, endRecord
        var testDescription: String { rawValue }
        func offset(bodyOffset: Int, bodySize: Int) -> Int {
            switch self {
            case .header: return 0  // see headerSpot
            case .earlyBody: return bodyOffset + 10
            case .lastBodyByte: return bodyOffset + bodySize - 1
            case .endRecord: return bodyOffset + bodySize + 8
            }
        }
    }

    @Test("a corrupt file never hands out its last chunk", arguments: Spot.allCases)
    func corruptionStopsBeforeTheEnd(_ spot: Spot) throws {
        let t = try TemporarySpool()
        let m = bigMessage(bodySize: 300_000)
        try t.spool.store(m)
        let bodyOffset = QueueFile.encodeHeader(m).count
        // A bit that keeps the header parseable: "arrival 1..." becomes "0...".
        let header = QueueFile.encodeHeader(m)
        let headerSpot = header.firstRange(of: Array("arrival ".utf8))!.upperBound
        let at = spot == .header ? headerSpot : spot.offset(bodyOffset: bodyOffset, bodySize: m.body.count)
        try t.corrupt(.incoming, m.id, at: at)

        let opened = try t.spool.openMessage(.incoming, m.id)
        guard case .spool(let file) = opened.body else { Issue.record("expected a streamed body"); return }
        let stream = opened.body.makeStream()
        var handedOut = 0
        var thrown: (any Error)?
        do {
            while let c = try stream.next(maxBytes: 64 * 1024) { handedOut += c.count }
        } catch { thrown = error }
        #expect(thrown as? QueueFileError == .checksumMismatch)
        #expect(handedOut < m.body.count, "the chunk ending the body was handed out")
        #expect(file.failedCheck == .checksumMismatch)
        #expect(throws: QueueFileError.checksumMismatch) { try t.spool.verify(.incoming, m.id) }
    }

    @Test func aTruncatedOrExtendedFileFailsAtOpen() throws {
        let t = try TemporarySpool()
        let m = bigMessage(bodySize: 200_000)
        try t.spool.store(m)
        let p = t.spool.path(.incoming, m.id)
        let h = try FileHandle(forUpdating: URL(fileURLWithPath: p))
        try h.truncate(atOffset: UInt64(try t.fileSize(.incoming, m.id) - 5))
        try h.close()
        #expect(throws: QueueFileError.badRecord("size")) { try t.spool.openMessage(.incoming, m.id) }
        // Recovery streams the check too, and moves the file aside.
        let report = t.spool.recover()
        #expect(report.quarantined.map(\.id) == [m.id])
    }

    @Test func recoveryChecksBigFilesWithoutReadingThemWhole() throws {
        let t = try TemporarySpool()
        let good = bigMessage(bodySize: 500_000, seed: 7)
        let bad = bigMessage(bodySize: 500_000, seed: 8)
        try t.spool.store(good)
        try t.spool.store(bad)
        try t.corrupt(.incoming, bad.id, at: -100_000)
        let report = t.spool.recover()
        #expect(report.intact == 1)
        #expect(report.quarantined.map(\.id) == [bad.id])
        #expect(t.spool.list(.incoming) == [good.id])
    }
}
