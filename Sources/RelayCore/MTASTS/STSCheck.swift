// A live look at a domain's MTA-STS policy for `relayd probe`: the
// `_mta-sts` TXT record through the resolver, then the policy over HTTPS,
// parsed — the same pieces discovery uses (STSRecord.select, the fetcher,
// STSPolicy.parse), but nothing is stored and the daemon's cache is never
// touched: the operator sees what the domain publishes now beside what
// relayd has cached.
import RelayDNS
import RelayModel
import RelaySTS

public enum STSCheck {
    public enum Finding: Equatable, Sendable {
        /// The domain publishes no usable record (none, several, malformed).
        case noRecord(String)
        case lookupFailed(String)
        /// A record with this id, but no policy behind it.
        case fetchFailed(id: String, String)
        case invalidPolicy(id: String, String)
        case policy(id: String, STSPolicy)
    }

    /// Calls `completion` once, on whatever queue the last step answered on.
    public static func run(domain: String, resolver: any DNSResolving, fetcher: any STSPolicyFetching,
                           completion: @escaping @Sendable (Finding) -> Void) {
        let owner = "_mta-sts." + domain
        resolver.query(owner, .txt) { result in
            let response: DNSResponse
            switch result {
            case .failure(let e): return completion(.lookupFailed("TXT \(owner): \(e)"))
            case .success(let r): response = r
            }
            guard response.rcode == .noError || response.rcode == .nxDomain else {
                return completion(.lookupFailed("TXT \(owner): \(response.rcode)"))
            }
            let records: [[[UInt8]]] = response.answers.compactMap { rec in
                guard DNSName.normalize(rec.name) == owner, case .txt(let strings) = rec.data else { return nil }
                return strings
            }
            let record: STSRecord
            switch STSRecord.select(records) {
            case .failure(.noRecord): return completion(.noRecord("no v=STSv1 TXT record at \(owner)"))
            case .failure(.multipleRecords): return completion(.noRecord("several v=STSv1 records at \(owner); none counts"))
            case .failure(.invalid(let why)): return completion(.noRecord("invalid record at \(owner): \(why)"))
            case .success(let r): record = r
            }
            fetcher.fetchPolicy(domain: domain) { fetched in
                switch fetched {
                case .failure(let f): completion(.fetchFailed(id: record.id, "\(f)"))
                case .success(let body):
                    switch STSPolicy.parse(body) {
                    case .failure(let e): completion(.invalidPolicy(id: record.id, "\(e)"))
                    case .success(let policy): completion(.policy(id: record.id, policy))
                    }
                }
            }
        }
    }
}
