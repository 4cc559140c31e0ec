import Testing
@testable import RelayMetrics

@Suite struct RelayMetricsTests {
    static let build = RelayMetrics.BuildInfo(version: "1.2.3", openssl: "OpenSSL 3.0.13", cares: "1.27.0")

    func lines(_ m: RelayMetrics) -> Set<String> {
        Set(String(decoding: m.render(), as: UTF8.self).split(separator: "\n").map(String.init))
    }

    /// The shared-state gauges follow what the daemon reads; outages and
    /// writes only add up.
    @Test func sharedStateSeries() {
        let m = RelayMetrics(listeners: ["127.0.0.1:25"], build: .init(version: "1", openssl: "o", cares: "c"))
        m.setSharedState(reachable: true, queued: [.learned: 3])
        m.sharedStateWritten(.learned, 2)
        m.sharedStateWritten(.learned, 0)
        m.sharedStateOutage()
        m.setSharedState(reachable: false, queued: [.learned: 5, .drops: 1])
        let text = String(decoding: m.render(), as: UTF8.self)
        for expected in ["relayd_shared_state_reachable 0.0", #"relayd_shared_state_queued_writes{store="learned"} 5.0"#,
                         #"relayd_shared_state_queued_writes{store="drops"} 1.0"#, "relayd_shared_state_outages_total 1",
                         #"relayd_shared_state_replayed_total{store="learned"} 2"#] {
            #expect(text.contains(expected), "\(expected)")
        }
    }

    @Test func everyFamilyIsThereFromTheStartAtZero() {
        let m = RelayMetrics(listeners: ["127.0.0.1:25", "[::1]:587"], build: Self.build)
        let l = lines(m)
        for expected in [
            #"relayd_smtp_sessions_total{listener="127.0.0.1:25",tls="yes"} 0"#,
            #"relayd_smtp_sessions_total{listener="[::1]:587",tls="no"} 0"#,
            #"relayd_smtp_sessions_active{listener="127.0.0.1:25"} 0.0"#,
            #"relayd_messages_received_total{listener="[::1]:587"} 0"#,
            #"relayd_messages_refused_total{reason="relay_denied"} 0"#,
            #"relayd_messages_refused_total{reason="rate_limited"} 0"#,
            "relayd_auth_failures_total 0",
            #"relayd_delivery_attempts_total{result="fallback"} 0"#,
            #"relayd_outbound_tls_sessions_total{layer="mta_sts",outcome="pkix_verified"} 0"#,
            #"relayd_tls_failures_total{result_type="sts-webpki-invalid"} 0"#,
            #"relayd_queue_messages{state="hold"} 0.0"#,
            "relayd_queue_oldest_message_age_seconds 0.0",
            "relayd_delivery_duration_seconds_count 0",
            "relayd_spool_commit_duration_seconds_count 0",
            "relayd_tls_exclusive_drops_total 0",
            "relayd_downgrades_suspected_total 0",
            #"relayd_policy_cache_entries{kind="learned"} 0.0"#,
            "relayd_shared_state_reachable 0.0",
            #"relayd_shared_state_queued_writes{store="tlsrpt"} 0.0"#,
            "relayd_shared_state_outages_total 0",
            #"relayd_shared_state_replayed_total{store="drops"} 0"#,
            #"relayd_build_info{version="1.2.3",openssl="OpenSSL 3.0.13",cares="1.27.0"} 1.0"#,
            "# TYPE relayd_delivery_duration_seconds histogram",
            "# TYPE relayd_smtp_sessions_total counter",
            "# TYPE relayd_queue_messages gauge",
        ] {
            #expect(l.contains(expected), "\(expected)")
        }
        // 2 listeners × 2, 8 reasons, 5 results, 6 layers × 5 outcomes, 11 result types.
        let text = String(decoding: m.render(), as: UTF8.self)
        #expect(text.split(separator: "\n").filter { $0.hasPrefix("relayd_smtp_sessions_total{") }.count == 4)
        #expect(text.split(separator: "\n").filter { $0.hasPrefix("relayd_messages_refused_total{") }.count == 8)
        #expect(text.split(separator: "\n").filter { $0.hasPrefix("relayd_outbound_tls_sessions_total{") }.count == 30)
        #expect(text.split(separator: "\n").filter { $0.hasPrefix("relayd_tls_failures_total{") }.count == 11)
    }

