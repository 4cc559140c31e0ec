// A failed system call: which call, and errno at the time. Shared by every
// layer that touches the kernel (sockets, the spool, the spool lock).
#if canImport(Glibc)
import Glibc
#endif

public struct SystemError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let code: Int32
    public init(_ call: String, _ code: Int32 = errno) { self.call = call; self.code = code }
    public var description: String { "\(call): \(String(cString: strerror(code)))" }
}
