// A DNS resolver answering from a table, for delivery and routing tests.
import Foundation
import Logging
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayPolicy
@testable import RelayLog
@testable import RelayTLS
@testable import RelayDNS
@testable import RelayAuth
@testable import RelayIO
@testable import RelayQueue
@testable import RelayConfig
@testable import RelayDelivery
@testable import RelayCore

/// Answers DNS queries from a table: name/type → response or error.
public final class FakeResolver: DNSResolving, @unchecked Sendable {
    public init() {}
    public var answers: [String: Result<(DNSRCode, [DNSRecordData]), DNSError>] = [:]
    private let lock = NSLock()
    public private(set) var asked: [String] = []

    public func set(_ name: String, _ type: DNSType, _ data: [DNSRecordData]) {
        answers["\(name)/\(type.rawValue)"] = .success((.noError, data))
    }

    public func setRcode(_ name: String, _ type: DNSType, _ rcode: DNSRCode) {
        answers["\(name)/\(type.rawValue)"] = .success((rcode, []))
    }

    public func fail(_ name: String, _ type: DNSType, _ error: DNSError) { answers["\(name)/\(type.rawValue)"] = .failure(error) }

    /// Answers for these "name/type" keys carry the AD bit (a validating
    /// resolver found them secure).
    public var authenticated: Set<String> = []

    /// An answer with the AD bit set.
    public func setSecure(_ name: String, _ type: DNSType, _ data: [DNSRecordData], rcode: DNSRCode = .noError) {
        answers["\(name)/\(type.rawValue)"] = .success((rcode, data))
        authenticated.insert("\(name)/\(type.rawValue)")
    }

    public var askedNames: [String] { lock.lock(); defer { lock.unlock() }; return asked }

    public func query(_ name: String, _ type: DNSType, completion: @escaping @Sendable (Result<DNSResponse, DNSError>) -> Void) {
        lock.lock(); asked.append("\(name)/\(type)"); lock.unlock()
        let key = "\(name)/\(type.rawValue)"
        switch answers[key] ?? .success((.noError, [])) {
        case .failure(let e): completion(.failure(e))
        case .success(let (rcode, data)):
            let records = data.map { DNSRecord(name: name, type: type.rawValue, ttl: 60, data: $0) }
            completion(.success(DNSResponse(id: 1, rcode: rcode, authenticated: authenticated.contains(key), truncated: false,
                                            questionName: name, questionType: type.rawValue, answers: records)))
        }
    }
}
