// One HTTP/1.1 or HTTP/1.0 response (RFC 9112) read from bytes, sans-IO:
// the caller feeds what the connection delivered and gets `.needMore`,
// `.complete(response)` or `.failed(reason)`; `finish()` says the peer
// closed. A plain value with no clock and no socket, so byte-at-a-time and
// hostile-input tests are cheap.
//
// Everything a peer sends is bounded here, before it is kept: the length of
// every line (status, field, chunk size), the number of header (and
// trailer) fields, the bytes of all header sections together, the interim
// (1xx) responses, and the body. A body over its cap fails "too large" as
// soon as that is certain — a Content-Length or chunk size that announces
// it, or the first byte past it — so the parser never holds more than the
// cap plus one unfinished line.
//
// Deliberate choices, each a refusal unless RFC 9112 requires tolerance:
// obs-fold (a field line starting with whitespace) is refused; a lone LF
// ends a line (RFC 9112 §2.2 lets a recipient accept it), a bare CR
// anywhere in a line is refused; Transfer-Encoding must be exactly
// `chunked` and may not appear beside Content-Length (§6.3: "ought to be
// handled as an error") nor in an HTTP/1.0 response (§6.1); repeated
// Content-Length values must agree; chunk extensions and trailer fields are
// read, bounded and ignored; 204 and 304 have no body; 101 is refused (no
// upgrade was asked for).

public struct HTTPResponse: Sendable, Equatable {
    public let status: Int
    /// Field lines in the order received, names as sent, values trimmed.
    public let headers: [(String, String)]
    public let body: [UInt8]

    public init(status: Int, headers: [(String, String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func == (a: HTTPResponse, b: HTTPResponse) -> Bool {
        a.status == b.status && a.body == b.body && a.headers.count == b.headers.count
            && zip(a.headers, b.headers).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }

    /// Every value of the field `name` (compared case-insensitively), in order.
    public func values(of name: String) -> [String] {
        let key = name.lowercased()
        return headers.filter { $0.0.lowercased() == key }.map(\.1)
    }

    /// The media type of Content-Type alone, lower-cased, without its
    /// parameters or surrounding whitespace: "Text/Plain ; charset=utf-8"
    /// is "text/plain". nil when the field is missing, is not
    /// `type "/" subtype`, or appears more than once with different types.
    public func mediaType() -> String? {
        let types = values(of: "Content-Type").map(Self.mediaType(of:))
        guard let first = types.first, let type = first, types.allSatisfy({ $0 == type }) else { return nil }
        return type
    }

    static func mediaType(of value: String) -> String? {
        let bytes = Array(value.utf8)
        let end = bytes.firstIndex(of: UInt8(ascii: ";")) ?? bytes.count
        let main = HTTPSyntax.trimmed(bytes[..<end])
        let parts = main.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(HTTPSyntax.isTokenChar) }) else { return nil }
        return String(decoding: main, as: UTF8.self).lowercased()
    }
}

public enum HTTPParseFailure: Error, Equatable, Sendable, CustomStringConvertible {
    /// The body is (or is announced to be) longer than the cap.
    case tooLarge
    case malformed(String)

    public var description: String {
        switch self {
        case .tooLarge: return "too large"
        case .malformed(let why): return why
        }
    }
}

public enum HTTPParseEvent: Equatable, Sendable {
    case needMore
    case complete(HTTPResponse)
    case failed(HTTPParseFailure)
}

public struct HTTPResponseParser: Sendable {
    public struct Limits: Sendable {
        /// Longest status, field or chunk-size line, without its line end.
        public var maxLineLength: Int
        /// Most field lines in the header section, and again in the trailers.
        public var maxFieldCount: Int
        /// Most bytes of all header sections together (interim, final, trailers).
        public var maxHeaderBytes: Int
        /// Most 1xx responses before the final one.
        public var maxInterimResponses: Int
        public var maxBodyBytes: Int

        public init(maxLineLength: Int = 8 * 1024, maxFieldCount: Int = 64, maxHeaderBytes: Int = 64 * 1024,
                    maxInterimResponses: Int = 4, maxBodyBytes: Int = 64 * 1024) {
            self.maxLineLength = maxLineLength
            self.maxFieldCount = maxFieldCount
            self.maxHeaderBytes = maxHeaderBytes
            self.maxInterimResponses = maxInterimResponses
            self.maxBodyBytes = maxBodyBytes
        }

        /// RFC 8461 §3.3: a policy body is at most 64 KiB.
        public static let mtaSTS = Limits()
    }

