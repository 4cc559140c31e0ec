// What `relayd check-config` can tell about where mail would go, beyond
// the file itself: warnings, never errors, since DNS may change tomorrow
// and may be unreachable from where the check runs.
//
//  - a relay domain (mail relayd accepts from anyone) with neither an
//    [outbound.transport] entry nor an MX record: its mail has nowhere to
//    go, or goes to whatever its address record is;
//  - a relay domain whose MX is this host: without a transport entry its
//    mail comes back to relayd (the inbound-gateway loop);
//  - an [[outbound.relay]] that is one of relayd's own listeners.
//
// Relay domains with a leading dot stand for subdomains nobody can list,
// and are not looked up.
import RelayConfig
import RelayDNS
import RelayIO
import RelayModel
import Dispatch
import RelaySync

public final class RouteCheck: Sendable {
    let config: Config
    let listeners: [HostPort]
    let mx: MXResolver
    let localAddresses: @Sendable () -> [IPAddress]
    /// Warnings by slot; the resolver answers on its own queues.
    private let found = Locked<[Int: String]>([:])

    public init(config: Config, resolver: any DNSResolving,
                localAddresses: @escaping @Sendable () -> [IPAddress] = { LocalAddresses.current() }) {
        self.config = config
        self.listeners = config.listeners.map(\.address)
        self.mx = MXResolver(resolver: resolver, shuffle: { $0 })
        self.localAddresses = localAddresses
    }

    /// Every warning, in config order (relays by name, then relay domains).
    public func run(completion: @escaping @Sendable ([String]) -> Void) {
        let group = DispatchGroup()
        var slot = 0
        for relay in config.outbound.relays.values.sorted(by: { $0.name < $1.name }) {
            slot += 1
            let mySlot = slot
            if let ip = IPAddress(relay.address.host) {
                check(relay, [ip], slot: mySlot)
                continue
            }
            group.enter()
            mx.resolveAddresses([(0, relay.address.host)], implicit: true, domain: relay.address.host) { [self] r in
                switch r {
                case .hosts(let hosts): check(relay, hosts.flatMap(\.addresses), slot: mySlot)
                case .failed(let f): report(mySlot, "[[outbound.relay]] \(relay.name): cannot resolve \(relay.address.host): \(f.reason)")
                }
                group.leave()
            }
        }
        let outbound = config.outbound
        for domain in config.relay.domains where !domain.hasPrefix(".") {
            slot += 1
            let mySlot = slot
            if outbound.smarthost != nil || DNSName.lookupKeys(domain).contains(where: { outbound.transport[$0] != nil }) {
                continue
            }
            group.enter()
            mx.resolve(domain) { [self] r in
                check(domain, r, slot: mySlot)
                group.leave()
            }
        }
        group.notify(queue: .global()) { [self] in
            completion(found.withLock { $0 }.sorted { $0.key < $1.key }.map(\.value))
        }
    }

    private func report(_ slot: Int, _ text: String) { found.withLock { $0[slot] = text } }

    private func check(_ relay: Config.UpstreamRelay, _ addresses: [IPAddress], slot: Int) {
        for ip in addresses {
            if let l = SelfLoop.listener(reachedBy: ip, port: relay.address.port, listeners: listeners, localAddresses: localAddresses) {
                return report(slot, "[[outbound.relay]] \(relay.name) (\(relay.address)) is relayd's own listener \(l): "
                              + "mail sent through it would loop back to myself (bounced with 5.4.6)")
            }
        }
    }

    private func check(_ domain: String, _ resolution: MXResolution, slot: Int) {
        let what = "relay domain \(domain)"
        switch resolution {
        case .failed(let f) where f.isPermanent:
            report(slot, "\(what) has neither an [outbound.transport] entry nor a usable MX: \(f.reason)")
        case .failed(let f):
            report(slot, "\(what): its MX hosts could not be checked: \(f.reason)")
        case .hosts(let hosts):
            for h in hosts {
                for ip in h.addresses where SelfLoop.isLocal(ip, localAddresses: localAddresses) {
                    let listener = SelfLoop.listener(reachedBy: ip, port: config.outbound.mxPort, listeners: listeners,
                                                     localAddresses: localAddresses)
                    let effect = listener.map { "relayd's listener \($0) would receive its mail again: it loops back to myself (bounced with 5.4.6)" }
                        ?? "its mail would come back to this host"
                    return report(slot, "\(what): its \(h.implicit ? "address record" : "MX host \(h.name)") [\(ip)] is this host; "
                                  + "\(effect); add an [outbound.transport] entry")
                }
            }
            if let h = hosts.first, h.implicit {
                report(slot, "\(what) has neither an [outbound.transport] entry nor an MX record; its mail goes to the "
                       + "domain's own address \(h.addresses.map(\.description).joined(separator: ", "))")
            }
        }
    }
}