    @Test func callsMoveExactlyTheirSeries() {
        let m = RelayMetrics(listeners: ["127.0.0.1:25"], build: Self.build)
        m.sessionOpened(listener: "127.0.0.1:25")
        m.sessionOpened(listener: "127.0.0.1:25")
        m.sessionClosed(listener: "127.0.0.1:25", tls: true)
        m.messageReceived(listener: "127.0.0.1:25")
        m.messageRefused(.size)
        m.messageRefused(.size)
        m.authFailed()
        m.deliveryAttempt(.delivered)
        m.deliveryAttempt(.fallback)
        m.outboundSession(layer: .dane, outcome: .daneVerified)
        m.tlsFailure(.certificateExpired)
        m.tlsExclusiveDropped(recipients: 3)
        m.downgradeSuspected()
        m.setQueue([.incoming: 2, .deferred: 5], oldestAgeSeconds: 90)
        m.setPolicyCacheEntries(.mtaSTS, 7)
        m.deliveryFinished(seconds: 0.3)
        m.spoolCommitted(seconds: 0.002)
        // A listener the registry was not made with is ignored, not created.
        m.sessionOpened(listener: "elsewhere")
        let l = lines(m)
        for expected in [
            #"relayd_smtp_sessions_active{listener="127.0.0.1:25"} 1.0"#,
            #"relayd_smtp_sessions_total{listener="127.0.0.1:25",tls="yes"} 1"#,
            #"relayd_smtp_sessions_total{listener="127.0.0.1:25",tls="no"} 0"#,
            #"relayd_messages_received_total{listener="127.0.0.1:25"} 1"#,
            #"relayd_messages_refused_total{reason="size"} 2"#,
            #"relayd_messages_refused_total{reason="syntax"} 0"#,
            "relayd_auth_failures_total 1",
            #"relayd_delivery_attempts_total{result="delivered"} 1"#,
            #"relayd_delivery_attempts_total{result="fallback"} 1"#,
            #"relayd_delivery_attempts_total{result="deferred"} 0"#,
            #"relayd_outbound_tls_sessions_total{layer="dane",outcome="dane_verified"} 1"#,
            #"relayd_tls_failures_total{result_type="certificate-expired"} 1"#,
            "relayd_tls_exclusive_drops_total 3",
            "relayd_downgrades_suspected_total 1",
            #"relayd_queue_messages{state="incoming"} 2.0"#,
            #"relayd_queue_messages{state="deferred"} 5.0"#,
            #"relayd_queue_messages{state="active"} 0.0"#,
            "relayd_queue_oldest_message_age_seconds 90.0",
            #"relayd_policy_cache_entries{kind="mta_sts"} 7.0"#,
            #"relayd_delivery_duration_seconds_bucket{le="0.25"} 0"#,
            #"relayd_delivery_duration_seconds_bucket{le="0.5"} 1"#,
            "relayd_delivery_duration_seconds_count 1",
            #"relayd_spool_commit_duration_seconds_bucket{le="0.0025"} 1"#,
            "relayd_spool_commit_duration_seconds_count 1",
        ] {
            #expect(l.contains(expected), "\(expected)")
        }
        #expect(!l.contains { $0.contains("elsewhere") })
    }

    @Test func twoRegistriesAreIndependent() {
        let a = RelayMetrics(listeners: ["x:25"], build: Self.build)
        let b = RelayMetrics(listeners: ["x:25"], build: Self.build)
        a.authFailed()
        #expect(lines(a).contains("relayd_auth_failures_total 1"))
        #expect(lines(b).contains("relayd_auth_failures_total 0"))
    }
}
