// Turns a destination domain into the ordered list of hosts to try (RFC 5321
// §5.1): MX records by preference with equal preferences shuffled, the
// domain itself as implicit MX when it has none, RFC 7505 null MX as an
// immediate permanent failure. DNS trouble (SERVFAIL, timeouts, malformed
// answers) is always transient: "could not look it up" is never taken for
// "does not exist".
//
// Delivery/ may import DNS, TLS, IO, SMTP, Policy, Queue and Model.
import RelayDNS
import RelayModel
import Dispatch
import RelaySync

public struct MXHost: Equatable, Sendable {
    public let name: String
    public let preference: Int
    public let addresses: [IPAddress]
    /// Implicit MX: the domain's own address records.
    public let implicit: Bool
    /// DNSSEC (only from a resolver the operator declared validating):
    /// every address answer for the host was authenticated (AD). Only then
    /// is it asked for TLSA records (RFC 7672 §2.2.2).
    public var secure = false
    /// DNSSEC: the MX answer that named this host (every step of its CNAME
    /// chain) was authenticated too. RFC 7672 DANE does not need it (a
    /// secure host is enough); REQUIRETLS (RFC 8689 §4.2.1) does, or a
    /// forged MX answer could name a host in the attacker's own signed
    /// zone.
    public var mxSecure = false
    /// The name the address records were found under when `name` is an
    /// alias (the end of its CNAME chain); nil when it is not.
    public var canonicalName: String? = nil
}

public enum MXResolution: Equatable, Sendable {
    case hosts([MXHost])
    case failed(DeliveryFailure)
}

public final class MXResolver: Sendable {
    let resolver: any DNSResolving
    let shuffle: @Sendable ([MXHost]) -> [MXHost]
    /// `[dns] dnssec`: the resolver validates and its AD bit counts.
    let trustAD: Bool

    public init(resolver: any DNSResolving, trustAD: Bool = false,
                shuffle: @escaping @Sendable ([MXHost]) -> [MXHost] = { $0.shuffled() }) {
        self.resolver = resolver
        self.trustAD = trustAD
        self.shuffle = shuffle
    }

    public func resolve(_ domain: String, completion: @escaping @Sendable (MXResolution) -> Void) {
        resolve(DNSName.normalize(domain), depth: 0, securedSoFar: true, completion: completion)
    }

    /// `depth` counts CNAME hops followed by asking again (a resolver may
    /// return the alias without chasing it); at most 8, as loops happen.
    func resolve(_ d: String, depth: Int, securedSoFar: Bool, completion: @escaping @Sendable (MXResolution) -> Void) {
        resolver.query(d, .mx) { [self] result in
            switch result {
            case .failure(let e):
                completion(.failed(DeliveryFailure(.transient, status: "4.4.3", reason: "MX lookup for \(d) failed: \(e)")))
            case .success(let r):
                switch r.rcode {
                case .noError: break
                case .nxDomain:
                    return completion(.failed(DeliveryFailure(.permanent, status: "5.1.2", reason: "domain \(d) does not exist (NXDOMAIN)")))
                default:
                    return completion(.failed(DeliveryFailure(.transient, status: "4.4.3", reason: "MX lookup for \(d): \(r.rcode)")))
                }
                // Owners the answer may legitimately use: the name and its CNAME chain.
                var owners: Set<String> = [d]
                for rec in r.answers { if case .cname(let target) = rec.data, owners.contains(rec.name) { owners.insert(target) } }
                let mx: [(Int, String)] = r.answers.compactMap {
                    guard owners.contains($0.name), case .mx(let pref, let exchange) = $0.data else { return nil }
                    return (Int(pref), exchange)
                }
                if mx.contains(where: { $0.1.isEmpty }) {
                    return completion(.failed(DeliveryFailure(.permanent, status: "5.1.10",
                                                              reason: "\(d) does not accept mail (null MX, RFC 7505)")))
                }
                if mx.isEmpty, let alias = DNSResponse.owners(of: d, in: r.answers).subtracting([d]).first(where: { target in
                    !r.answers.contains { $0.name == target && { if case .cname = $0.data { return true } else { return false } }($0) }
                }) {
                    guard depth < 8 else {
                        return completion(.failed(DeliveryFailure(.transient, status: "4.4.3", reason: "CNAME chain too long at \(d)")))
                    }
                    return resolve(alias, depth: depth + 1, securedSoFar: securedSoFar && trustAD && r.authenticated,
                                   completion: completion)
                }
                let targets = mx.isEmpty ? [(0, d)] : mx
                resolveAddresses(targets, implicit: mx.isEmpty, domain: d, mxSecure: securedSoFar && trustAD && r.authenticated,
                                 completion: completion)
            }
        }
    }

