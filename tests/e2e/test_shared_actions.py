"""Operator actions shared on PostgreSQL (issue 17, "pins, unpins and
forgets, with their audit"): two relayd instances on their own spools, one
real PostgreSQL (initdb/pg_ctl in a temp dir, loopback, stopped by PID).

A pin typed on A (with a hostile reason and a timed end) shows in
`relayd policy explain` on B, audited on B with the instance it came from;
an unpin follows it. A forget on A removes the evidence B had taken from
the shared table, deletes the old evidence rows, and evidence last seen
before the forget that turns up later (an instance pushing late) does not
bring the domain back on B.
"""
import json
import subprocess
import time

import pytest

from postgres_harness import binaries, wait_schema_ready
from relayd_harness import RELAYD, Relayd

pytestmark = pytest.mark.skipif(binaries() is None, reason="PostgreSQL server binaries missing (postgresql package)")

DOMAIN = "shared-actions.test"
REASON = "O'Brien's \"contract\"; DROP TABLE learned_actions; -- é\u0301 \U0001F3F3\uFE0F\u200D\U0001F308 \u202Ertl"


def instance(tmp_path, pg, name):
    return Relayd(tmp_path / name, relay_domains=(),
                  extra=f'''[mta_sts]
enabled = false
{pg.state_section(name)}''', dns="dnssec = false\n")


def policy(relayd, *args, check=True):
    r = subprocess.run([str(RELAYD), "policy", *args, "--config", str(relayd.config)],
                       capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def explain(relayd):
    return json.loads(policy(relayd, "explain", DOMAIN, "--json").stdout)


def wait(what, check, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def audit(relayd):
    path = relayd.spool / "audit" / "learned.log"
    return path.read_text() if path.exists() else ""


def test_a_pin_on_a_shows_on_b_and_a_forget_reaches_b(pg, tmp_path):
    a = instance(tmp_path, pg, "instance-a").start()
    b = instance(tmp_path, pg, "instance-b").start()
    try:
        wait_schema_ready(a, b)

        # 1. A pin on A reaches B, reason and end unchanged.
        out = policy(a, "pin", DOMAIN, "verify", "--until", "2099-01-01", "--reason", REASON).stdout
        assert "pinned to verify until 2099-01-01" in out, out
        j = wait("the pin on B", lambda: (lambda e: e if (e["learned"].get("record") or {}).get("pin") else None)(explain(b)))
        pin = j["learned"]["record"]["pin"]
        assert j["layer"] == "learned" and j["level"] == "verify", j
        assert pin["level"] == "verify" and pin["reason"] == REASON and pin["active"], pin
        assert pg.psql(f"SELECT action || ' ' || instance || ' ' || level FROM learned_actions WHERE domain = '{DOMAIN}'") \
            == "pin instance-a verify"
        assert pg.psql(f"SELECT reason = $${REASON}$$ AND until = '2099-01-01' FROM learned_actions WHERE domain = '{DOMAIN}'") == "t"
        assert "from instance instance-a" in audit(b), audit(b)
        assert "operator on another instance" in b.log_text()
        # B's explain shows the action history from the shared table.
        acts = j["shared"]["actions"]
        assert [(x["action"], x["instance"], x["level"], x["reason"], x["until"]) for x in acts] == \
            [("pin", "instance-a", "verify", REASON, "2099-01-01 00:00:00 UTC")], acts
        text = policy(b, "explain", DOMAIN).stdout
        assert "Shared state (PostgreSQL):" in text and "instance-a  pin verify until 2099-01-01" in text, text

        # 2. The unpin follows.
        policy(a, "unpin", DOMAIN)
        wait("the unpin on B", lambda: not (explain(b)["learned"].get("record") or {}).get("pin"))

        # 3. B takes evidence from the shared table (an instance C saw TLS)...
        pg.psql(f"""INSERT INTO learned_evidence (domain, instance, level, first_seen, last_seen, count, days)
                    VALUES ('{DOMAIN}', 'instance-c', 'tls', now() - interval '2 days', now() - interval '1 minute', 5, 2)""")
        wait("B to learn from C", lambda: explain(b)["learned"].get("record"))
        seen = explain(b)["shared"]["evidence"]
        assert [(e["instance"], e["level"], e["count"], e["days"]) for e in seen] == [("instance-c", "tls", 5, 2)], seen
        listed = json.loads(policy(b, "list", "--learned", "--json").stdout)
        assert [x["action"] for x in listed["shared"][DOMAIN]["actions"]] == ["pin", "unpin"], listed["shared"]
        text = policy(a, "list", "--learned").stdout
        assert f"{DOMAIN}:" in text and "instance-c  tls  first" in text and "5 sessions on 2 days" in text, text
        # ... and a forget on A removes it there, and in the table.
        policy(a, "forget", DOMAIN)
        wait("the forget on B", lambda: not explain(b)["learned"].get("record"))
        assert pg.psql(f"SELECT count(*) FROM learned_evidence WHERE domain = '{DOMAIN}'") == "0"
        assert audit(b).count("from instance instance-a") == 3, audit(b)

        # 4. A late push of evidence from before the forget does not bring it back.
        pg.psql(f"""INSERT INTO learned_evidence (domain, instance, level, first_seen, last_seen, count, days)
                    VALUES ('{DOMAIN}', 'instance-c', 'verified', now() - interval '3 days', now() - interval '1 hour', 9, 3)""")
        time.sleep(4)   # several sync ticks
        assert not explain(b)["learned"].get("record"), explain(b)["learned"]
    finally:
        a.stop()
        b.stop()


def test_the_file_backend_shows_no_shared_state(tmp_path):
    r = Relayd(tmp_path / "relayd", relay_domains=(), dns="dnssec = false\n")
    assert "Shared state" not in policy(r, "explain", DOMAIN).stdout
    assert "shared" not in json.loads(policy(r, "explain", DOMAIN, "--json").stdout)
    assert "shared" not in json.loads(policy(r, "list", "--learned", "--json").stdout)


def test_a_pin_made_while_the_daemon_is_stopped_is_shared_at_its_next_start(pg, tmp_path):
    a = instance(tmp_path, pg, "instance-a")
    b = instance(tmp_path, pg, "instance-b").start()
    try:
        out = policy(a, "pin", DOMAIN, "forced", "--reason", "offline").stdout
        assert "pinned to forced" in out and "shared with the other instances when relayd next starts" in out, out
        assert len(list((a.spool / "shared-actions-outbox").iterdir())) == 1
        a.start()
        j = wait("the pin on B", lambda: (lambda e: e if (e["learned"].get("record") or {}).get("pin") else None)(explain(b)))
        assert j["learned"]["record"]["pin"]["reason"] == "offline"
        wait("A's outbox to empty", lambda: not list((a.spool / "shared-actions-outbox").iterdir()))
    finally:
        a.stop()
        b.stop()
