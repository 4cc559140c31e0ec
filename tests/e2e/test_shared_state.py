"""Shared state on PostgreSQL (issue 17), end to end. Learned TLS status
(the learned part of "Must show" 1 and 2): two relayd instances on their own spools, one real
PostgreSQL (initdb/pg_ctl in a temp dir, loopback, stopped by PID), the
bed's switchable STARTTLS-strip proxy in front of learned-strip.test.

Instance A delivers there over TLS; instance B, which never talked to the
domain, learns it from the shared table and defers the next message when
the strip attack is on (never plaintext). Then PostgreSQL is stopped: mail
keeps flowing on both, what A learns meanwhile waits in its outbox, B's
learned domain is not downgraded; after a restart the queued writes arrive
(counted in the table) and B learns the new domain too.

MTA-STS ("Must show" 1): one instance fetches a policy, the other takes it
from the table; the policy host's access log shows one fetch.
"""
import urllib.request
import uuid

import pytest

from bed import DNS_IP, wait_for
from delivery_log import log_lines, submit, wait_deferred, wait_delivered
from postgres_harness import binaries, wait_schema_ready
from relayd_harness import Relayd

pytestmark = pytest.mark.skipif(binaries() is None, reason="PostgreSQL server binaries missing (postgresql package)")

DOMAIN = "learned-strip.test"
SECOND = "learned-backend.test"    # a TLS receiver of its own: the domain A learns while the database is down


def instance(tmp_path, bed, pg, name, metrics=False):
    return Relayd(tmp_path / name, relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert, metrics=metrics,
                  extra=f'''[mta_sts]
enabled = false
{pg.state_section(name)}''',
                  queue='retry_schedule = ["1s"]\nmax_lifetime = "10m"',
                  outbound='default_level = "opportunistic"\nconnect_timeout = "3s"\nconnection_reuse = "0s"\n'
                           '[outbound.domains]\n"sender.test" = "opportunistic"\n')


def tag(what):
    return f"shared-{what}-{uuid.uuid4().hex[:8]}"