    /// Resolves A and AAAA for each host name, in parallel.
    /// `mxSecure`: the MX answer that led here was authenticated (false
    /// for a relay's own name, which no MX answer named).
    func resolveAddresses(_ targets: [(Int, String)], implicit: Bool, domain: String, mxSecure: Bool = false,
                          completion: @escaping @Sendable (MXResolution) -> Void) {
        let group = DispatchGroup()
        struct Collected {
            var found: [String: [IPAddress]] = [:]
            var transientErrors: [String] = []
            /// Hosts with an address answer that was not authenticated.
            var insecure: Set<String> = []
            var canonical: [String: String] = [:]
        }
        let trustAD = self.trustAD
        let collected = Locked(Collected())
        for (_, name) in targets {
            for type in [DNSType.a, .aaaa] {
                group.enter()
                resolver.query(name, type) { result in
                    collected.withLock { c in
                        switch result {
                        case .success(let r) where r.rcode == .noError || r.rcode == .nxDomain:
                            if !(trustAD && r.authenticated) { c.insecure.insert(name) }
                            let owners = DNSResponse.owners(of: name, in: r.answers)
                            for rec in r.answers where owners.contains(rec.name) {
                                switch rec.data {
                                case .a(let ip) where type == .a: c.found[name, default: []].append(ip)
                                case .aaaa(let ip) where type == .aaaa: c.found[name, default: []].append(ip)
                                default: break
                                }
                                if rec.name != name, rec.name != DNSName.normalize(name) { c.canonical[name] = rec.name }
                            }
                        case .success(let r):
                            c.transientErrors.append("\(name)/\(type): \(r.rcode)")
                        case .failure(let e):
                            c.transientErrors.append("\(name)/\(type): \(e)")
                        }
                    }
                    group.leave()
                }
            }
        }
        group.notify(queue: .global()) { [self] in
            let c = collected.withLock { $0 }
            var hosts: [MXHost] = []
            // Group by preference, shuffle inside each group (RFC 5321 §5.1).
            let prefs = Set(targets.map(\.0)).sorted()
            for p in prefs {
                let same = targets.filter { $0.0 == p }.map {
                    MXHost(name: $0.1, preference: $0.0, addresses: c.found[$0.1] ?? [], implicit: implicit,
                           secure: !c.insecure.contains($0.1), mxSecure: mxSecure, canonicalName: c.canonical[$0.1])
                }
                hosts += shuffle(same)
            }
            let usable = hosts.filter { !$0.addresses.isEmpty }
            if !usable.isEmpty { return completion(.hosts(usable)) }
            if !c.transientErrors.isEmpty {
                return completion(.failed(DeliveryFailure(.transient, status: "4.4.3",
                                                          reason: "address lookup failed: \(c.transientErrors.joined(separator: "; "))")))
            }
            completion(.failed(DeliveryFailure(.permanent, status: implicit ? "5.1.2" : "5.4.4",
                                               reason: implicit ? "\(domain) has no MX and no address records"
                                                   : "no MX host of \(domain) has an address")))
        }
    }
}
