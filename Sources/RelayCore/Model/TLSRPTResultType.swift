// The RFC 8460 §4.3 result types: how a TLS session to an MX failed, in
// the words TLS-RPT reports (RelayTLSRPT) and the metrics
// (relayd_tls_failures_total, RelayMetrics) both use — one vocabulary, so
// a dashboard and a report can never disagree on a name.
public enum TLSRPTResultType: String, CaseIterable, Sendable {
    // Negotiation failures (§4.3.1).
    case starttlsNotSupported = "starttls-not-supported"
    case certificateHostMismatch = "certificate-host-mismatch"
    case certificateExpired = "certificate-expired"
    case certificateNotTrusted = "certificate-not-trusted"
    case validationFailure = "validation-failure"
    // Policy failures, DANE (§4.3.2.1).
    case tlsaInvalid = "tlsa-invalid"
    case dnssecInvalid = "dnssec-invalid"
    case daneRequired = "dane-required"
    // Policy failures, MTA-STS (§4.3.2.2).
    case stsPolicyFetchError = "sts-policy-fetch-error"
    case stsPolicyInvalid = "sts-policy-invalid"
    case stsWebpkiInvalid = "sts-webpki-invalid"
}