def metric(relayd, series):
    """One sample of relayd's /metrics (0 when the series is absent)."""
    text = urllib.request.urlopen(f"http://{relayd.metrics_address}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def evidence_rows(pg, domain):
    return pg.psql(f"SELECT instance || ':' || level FROM learned_evidence WHERE domain = '{domain}' ORDER BY 1").split()


def test_one_instance_learns_the_other_defers_and_an_outage_loses_nothing(bed, pg, tmp_path):
    bed.set_strip(DOMAIN, False)
    a = instance(tmp_path, bed, pg, "instance-a", metrics=True).start()
    b = instance(tmp_path, bed, pg, "instance-b").start()
    try:
        wait_schema_ready(a, b)
        # 1. A delivers over TLS and learns the domain.
        first = submit(a, f"user@{DOMAIN}", tag("a-first"))
        line = wait_delivered(a, first)
        assert line["tls"].startswith("TLSv1."), line
        # The leaf verifies against the bed's CA: a verified session (one
        # day of it answers forced, as TLS does).
        wait_for(lambda: evidence_rows(pg, DOMAIN) == ["instance-a:verified"], 20, "A's evidence in the shared table")

        # 2. B learns it from the table, never having talked to the domain.
        wait_for(lambda: log_lines(b, "learned TLS status raised by another instance", domain=DOMAIN), 20,
                 "B to learn the domain from A")
        # 3. The strip attack: B defers, never sends in plaintext.
        bed.set_strip(DOMAIN, True)
        second = submit(b, f"user@{DOMAIN}", tag("b-stripped"))
        deferred = wait_deferred(b, second, times=2)
        for d in deferred:
            assert d["layer"] == "learned" and d["level"] == "forced" and d["tls"] == "none", d
        assert not [m for m in bed.messages("127.0.0.93") if "b-stripped" in m["data"]], "sent through the strip"

        # 4. The database goes away mid-run.
        pg.stop()
        third = submit(a, f"user@{SECOND}", tag("a-during-outage"))
        wait_delivered(a, third)   # mail flows without the database
        wait_for(lambda: log_lines(a, "shared state unreachable; deciding from the local copy, writes queued"), 20,
                 "A to notice the outage")
        outbox = (a.spool / "shared-outbox")
        wait_for(lambda: outbox.exists() and SECOND in [p.name for p in outbox.iterdir()], 20, "A's queued write on disk")
        # ... and shows in A's metrics.
        wait_for(lambda: metric(a, "relayd_shared_state_reachable") == 0
                 and metric(a, 'relayd_shared_state_queued_writes{store="learned"}') >= 1, 20, "the outage in the metrics")
        assert metric(a, "relayd_shared_state_outages_total") == 1
        again = submit(b, f"user@{DOMAIN}", tag("b-during-outage"))
        for d in wait_deferred(b, again, times=2):
            assert d["layer"] == "learned" and d["tls"] == "none", "B's learned domain is not downgraded by the outage"
        # Mail keeps flowing on both: counted.
        flowing = [submit(x, "someone@sender.test", tag(f"flow-{i}")) for i, x in enumerate([a, b, a, b])]
        delivered = [wait_delivered(x, q) for x, q in zip([a, b, a, b], flowing)]
        assert len(delivered) == 4 and all(d["outcome"] == "delivered" for d in delivered)

        # 5. Back: the queued write arrives, and B learns the new domain.
        pg.start()
        wait_for(lambda: log_lines(a, "shared state reachable again; replayed the queued writes"), 30, "A's replay")
        assert evidence_rows(pg, SECOND) == ["instance-a:tls"], "the certificate names another host: TLS, unverified"
        assert [p.name for p in outbox.iterdir()] == [], "the outbox is empty once replayed"
        wait_for(lambda: metric(a, "relayd_shared_state_reachable") == 1
                 and metric(a, 'relayd_shared_state_queued_writes{store="learned"}') == 0, 20, "the recovery in the metrics")
        assert metric(a, 'relayd_shared_state_replayed_total{store="learned"}') >= 2, "A's first write and the replay"
        wait_for(lambda: log_lines(b, "learned TLS status raised by another instance", domain=SECOND), 20,
                 "B to learn the domain A learned during the outage")
        # B's plaintext-only sessions teach nothing and are not shared.
        assert evidence_rows(pg, DOMAIN) == ["instance-a:verified"], evidence_rows(pg, DOMAIN)
    finally:
        bed.set_strip(DOMAIN, False)
        a.stop()
        b.stop()


def test_one_fetch_of_an_mta_sts_policy_serves_both_instances(bed, pg, tmp_path):
    """Issue 17 "Must show" 1: one instance fetches a domain's MTA-STS
    policy and the other uses it without fetching — the policy host's
    access log shows one fetch for two deliveries, one per instance."""
    sts = '[mta_sts]\nenabled = true\nfetch_timeout = "5s"\n'

    def sts_instance(name):
        r = instance(tmp_path, bed, pg, name)
        r.config.write_text(r.config.read_text().replace("[mta_sts]\nenabled = false\n", sts))
        return r

    access = bed.nginx_dir / "access.log"
    a, b = sts_instance("sts-a").start(), sts_instance("sts-b").start()
    try:
        wait_schema_ready(a, b)
        before = access.read_text().count("/.well-known/mta-sts.txt") if access.exists() else 0
        first = submit(a, "user@sts-enforce.test", tag("sts-a"))
        line = wait_delivered(a, first)
        assert line["mta_sts"] == "enforce" and line["verify"] == "trusted", line
        second = submit(b, "user@sts-enforce.test", tag("sts-b"))
        line = wait_delivered(b, second)
        assert line["mta_sts"] == "enforce" and line["layer"] == "mta-sts", line
        assert log_lines(b, "MTA-STS policy taken from shared state", domain="sts-enforce.test")
        assert not log_lines(b, "MTA-STS policy fetched", domain="sts-enforce.test"), "B never fetched"
        fetches = access.read_text().count("/.well-known/mta-sts.txt") - before
        assert fetches == 1, f"{fetches} fetches of the policy for two instances"
        assert pg.psql("SELECT fetched_by FROM mta_sts_policies WHERE domain = 'sts-enforce.test'") == "sts-a"
    finally:
        a.stop()
        b.stop()
