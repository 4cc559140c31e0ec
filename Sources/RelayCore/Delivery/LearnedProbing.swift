// The daily re-probe of learned domains, as the daemon runs it: the same
// DomainProber as `relayd probe` (EHLO, STARTTLS, handshake, EHLO, QUIT;
// never mail), its findings put in the learned record's terms. The domain's
// level is what the first MX address that answered offered — where a
// delivery would have gone — and every answering host adds its own
// evidence.
import Dispatch
import RelayLearned
import RelayModel
import RelayTLS

extension DomainProbeResult {
    public func learnedReport(at now: Int) -> LearnedProbeReport {
        func seen(_ r: HostProbeResult) -> TLSEvidence? {
            // Judged under DANE, "verified" means a TLSA record matched, not
            // the chain and name `verify` demands: that teaches "TLS".
            if r.tls?.daneMatch != nil { return .tls }
            switch ProbeVerdict.classify(r) {
            case .noAnswer: return nil
            case .noSTARTTLS, .tlsFailed, .brokenAfterTLS: return .plaintext
            case .tlsUnverified, .daneTLS: return .tls
            case .tlsVerified, .daneVerified: return .verified
            case .daneFailed: return .plaintext
            }
        }
        let answering = addresses.compactMap { r in seen(r).map { (r, $0) } }
        var names: [String] = []
        if case .found(let hosts) = mx { names = hosts.map(\.name) }
        let keys = answering.compactMap { r, s in s > .plaintext ? r.certificates.first?.publicKeySHA256 : nil }.filter { !$0.isEmpty }
        guard let (first, level) = answering.first else {
            let why: String
            switch mx {
            case .failed(let f): why = "MX lookup failed: \(f)"
            default: why = addresses.first?.failure.map { "\($0)" } ?? "no MX address to probe"
            }
            let probe = LearnedRecord.Probe(at: now, seen: .plaintext, host: "", starttlsOffered: nil, handshake: false,
                                            verified: false, version: "", detail: "no MX address answered: \(why)")
            return LearnedProbeReport(probe: probe, hosts: [], mx: names, keys: [])
        }
        let detail = first.failure.map { "\($0)" } ?? "\(first.address): " + (first.tls.map { "\($0.cipher), \($0.verification)" } ?? "no TLS")
        let probe = LearnedRecord.Probe(at: now, seen: level, host: first.host, starttlsOffered: first.starttlsOffered ?? false,
                                        handshake: first.tls != nil, verified: level == .verified,
                                        version: first.tls?.protocolVersion ?? "", detail: detail)
        return LearnedProbeReport(probe: probe, hosts: answering.map { ($0.0.host, $0.1) }, mx: names, keys: keys)
    }
}

public enum LearnedProbing {
    /// The monitor's probe: the domain probed with `prober`, the result on
    /// `queue`, in the record's terms.
    public static func probe(_ prober: DomainProber, queue: DispatchQueue,
                             now: @escaping @Sendable () -> Int) -> LearnedMonitor.Probe {
        { domain, done in
            prober.probe(domain: domain, queue: queue) { result in done(result.learnedReport(at: now())) }
        }
    }
}
