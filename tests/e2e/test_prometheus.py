"""relayd's metrics as a real Prometheus sees them (issue 15 "Must show" 1):
the Debian prometheus server, started by this test on loopback, scrapes
relayd every second while mail flows through the test bed, and every count
asked through Prometheus's HTTP API must equal what the test sent and
what the receivers recorded:

  - valid.test (Postfix, valid certificate) at the default opportunistic:
    delivered over TLS whose chain and name verify (pkix_verified);
  - plain.test (no STARTTLS) at opportunistic: delivered in plaintext;
  - plain.test's sibling held to `forced` by an [outbound.domains] entry:
    deferred, a TLS failure of RFC 8460 type starttls-not-supported;
  - droptest: tls-exclusive to a host without TLS: dropped, counted as a
    tls-exclusive drop, and the alert on drops fires.
"""
import uuid

from bed import DNS_IP, wait_for
from delivery_log import arrived, concluded, log_lines, submit, wait_arrived, wait_delivered
from prometheus_harness import Prometheus
from relayd_harness import Relayd

POSTFIX = "127.0.0.21"
PLAIN = "127.0.0.22"


def new_tag(what):
    return f"prom-{what}-{uuid.uuid4().hex[:8]}"


def test_prometheus_counts_what_was_sent(bed, tmp_path):
    relayd = Relayd(tmp_path / "relayd", relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert, metrics=True,
                    extra="[mta_sts]\nenabled = false\n[learned]\nenabled = false\n",
                    queue='retry_schedule = ["1s"]\nmax_lifetime = "10m"',
                    outbound='default_level = "opportunistic"\nconnect_timeout = "3s"\nconnection_reuse = "0s"\n'
                             '[outbound.domains]\n"sender.test" = "opportunistic"\n'
                             '"broken.test" = "forced"\n'
                             '"stripped.test" = "tls-exclusive"\n').start()
    prom = Prometheus(tmp_path / "prom", [relayd.metrics_address]).start()
    try:
        prom.wait_for_targets_up(timeout=20)
        tls_tags = [new_tag("tls") for _ in range(3)]
        plain_tags = [new_tag("plain") for _ in range(2)]
        for t in tls_tags:
            wait_delivered(relayd, submit(relayd, "user@valid.test", t))
        for t in plain_tags:
            wait_delivered(relayd, submit(relayd, "user@plain.test", t))
        deferred = submit(relayd, "user@broken.test", new_tag("forced"))
        wait_for(lambda: len(concluded(relayd, deferred, "deferred")) >= 2, 30, "the forced mail deferred twice")
        dropped = submit(relayd, "user@stripped.test", new_tag("drop"))
        wait_for(lambda: concluded(relayd, dropped, "dropped"), 30, "the tls-exclusive mail dropped")

        # What the receivers recorded.
        for t in tls_tags:
            assert wait_arrived(bed, POSTFIX, t)[0]["tls"]
        for t in plain_tags:
            assert not wait_arrived(bed, PLAIN, t)[0]["tls"]
        # Hold the deferred message so its count stops moving, then the
        # deferrals Prometheus saw must equal those the log shows.
        import subprocess
        from relayd_harness import RELAYD
        held = subprocess.run([str(RELAYD), "queue", "hold", deferred, "--config", str(relayd.config)],
                              capture_output=True, text=True, timeout=30)
        if "being delivered now" in held.stdout:
            wait_for(lambda: "held" in subprocess.run([str(RELAYD), "queue", "hold", deferred, "--config", str(relayd.config)],
                                                      capture_output=True, text=True, timeout=30).stdout, 20, "the message held")
        deferrals = len(concluded(relayd, deferred, "deferred"))

        def value(expr):
            return prom.value(expr) or 0

        received = 3 + 2 + 1 + 1
        prom.wait_for_value('sum(relayd_messages_received_total)', lambda v: v >= received, timeout=20)
        assert value('sum(relayd_messages_received_total)') == received
        prom.wait_for_value('sum(relayd_delivery_attempts_total{result="delivered"})', lambda v: v >= 5, timeout=20)
        assert value('sum(relayd_delivery_attempts_total{result="delivered"})') == 5
        assert value('sum(relayd_delivery_attempts_total{result="dropped"})') == 1
        prom.wait_for_value('sum(relayd_delivery_attempts_total{result="deferred"})', lambda v: v >= deferrals, timeout=20)
        assert value('sum(relayd_delivery_attempts_total{result="deferred"})') == len(concluded(relayd, deferred, "deferred"))
        assert value('sum(relayd_outbound_tls_sessions_total{layer="default",outcome="pkix_verified"})') == 3
        assert value('sum(relayd_outbound_tls_sessions_total{layer="default",outcome="plaintext"})') == 2
        assert value('sum(relayd_tls_exclusive_drops_total)') == 1
        assert value('sum(relayd_tls_failures_total{result_type="starttls-not-supported"})') >= 1
        assert value('count(relayd_build_info)') == 1
        prom.wait_for_alert("RelaydTLSExclusiveDrop", timeout=30)
        assert not arrived(bed, PLAIN, "drop")
    finally:
        prom.stop()
        relayd.stop()
