// Which certificate of a presented chain a TLSA record describes, computed
// from the certificates (RFC 6698 §2.1: selector 0 the whole certificate,
// 1 its SubjectPublicKeyInfo; matching type 0 exact, 1 SHA-256, 2
// SHA-512). `relayd probe` shows it per record next to what OpenSSL's DANE
// verification concluded; delivery never relies on it (OpenSSL decides).
import COpenSSL
import RelayModel

public enum TLSAMatching {
    /// The data `record`'s selector and matching type give for a DER
    /// certificate; nil when the certificate cannot be read or the record's
    /// selector or matching type are unknown.
    public static func association(of der: [UInt8], selector: UInt8, matchingType: UInt8) -> [UInt8]? {
        guard selector <= 1, matchingType <= 2, !der.isEmpty else { return nil }
        let cap = matchingType == 0 ? der.count + 16 : 64
        var out = [UInt8](repeating: 0, count: cap)
        let n = der.withUnsafeBufferPointer { d in
            out.withUnsafeMutableBufferPointer { o in
                relayd_tlsa_association(d.baseAddress, d.count, Int32(selector), Int32(matchingType), o.baseAddress, Int32(cap))
            }
        }
        guard n > 0 else { return nil }
        return Array(out.prefix(Int(n)))
    }

    /// The depth (0: the leaf) of the first certificate in `chain` the
    /// record describes: DANE-EE only at the leaf, DANE-TA anywhere in the
    /// chain (a TA record for the leaf itself is allowed by RFC 7671 §5.2.2
    /// only for a self-issued leaf, which OpenSSL judges; shown here too).
    public static func matchingDepth(_ record: TLSARecord, chain: [PeerCertificate]) -> Int? {
        let candidates = record.usage == TLSARecord.daneEE ? Array(chain.prefix(1).enumerated()) : Array(chain.enumerated())
        for (depth, cert) in candidates {
            if association(of: cert.der, selector: record.selector, matchingType: record.matchingType) == record.data { return depth }
        }
        return nil
    }
}
