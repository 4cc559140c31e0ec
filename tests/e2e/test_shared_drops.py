"""The tls-exclusive drop audit shared on PostgreSQL (issue 17): two relayd
instances drop mail for a domain pinned tls-exclusive that offers no
STARTTLS; `relayd report drops` on either lists both instances' drops from
the shared table. A drop while the database is down is logged locally at
once, waits in the spool's outbox, and arrives after the restart. With the
file backend the command says plainly that it needs the shared state.
"""
import json
import subprocess
import uuid

import pytest

from bed import DNS_IP, wait_for
from delivery_log import submit
from postgres_harness import binaries, wait_schema_ready
from relayd_harness import RELAYD, Relayd

pytestmark = pytest.mark.skipif(binaries() is None, reason="PostgreSQL server binaries missing (postgresql package)")

DOMAIN = "plain.test"      # the bed's receiver without STARTTLS


def instance(tmp_path, bed, pg, name):
    return Relayd(tmp_path / name, relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert,
                  extra=f'''[mta_sts]
enabled = false
{pg.state_section(name)}''',
                  queue='retry_schedule = ["1s"]\nmax_lifetime = "10m"',
                  outbound='default_level = "opportunistic"\nconnect_timeout = "3s"\n'
                           f'[outbound.domains]\n"sender.test" = "opportunistic"\n"{DOMAIN}" = "tls-exclusive"\n')


def report(relayd, *args):
    return subprocess.run([str(RELAYD), "report", "drops", "--config", str(relayd.config), *args],
                          capture_output=True, text=True, timeout=60)


def dropped(relayd, qid):
    return any("audit=tls-exclusive-drop" in l and qid in l for l in relayd.log_text().splitlines())


def test_drops_of_both_instances_are_listed_and_an_outage_loses_none(bed, pg, tmp_path):
    a = instance(tmp_path, bed, pg, "instance-a").start()
    b = instance(tmp_path, bed, pg, "instance-b").start()
    try:
        wait_schema_ready(a, b)
        qa = submit(a, f"user@{DOMAIN}", f"drop-a-{uuid.uuid4().hex[:8]}")
        qb = submit(b, f"user@{DOMAIN}", f"drop-b-{uuid.uuid4().hex[:8]}")
        wait_for(lambda: dropped(a, qa) and dropped(b, qb), 30, "both drops")
        wait_for(lambda: pg.psql("SELECT count(*) FROM tls_exclusive_drops") == "2", 15, "both drops in the table")
        j = json.loads(report(b, "--json").stdout)
        assert sorted((d["instance"], d["id"], d["domain"]) for d in j["drops"]) == \
            [("instance-a", qa, DOMAIN), ("instance-b", qb, DOMAIN)], j
        assert all(d["reason"] for d in j["drops"]), j
        text = report(a).stdout
        assert "instance-a" in text and "instance-b" in text and qa in text and qb in text, text

        # The database goes away: the drop is logged at once, waits in the outbox.
        pg.stop()
        qc = submit(a, f"user@{DOMAIN}", f"drop-c-{uuid.uuid4().hex[:8]}")
        wait_for(lambda: dropped(a, qc), 30, "the drop during the outage")
        wait_for(lambda: "tls-exclusive drops queued" in a.log_text(), 15, "the outage to be noticed")
        assert len(list((a.spool / "shared-drops-outbox").iterdir())) == 1
        down = report(a)
        assert down.returncode != 0
        pg.start()
        wait_for(lambda: pg.psql("SELECT count(*) FROM tls_exclusive_drops") == "3", 60, "the queued drop to arrive")
        assert pg.psql(f"SELECT instance FROM tls_exclusive_drops WHERE queue_id = '{qc}'") == "instance-a"
        assert "replayed the queued tls-exclusive drops" in a.log_text()
        assert not list((a.spool / "shared-drops-outbox").iterdir())
    finally:
        a.stop()
        b.stop()


def test_report_drops_needs_the_shared_backend(tmp_path):
    r = Relayd(tmp_path / "relayd")
    out = report(r)
    assert out.returncode == 1 and 'needs the shared state: [state] backend = "postgres"' in out.stderr, out
