// Thin, typed wrappers over the BSD socket calls the I/O layer needs. IO/
// may import TLS (to run a TLSConnection over a socket) and Dispatch; it
// knows nothing about SMTP.
import RelayModel
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

enum Socket {
    static func setNonBlocking(_ fd: Int32) throws {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else { throw SystemError("fcntl(O_NONBLOCK)") }
    }

    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
        var v = value
        _ = setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    /// A non-blocking listening socket. "*" binds every address, IPv6 and
    /// IPv4 both (a dual-stack socket).
    static func listen(on address: HostPort, backlog: Int32 = 1024) throws -> Int32 {
        let isAny = address.host == "*"
        let ip = isAny ? IPAddress("::")! : IPAddress(address.host)
        guard let ip else { throw SystemError("bad address \(address.host)", EINVAL) }
        let family = ip.isV4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket") }
        do {
            setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            if family == AF_INET6 { setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, isAny ? 0 : 1) }
            var storage = sockaddr_storage()
            let len = fill(&storage, ip, address.port)
            let rc = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
            }
            guard rc == 0 else { throw SystemError("bind \(address)") }
            guard Glibc.listen(fd, backlog) == 0 else { throw SystemError("listen \(address)") }
            try setNonBlocking(fd)
            return fd
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    static func fill(_ storage: inout sockaddr_storage, _ ip: IPAddress, _ port: UInt16) -> socklen_t {
        switch ip {
        case .v4(let b):
            return withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    sin.pointee.sin_family = sa_family_t(AF_INET)
                    sin.pointee.sin_port = port.bigEndian
                    withUnsafeMutableBytes(of: &sin.pointee.sin_addr) { $0.copyBytes(from: b) }
                    return socklen_t(MemoryLayout<sockaddr_in>.size)
                }
            }
        case .v6(let b):
            return withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                    sin6.pointee.sin6_port = port.bigEndian
                    withUnsafeMutableBytes(of: &sin6.pointee.sin6_addr) { $0.copyBytes(from: b) }
                    return socklen_t(MemoryLayout<sockaddr_in6>.size)
                }
            }
        }
    }

    /// The IP of a peer address, IPv4-mapped IPv6 shown as IPv4.
    static func ipAddress(_ storage: sockaddr_storage) -> IPAddress? {
        var s = storage
        switch Int32(s.ss_family) {
        case AF_INET:
            return withUnsafeBytes(of: &s) { raw in
                let sin = raw.load(as: sockaddr_in.self)
                return IPAddress.v4(withUnsafeBytes(of: sin.sin_addr) { Array($0) })
            }
        case AF_INET6:
            return withUnsafeBytes(of: &s) { raw in
                let sin6 = raw.load(as: sockaddr_in6.self)
                return IPAddress.v6(withUnsafeBytes(of: sin6.sin6_addr) { Array($0) }).unmapped
            }
        default:
            return nil
        }
    }

    static func localPort(_ fd: Int32) -> UInt16? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard rc == 0 else { return nil }
        switch Int32(storage.ss_family) {
        case AF_INET: return withUnsafeBytes(of: &storage) { UInt16(bigEndian: $0.load(as: sockaddr_in.self).sin_port) }
        case AF_INET6: return withUnsafeBytes(of: &storage) { UInt16(bigEndian: $0.load(as: sockaddr_in6.self).sin6_port) }
        default: return nil
        }
    }
}
