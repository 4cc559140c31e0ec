// IP addresses and networks as values, parsed with inet_pton so there is one
// notion of "a valid address" for config, relay control and DNS answers.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4([UInt8])   // 4 bytes, network order
    case v6([UInt8])   // 16 bytes, network order

    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self = .v4(withUnsafeBytes(of: &v4) { Array($0) })
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self = .v6(withUnsafeBytes(of: &v6) { Array($0) })
            return
        }
        return nil
    }

    public var bytes: [UInt8] {
        switch self { case .v4(let b), .v6(let b): return b }
    }

    public var isV4: Bool { if case .v4 = self { return true } else { return false } }

    /// 127.0.0.0/8 or ::1 (or an IPv4-mapped 127/8): this host only.
    public var isLoopback: Bool {
        switch unmapped {
        case .v4(let b): return b[0] == 127
        case .v6(let b): return b[0..<15].allSatisfy { $0 == 0 } && b[15] == 1
        }
    }

    /// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) seen as the IPv4 address
    /// it is, so "127.0.0.0/8" matches a v4 client on a dual-stack socket.
    public var unmapped: IPAddress {
        if case .v6(let b) = self, b[0..<10].allSatisfy({ $0 == 0 }), b[10] == 0xff, b[11] == 0xff {
            return .v4(Array(b[12..<16]))
        }
        return self
    }

    /// The address with every bit after the first `length` cleared: the
    /// network it is in, as a value to count or look up by.
    public func masked(toPrefix length: Int) -> IPAddress {
        var b = bytes
        for i in b.indices {
            let keep = min(8, max(0, length - i * 8))
            b[i] &= UInt8(truncatingIfNeeded: 0xff << (8 - keep))
        }
        return isV4 ? .v4(b) : .v6(b)
    }

    public var description: String {
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = isV4 ? AF_INET : AF_INET6
        let ok = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buf, socklen_t(buf.count)) != nil }
        return ok ? buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } : "?"
    }
}

public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let prefixLength: Int

    /// "192.0.2.0/24", "2001:db8::/32", or a bare address (a host route).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2, let addr = IPAddress(String(parts[0])) else { return nil }
        let maxLen = addr.bytes.count * 8
        var len = maxLen
        if parts.count == 2 {
            guard let l = Int(parts[1]), (0...maxLen).contains(l), !parts[1].hasPrefix("+") else { return nil }
            len = l
        }
        self.address = addr
        self.prefixLength = len
    }

    public func contains(_ candidate: IPAddress) -> Bool {
        let c = candidate.unmapped
        guard c.isV4 == address.isV4 else { return false }
        let a = address.bytes, b = c.bytes
        var remaining = prefixLength
        var i = 0
        while remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xff << (8 - bits))
            if a[i] & mask != b[i] & mask { return false }
            remaining -= bits
            i += 1
        }
        return true
    }

    public var description: String { "\(address)/\(prefixLength)" }
}

/// "host:port", "[v6]:port", or just "host" with a default port.
public struct HostPort: Hashable, Sendable, CustomStringConvertible {
    public let host: String
    public let port: UInt16

    public init?(_ text: String, defaultPort: UInt16?) {
        var host = text
        var portText: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { return nil }
                portText = rest.dropFirst()
            }
        } else if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") {
            host = String(text[..<colon])
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty else { return nil }
        if let portText {
            guard let p = UInt16(portText), p > 0 else { return nil }
            self.port = p
        } else {
            guard let d = defaultPort else { return nil }
            self.port = d
        }
        self.host = host
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
