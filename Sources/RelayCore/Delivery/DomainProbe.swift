// A whole domain probed: its MX hosts resolved as delivery resolves them
// (MXResolver: preference order, implicit MX, null MX), each host's
// addresses IPv4 first as DeliveryAttempt orders them, and every address
// probed by a HostProber — at most `maxAddresses` of them, `concurrency`
// at a time. The result keeps delivery's order whatever order the probes
// end in. Prints nothing, decides nothing: the verdict is ProbeVerdict's,
// the words are ProbeReport's.
//
// Shared state (the next address to start, the results so far) lives in a
// Locked, so the prober itself is an ordinary Sendable class.
import Dispatch
import RelayDNS
import RelayModel
import RelaySMTP
import RelaySync

public struct DomainProbeResult: Sendable, Equatable {
    public enum MXLookup: Sendable, Equatable {
        case found([MXHost])
        /// The lookup failed, with delivery's reason (a null MX included).
        case failed(String)
        /// Not looked up: the operator named the address (and its name).
        case skipped
    }

    public let domain: String
    public let mx: MXLookup
    /// Probed addresses in delivery's order.
    public let addresses: [HostProbeResult]
    /// Addresses found but not probed (over `maxAddresses`).
    public let notProbed: Int

    /// DANE: each MX host's TLSA state (nil: `[dns] dnssec` is off, or
    /// the MX lookup failed).
    public var dane: [String: DANEHostState]? = nil

    public init(domain: String, mx: MXLookup, addresses: [HostProbeResult], notProbed: Int = 0,
                dane: [String: DANEHostState]? = nil) {
        self.domain = domain
        self.mx = mx
        self.addresses = addresses
        self.notProbed = notProbed
        self.dane = dane
    }
}

public final class DomainProber: Sendable {
    let mx: MXResolver
    let prober: HostProber
    let port: UInt16
    let tlsa: TLSALookup?
    let maxAddresses: Int
    let concurrency: Int

    /// Equal-preference MX hosts keep the resolver's order: a probe's
    /// report should not reshuffle between runs.
    /// `dnssec`: the resolver validates (`[dns] dnssec`); secure MX hosts
    /// are then asked for TLSA records and probed under them.
    public init(resolver: any DNSResolving, prober: HostProber, port: UInt16, maxAddresses: Int = 10, concurrency: Int = 4,
                dnssec: Bool = false) {
        self.mx = MXResolver(resolver: resolver, trustAD: dnssec, shuffle: { $0 })
        self.tlsa = dnssec ? TLSALookup(resolver: resolver) : nil
        self.prober = prober
        self.port = port
        self.maxAddresses = max(1, maxAddresses)
        self.concurrency = max(1, concurrency)
    }

    /// Each MX host's addresses, IPv4 first, as delivery would try them.
    public static func targets(_ hosts: [MXHost]) -> [(host: String, address: IPAddress)] {
        hosts.flatMap { h in h.addresses.sorted(by: { $0.isV4 && !$1.isV4 }).map { (h.name, $0) } }
    }

    /// Resolves the domain's MX hosts and probes their addresses;
    /// `completion` runs once, on `queue`.
    public func probe(domain: String, queue: DispatchQueue, completion: @escaping @Sendable (DomainProbeResult) -> Void) {
        let d = DNSName.normalize(domain)
        mx.resolve(d) { [self] resolution in
            switch resolution {
            case .failed(let f):
                queue.async { completion(DomainProbeResult(domain: d, mx: .failed(f.reason), addresses: [])) }
            case .hosts(let hosts):
                let all = Self.targets(hosts)
                let chosen = Array(all.prefix(maxAddresses))
                let probe: @Sendable ([String: DANEHostState]?) -> Void = { [self] dane in
                    probeAll(chosen, dane: dane ?? [:]) { results in
                        queue.async {
                            completion(DomainProbeResult(domain: d, mx: .found(hosts), addresses: results,
                                                         notProbed: all.count - chosen.count, dane: dane))
                        }
                    }
                }
                if let tlsa { tlsa.lookup(hosts, port: port) { probe($0) } } else { probe(nil) }
            }
        }
    }

    /// Probes one address the operator named. Without `name`, the domain's
    /// first MX host names it when the MX lookup answers, else the domain
    /// does: the certificate is checked against that name.
    public func probe(domain: String, address: IPAddress, name: String?, queue: DispatchQueue,
                      completion: @escaping @Sendable (DomainProbeResult) -> Void) {
        let d = DNSName.normalize(domain)
        let run: @Sendable (String, DomainProbeResult.MXLookup) -> Void = { [self] host, lookup in
            prober.probe(host: host, address: address, port: port) { result in
                queue.async { completion(DomainProbeResult(domain: d, mx: lookup, addresses: [result])) }
            }
        }
        if let name { return run(DNSName.normalize(name), .skipped) }
        mx.resolve(d) { resolution in
            switch resolution {
            case .hosts(let hosts): run(hosts.first?.name ?? d, .found(hosts))
            case .failed(let f): run(d, .failed(f.reason))
            }
        }
    }

    /// Probes `targets`, at most `concurrency` at once; results in order.
    func probeAll(_ targets: [(host: String, address: IPAddress)], dane: [String: DANEHostState] = [:],
                  completion: @escaping @Sendable ([HostProbeResult]) -> Void) {
        guard !targets.isEmpty else { return completion([]) }
        struct Progress {
            var next = 0
            var results: [HostProbeResult?]
            var left: Int
        }
        let progress = Locked(Progress(results: Array(repeating: nil, count: targets.count), left: targets.count))
        let list = targets.map { HostProbeTarget(host: $0.host, address: $0.address) }
        @Sendable func startNext() {
            let index: Int? = progress.withLock { p in
                guard p.next < list.count else { return nil }
                defer { p.next += 1 }
                return p.next
            }
            guard let index else { return }
            var policy: DANEPolicy?
            if case .usable(let p)? = dane[list[index].host] { policy = p }
            prober.probe(host: list[index].host, address: list[index].address, port: port, dane: policy) { result in
                let finished: [HostProbeResult]? = progress.withLock { p in
                    p.results[index] = result
                    p.left -= 1
                    return p.left == 0 ? p.results.compactMap { $0 } : nil
                }
                if let finished { return completion(finished) }
                startNext()
            }
        }
        for _ in 0..<min(concurrency, list.count) { startNext() }
    }
}

/// One address to probe and the MX name it answers for.
struct HostProbeTarget: Sendable {
    let host: String
    let address: IPAddress
}
