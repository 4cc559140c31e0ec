// A TLSA record (RFC 6698 §2.1) as DANE for SMTP uses it (RFC 7672), and
// the filter RFC 7672 §3.1.3 asks of a client before any record reaches
// the TLS library: PKIX usages 0 and 1 are unusable for SMTP (an MX is not
// expected to carry a WebPKI certificate for its name), so are unknown
// usages, selectors and matching types, and digests of the wrong length.
// A TLSA RRset that is present and secure but has no usable record still
// means "TLS is mandatory" (§2.2): only authentication is lost.
public struct TLSARecord: Equatable, Hashable, Sendable, CustomStringConvertible {
    public let usage: UInt8
    public let selector: UInt8
    public let matchingType: UInt8
    public let data: [UInt8]

    public init(usage: UInt8, selector: UInt8, matchingType: UInt8, data: [UInt8]) {
        self.usage = usage
        self.selector = selector
        self.matchingType = matchingType
        self.data = data
    }

    /// DANE-TA(2): a trust anchor in the server's chain.
    public static let daneTA: UInt8 = 2
    /// DANE-EE(3): the server's own certificate or key.
    public static let daneEE: UInt8 = 3

    /// Whether RFC 7672 lets an SMTP client use the record.
    public var isUsableForSMTP: Bool {
        guard usage == Self.daneTA || usage == Self.daneEE, selector <= 1 else { return false }
        switch matchingType {
        case 0: return !data.isEmpty && data.count <= 65_535
        case 1: return data.count == 32
        case 2: return data.count == 64
        default: return false
        }
    }

    /// "3 1 1 9a64ee…" (the digest abbreviated past 16 hex digits).
    public var description: String {
        let hex = data.prefix(8).map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
        return "\(usage) \(selector) \(matchingType) \(hex)\(data.count > 8 ? "…" : "")"
    }

    /// The record in presentation form with the whole digest.
    public var presentation: String {
        "\(usage) \(selector) \(matchingType) " + data.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }
}

/// What a client hands the TLS library for one DANE-authenticated
/// connection: the TLSA base domain, the further names a DANE-TA chain's
/// certificate may carry, and the usable records.
public struct DANEPolicy: Equatable, Hashable, Sendable {
    /// The name the TLSA records were found under (the MX host, or its
    /// CNAME target); also the SNI name.
    public let baseDomain: String
    /// Reference identifiers besides the base domain (the MX host name as
    /// the MX record gave it, when a CNAME was followed).
    public let extraNames: [String]
    public let records: [TLSARecord]

    public init(baseDomain: String, extraNames: [String] = [], records: [TLSARecord]) {
        self.baseDomain = baseDomain
        self.extraNames = extraNames
        self.records = records
    }
}
