"""`relayd queue` against a running daemon: deferred mail listed with its
TLS reason, and flush, hold, release and delete carried out live."""
import json
import re
import subprocess
import uuid

from bed import DNS_IP, wait_for
from relayd_harness import RELAYD, Relayd
from test_outbound import submit


def queue(relayd, *args):
    out = subprocess.run([str(RELAYD), "queue", *args, "--config", str(relayd.config)],
                         capture_output=True, text=True, timeout=30)
    return out


def attempts(relayd, qid):
    rows = json.loads(queue(relayd, "list", "--json").stdout)
    row = next((r for r in rows if r["id"] == qid), None)
    return row and row["attempts"]


def test_queue_cli_on_a_running_daemon(bed, tmp_path):
    relayd = Relayd(tmp_path / "q", relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert,
                    queue='retry_schedule = ["1h"]\nmax_lifetime = "5d"',
                    outbound='default_level = "forced"\n[outbound.domains]\n"sender.test" = "opportunistic"\n').start()
    try:
        ids = [submit(relayd, "s@sender.test", "user@plain.test", f"cli-{uuid.uuid4().hex[:6]}")[0] for _ in range(3)]
        wait_for(lambda: all(attempts(relayd, i) == 1 for i in ids), 20, "first attempts")

        listing = queue(relayd, "list", "--deferred")
        assert listing.returncode == 0, listing.stderr
        for i in ids:
            assert i in listing.stdout
        assert "TLS not offered by mx.plain.test" in listing.stdout
        rows = json.loads(queue(relayd, "list", "--json", "--domain", "plain.test").stdout)
        assert {r["id"] for r in rows} == set(ids)
        assert all(r["state"] == "deferred" and "TLS not offered" in r["last_error"] for r in rows)

        show = queue(relayd, "show", ids[0])
        assert show.returncode == 0 and "recipient: <user@plain.test> pending" in show.stdout

        # hold: out of the deferred queue, not retried by a flush
        assert "held" in queue(relayd, "hold", ids[0]).stdout
        assert json.loads(queue(relayd, "list", "--json").stdout)[0]["state"] == "hold"
        # flush: every deferred message is tried again at once
        assert "flushed 2 messages" in queue(relayd, "flush", "--domain", "plain.test").stdout
        wait_for(lambda: attempts(relayd, ids[1]) == 2 and attempts(relayd, ids[2]) == 2, 20, "flushed attempts")
        assert attempts(relayd, ids[0]) == 1, "a held message is not retried"
        # release: back into delivery now
        assert "released" in queue(relayd, "release", ids[0]).stdout
        wait_for(lambda: attempts(relayd, ids[0]) == 2, 20, "attempt after release")
        # delete: gone, no bounce
        assert "deleted 1 message" in queue(relayd, "delete", ids[1]).stdout
        assert ids[1] not in queue(relayd, "list").stdout
        assert "deleted 2 messages" in queue(relayd, "delete", "--all").stdout
        assert queue(relayd, "list").stdout.strip().endswith("0 messages")
        assert not [m for m in bed.messages("127.0.0.22")], "forced mail never reached the plaintext MX"
        assert "queue request" in relayd.log_text()
        bad = queue(relayd, "hold", "../../etc/passwd")
        assert bad.returncode != 0
    finally:
        relayd.stop()
