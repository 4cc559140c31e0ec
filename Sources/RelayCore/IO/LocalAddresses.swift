// The addresses configured on this host's interfaces, from getifaddrs(3)
// (a netlink request on Linux, which the service unit allows for this).
// Delivery asks when a next hop may be relayd itself through a listener
// bound to every address; asked each time, so an address added since
// start-up counts too.
import RelayModel
#if canImport(Glibc)
import Glibc
#endif

public enum LocalAddresses {
    /// Every IPv4 and IPv6 interface address; empty when they cannot be
    /// listed (the loopback ranges are local regardless, see SelfLoop).
    public static func current() -> [IPAddress] {
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0, let first = head else { return [] }
        defer { freeifaddrs(head) }
        var out: [IPAddress] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            if let sa = entry.pointee.ifa_addr {
                switch Int32(sa.pointee.sa_family) {
                case AF_INET:
                    sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                        out.append(.v4(withUnsafeBytes(of: sin.pointee.sin_addr) { Array($0) }))
                    }
                case AF_INET6:
                    sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                        out.append(.v6(withUnsafeBytes(of: sin6.pointee.sin6_addr) { Array($0) }))
                    }
                default:
                    break
                }
            }
            cursor = entry.pointee.ifa_next
        }
        return out
    }
}