    private enum Stage: Sendable {
        case statusLine
        case fields
        case fixedBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case bodyToClose
        case finished(HTTPParseEvent)
    }

    public let limits: Limits
    private var stage = Stage.statusLine
    /// Unconsumed input: at most one unfinished line between calls.
    private var buffer: [UInt8] = []
    private var start = 0
    /// Bytes after `start` already searched for the line's end: input fed
    /// a byte at a time is not scanned again on every call.
    private var scanned = 0
    private var version = 1
    private var status = 0
    private var fields: [(String, String)] = []
    private var trailerCount = 0
    private var headerBytes = 0
    private var interimResponses = 0
    private var body: [UInt8] = []

    /// The final response's status and fields (body empty) once its header
    /// section is complete: a caller may judge them before the body arrives.
    public private(set) var head: HTTPResponse?

    public init(limits: Limits = .mtaSTS) {
        self.limits = limits
    }

    /// True while the body runs to the end of the connection (no length,
    /// not chunked): only the peer's close says whether it is complete.
    public var bodyEndsAtClose: Bool {
        if case .bodyToClose = stage { return true }
        return false
    }

    public mutating func receive<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> HTTPParseEvent {
        if case .finished(let event) = stage { return event }
        buffer.append(contentsOf: bytes)
        let event: HTTPParseEvent
        do throws(HTTPParseFailure) {
            event = try advance()
        } catch {
            event = .failed(error)
        }
        if event != .needMore {
            stage = .finished(event)
            buffer = []
            start = 0
            body = []
        } else if start > 0 {
            buffer.removeSubrange(..<start)
            start = 0
        }
        return event
    }

    /// The peer closed the connection.
    public mutating func finish() -> HTTPParseEvent {
        let event: HTTPParseEvent
        switch stage {
        case .finished(let e): return e
        case .bodyToClose: event = .complete(response())
        case .statusLine where buffer.isEmpty && interimResponses == 0:
            event = .failed(.malformed("connection closed before a response"))
        case .statusLine, .fields: event = .failed(.malformed("connection closed in the header section"))
        case .fixedBody(let remaining): event = .failed(.malformed("connection closed \(remaining) bytes before the end of the body"))
        case .chunkSize, .chunkData, .chunkDataEnd, .trailers:
            event = .failed(.malformed("connection closed before the last chunk"))
        }
        stage = .finished(event)
        buffer = []
        body = []
        return event
    }

    // MARK: steps

    private var available: Int { buffer.count - start }

    private mutating func advance() throws(HTTPParseFailure) -> HTTPParseEvent {
        while true {
            switch stage {
            case .statusLine:
                guard let line = try nextLine(header: true) else { return .needMore }
                try parseStatusLine(line)
                stage = .fields
            case .fields:
                guard let line = try nextLine(header: true) else { return .needMore }
                if line.isEmpty {
                    if let event = try endOfHeaderSection() { return event }
                } else {
                    guard fields.count < limits.maxFieldCount else {
                        throw .malformed("more than \(limits.maxFieldCount) header fields")
                    }
                    fields.append(try Self.parseField(line))
                }
            case .fixedBody(let remaining):
                let n = min(remaining, available)
                try takeBody(n)
                if remaining == n { return .complete(response()) }
                stage = .fixedBody(remaining: remaining - n)
                return .needMore
            case .chunkSize:
                guard let line = try nextLine(header: false) else { return .needMore }
                let size = try Self.parseChunkSize(line)
                if size == 0 {
                    stage = .trailers
                } else {
                    guard size <= limits.maxBodyBytes - body.count else { throw .tooLarge }
                    stage = .chunkData(remaining: size)
                }
            case .chunkData(let remaining):
                let n = min(remaining, available)
                try takeBody(n)
                guard remaining == n else {
                    stage = .chunkData(remaining: remaining - n)
                    return .needMore
                }
                stage = .chunkDataEnd
            case .chunkDataEnd:
                guard let line = try nextLine(header: false) else { return .needMore }
                guard line.isEmpty else { throw .malformed("chunk data longer than its size") }
                stage = .chunkSize
            case .trailers:
                guard let line = try nextLine(header: true) else { return .needMore }
                if line.isEmpty { return .complete(response()) }
                trailerCount += 1
                guard trailerCount <= limits.maxFieldCount else {
                    throw .malformed("more than \(limits.maxFieldCount) trailer fields")
                }
                _ = try Self.parseField(line)
            case .bodyToClose:
                try takeBody(available)
                return .needMore
            case .finished(let event):
                return event
            }
        }
    }

