// A queued message as delivery reads it: the envelope from the header
// records, and a body that is either in memory or still in the queue file,
// read in chunks as it is sent. Big bodies are never read whole.
//
// The checksum of a streamed file is verified over exactly the bytes
// handed out, as they are read; the last chunk is handed out only after the
// end record matched. A sender that writes the SMTP end of data only after
// the stream ended (ClientRun) therefore never completes a transaction with
// a corrupt body: a failed check surfaces as an error before the last body
// bytes, and the caller closes the connection without the final ".", which
// makes the receiver discard what it got (RFC 5321 §4.1.1.4). Checking in a
// pass before sending would read the file twice and still check bytes other
// than the ones sent.
import RelayModel
import Dispatch
import RelaySync
#if canImport(Glibc)
import Glibc
#endif

public struct SpooledMessage: Sendable {
    public let id: String
    public let arrival: Int
    public let envelope: Envelope
    public let body: MessageBody

    public init(id: String, arrival: Int, envelope: Envelope, body: MessageBody) {
        self.id = id
        self.arrival = arrival
        self.envelope = envelope
        self.body = body
    }

    public init(_ m: QueuedMessage) {
        self.init(id: m.id, arrival: m.arrival, envelope: m.envelope, body: .memory(m.body))
    }
}

public enum MessageBody: Sendable {
    /// Checked already (or never on disk: handed over by the inbound side).
    case memory([UInt8])
    /// Read from the queue file as it is sent, checked while read.
    case spool(QueueFileReader)

    public var count: Int {
        switch self {
        case .memory(let b): return b.count
        case .spool(let f): return f.header.bodySize
        }
    }

    /// A fresh pass over the body from its first byte (one per attempt).
    public func makeStream() -> BodyStream { BodyStream(self) }

    /// The whole body, checked against the queue file's end record (for
    /// the S/MIME channel, which encrypts it as one piece).
    public func whole() throws -> [UInt8] {
        if case .memory(let b) = self { return b }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        let stream = makeStream()
        while let chunk = try stream.next(maxBytes: 1 << 20) { out += chunk }
        return out
    }

    /// The body's first `limit` bytes, enough for its header section (the
    /// hop count reads them). Unchecked: the streamed send still verifies
    /// the whole file; an unreadable file gives an empty prefix here.
    public func prefix(_ limit: Int = 1 << 20) -> [UInt8] {
        switch self {
        case .memory(let b): return Array(b.prefix(limit))
        case .spool(let f): return (try? f.read(count: min(limit, f.header.bodySize), at: f.header.bodyOffset)) ?? []
        }
    }
}

/// One queue file held open by descriptor; the path may be renamed (moved
/// between spool folders) while it is read. Immutable after init, and
/// pread(2) keeps no file offset, so concurrent deliveries of the same
/// message (one per domain) may read it at once. The one thing that
/// changes — a failed check, found by whichever reader hit it first — is
/// behind a lock.
public final class QueueFileReader: Sendable {
    public let header: QueueFileHeader
    private let fd: Int32
    /// FNV-1a state after the header bytes (those that were parsed).
    let headerChecksum: UInt64
    private let failure = Locked<QueueFileError?>(nil)

    /// Takes `fd` (closed by deinit) and parses the header; `prefix`, the
    /// file's first bytes already read by the caller, saves reading them
    /// again. On a throw the descriptor stays the caller's.
    init(fd: Int32, fileSize: Int, prefix: [UInt8]) throws {
        var head = prefix
        // The header ends at the first blank line; with many recipients it
        // may be longer than the first read.
        var searchFrom = 0
        var blank: Int?
        while true {
            if let i = Self.blankLine(in: head, from: searchFrom) { blank = i; break }
            guard head.count < min(fileSize, Self.maxHeaderLength) else { break }
            searchFrom = max(0, head.count - 1)
            let more = try Self.read(fd, count: min(fileSize - head.count, max(head.count, 64 * 1024)), at: head.count)
            guard !more.isEmpty else { break }
            head += more
        }
        guard let blank else { throw QueueFileError.truncated }
        let header = try QueueFile.decodeHeader(head, end: blank + 2)
        guard header.bodyOffset == blank + 2,
              header.bodyOffset + header.bodySize + QueueFile.trailerLength == fileSize else {
            throw QueueFileError.badRecord("size")
        }
        self.header = header
        self.fd = fd
        self.headerChecksum = QueueFile.fnv1a64(head[..<header.bodyOffset])
    }

