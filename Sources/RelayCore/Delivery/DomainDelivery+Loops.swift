// The loop check's question for DeliveryAttempt — "which of my listeners
// would this hop reach?" — answered from the configured listeners and this
// host's interface addresses (IO/LocalAddresses). The addresses are read at
// most once per attempt, and only when a listener bound to every address
// could be the one reached (SelfLoop asks lazily). The decision itself —
// cut the MX list above relayd, or bounce 5.4.6 when nothing is left, as
// Postfix does — is DeliveryAttempt.notLoopingBack.
import RelayIO
import RelayModel
extension DomainDelivery {
    static func selfListener(listeners: [HostPort]) -> (Hop) -> HostPort? {
        final class Local {
            var addresses: [IPAddress]?
            func get() -> [IPAddress] {
                if let addresses { return addresses }
                let found = LocalAddresses.current()
                addresses = found
                return found
            }
        }
        let local = Local()
        return { hop in
            SelfLoop.listener(reachedBy: hop.address, port: hop.port, listeners: listeners, localAddresses: local.get)
        }
    }
}