    private func response() -> HTTPResponse {
        HTTPResponse(status: status, headers: fields, body: body)
    }

    private mutating func takeBody(_ n: Int) throws(HTTPParseFailure) {
        guard n <= limits.maxBodyBytes - body.count else { throw .tooLarge }
        body.append(contentsOf: buffer[start..<(start + n)])
        start += n
    }

    /// The next line without its end (LF or CRLF), or nil until one is
    /// complete. Header lines count toward the header byte budget.
    private mutating func nextLine(header: Bool) throws(HTTPParseFailure) -> ArraySlice<UInt8>? {
        // A line may end in CRLF: its LF is at most maxLineLength + 1 bytes in.
        let reach = limits.maxLineLength + 2
        let window = buffer[(start + scanned)...].prefix(reach - scanned)
        guard let lf = window.firstIndex(of: 10) else {
            scanned += window.count
            if scanned >= reach { throw .malformed("line longer than \(limits.maxLineLength) bytes") }
            return nil
        }
        scanned = 0
        var line = buffer[start..<lf]
        if line.last == 13 { line = line.dropLast() }
        guard line.count <= limits.maxLineLength else { throw .malformed("line longer than \(limits.maxLineLength) bytes") }
        guard !line.contains(13) else { throw .malformed("bare CR in a line") }
        if header {
            headerBytes += lf + 1 - start
            guard headerBytes <= limits.maxHeaderBytes else {
                throw .malformed("header section over \(limits.maxHeaderBytes) bytes")
            }
        }
        start = lf + 1
        return line
    }

    /// `HTTP/1.x SP 3DIGIT [SP reason-phrase]`. The reason phrase is read
    /// and ignored; a status line without it is accepted.
    private mutating func parseStatusLine(_ line: ArraySlice<UInt8>) throws(HTTPParseFailure) {
        let bytes = Array(line)
        let prefix = Array("HTTP/1.".utf8)
        guard bytes.count >= 12, bytes.starts(with: prefix), bytes[8] == 32,
              bytes[7] == UInt8(ascii: "0") || bytes[7] == UInt8(ascii: "1"),
              bytes[9...11].allSatisfy(HTTPSyntax.isDigit),
              bytes.count == 12 || bytes[12] == 32,
              bytes.dropFirst(13).allSatisfy({ $0 == 9 || $0 >= 32 && $0 != 127 }) else {
            throw .malformed("bad status line \"\(HTTPSyntax.printable(line))\"")
        }
        version = Int(bytes[7] - UInt8(ascii: "0"))
        status = bytes[9...11].reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        guard (100...599).contains(status) else { throw .malformed("status \(status) out of range") }
        guard status != 101 else { throw .malformed("unexpected 101 Switching Protocols") }
    }

