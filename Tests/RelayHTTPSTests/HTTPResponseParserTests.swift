// HTTPResponseParser against well-formed and hostile responses, each fed
// whole, one byte at a time and in 7-byte pieces (a split must never change
// the verdict), and the media type comparison.
import Testing
@testable import RelayHTTPS

/// What a response should come to.
enum Verdict: Equatable, Sendable {
    case body(Int, String)
    case tooLarge
    /// Failed, the reason containing this.
    case malformed(String)
    case needMore
}

struct ParserCase: Sendable, CustomTestStringConvertible {
    let name: String
    let wire: [UInt8]
    /// The peer closes after the last byte.
    let closes: Bool
    let verdict: Verdict
    var testDescription: String { name }

    init(_ name: String, _ wire: String, closes: Bool = false, _ verdict: Verdict) {
        self.name = name
        self.wire = Array(wire.utf8)
        self.closes = closes
        self.verdict = verdict
    }
}

private let cap = 64 * 1024
private let atCap = String(repeating: "a", count: cap)
private let overCap = atCap + "a"
private let halfCap = String(repeating: "a", count: cap / 2)
private let ok = "HTTP/1.1 200 OK\r\n"
private let chunked = ok + "Transfer-Encoding: chunked\r\n\r\n"

private func fields(_ n: Int, length: Int = 10) -> String {
    (0..<n).map { "X-F\($0): " + String(repeating: "v", count: length) + "\r\n" }.joined()
}

private func run(_ c: ParserCase, pieces: Int) -> HTTPParseEvent {
    var parser = HTTPResponseParser()
    var event = HTTPParseEvent.needMore
    var i = 0
    while i < c.wire.count {
        let n = pieces == 0 ? c.wire.count : min(pieces, c.wire.count - i)
        event = parser.receive(c.wire[i..<(i + n)])
        i += n
    }
    if event == .needMore && c.closes { event = parser.finish() }
    return event
}

private func matches(_ event: HTTPParseEvent, _ verdict: Verdict) -> Bool {
    switch (event, verdict) {
    case (.complete(let r), .body(let status, let body)): return r.status == status && r.body == Array(body.utf8)
    case (.failed(.tooLarge), .tooLarge): return true
    case (.failed(.malformed(let why)), .malformed(let part)): return why.contains(part)
    case (.needMore, .needMore): return true
    default: return false
    }
}

