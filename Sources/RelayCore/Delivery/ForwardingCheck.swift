// Which TLS-only forwarding targets are known not to take TLS: their copies
// will wait and then bounce to the original sender, never go in plaintext,
// and the operator should hear it before a patient does. Two sources:
//   - the learned record of the target's domain: TLS never seen there,
//     while plaintext sessions were (or the last probe found no STARTTLS);
//   - a probe of the target domain's MX hosts now (the `relayd probe`
//     dialogue: EHLO, STARTTLS, handshake, QUIT; never mail), when every
//     address that answered offered no usable TLS.
// `relayd check-config` prints these as warnings, and the daemon logs them
// at start and at each reload. Warnings only: a domain may get TLS
// tomorrow, and the check may run where DNS or the MX is not reachable.
import Dispatch
import RelayConfig
import RelayLearned
import RelayModel
import RelaySync

public enum ForwardingCheck {
    /// Each target domain of a TLS-only alias, with the aliases that
    /// forward there, in a stable order.
    public static func targets(_ forwarding: Config.Forwarding) -> [(domain: String, aliases: [String])] {
        var byDomain: [String: Set<String>] = [:]
        for (alias, entry) in forwarding.aliases where entry.tlsOnly {
            for t in entry.targets { byDomain[DNSName.normalize(t.domain), default: []].insert(alias) }
        }
        return byDomain.keys.sorted().map { ($0, byDomain[$0]!.sorted()) }
    }

    /// What the learned record says, when it says the domain does not do TLS.
    /// A domain the operator pinned is the operator's call: no warning.
    public static func learnedWarning(_ record: LearnedRecord?, now: Int) -> String? {
        guard let record, record.learned == nil, record.activePin(at: now) == nil else { return nil }
        if let probe = record.lastProbe, probe.answered, probe.starttlsOffered == false {
            return "learned: the last probe found no STARTTLS at \(probe.host)"
        }
        if let plain = record.evidence[.plaintext] {
            return "learned: \(plain.count) session\(plain.count == 1 ? "" : "s") without TLS, none with"
        }
        return nil
    }

    /// What a probe says, when every address that answered had no usable TLS.
    public static func probeWarning(_ result: DomainProbeResult) -> String? {
        let classes = result.addresses.map { ProbeVerdict.classify($0, dane: result.dane?[$0.host]) }
        guard ProbeVerdict.fitness(classes) == .neither else { return nil }
        let hosts = zip(result.addresses, classes).filter { $0.1 != .noAnswer }.map { "\($0.0.host)[\($0.0.address)] \($0.1.rawValue)" }
        return "probe: no usable TLS (\(hosts.joined(separator: ", ")))"
    }

    /// The warning lines for `forwarding`, learned records from `learned`
    /// and, with a prober, a probe of each target domain; `completion` runs
    /// once, on `queue`.
    public static func run(_ forwarding: Config.Forwarding, learned: @escaping @Sendable (String) -> LearnedRecord?,
                           prober: DomainProber?, now: Int, queue: DispatchQueue,
                           completion: @escaping @Sendable ([String]) -> Void) {
        let targets = targets(forwarding)
        let found = Locked<[Int: [String]]>([:])
        let group = DispatchGroup()
        for (slot, target) in targets.enumerated() {
            let lead = "[forwarding] \(target.aliases.map { "<\($0)>" }.joined(separator: ", ")) → \(target.domain) is tls_only, but"
            var lines: [String] = []
            if let w = learnedWarning(learned(target.domain), now: now) { lines.append("\(lead) \(w): its copies will wait, then bounce") }
            found.withLock { $0[slot] = lines }
            guard let prober else { continue }
            group.enter()
            prober.probe(domain: target.domain, queue: queue) { result in
                if let w = probeWarning(result) {
                    found.withLock { $0[slot, default: []].append("\(lead) \(w): its copies will wait, then bounce") }
                }
                group.leave()
            }
        }
        group.notify(queue: queue) {
            let all = found.withLock { f in (0..<targets.count).flatMap { f[$0] ?? [] } }
            completion(all)
        }
    }
}