    private static func parseField(_ line: ArraySlice<UInt8>) throws(HTTPParseFailure) -> (String, String) {
        guard let first = line.first, first != 32, first != 9 else {
            throw .malformed("obsolete line folding")
        }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
            throw .malformed("field line without a colon")
        }
        let name = line[..<colon]
        guard !name.isEmpty, name.allSatisfy(HTTPSyntax.isTokenChar) else {
            throw .malformed("bad field name \"\(HTTPSyntax.printable(name))\"")
        }
        let value = HTTPSyntax.trimmed(line[(colon + 1)...])
        guard value.allSatisfy({ $0 == 9 || $0 >= 32 && $0 != 127 }) else {
            throw .malformed("control character in field \(String(decoding: name, as: UTF8.self))")
        }
        return (String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self))
    }

    /// The end of a header section decides what follows: another response
    /// (1xx), nothing, or a body framed one of three ways.
    private mutating func endOfHeaderSection() throws(HTTPParseFailure) -> HTTPParseEvent? {
        if status < 200 {
            interimResponses += 1
            guard interimResponses <= limits.maxInterimResponses else {
                throw .malformed("more than \(limits.maxInterimResponses) interim responses")
            }
            fields = []
            stage = .statusLine
            return nil
        }
        let final = response()
        head = final
        if status == 204 || status == 304 { return .complete(final) }

        let transferEncoding = final.values(of: "Transfer-Encoding")
        let contentLength = final.values(of: "Content-Length")
        if !transferEncoding.isEmpty {
            guard version == 1 else { throw .malformed("Transfer-Encoding in an HTTP/1.0 response") }
            guard contentLength.isEmpty else { throw .malformed("both Transfer-Encoding and Content-Length") }
            let codings = transferEncoding.joined(separator: ",").split(separator: ",")
                .map { String(decoding: HTTPSyntax.trimmed(Array($0.utf8)[...]), as: UTF8.self).lowercased() }
                .filter { !$0.isEmpty }
            guard codings == ["chunked"] else {
                throw .malformed("unsupported transfer coding \"\(transferEncoding.joined(separator: ", "))\"")
            }
            stage = .chunkSize
            return nil
        }
        if !contentLength.isEmpty {
            let length = try Self.parseContentLength(contentLength)
            guard length <= limits.maxBodyBytes else { throw .tooLarge }
            if length == 0 { return .complete(final) }
            stage = .fixedBody(remaining: length)
            return nil
        }
        stage = .bodyToClose
        return nil
    }

    /// 1*DIGIT, every value (repeated fields, comma lists) the same. A
    /// number too large for Int is returned as Int.max: over any cap.
    static func parseContentLength(_ values: [String]) throws(HTTPParseFailure) -> Int {
        var result: Int?
        for element in values.joined(separator: ",").split(separator: ",", omittingEmptySubsequences: false) {
            let digits = HTTPSyntax.trimmed(Array(element.utf8)[...])
            guard !digits.isEmpty, digits.allSatisfy(HTTPSyntax.isDigit) else {
                throw .malformed("bad Content-Length \"\(values.joined(separator: ", "))\"")
            }
            var n = 0
            for d in digits {
                let (times, o1) = n.multipliedReportingOverflow(by: 10)
                let (plus, o2) = times.addingReportingOverflow(Int(d - UInt8(ascii: "0")))
                if o1 || o2 { n = .max; break }
                n = plus
            }
            guard result == nil || result == n else {
                throw .malformed("conflicting Content-Length \"\(values.joined(separator: ", "))\"")
            }
            result = n
        }
        return result ?? 0
    }

    /// `1*HEXDIG [BWS ";" chunk-ext]`; the extensions are ignored. A size
    /// too large for Int is returned as Int.max: over any cap.
    static func parseChunkSize(_ line: ArraySlice<UInt8>) throws(HTTPParseFailure) -> Int {
        let digits = line.prefix(while: HTTPSyntax.isHexDigit)
        guard !digits.isEmpty else { throw .malformed("bad chunk size \"\(HTTPSyntax.printable(line))\"") }
        let rest = line[digits.endIndex...].drop(while: { $0 == 32 || $0 == 9 })
        if let first = rest.first {
            guard first == UInt8(ascii: ";"),
                  rest.allSatisfy({ $0 == 9 || $0 >= 32 && $0 != 127 }) else {
                throw .malformed("bad chunk size \"\(HTTPSyntax.printable(line))\"")
            }
        }
        var n = 0
        for d in digits {
            let (times, o1) = n.multipliedReportingOverflow(by: 16)
            let (plus, o2) = times.addingReportingOverflow(HTTPSyntax.hexValue(d))
            if o1 || o2 { return .max }
            n = plus
        }
        return n
    }
}

/// RFC 9110 §5.6 character classes.
enum HTTPSyntax {
    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

    static func isHexDigit(_ b: UInt8) -> Bool { isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66) }

    static func hexValue(_ b: UInt8) -> Int {
        isDigit(b) ? Int(b - 0x30) : Int((b | 0x20) - 0x61 + 10)
    }

    /// tchar: "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
    /// "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
    static func isTokenChar(_ b: UInt8) -> Bool {
        switch b {
        case 0x30...0x39, 0x41...0x5a, 0x61...0x7a: return true
        default: return Array("!#$%&'*+-.^_`|~".utf8).contains(b)
        }
    }

    /// Without leading and trailing SP and HTAB (OWS).
    static func trimmed(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        let isOWS: (UInt8) -> Bool = { $0 == 32 || $0 == 9 }
        guard let first = bytes.firstIndex(where: { !isOWS($0) }), let last = bytes.lastIndex(where: { !isOWS($0) }) else {
            return bytes[bytes.endIndex...]
        }
        return bytes[first...last]
    }

    /// A line quoted in an error message: at most 80 bytes, controls escaped.
    static func printable(_ bytes: ArraySlice<UInt8>) -> String {
        var out = ""
        for b in bytes.prefix(80) {
            if b >= 32 && b < 127 { out.unicodeScalars.append(Unicode.Scalar(b)) } else { out += "\\x" + String(b, radix: 16) }
        }
        return bytes.count > 80 ? out + "…" : out
    }
}
