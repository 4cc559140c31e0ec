"""TLS-RPT aggregated over instances on PostgreSQL (issue 17, "Must show"
1: one TLS-RPT report covers the sessions of both instances).

Two relayd instances on their own spools and one real PostgreSQL
(initdb/pg_ctl in a temp dir, loopback, stopped by PID) both deliver to
valid.test, which publishes a TLS-RPT record in the bed's DNS. Each
pushes its own counts to tlsrpt_counts; `relayd report tlsrpt --day
<today>` on A takes the day's lease and sends ONE report summing both
instances' sessions, by mail to the bed's TLS receiver. B asked to report
too says the lease is A's; once the lease has run out, B takes it and
still sends nothing (the report is claimed in tlsrpt_reports_sent). The
report mail arrives once.
"""
import email
import gzip
import json
import subprocess
import time
import uuid
from datetime import datetime, timezone

import pytest

from bed import DNS_IP, wait_for
from delivery_log import log_lines, submit, wait_delivered
from postgres_harness import binaries, wait_schema_ready
from relayd_harness import RELAYD, Relayd

pytestmark = pytest.mark.skipif(binaries() is None, reason="PostgreSQL server binaries missing (postgresql package)")

SINK = "127.0.0.29"          # mx.sender.test, a TLS test receiver
DOMAIN = "valid.test"


def instance(tmp_path, bed, pg, name, submitter):
    return Relayd(tmp_path / name, relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert,
                  extra=f'''[tlsrpt]
enabled = true
organization = "E2E Org"
submitter = "{submitter}"
[mta_sts]
enabled = false
{pg.state_section(name)}''',
                  queue='retry_schedule = ["1s"]\nmax_lifetime = "10m"',
                  outbound='default_level = "opportunistic"\nconnect_timeout = "3s"\nconnection_reuse = "0s"\n')


