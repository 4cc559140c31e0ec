// gzip (RFC 1952) through zlib, for the report's gzip form (RFC 8460 §5.3:
// application/tlsrpt+gzip). `gunzip` is for the tests and the CLI's
// --json of a stored report; its output is bounded.
import CZlib

public enum Gzip {
    public enum Failure: Error, Equatable, Sendable {
        case zlib(Int32)
        case tooLarge
        case truncated
    }

    /// windowBits 15 + 16: zlib writes a gzip header and trailer.
    static let gzipWindowBits: Int32 = 15 + 16

    public static func compress(_ input: [UInt8], level: Int32 = 9) throws -> [UInt8] {
        var stream = z_stream()
        var rc = deflateInit2_(&stream, level, Z_DEFLATED, gzipWindowBits, 8, Z_DEFAULT_STRATEGY,
                               zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard rc == Z_OK else { throw Failure.zlib(rc) }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(input.count))) + 32)
        var mutableInput = input
        let produced: Int = mutableInput.withUnsafeMutableBufferPointer { inBuf in
            output.withUnsafeMutableBufferPointer { outBuf in
                stream.next_in = inBuf.baseAddress
                stream.avail_in = UInt32(inBuf.count)
                stream.next_out = outBuf.baseAddress
                stream.avail_out = UInt32(outBuf.count)
                rc = deflate(&stream, Z_FINISH)
                return outBuf.count - Int(stream.avail_out)
            }
        }
        guard rc == Z_STREAM_END else { throw Failure.zlib(rc) }
        return Array(output[..<produced])
    }

    /// The data of one gzip member; at most `limit` bytes.
    public static func decompress(_ input: [UInt8], limit: Int = 16 << 20) throws -> [UInt8] {
        var stream = z_stream()
        var rc = inflateInit2_(&stream, gzipWindowBits, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard rc == Z_OK else { throw Failure.zlib(rc) }
        defer { inflateEnd(&stream) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var mutableInput = input
        try mutableInput.withUnsafeMutableBufferPointer { inBuf in
            stream.next_in = inBuf.baseAddress
            stream.avail_in = UInt32(inBuf.count)
            repeat {
                let n: Int = chunk.withUnsafeMutableBufferPointer { outBuf in
                    stream.next_out = outBuf.baseAddress
                    stream.avail_out = UInt32(outBuf.count)
                    rc = inflate(&stream, Z_NO_FLUSH)
                    return outBuf.count - Int(stream.avail_out)
                }
                guard rc == Z_OK || rc == Z_STREAM_END else {
                    throw rc == Z_BUF_ERROR ? Failure.truncated : Failure.zlib(rc)
                }
                result += chunk[..<n]
                guard result.count <= limit else { throw Failure.tooLarge }
                if rc == Z_OK, n == 0, stream.avail_in == 0 { throw Failure.truncated }
            } while rc != Z_STREAM_END
        }
        return result
    }
}