@Suite("HTTP response parser")
struct HTTPResponseParserTests {
    static let wellFormedCases: [ParserCase] = [
        ParserCase("Content-Length", ok + "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", .body(200, "hello")),
        ParserCase("Content-Length 0", ok + "Content-Length: 0\r\n\r\n", .body(200, "")),
        ParserCase("Content-Length with leading zeros", ok + "Content-Length: 0005\r\n\r\nhello", .body(200, "hello")),
        ParserCase("Content-Length repeated, equal", ok + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", .body(200, "hello")),
        ParserCase("Content-Length list, equal", ok + "Content-Length: 5 , 5\r\n\r\nhello", .body(200, "hello")),
        ParserCase("bytes after the body are not the body", ok + "Content-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\n", .body(200, "hi")),
        ParserCase("HTTP/1.0 to the close", "HTTP/1.0 200 OK\r\n\r\nhello", closes: true, .body(200, "hello")),
        ParserCase("HTTP/1.1 to the close", ok + "Content-Type: text/plain\r\n\r\nhello", closes: true, .body(200, "hello")),
        ParserCase("to the close, empty", ok + "\r\n", closes: true, .body(200, "")),
        ParserCase("chunked", chunked + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", .body(200, "hello world")),
        ParserCase("chunked, upper-case hex", chunked + "A\r\n0123456789\r\n0\r\n\r\n", .body(200, "0123456789")),
        ParserCase("chunked, leading zeros", chunked + "0005\r\nhello\r\n000\r\n\r\n", .body(200, "hello")),
        ParserCase("Transfer-Encoding is case-insensitive", ok + "Transfer-Encoding: Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", .body(200, "hi")),
        ParserCase("chunk extensions are ignored", chunked + "5;name=value\r\nhello\r\n5 ; q=\"a;b c\"\r\nworld\r\n0;last\r\n\r\n",
                   .body(200, "helloworld")),
        ParserCase("trailers are read and dropped", chunked + "2\r\nhi\r\n0\r\nX-Trailer: 1\r\nExpires: never\r\n\r\n", .body(200, "hi")),
        ParserCase("LF-only line ends", "HTTP/1.1 200 OK\nContent-Length: 2\n\nhi", .body(200, "hi")),
        ParserCase("LF-only line ends, chunked", "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nhi\n0\n\n", .body(200, "hi")),
        ParserCase("no reason phrase", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nhi", .body(200, "hi")),
        ParserCase("empty reason phrase", "HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nhi", .body(200, "hi")),
        ParserCase("field value with inner and outer whitespace", ok + "X:  a \t b \t\r\nContent-Length: 0\r\n\r\n", .body(200, "")),
        ParserCase("100 Continue before the response", "HTTP/1.1 100 Continue\r\n\r\n" + ok + "Content-Length: 2\r\n\r\nhi",
                   .body(200, "hi")),
        ParserCase("204 has no body, whatever it says", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
                   .body(204, "")),
        ParserCase("304 has no body", "HTTP/1.1 304 Not Modified\r\n\r\n", .body(304, "")),
        ParserCase("404 with its body", "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope", .body(404, "nope")),
        ParserCase("64 fields", ok + fields(63) + "Content-Length: 0\r\n\r\n", .body(200, "")),
        ParserCase("a line of 8192 bytes", ok + "X: " + String(repeating: "v", count: 8189) + "\r\nContent-Length: 0\r\n\r\n",
                   .body(200, "")),
        ParserCase("body at the cap, Content-Length", ok + "Content-Length: \(cap)\r\n\r\n" + atCap, .body(200, atCap)),
        ParserCase("body at the cap, chunked", chunked + "8000\r\n" + halfCap + "\r\n8000\r\n" + halfCap + "\r\n0\r\n\r\n",
                   .body(200, atCap)),
        ParserCase("body at the cap, to the close", ok + "\r\n" + atCap, closes: true, .body(200, atCap)),
    ]

    static let hostileCases: [ParserCase] = [
        // Status lines.
        ParserCase("empty status line", "\r\n" + ok + "\r\n", .malformed("bad status line")),
        ParserCase("HTTP/2", "HTTP/2 200 OK\r\n\r\n", .malformed("bad status line")),
        ParserCase("HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n", .malformed("bad status line")),
        ParserCase("lower-case protocol", "http/1.1 200 OK\r\n\r\n", .malformed("bad status line")),
        ParserCase("ICY", "ICY 200 OK\r\n\r\n", .malformed("bad status line")),
        ParserCase("two-digit status", "HTTP/1.1 20 OK\r\n\r\n", .malformed("bad status line")),
        ParserCase("four-digit status", "HTTP/1.1 2000 OK\r\n\r\n", .malformed("bad status line")),
        ParserCase("status glued to reason", "HTTP/1.1 200OK\r\n\r\n", .malformed("bad status line")),
        ParserCase("two spaces", "HTTP/1.1  200 OK\r\n\r\n", .malformed("bad status line")),
        ParserCase("status 099", "HTTP/1.1 099 Odd\r\n\r\n", .malformed("out of range")),
        ParserCase("status 600", "HTTP/1.1 600 Odd\r\n\r\n", .malformed("out of range")),
        ParserCase("control character in the reason", "HTTP/1.1 200 O\u{0}K\r\n\r\n", .malformed("bad status line")),
        ParserCase("101 Switching Protocols", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", .malformed("101")),
        ParserCase("endless interim responses", String(repeating: "HTTP/1.1 100 Continue\r\n\r\n", count: 5) + ok + "\r\n",
                   .malformed("interim")),
        ParserCase("a status line of 9000 bytes", "HTTP/1.1 200 " + String(repeating: "K", count: 9000), .malformed("line longer")),
        // Header fields.
        ParserCase("a field line of 8193 bytes", ok + "X: " + String(repeating: "v", count: 8190) + "\r\n\r\n",
                   .malformed("line longer")),
        ParserCase("a field line that never ends", ok + "X: " + String(repeating: "v", count: 20000), .malformed("line longer")),
        ParserCase("65 fields", ok + fields(65) + "\r\n", .malformed("more than 64 header fields")),
        ParserCase("header section over 64 KiB", ok + fields(60, length: 2000) + "\r\n", .malformed("header section over")),
        ParserCase("obs-fold", ok + "X: a\r\n b\r\nContent-Length: 0\r\n\r\n", .malformed("obsolete line folding")),
        ParserCase("obs-fold with a tab", ok + "X: a\r\n\tb\r\n\r\n", .malformed("obsolete line folding")),
        ParserCase("space before the colon", ok + "Content-Length : 5\r\n\r\nhello", .malformed("bad field name")),
        ParserCase("no colon", ok + "Garbage\r\n\r\n", .malformed("without a colon")),
        ParserCase("empty field name", ok + ": v\r\n\r\n", .malformed("bad field name")),
        ParserCase("control character in a value", ok + "X: a\u{1}b\r\n\r\n", .malformed("control character")),
        ParserCase("bare CR in a value", ok + "X: a\rb\r\n\r\n", .malformed("bare CR")),
        ParserCase("NUL in a value", ok + "X: a\u{0}\r\n\r\n", .malformed("control character")),
        // Content-Length.
        ParserCase("negative Content-Length", ok + "Content-Length: -1\r\n\r\n", .malformed("bad Content-Length")),
        ParserCase("signed Content-Length", ok + "Content-Length: +5\r\n\r\nhello", .malformed("bad Content-Length")),
        ParserCase("empty Content-Length", ok + "Content-Length: \r\n\r\n", .malformed("bad Content-Length")),
        ParserCase("hex Content-Length", ok + "Content-Length: 0x10\r\n\r\n", .malformed("bad Content-Length")),
        ParserCase("Content-Length with a space inside", ok + "Content-Length: 1 2\r\n\r\n", .malformed("bad Content-Length")),
        ParserCase("Content-Length list with a hole", ok + "Content-Length: 5,,5\r\n\r\nhello", .malformed("bad Content-Length")),
        ParserCase("conflicting Content-Length list", ok + "Content-Length: 5, 6\r\n\r\nhello", .malformed("conflicting")),
        ParserCase("conflicting Content-Length fields", ok + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
                   .malformed("conflicting")),
        ParserCase("overflowing Content-Length", ok + "Content-Length: 99999999999999999999999999\r\n\r\n", .tooLarge),
        ParserCase("Content-Length one over the cap", ok + "Content-Length: \(cap + 1)\r\n\r\n", .tooLarge),
        // Transfer-Encoding.
        ParserCase("Transfer-Encoding and Content-Length", ok + "Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
                   .malformed("both")),
        ParserCase("gzip", ok + "Transfer-Encoding: gzip\r\n\r\n", .malformed("unsupported transfer coding")),
        ParserCase("gzip, chunked", ok + "Transfer-Encoding: gzip, chunked\r\n\r\n", .malformed("unsupported transfer coding")),
        ParserCase("chunked twice", ok + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                   .malformed("unsupported transfer coding")),
        ParserCase("chunked in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
                   .malformed("HTTP/1.0")),
        // Chunks.
        ParserCase("chunk size not hex", chunked + "zz\r\nhello\r\n", .malformed("bad chunk size")),
        ParserCase("empty chunk size", chunked + "\r\nhello\r\n", .malformed("bad chunk size")),
        ParserCase("negative chunk size", chunked + "-5\r\nhello\r\n", .malformed("bad chunk size")),
        ParserCase("0x chunk size", chunked + "0x5\r\nhello\r\n", .malformed("bad chunk size")),
        ParserCase("space before the chunk size", chunked + " 5\r\nhello\r\n", .malformed("bad chunk size")),
        ParserCase("junk after the chunk size", chunked + "5 x\r\nhello\r\n", .malformed("bad chunk size")),
        ParserCase("control character in a chunk extension", chunked + "5;a\u{1}\r\nhello\r\n", .malformed("bad chunk size")),
        ParserCase("chunk longer than its size", chunked + "3\r\nhello\r\n0\r\n\r\n", .malformed("longer than its size")),
        ParserCase("overflowing chunk size", chunked + "FFFFFFFFFFFFFFFFFFFFFFFF\r\n", .tooLarge),
        ParserCase("one chunk over the cap", chunked + String(cap + 1, radix: 16) + "\r\n", .tooLarge),
        ParserCase("chunks adding up to one over the cap", chunked + "10000\r\n" + atCap + "\r\n1\r\n", .tooLarge),
        ParserCase("a chunk-size line that never ends", chunked + "5;" + String(repeating: "e", count: 9000),
                   .malformed("line longer")),
        ParserCase("65 trailers", chunked + "0\r\n" + fields(65) + "\r\n", .malformed("more than 64 trailer fields")),
        ParserCase("obs-fold in a trailer", chunked + "0\r\nX: a\r\n b\r\n\r\n", .malformed("obsolete line folding")),
        // Missing bodies and early closes.
        ParserCase("closed before a response", "", closes: true, .malformed("before a response")),
        ParserCase("closed in the status line", "HTTP/1.1 20", closes: true, .malformed("header section")),
        ParserCase("closed in the header section", ok + "Content-Length: 5\r\n", closes: true, .malformed("header section")),
        ParserCase("closed before the body", ok + "Content-Length: 5\r\n\r\n", closes: true, .malformed("5 bytes before")),
        ParserCase("closed in the body", ok + "Content-Length: 10\r\n\r\nhello", closes: true, .malformed("5 bytes before")),
        ParserCase("closed before the last chunk", chunked + "5\r\nhello\r\n", closes: true, .malformed("last chunk")),
        ParserCase("closed in the trailers", chunked + "0\r\nX: 1\r\n", closes: true, .malformed("last chunk")),
        ParserCase("body still coming", ok + "Content-Length: 10\r\n\r\nhello", .needMore),
        // Over the cap.
        ParserCase("to the close, one over the cap", ok + "\r\n" + overCap, closes: true, .tooLarge),
        ParserCase("Content-Length body at the cap, more bytes behind it", ok + "Content-Length: \(cap)\r\n\r\n" + overCap,
                   .body(200, atCap)),
    ]

    @Test("well-formed responses", arguments: wellFormedCases, [0, 1, 7])
    func wellFormed(_ c: ParserCase, _ pieces: Int) {
        let event = run(c, pieces: pieces)
        #expect(matches(event, c.verdict), "\(event)")
    }

    @Test("hostile responses", arguments: hostileCases, [0, 1, 7])
    func hostile(_ c: ParserCase, _ pieces: Int) {
        let event = run(c, pieces: pieces)
        #expect(matches(event, c.verdict), "\(event)")
    }

    @Test("fields keep their order and names; values are trimmed")
    func fieldsKept() {
        var parser = HTTPResponseParser()
        let event = parser.receive(Array((ok + "Content-Type:  text/plain ; charset=utf-8 \r\nX-A: 1\r\nx-a: 2\r\n"
                                          + "Content-Length: 0\r\n\r\n").utf8))
        guard case .complete(let r) = event else { Issue.record("\(event)"); return }
        #expect(r.headers.map(\.0) == ["Content-Type", "X-A", "x-a", "Content-Length"])
        #expect(r.values(of: "x-A") == ["1", "2"])
        #expect(r.values(of: "content-type") == ["text/plain ; charset=utf-8"])
        #expect(r.mediaType() == "text/plain")
    }

    @Test("too large as soon as it is certain: at a Content-Length, a chunk size, or the first byte past the cap")
    func tooLargeEarly() {
        var declared = HTTPResponseParser()
        #expect(declared.receive(Array((ok + "Content-Length: \(cap + 1)\r\n\r\n").utf8)) == .failed(.tooLarge))
        #expect(declared.head?.status == 200)

        var chunk = HTTPResponseParser()
        #expect(chunk.receive(Array((chunked + "10001\r\n").utf8)) == .failed(.tooLarge))

        var streamed = HTTPResponseParser()
        #expect(streamed.receive(Array((ok + "\r\n").utf8)) == .needMore)
        #expect(streamed.bodyEndsAtClose)
        #expect(streamed.receive(Array(atCap.utf8)) == .needMore)
        #expect(streamed.receive([UInt8(ascii: "a")]) == .failed(.tooLarge))
        // Terminal: more input changes nothing.
        #expect(streamed.receive(Array("more".utf8)) == .failed(.tooLarge))
        #expect(streamed.finish() == .failed(.tooLarge))
    }

    @Test("the head is available before the body, and only for the final response")
    func headFirst() {
        var parser = HTTPResponseParser()
        _ = parser.receive(Array("HTTP/1.1 100 Continue\r\nX: 1\r\n\r\n".utf8))
        #expect(parser.head == nil)
        #expect(parser.receive(Array("HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 100\r\n\r\nab".utf8)) == .needMore)
        #expect(parser.head == HTTPResponse(status: 301, headers: [("Location", "/x"), ("Content-Length", "100")], body: []))
    }
}

struct MediaTypeCase: Sendable, CustomTestStringConvertible {
    let contentTypes: [String]
    let expected: String?
    var testDescription: String { "\(contentTypes) → \(expected ?? "nil")" }
    init(_ contentTypes: [String], _ expected: String?) {
        self.contentTypes = contentTypes
        self.expected = expected
    }
}

@Suite("Media type")
struct MediaTypeTests {
    static let cases: [MediaTypeCase] = [
        MediaTypeCase(["text/plain"], "text/plain"),
        MediaTypeCase(["text/plain; charset=utf-8"], "text/plain"),
        MediaTypeCase(["text/plain;charset=\"utf-8\""], "text/plain"),
        MediaTypeCase(["TEXT/Plain"], "text/plain"),
        MediaTypeCase(["  text/plain  ;  charset=utf-8  "], "text/plain"),
        MediaTypeCase(["\ttext/plain\t; format=flowed"], "text/plain"),
        MediaTypeCase(["text/plain;"], "text/plain"),
        MediaTypeCase(["text/html"], "text/html"),
        MediaTypeCase(["text/html; charset=utf-8"], "text/html"),
        MediaTypeCase(["text/plainx"], "text/plainx"),
        MediaTypeCase(["text/plain-policy"], "text/plain-policy"),
        MediaTypeCase(["application/text/plain"], nil),
        MediaTypeCase(["text / plain"], nil),
        MediaTypeCase(["text"], nil),
        MediaTypeCase(["/plain"], nil),
        MediaTypeCase(["text/"], nil),
        MediaTypeCase([""], nil),
        MediaTypeCase(["text/plain, text/html"], nil),
        MediaTypeCase([], nil),
        MediaTypeCase(["text/plain", "text/plain; charset=utf-8"], "text/plain"),
        MediaTypeCase(["text/plain", "text/html"], nil),
    ]

    @Test("the media type alone, case-insensitive, whitespace tolerant", arguments: cases)
    func mediaType(_ c: MediaTypeCase) {
        let response = HTTPResponse(status: 200, headers: c.contentTypes.map { ("Content-Type", $0) }, body: [])
        #expect(response.mediaType() == c.expected)
    }

    @Test("the field name is case-insensitive")
    func fieldName() {
        #expect(HTTPResponse(status: 200, headers: [("content-TYPE", "text/plain")], body: []).mediaType() == "text/plain")
    }
}
