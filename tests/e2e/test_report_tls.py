"""`relayd report tls` after a known mix: TLS delivered (valid.test),
plaintext delivered at opportunistic (plain.test: no STARTTLS; broken.test:
a failed handshake, then the plaintext retry) and a tls-exclusive drop
(stripped.test). The tally is flushed at stop; the report reads it."""
import json
import subprocess
import uuid

from bed import DNS_IP, wait_for
from relayd_harness import RELAYD, Relayd
from test_outbound import arrived, submit


def report(relayd, *args):
    out = subprocess.run([str(RELAYD), "report", "tls", *args, "--config", str(relayd.config)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_report_tls_counts_a_known_mix(bed, tmp_path):
    relayd = Relayd(tmp_path / "rt", relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert,
                    queue='retry_schedule = ["1h"]\nmax_lifetime = "5d"',
                    outbound='default_level = "opportunistic"\nconnect_timeout = "3s"\n'
                             '[outbound.domains]\n"stripped.test" = "tls-exclusive"\n').start()
    try:
        tag = uuid.uuid4().hex[:6]
        tags = {d: f"rt-{d}-{tag}" for d in ("valid.test", "plain.test", "broken.test", "stripped.test")}
        for d, t in tags.items():
            submit(relayd, "s@sender.test", f"user@{d}", t)
        wait_for(lambda: arrived(bed, "127.0.0.21", tags["valid.test"]) and arrived(bed, "127.0.0.22", tags["plain.test"])
                 and arrived(bed, "127.0.0.25", tags["broken.test"]), 30, "the three deliveries")
        wait_for(lambda: "audit=tls-exclusive-drop" in relayd.log_text(), 20, "the drop")
        wait_for(lambda: not relayd.queued_ids(), 20, "an empty queue")
    finally:
        relayd.stop()  # flushes the tally

    got = json.loads(report(relayd, "--since", "1d", "--json"))
    by = {d["domain"]: d for d in got["domains"]}
    assert set(by) == {"valid.test", "plain.test", "broken.test", "stripped.test"}, by.keys()

    valid = by["valid.test"]
    assert valid["messages"] == {"delivered": 1}
    assert valid["deliveries"] == {"TLSv1.3/verified": 1}, valid
    assert valid["plaintext_deliveries"] == 0 and valid["decided_by"] == {"default/opportunistic": 1}

    plain = by["plain.test"]
    assert plain["deliveries"] == {"plaintext": 1} and plain["plaintext_deliveries"] == 1
    assert plain["plaintext_allowed_by"] == {"default/opportunistic": 1}
    assert plain["sessions"] == {"plaintext": 1}

    broken = by["broken.test"]
    assert broken["deliveries"] == {"plaintext": 1} and broken["fallbacks"] == {"plaintext-retry": 1}
    assert any(k.startswith("tls-failed/") for k in broken["sessions"]), broken["sessions"]
    assert broken["sessions_total"] == 2

    stripped = by["stripped.test"]
    assert stripped["messages"] == {"dropped": 1} and stripped["dropped"] == 1 and stripped["deliveries"] == {}
    assert stripped["decided_by"] == {"operator/tls-exclusive": 1}

    total = got["total"]
    assert total["messages_total"] == 4 and total["plaintext_deliveries"] == 2 and total["dropped"] == 1

    text = report(relayd, "--since", "7d")
    assert "Left in the clear: 2 messages (broken.test 1, plain.test 1)" in text, text
    assert "PLAINTEXT:  1, allowed by 1 default/opportunistic" in text
    assert "dropped:    1 (tls-exclusive" in text
