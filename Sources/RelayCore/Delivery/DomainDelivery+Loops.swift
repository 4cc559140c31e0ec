// The loop check of a delivery attempt: before any connection, every
// candidate next hop — smarthost, transport relay, fallback relay or MX
// host — is compared with relayd's own listeners (SelfLoop). Postfix's
// rule: a relay never hands mail to itself, nor to a host it is preferred
// to; if that leaves no host, the mail "loops back to myself" and bounces.
import Logging

extension DomainDelivery {
    /// The hops to try: those more preferred than the first that is relayd
    /// itself (an MX list is cut there, as RFC 5321 §5.1 asks of a relay
    /// that is an MX for the domain; a relay's addresses share one level,
    /// so none of them is left). nil when nothing is left: every recipient
    /// has failed permanently with 5.4.6, logged once, nothing attempted.
    func hopsNotLoopingBack(_ hops: [Hop]) -> [Hop]? {
        let listeners = env.config.listeners.map(\.address)
        var local: [IPAddress]?
        func localAddresses() -> [IPAddress] {
            if let local { return local }
            let found = LocalAddresses.current()
            local = found
            return found
        }
        var loop: (hop: Hop, listener: HostPort)?
        for hop in hops {
            if let l = SelfLoop.listener(reachedBy: hop.address, port: hop.port, listeners: listeners,
                                         localAddresses: localAddresses) {
                loop = (hop, l)
                break
            }
        }
        guard let (hop, listener) = loop else { return hops }
        var fields: Logger.Metadata = [
            "id": "\(message.id)", "domain": "\(domain)", "via": "\(hop.via)", "mx": "\(hop.host)",
            "ip": "\(hop.address)", "port": "\(hop.port)", "listener": "\(listener)",
        ]
        let kept = hops.filter { $0.preference < hop.preference }
        if !kept.isEmpty {
            fields["preference"] = "\(hop.preference)"
            env.logger.info("skipping MX hosts not preferred to this relay", metadata: fields)
            return kept
        }
        let failure = DeliveryFailure(.permanent, status: "5.4.6", reason: "mail for \(domain) loops back to myself")
        fields["status"] = "\(failure.status)"
        fields["outcome"] = "\(AttemptOutcome.bounced(status: failure.status).name)"
        env.logger.warning("mail loops back to myself; not attempted", metadata: fields)
        // This line is the record: nothing was attempted, so there is no
        // `delivery attempt` line.
        concludeAll(.failed(failure), hop: nil, run: nil, detail: failure.description, logged: false)
        return nil
    }
}
