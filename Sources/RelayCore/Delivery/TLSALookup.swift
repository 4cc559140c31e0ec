// DANE for SMTP (RFC 7672 §2.2): what one MX host's TLSA records say,
// asked only when its address records were secure — an unsigned zone's
// broken TLSA must never defer mail, so an insecure host gets no TLSA query
// at all. The query goes to `_<port>._tcp.<host>`; for a host reached
// through a CNAME chain, first to the chain's end, then to the name the MX
// record gave (§2.2.2). Outcomes:
//   - usable records (after the RFC 7672 §3.1.3 filter): DANE
//     authentication is mandatory for the host;
//   - records, none usable: TLS is mandatory, without authentication;
//   - a secure denial, or an answer that is not authenticated (the TLSA
//     zone is unsigned): no DANE for the host;
//   - anything else (SERVFAIL — which is also what a validator says of a
//     bogus RRset —, a timeout, a malformed answer): the host cannot be
//     used now; delivery defers it with 4.7.5, never treats it as "no DANE".
import Dispatch
import RelayDNS
import RelayModel
import RelaySync

public enum DANEHostState: Equatable, Sendable {
    /// The host's address records were not secure: no TLSA query was made.
    case insecure
    /// Securely, no TLSA records (or the TLSA zone is unsigned).
    case noRecords
    /// Usable records: authenticate by them.
    case usable(DANEPolicy)
    /// Records present, none usable: TLS without authentication.
    case unusable([TLSARecord])
    /// The lookup failed or did not validate.
    case failed(String)

    /// The word the delivery log uses (`dane=`).
    public var logWord: String {
        switch self {
        case .insecure: return "insecure"
        case .noRecords: return "none"
        case .usable: return "verified"
        case .unusable: return "unusable"
        case .failed: return "bogus"
        }
    }

    /// Whether DANE applies to the host (TLS is then mandatory).
    public var applies: Bool {
        switch self {
        case .usable, .unusable: return true
        case .insecure, .noRecords, .failed: return false
        }
    }
}

public struct TLSALookup: Sendable {
    let resolver: any DNSResolving

    public init(resolver: any DNSResolving) { self.resolver = resolver }

    public static func queryName(_ host: String, port: UInt16) -> String { "_\(port)._tcp.\(DNSName.normalize(host))" }

    /// Each host's state, keyed by host name; hosts are looked up at once.
    public func lookup(_ hosts: [MXHost], port: UInt16, completion: @escaping @Sendable ([String: DANEHostState]) -> Void) {
        let states = Locked<[String: DANEHostState]>([:])
        let group = DispatchGroup()
        for host in hosts {
            group.enter()
            lookup(host, port: port) { state in
                states.withLock { $0[host.name] = state }
                group.leave()
            }
        }
        group.notify(queue: .global()) { completion(states.withLock { $0 }) }
    }

    public func lookup(_ host: MXHost, port: UInt16, completion: @escaping @Sendable (DANEHostState) -> Void) {
        guard host.secure else { return completion(.insecure) }
        var names = [DNSName.normalize(host.name)]
        if let c = host.canonicalName.map(DNSName.normalize), c != names[0] { names.insert(c, at: 0) }
        next(names[...], original: names.last!, port: port, completion: completion)
    }

    private func next(_ names: ArraySlice<String>, original: String, port: UInt16,
                      completion: @escaping @Sendable (DANEHostState) -> Void) {
        guard let base = names.first else { return completion(.noRecords) }
        let qname = Self.queryName(base, port: port)
        resolver.query(qname, .tlsa) { result in
            switch Self.read(result, qname: qname) {
            case .records(let records):
                let usable = records.filter(\.isUsableForSMTP)
                if usable.isEmpty { return completion(.unusable(records)) }
                completion(.usable(DANEPolicy(baseDomain: base, extraNames: base == original ? [] : [original], records: usable)))
            case .none:
                self.next(names.dropFirst(), original: original, port: port, completion: completion)
            case .failed(let why):
                completion(.failed(why))
            }
        }
    }

    enum Answer: Equatable {
        case records([TLSARecord])
        case none
        case failed(String)
    }

    /// One TLSA answer read strictly: records count only when the answer
    /// is authenticated and they belong to the name asked (or its CNAME
    /// chain); NXDOMAIN/NODATA is "none" whether signed or not (an
    /// unsigned denial means the zone is insecure: no DANE either).
    static func read(_ result: Result<DNSResponse, DNSError>, qname: String) -> Answer {
        switch result {
        case .failure(let e):
            return .failed("TLSA lookup for \(qname) failed: \(e)")
        case .success(let r):
            switch r.rcode {
            case .noError, .nxDomain: break
            default: return .failed("TLSA lookup for \(qname): \(r.rcode)")
            }
            let owners = DNSResponse.owners(of: qname, in: r.answers)
            let records: [TLSARecord] = r.answers.compactMap { rec in
                guard owners.contains(rec.name), case .tlsa(let u, let s, let m, let data) = rec.data else { return nil }
                return TLSARecord(usage: u, selector: s, matchingType: m, data: data)
            }
            guard !records.isEmpty, r.authenticated else { return .none }
            return .records(records)
        }
    }
}