    deinit { Glibc.close(fd) }

    /// No header the inbound side writes comes near this (1,000 recipients
    /// with the longest addresses and ORCPTs take about 2.5 MB); a file with
    /// no blank line this far is corrupt, and is not read further.
    static let maxHeaderLength = 64 * 1024 * 1024

    /// The first check that failed while reading, if any; the queue runner
    /// moves such a file to corrupt/ once its deliveries end.
    public var failedCheck: QueueFileError? { failure.withLock { $0 } }

    func recordFailure(_ e: QueueFileError) {
        failure.withLock { if $0 == nil { $0 = e } }
    }

    /// Reads exactly `count` bytes at `offset`, or fewer only at end of file.
    static func read(_ fd: Int32, count: Int, at offset: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + filled, count - filled, off_t(offset + filled)) }
            if n < 0 { if errno == EINTR { continue }; throw SystemError("pread") }
            if n == 0 { break }
            filled += n
        }
        if filled < count { out.removeSubrange(filled...) }
        return out
    }

    func read(count: Int, at offset: Int) throws -> [UInt8] { try Self.read(fd, count: count, at: offset) }

    private static func blankLine(in bytes: [UInt8], from: Int) -> Int? {
        var i = from
        while i + 1 < bytes.count {
            if bytes[i] == 10 && bytes[i + 1] == 10 { return i }
            i += 1
        }
        return nil
    }
}

/// One pass over a body, in chunks. Not shared between threads.
public final class BodyStream {
    private let body: MessageBody
    private var offset = 0
    private var checksum: UInt64 = 0
    private var ended = false

    init(_ body: MessageBody) {
        self.body = body
        if case .spool(let file) = body { checksum = file.headerChecksum }
    }

    /// The next at most `maxBytes` body bytes, or nil once the whole body
    /// was handed out. From a queue file, the chunk that ends the body is
    /// returned only after the end record matched the checksum of
    /// everything read; a mismatch, or a file shorter than its header
    /// says, throws instead.
    public func next(maxBytes: Int) throws -> ArraySlice<UInt8>? {
        precondition(maxBytes > 0)
        switch body {
        case .memory(let bytes):
            guard offset < bytes.count else { return nil }
            let end = min(bytes.count, offset + maxBytes)
            defer { offset = end }
            return bytes[offset..<end]
        case .spool(let file):
            let size = file.header.bodySize
            if offset == size {
                if !ended { try verifyEnd(file) }  // an empty body
                return nil
            }
            let chunk = try file.read(count: min(maxBytes, size - offset), at: file.header.bodyOffset + offset)
            guard !chunk.isEmpty else { throw fail(file, .truncated) }
            checksum = QueueFile.fnv1a64(chunk[...], from: checksum)
            offset += chunk.count
            if offset == size { try verifyEnd(file) }
            return chunk[...]
        }
    }

    private func verifyEnd(_ file: QueueFileReader) throws {
        let at = file.header.bodyOffset + file.header.bodySize
        let trailer = try file.read(count: QueueFile.trailerLength, at: at)
        guard trailer.count == QueueFile.trailerLength else { throw fail(file, .truncated) }
        guard trailer == QueueFile.trailer(checksumOfHeaderAndBody: checksum) else { throw fail(file, .checksumMismatch) }
        ended = true
    }

    private func fail(_ file: QueueFileReader, _ e: QueueFileError) -> QueueFileError {
        file.recordFailure(e)
        return e
    }
}
