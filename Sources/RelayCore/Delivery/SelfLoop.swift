// Whether a next hop is relayd itself: the address and port a delivery is
// about to connect to, compared with the daemon's own listeners. A relay
// that connects to itself accepts the message again (its own networks are
// trusted) and circles it until the hop count stops it; Postfix calls this
// "mail for DOMAIN loops back to myself". Pure: the caller supplies this
// host's interface addresses (IO/LocalAddresses), asked for only when a
// listener bound to every address could be the one reached.
import RelayModel
public enum SelfLoop {
    /// The listener a connection to `address` and `port` would reach, or
    /// nil. A listener bound to one address is reached by that address; one
    /// bound to "*" by every local address, "0.0.0.0" by every local IPv4
    /// address and "::" (IPv6 only) by every local IPv6 address. The
    /// loopback ranges are always local.
    public static func listener(reachedBy address: IPAddress, port: UInt16, listeners: [HostPort],
                                localAddresses: () -> [IPAddress]) -> HostPort? {
        let target = destination(address)
        var local: Bool?
        func isLocal() -> Bool {
            if let local { return local }
            let answer = Self.isLocal(target, localAddresses: localAddresses)
            local = answer
            return answer
        }
        for l in listeners where l.port == port {
            if l.host == "*" {
                if isLocal() { return l }
                continue
            }
            guard let bound = IPAddress(l.host)?.unmapped else { continue }
            if bound.bytes.allSatisfy({ $0 == 0 }) {
                if bound.isV4 == target.isV4 && isLocal() { return l }
            } else if bound == target {
                return l
            }
        }
        return nil
    }

    /// Whether a connection to `address` stays on this host: a loopback
    /// address, the unspecified address, or one of `localAddresses`.
    public static func isLocal(_ address: IPAddress, localAddresses: () -> [IPAddress]) -> Bool {
        let target = destination(address)
        return isLoopback(target) || localAddresses().contains { $0.unmapped == target }
    }

    /// Where a connection to `address` really goes: IPv4-mapped addresses
    /// are IPv4, and the unspecified address as a destination means this
    /// host's loopback (0.0.0.0 is 127.0.0.1 to Linux, :: is ::1) — a null
    /// route some domains publish as their MX.
    static func destination(_ address: IPAddress) -> IPAddress {
        let a = address.unmapped
        guard a.bytes.allSatisfy({ $0 == 0 }) else { return a }
        return a.isV4 ? .v4([127, 0, 0, 1]) : .v6(Array(repeating: 0, count: 15) + [1])
    }

    static func isLoopback(_ a: IPAddress) -> Bool {
        switch a {
        case .v4(let b): return b[0] == 127
        case .v6(let b): return b == Array(repeating: 0, count: 15) + [1]
        }
    }
}
