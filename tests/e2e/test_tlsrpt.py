"""TLS-RPT (RFC 8460) end to end: a relayd with [tlsrpt] enabled delivers
to the bed's domains (valid.test over TLS, plain.test without STARTTLS),
the test publishes `_smtp._tls` TXT records for them in the bed's DNS,
and `relayd report tlsrpt --day <today>` (through the running daemon,
which flushes its counters first) sends the reports:

  - by mail to tlsrpt@sender.test (the bed's TLS receiver 127.0.0.29):
    multipart/report with report-type "tlsrpt", the RFC's Subject and
    TLS-Report-* fields, the gzipped JSON attachment named per §5.1;
  - by HTTPS POST to a small python HTTPS server on 127.0.0.160 with a
    certificate from the bed's CA (reports.sender.test in the bed's DNS).

Both reports are gunzipped and checked against what was delivered. The
report mail's own session to sender.test is not counted: afterwards the
day has no counters for sender.test.
"""
import base64
import email
import gzip
import json
import ssl
import subprocess
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bed import DNS_IP, wait_for
from delivery_log import log_lines, submit, wait_delivered
from relayd_harness import RELAYD, Relayd

SINK = "127.0.0.29"          # mx.sender.test, a TLS test receiver
HTTPS_IP = "127.0.0.160"
REPORT_HOST = "reports.sender.test"


class Collector(BaseHTTPRequestHandler):
    posts = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        Collector.posts.append({"path": self.path, "type": self.headers.get("Content-Type"), "body": body})
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def https_server(bed):
    cert, key = bed.ca.issue(REPORT_HOST)
    server = ThreadingHTTPServer((HTTPS_IP, 0), Collector)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    bed.unbound_control("local_data", f"{REPORT_HOST}. 1 IN A {HTTPS_IP}")
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    bed.unbound_control("local_data_remove", f"{REPORT_HOST}.")


def publish_tlsrpt(bed, domain, rua):
    bed.unbound_control("local_data", f'_smtp._tls.{domain}. 1 IN TXT "v=TLSRPTv1; rua={rua}"')
    wait_for(lambda: (bed.dns_answers(f"_smtp._tls.{domain}", "TXT") or (None, []))[1] == [f'"v=TLSRPTv1; rua={rua}"'],
             10, f"_smtp._tls.{domain} published")


