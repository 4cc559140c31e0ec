// The incremental dot-stuffer: any chunking of a body gives the bytes the
// whole-body encoding gives, and those are the ones the previous
// byte-at-a-time stuffer gave; DataReader undoes them.
import Testing
@testable import RelayModel
@testable import RelaySMTP
import RelayTestSupport

/// The stuffer as it was before it became incremental: the oracle.
private func referenceStuff(_ body: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    var atLineStart = true
    for b in body {
        if atLineStart && b == 46 { out.append(46) }
        out.append(b)
        atLineStart = b == 10
    }
    if !atLineStart && !body.isEmpty { out.append(13); out.append(10) }
    out.append(contentsOf: [46, 13, 10])
    return out
}

private func stuff(_ body: [UInt8], chunkSizes: [Int]) -> [UInt8] {
    var stuffer = DotStuffer()
    var out: [UInt8] = []
    var offset = 0
    var i = 0
    while offset < body.count {
        let n = min(chunkSizes[i % chunkSizes.count], body.count - offset)
        stuffer.encode(body[offset..<(offset + n)], into: &out)
        offset += n
        i += 1
    }
    stuffer.finish(into: &out)
    return out
}

@Suite struct IncrementalDotStuffing {
    static let bodies: [(String, String)] = [
        ("empty", ""),
        ("one dot, no line end", "."),
        ("a dot line", ".\r\n"),
        ("dot line in the middle", "a\r\n.\r\nb\r\n"),
        ("two dots", "..\r\n"),
        ("dots at every line start", ".a\r\n.b\r\n.c"),
        ("dot after a blank line", "Subject: x\r\n\r\n.hidden\r\n"),
        ("dots not at line starts", "a.b\r\nc..d\r\n"),
        ("no final line end", "last line"),
        ("CR LF split across chunks", "ab\r\n.\r\n.\r\n"),
    ]
    static let chunkings: [[Int]] = [[1], [2], [3], [1, 2, 5], [7], [64 * 1024]]

    @Test("chunking never changes the bytes", arguments: bodies.map(\.0), chunkings)
    func chunkingIsInvisible(_ name: String, _ chunks: [Int]) {
        let body = Array(Self.bodies.first { $0.0 == name }!.1.utf8)
        #expect(stuff(body, chunkSizes: chunks) == referenceStuff(body))
        #expect(DotStuffer.encode(body) == referenceStuff(body))
    }

    @Test("random bodies, random chunk boundaries (often at a dot)", arguments: 0..<40)
    func randomChunkings(_ seed: Int) {
        var rng = SplitMix64(state: UInt64(seed))
        let body = randomBody(&rng, lines: Int.random(in: 0..<200, using: &rng))
        let whole = referenceStuff(body)
        // Boundaries at random, and right before and after each dot.
        var sizes = (0..<8).map { _ in Int.random(in: 1...97, using: &rng) }
        if let dot = body.firstIndex(of: 46), dot > 0 { sizes.append(dot); sizes.append(1) }
        #expect(stuff(body, chunkSizes: sizes) == whole, "seed \(seed)")
        #expect(stuff(body, chunkSizes: [1]) == whole, "seed \(seed)")
        #expect(DotStuffer.encode(body) == whole, "seed \(seed)")

        // The receiving side gets the body back (with a final CRLF).
        var reader = DataReader(maxSize: 1 << 20, maxLineLength: 1 << 20)
        let (_, outcome) = reader.consume(whole[...])
        let expected = body.isEmpty || body.last == 10 ? body : body + [13, 10]
        #expect(outcome == .complete(body: expected), "seed \(seed)")
    }

    @Test func aStufferIsReusableAfterFinish() {
        var s = DotStuffer()
        var out: [UInt8] = []
        s.encode(Array("x".utf8)[...], into: &out)
        s.finish(into: &out)
        s.encode(Array(".y\r\n".utf8)[...], into: &out)
        s.finish(into: &out)
        #expect(out == Array("x\r\n.\r\n..y\r\n.\r\n".utf8))
    }
}
