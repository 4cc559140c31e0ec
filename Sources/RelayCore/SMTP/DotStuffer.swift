// The other direction from DataReader: dot-stuffing for the SMTP client
// (RFC 5321 §4.5.2). A "." goes before every line that starts with one, and
// the end marker CRLF "." CRLF follows the last line.
//
// Incremental, so a body streamed from the spool is stuffed chunk by chunk
// and never whole: the one thing carried from a chunk to the next is
// whether the next byte starts a line. Any chunking gives the same bytes as
// encoding the body in one piece. Input must use CRLF line endings (the
// queue stores it so).
public struct DotStuffer: Sendable {
    private var atLineStart = true
    private var sawBytes = false

    public init() {}

    /// Appends `chunk`, stuffed, to `out`.
    public mutating func encode(_ chunk: ArraySlice<UInt8>, into out: inout [UInt8]) {
        guard let last = chunk.last else { return }
        out.reserveCapacity(out.count + chunk.count + chunk.count / 64 + 8)
        chunk.withUnsafeBufferPointer { buf in
            var start = 0
            if atLineStart && buf[0] == 46 { out.append(46) }
            // Copy runs between line starts that need a dot, not byte by byte.
            var i = 0
            while let lf = buf[i...].firstIndex(of: 10) {
                i = lf + 1
                guard i < buf.count else { break }
                if buf[i] == 46 {
                    out.append(contentsOf: buf[start..<i])
                    out.append(46)
                    start = i
                }
            }
            out.append(contentsOf: buf[start...])
        }
        atLineStart = last == 10
        sawBytes = true
    }

    /// Appends the end of data: a CRLF if the body did not end a line, then
    /// the "." line.
    public mutating func finish(into out: inout [UInt8]) {
        if sawBytes && !atLineStart { out.append(contentsOf: [13, 10]) }
        out.append(contentsOf: [46, 13, 10])
        atLineStart = true
        sawBytes = false
    }

    /// A whole body, stuffed and terminated.
    public static func encode(_ body: [UInt8]) -> [UInt8] {
        var stuffer = DotStuffer()
        var out: [UInt8] = []
        stuffer.encode(body[...], into: &out)
        stuffer.finish(into: &out)
        return out
    }
}