def report(relayd, day, *flags):
    r = subprocess.run([str(RELAYD), "report", "tlsrpt", "-c", str(relayd.config), "--day", day, *flags],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def report_mails(bed, domain):
    out = []
    for m in bed.events(SINK):
        if m["event"] == "mail" and f"TLS-Report-Domain: {domain}" in m["data"]:
            out.append(m)
    return out


def attachment(message_text):
    msg = email.message_from_string(message_text)
    assert msg.get_content_type() == "multipart/report", msg["Content-Type"]
    assert msg.get_param("report-type") == "tlsrpt"
    parts = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert len(parts) == 1
    return msg, parts[0]


def check_schema(rep, domain, day):
    assert set(rep) == {"organization-name", "date-range", "contact-info", "report-id", "policies"}, rep
    assert rep["organization-name"] == "E2E Org"
    assert rep["contact-info"] == "mailto:postmaster@relay.e2e.test"
    assert rep["date-range"] == {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"}
    assert rep["report-id"] == f"{day}T00:00:00Z_{domain}_relay.e2e.test"
    for p in rep["policies"]:
        assert p["policy"]["policy-domain"] == domain
        assert p["policy"]["policy-type"] in ("sts", "tlsa", "no-policy-found")
        s = p["summary"]
        assert isinstance(s["total-successful-session-count"], int) and isinstance(s["total-failure-session-count"], int)
        for d in p.get("failure-details", []):
            assert isinstance(d["result-type"], str) and isinstance(d["failed-session-count"], int), d


def test_reports_by_mail_and_https_and_report_mail_not_counted(bed, https_server, tmp_path):
    relayd = Relayd(tmp_path / "relayd", relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert,
                    extra='[tlsrpt]\nenabled = true\norganization = "E2E Org"\nsubmitter = "relay.e2e.test"\n',
                    queue='retry_schedule = ["1s"]\nmax_lifetime = "10m"',
                    outbound='default_level = "opportunistic"\nconnect_timeout = "3s"\n').start()
    try:
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        tag = f"tlsrpt-{uuid.uuid4().hex[:8]}"
        for i in range(2):
            wait_delivered(relayd, submit(relayd, "user@valid.test", f"{tag}-v{i}"))
        wait_delivered(relayd, submit(relayd, "user@plain.test", f"{tag}-p"))

        publish_tlsrpt(bed, "valid.test", f"mailto:tlsrpt@sender.test,https://{REPORT_HOST}:{https_server}/v1/tlsrpt")
        publish_tlsrpt(bed, "plain.test", "mailto:tlsrpt@sender.test")

        dry = report(relayd, day, "--dry-run", "--json")
        assert "(dry run: nothing sent)" in dry, dry
        assert not Collector.posts and not report_mails(bed, "valid.test")

        out = report(relayd, day)
        assert f"https://{REPORT_HOST}:{https_server}/v1/tlsrpt: sent" in out, out
        assert "mailto:tlsrpt@sender.test: sent" in out, out

        # HTTPS.
        assert len(Collector.posts) == 1, Collector.posts
        post = Collector.posts[0]
        assert post["path"] == "/v1/tlsrpt" and post["type"] == "application/tlsrpt+gzip"
        rep = json.loads(gzip.decompress(post["body"]))
        check_schema(rep, "valid.test", day)
        assert len(rep["policies"]) == 1
        pol = rep["policies"][0]
        assert pol["policy"]["policy-type"] == "no-policy-found"
        assert pol["summary"] == {"total-successful-session-count": 2, "total-failure-session-count": 0}

        # Mail, for both domains.
        wait_for(lambda: report_mails(bed, "valid.test") and report_mails(bed, "plain.test"), 30, "report mail")
        for domain, ok, failed in (("valid.test", 2, 0), ("plain.test", 0, 1)):
            mails = report_mails(bed, domain)
            assert len(mails) == 1, mails
            m = mails[0]
            assert m["tls"], "report mail goes over TLS where there is TLS"
            msg, part = attachment(m["data"])
            assert msg["Subject"] == f"Report Domain: {domain} Submitter: relay.e2e.test Report-ID: <{day}T00:00:00Z_{domain}_relay.e2e.test>"
            assert msg["TLS-Report-Domain"] == domain and msg["TLS-Report-Submitter"] == "relay.e2e.test"
            start = int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp())
            assert part.get_filename() == f"relay.e2e.test!{domain}!{start}!{start + 86399}.json.gz"
            rep = json.loads(gzip.decompress(part.get_payload(decode=True)))
            check_schema(rep, domain, day)
            s = rep["policies"][0]["summary"]
            assert (s["total-successful-session-count"], s["total-failure-session-count"]) == (ok, failed), rep
            if failed:
                details = rep["policies"][0]["failure-details"]
                assert [d["result-type"] for d in details] == ["starttls-not-supported"], details
                assert details[0]["receiving-mx-hostname"] == "mx.plain.test" and details[0]["receiving-ip"] == "127.0.0.22"

        # The report mail's sessions were not counted: sender.test has no
        # counters today (the daemon flushes before answering).
        assert log_lines(relayd, "delivery attempt", domain="sender.test", outcome="delivered"), "the report mail went out"
        again = report(relayd, day, "--dry-run")
        domains = sorted(line.split(":")[0] for line in again.splitlines() if not line.startswith(" "))
        assert domains == ["plain.test", "valid.test"], again

        # Sent once: a second run sends nothing new.
        third = report(relayd, day)
        assert "every destination already has it" in third, third
        assert len(Collector.posts) == 1
    finally:
        relayd.stop()
        for d in ("valid.test", "plain.test"):
            try:
                bed.unbound_control("local_data_remove", f"_smtp._tls.{d}.")
            except Exception:
                pass


def test_report_mail_passes_the_automatic_layers_but_never_the_operators_entry(bed, tmp_path):
    """sts-strip.test publishes an enforce MTA-STS policy and its MX sits
    behind a STARTTLS-stripping proxy: its mail is deferred, and that is
    what its report says. The report itself, to an address at
    sts-strip.test, must still arrive — in plaintext: a report about TLS
    failing cannot wait for TLS, so MTA-STS, DANE and learned status do not
    hold it (RFC 8460 §5.4). The operator's own entry still does: a report
    to plain.test, which the operator set to `forced`, is never sent in
    plaintext."""
    relayd = Relayd(tmp_path / "relayd", relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert,
                    extra='[tlsrpt]\nenabled = true\norganization = "E2E Org"\nsubmitter = "relay.e2e.test"\n'
                          '[mta_sts]\nenabled = true\nfetch_timeout = "5s"\n',
                    queue='retry_schedule = ["1s"]\nmax_lifetime = "10m"',
                    outbound='default_level = "opportunistic"\nconnect_timeout = "3s"\n'
                             '[outbound.domains]\n"plain.test" = "forced"\n').start()
    try:
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        tag = f"tlsrpt-sts-{uuid.uuid4().hex[:8]}"
        qid = submit(relayd, "user@sts-strip.test", tag)
        wait_for(lambda: any(a.get("outcome") == "deferred" and a.get("mta_sts") == "enforce"
                             for a in log_lines(relayd, "delivery attempt", id=qid)), 30, "the MTA-STS mail deferred")
        plain_qid = submit(relayd, "user@plain.test", f"tlsrpt-forced-{uuid.uuid4().hex[:8]}")
        wait_for(lambda: any(a.get("outcome") == "deferred" for a in log_lines(relayd, "delivery attempt", id=plain_qid)),
                 20, "the forced mail deferred")
        rua = f"mailto:tlsrpt-{uuid.uuid4().hex[:6]}@sts-strip.test"
        plain_rua = f"mailto:tlsrpt-{uuid.uuid4().hex[:6]}@plain.test"
        publish_tlsrpt(bed, "sts-strip.test", rua)
        publish_tlsrpt(bed, "plain.test", plain_rua)
        out = report(relayd, day)
        assert f"{rua}: sent" in out and f"{plain_rua}: sent" in out, out

        def reports():
            return [m for m in bed.postfix_messages() if rua[len("mailto:"):] in m["data"] and "TLS-Report-Domain" in m["data"]]
        wait_for(reports, 30, "the report mail behind the stripping proxy")
        m = reports()[0]
        assert not m["tls"], "STARTTLS stripped: the report went in plaintext, as RFC 8460 asks"
        _, part = attachment(m["data"].split("\n", 1)[1])
        rep = json.loads(gzip.decompress(part.get_payload(decode=True)))
        check_schema(rep, "sts-strip.test", day)
        p = rep["policies"][0]
        assert p["policy"]["policy-type"] == "sts", p
        assert p["summary"]["total-successful-session-count"] == 0 and p["summary"]["total-failure-session-count"] >= 1
        assert {d["result-type"] for d in p["failure-details"]} == {"starttls-not-supported"}
        # The user's mail is still held by the policy.
        assert not any(a.get("outcome") == "delivered" for a in log_lines(relayd, "delivery attempt", id=qid))

        # The report to plain.test is held to the operator's `forced`.
        report_line = lambda: [a for a in log_lines(relayd, "delivery attempt", domain="plain.test")
                               if a.get("id") not in (plain_qid,)]
        wait_for(lambda: any(a.get("outcome") == "deferred" for a in report_line()), 30, "the report to plain.test deferred")
        assert all(a["layer"] == "operator" and a["tls"] == "none" and a["outcome"] != "delivered" for a in report_line())
        assert not [e for e in bed.events("127.0.0.22") if e["event"] == "mail" and plain_rua[len("mailto:"):] in " ".join(e["to"])]
    finally:
        relayd.stop()
        for d in ("sts-strip.test", "plain.test"):
            try:
                bed.unbound_control("local_data_remove", f"_smtp._tls.{d}.")
            except Exception:
                pass