def report(relayd, day):
    r = subprocess.run([str(RELAYD), "report", "tlsrpt", "-c", str(relayd.config), "--day", day],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def report_mails(bed, submitter):
    return [m for m in bed.events(SINK)
            if m["event"] == "mail" and f"TLS-Report-Domain: {DOMAIN}" in m["data"] and f"Submitter: {submitter}" in m["data"]]


def publish_tlsrpt_record(bed):
    """DOMAIN's TLS-RPT record, published in the bed's DNS, and seen there."""
    bed.unbound_control("local_data", f'_smtp._tls.{DOMAIN}. 1 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@sender.test"')
    wait_for(lambda: (bed.dns_answers(f"_smtp._tls.{DOMAIN}", "TXT") or (None, []))[1]
             == ['"v=TLSRPTv1; rua=mailto:tlsrpt@sender.test"'], 10, "the TLS-RPT record published")


def counts_by_instance(pg):
    out = pg.psql(f"SELECT instance || ':' || sum(count) FROM tlsrpt_counts WHERE policy_domain = '{DOMAIN}' "
                  "GROUP BY instance ORDER BY instance")
    return out.split()


def test_one_report_counts_the_sessions_of_both_instances_and_arrives_once(bed, pg, tmp_path):
    submitter = f"relay-{uuid.uuid4().hex[:6]}.e2e.test"
    a = instance(tmp_path, bed, pg, "instance-a", submitter).start()
    b = instance(tmp_path, bed, pg, "instance-b", submitter).start()
    try:
        wait_schema_ready(a, b)
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        tag = f"shared-tlsrpt-{uuid.uuid4().hex[:8]}"
        for i in range(2):
            wait_delivered(a, submit(a, f"user@{DOMAIN}", f"{tag}-a{i}"))
        wait_delivered(b, submit(b, f"user@{DOMAIN}", f"{tag}-b0"))
        # Each instance's own sessions in the shared table (B's pushed by
        # its timer, never through A).
        wait_for(lambda: counts_by_instance(pg) == ["instance-a:2", "instance-b:1"], 30, "both instances' counts pushed")

        publish_tlsrpt_record(bed)

        out = report(a, day)
        assert f"{DOMAIN}: 3 sessions;" in out and "mailto:tlsrpt@sender.test: sent" in out, out
        assert pg.psql(f"SELECT sent_by FROM tlsrpt_reports_sent WHERE policy_domain = '{DOMAIN}'") == "instance-a"
        assert pg.psql("SELECT holder FROM tlsrpt_report_leases") == "instance-a"

        # B asked as well: the lease is A's.
        out_b = report(b, day)
        assert "held by instance-a" in out_b and "sent" not in out_b.replace("sends", ""), out_b
        # A's lease runs out (A gone, say): B takes it and finds the report claimed.
        pg.psql("UPDATE tlsrpt_report_leases SET until = now() - interval '1 second'")
        out_b = report(b, day)
        assert f"{DOMAIN}: already sent by instance-a" in out_b, out_b
        assert pg.psql("SELECT holder FROM tlsrpt_report_leases") == "instance-b"

        # One report, with both instances' sessions.
        wait_for(lambda: report_mails(bed, submitter), 30, "the report mail")
        time.sleep(3)   # anything sent twice would be here by now (retries are 1 s)
        mails = report_mails(bed, submitter)
        assert len(mails) == 1, [m["data"][:200] for m in mails]
        msg = email.message_from_string(mails[0]["data"])
        part = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"][0]
        rep = json.loads(gzip.decompress(part.get_payload(decode=True)))
        assert rep["report-id"] == f"{day}T00:00:00Z_{DOMAIN}_{submitter}"
        assert len(rep["policies"]) == 1, rep
        assert rep["policies"][0]["summary"] == {"total-successful-session-count": 3, "total-failure-session-count": 0}, rep
        assert not log_lines(b, "TLS-RPT report sent"), "B sent nothing"
    finally:
        a.stop()
        b.stop()
        try:
            bed.unbound_control("local_data_remove", f"_smtp._tls.{DOMAIN}.")
        except Exception:
            pass


def test_counts_queued_during_an_outage_arrive_once_and_no_partial_report_is_sent(bed, pg, tmp_path):
    submitter = f"relay-{uuid.uuid4().hex[:6]}.e2e.test"
    a = instance(tmp_path, bed, pg, "instance-a", submitter).start()
    b = instance(tmp_path, bed, pg, "instance-b", submitter).start()
    try:
        wait_schema_ready(a, b)
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        tag = f"shared-tlsrpt-outage-{uuid.uuid4().hex[:8]}"
        wait_delivered(a, submit(a, f"user@{DOMAIN}", f"{tag}-a0"))
        wait_for(lambda: counts_by_instance(pg) == ["instance-a:1"], 30, "A's first session pushed")

        # The database goes away: mail flows, A's counts wait in its outbox.
        pg.stop()
        wait_delivered(a, submit(a, f"user@{DOMAIN}", f"{tag}-a1"))
        wait_for(lambda: log_lines(a, "shared state unreachable; TLS-RPT counts queued"), 20, "A to notice the outage")
        outbox = a.spool / "tlsrpt-outbox"
        wait_for(lambda: outbox.exists() and f"{day}_{DOMAIN}" in [p.name for p in outbox.iterdir()], 20,
                 "A's queued counts on disk")
        publish_tlsrpt_record(bed)
        # No report from A's counts alone while the database is down.
        out = report(a, day)
        assert "shared state unreachable" in out and "no report sent from this instance's counts alone" in out, out
        assert ": sent" not in out, out

        # Back: the queued counts arrive once (absolute values: 2, not 1 + 2).
        pg.start()
        wait_for(lambda: log_lines(a, "shared state reachable again; replayed the queued TLS-RPT counts"), 30, "A's replay")
        wait_for(lambda: counts_by_instance(pg) == ["instance-a:2"], 20, "A's queued counts in the table")
        assert [p.name for p in outbox.iterdir()] == [], "the outbox is empty once replayed"
        wait_delivered(b, submit(b, f"user@{DOMAIN}", f"{tag}-b0"))
        wait_for(lambda: counts_by_instance(pg) == ["instance-a:2", "instance-b:1"], 30, "B's session pushed")

        out = report(a, day)
        assert f"{DOMAIN}: 3 sessions;" in out and "mailto:tlsrpt@sender.test: sent" in out, out
        wait_for(lambda: report_mails(bed, submitter), 30, "the report mail")
        time.sleep(3)
        assert len(report_mails(bed, submitter)) == 1
    finally:
        a.stop()
        b.stop()
        try:
            bed.unbound_control("local_data_remove", f"_smtp._tls.{DOMAIN}.")
        except Exception:
            pass
