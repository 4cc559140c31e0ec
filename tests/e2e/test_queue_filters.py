"""`relayd queue list` filters on a known mix: two messages waiting on TLS
(plain.test forced: STARTTLS not offered; wronghost.test at verify: the
certificate names another host) and one on DNS (servfail.test), one of
them held."""
import json
import time
import uuid

from bed import DNS_IP, wait_for
from relayd_harness import Relayd
from test_outbound import submit
from test_queue_cli import attempts, queue


def rows(relayd, *args):
    out = queue(relayd, "list", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_queue_list_filters(bed, tmp_path):
    relayd = Relayd(tmp_path / "qf", relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert,
                    queue='retry_schedule = ["1h"]\nmax_lifetime = "5d"',
                    outbound='default_level = "forced"\nconnect_timeout = "3s"\n[outbound.domains]\n'
                             '"sender.test" = "opportunistic"\n"wronghost.test" = "verify"\n').start()
    try:
        tag = uuid.uuid4().hex[:6]
        plain = submit(relayd, "s@sender.test", "user@plain.test", f"qf-plain-{tag}")[0]
        wrong = submit(relayd, "s@sender.test", "user@wronghost.test", f"qf-wrong-{tag}")[0]
        dns = submit(relayd, "s@sender.test", "user@servfail.test", f"qf-dns-{tag}")[0]
        wait_for(lambda: all(attempts(relayd, i) == 1 for i in (plain, wrong, dns)), 30, "first attempts")
        assert "held" in queue(relayd, "hold", dns).stdout

        every = rows(relayd)
        assert {r["id"] for r in every} == {plain, wrong, dns}
        keys = {"id", "state", "age_seconds", "arrival", "sender", "recipients", "attempts", "next_attempt",
                "last_error", "waiting_on_tls", "delay_notice_sent"}
        assert all(set(r) == keys for r in every), [sorted(r) for r in every]
        assert all(set(rc) == {"address", "status", "detail", "enhanced_status", "tls_failure", "tls_detail"}
                   for r in every for rc in r["recipients"])

        tls = {r["id"]: r for r in rows(relayd, "--reason", "tls")}
        assert set(tls) == {plain, wrong}
        assert tls[plain]["recipients"][0]["tls_failure"] == "starttls-not-offered"
        assert tls[plain]["recipients"][0]["enhanced_status"].startswith("4.7.")
        assert tls[wrong]["recipients"][0]["tls_failure"] == "hostname-mismatch"
        assert all(r["waiting_on_tls"] for r in tls.values())
        assert [r["id"] for r in rows(relayd, "--reason", "TLS not offered")] == [plain]

        assert [r["id"] for r in rows(relayd, "--domain", "servfail.test")] == [dns]
        assert [r["id"] for r in rows(relayd, "--state", "hold")] == [dns]
        assert {r["id"] for r in rows(relayd, "--state", "deferred")} == {plain, wrong}
        assert rows(relayd, "--state", "deferred", "--domain", "servfail.test") == []
        assert rows(relayd, "--older-than", "1h") == []
        time.sleep(2)
        assert {r["id"] for r in rows(relayd, "--older-than", "1s")} == {plain, wrong, dns}
        assert [r["id"] for r in rows(relayd, "--reason", "tls", "--domain", "wronghost.test")] == [wrong]

        text = queue(relayd, "list", "--reason", "tls")
        assert text.returncode == 0, text.stderr
        assert "tls-failure=starttls-not-offered" in text.stdout and "tls-failure=hostname-mismatch" in text.stdout
        assert text.stdout.strip().endswith("2 messages")

        bad = queue(relayd, "list", "--state", "frozen")
        assert bad.returncode != 0 and "--state" in bad.stderr
        bad = queue(relayd, "list", "--older-than", "soon")
        assert bad.returncode != 0 and "--older-than" in bad.stderr
    finally:
        relayd.stop()
