"""DANE for SMTP (RFC 7672) end to end, issue 13 "Must show" 1: a relayd
with `[dns] dnssec = true` asks the bed's validating unbound (127.0.0.153,
which validates the signed zone dane.test served at 127.0.0.155) and
delivers to the bed's receivers. Every row of tests/bed/scenarios.toml
with role "dane" says what must happen at relayd's default level
(opportunistic) in `dane_expect`:

  dane-tls  delivered over TLS, the server authenticated by a TLSA record
            (layer=dane dane=verified, the record named), whatever its
            certificate's name, issuer or dates say (DANE-EE), or through
            the DANE trust anchor in its chain (DANE-TA);
  tls       delivered over TLS without DANE authentication (records all
            unusable: mandatory TLS; or an insecure host: no DANE at all);
  deferred  not delivered, never in plaintext, retried (4.7.x).

What happened is read from relayd's delivery lines, from the receivers'
records, and for the insecure host from the resolver's query log (no TLSA
query was ever sent for it).
"""
import re
import uuid

import pytest

from bed import DNS_IP, load_scenarios, wait_for
from delivery_log import arrived, attempts, concluded, log_lines, submit, wait_arrived, wait_deferred, wait_delivered
from relayd_harness import Relayd

ROWS = [s for s in load_scenarios() if s.get("role") == "dane"]


def dane_relayd(workdir, bed, domains=""):
    return Relayd(workdir, relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert, dns="dnssec = true",
                  extra="[mta_sts]\nenabled = true\nfetch_timeout = \"2s\"\n[learned]\nenabled = false\n",
                  queue='retry_schedule = ["1s"]\nmax_lifetime = "10m"',
                  outbound='default_level = "opportunistic"\nconnect_timeout = "3s"\nconnection_reuse = "0s"\n'
                           '[outbound.domains]\n"sender.test" = "opportunistic"\n' + domains)


@pytest.fixture(scope="module")
def relayd(bed, tmp_path_factory):
    r = dane_relayd(tmp_path_factory.mktemp("dane") / "relayd", bed).start()
    yield r
    r.stop()


def new_tag(what):
    return f"dane-{what}-{uuid.uuid4().hex[:8]}"


def landing(bed, row):
    """Where the row's mail would arrive: the MX, or what a strip proxy
    fronts."""
    mx = row["mx"][0]
    return mx.get("upstream", mx["ip"])


@pytest.mark.parametrize("row", ROWS, ids=[r["name"] for r in ROWS])
def test_dane_rows(bed, relayd, row):
    domain = row["domain"]
    mx = row["mx"][0]
    expect = row["dane_expect"]
    tag = new_tag(row["name"])
    mark = len(bed.dns_queries())
    since = len(relayd.log_text())
    qid = submit(relayd, f"user@{domain}", tag)
    if expect == "deferred":
        lines = wait_deferred(relayd, qid, since=since)
        for a in lines:
            assert a["tls"] == "none" or a.get("dane") in ("failed", "bogus"), a
            assert re.fullmatch(r"4\.7\.\d+", a["status"]), a
        assert not concluded(relayd, qid, "delivered", since)
        assert not arrived(bed, landing(bed, row), tag), "delivered although DANE failed"
        return
    line = wait_delivered(relayd, qid, since=since)
    assert line["tls"].startswith("TLSv1."), line
    got = wait_arrived(bed, landing(bed, row), tag)
    assert got[0]["tls"], got
    if expect == "dane-tls":
        assert line["layer"] == "dane" and line["dane"] == "verified" and line["verify"] == "trusted", line
        assert line["level"] == "verify", line
        assert re.fullmatch(r"[23] [01] [012] [0-9a-f]+…?", line["tlsa"]), line
    elif mx["name"].endswith(".dane.test"):
        # Signed host, records present but none usable: TLS, unauthenticated.
        assert line["layer"] == "dane" and line["dane"] == "unusable" and line["level"] == "forced", line
    else:
        # An insecure host: no DANE at all, and no TLSA query was ever sent.
        assert line["dane"] == "insecure" and line["layer"] == "default", line
        asked = bed.dns_queries(since=mark)
        assert (f"_25._tcp.{mx['name']}", "TLSA") not in asked, asked
        assert any(name == mx["name"] for name, _ in asked), f"the resolver log shows no lookup at all: {asked}"


def test_a_bogus_tlsa_rrset_defers_with_475_and_is_logged(bed, relayd):
    since = len(relayd.log_text())
    qid = submit(relayd, "user@bogus.dane.test", new_tag("bogus"))
    lines = wait_deferred(relayd, qid, since=since)
    assert all(a["status"] == "4.7.5" for a in lines), lines
    warned = log_lines(relayd, "DANE: TLSA lookup failed; MX host not contacted", since, domain="bogus.dane.test")
    assert warned and warned[0]["dane"] == "bogus" and "SERVFAIL" in warned[0]["reason"], warned
    # Not contacted at all: no delivery attempt line names its address.
    assert not any(a.get("ip") == "127.0.0.107" for a in attempts(relayd, qid, since)), attempts(relayd, qid, since)


def test_a_failing_dane_host_is_not_rescued_by_mta_sts(bed, relayd):
    """sts.dane.test publishes an enforce policy its MX satisfies by PKIX;
    its TLSA matches nothing. DANE decides for the host (RFC 8461 §2)."""
    since = len(relayd.log_text())
    qid = submit(relayd, "user@sts.dane.test", new_tag("sts"))
    lines = wait_deferred(relayd, qid, since=since)
    for a in lines:
        assert a["layer"] == "dane" and a["tls_failure"] == "dane-no-match", a
        assert "DANE TLSA records of mx.sts.dane.test" in a["detail"], a


def test_stripped_starttls_on_a_dane_host_is_deferred(bed, relayd):
    since = len(relayd.log_text())
    qid = submit(relayd, "user@strip.dane.test", new_tag("strip"))
    for a in wait_deferred(relayd, qid, since=since):
        assert a["layer"] == "dane" and a["tls"] == "none" and a["status"] == "4.7.10", a


def test_the_operator_entry_lowers_a_broken_dane_domain(bed, tmp_path):
    """The escape hatch: an [outbound.domains] entry for a partner whose
    DANE is broken is obeyed (no TLSA lookup), and the log says who decided."""
    r = dane_relayd(tmp_path / "relayd", bed, domains='"lowered.dane.test" = "forced"\n').start()
    try:
        mark = len(bed.dns_queries())
        tag = new_tag("lowered")
        line = wait_delivered(r, submit(r, "user@lowered.dane.test", tag))
        assert line["layer"] == "operator" and line["level"] == "forced" and "dane" not in line, line
        assert wait_arrived(bed, "127.0.0.112", tag)[0]["tls"]
        assert ("_25._tcp.mx.lowered.dane.test", "TLSA") not in bed.dns_queries(since=mark)
    finally:
        r.stop()


def probe(relayd, domain):
    import json, subprocess
    from relayd_harness import RELAYD
    r = subprocess.run([str(RELAYD), "probe", domain, "--json", "--config", str(relayd.config)],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, json.loads(r.stdout)


@pytest.mark.parametrize("domain, code, finding, state, levels", [
    ("ee-wrongname.dane.test", 0, "dane-verified", "verified", {"verified-tls"}),
    ("nomatch.dane.test", 3, "dane-failed", "verified", {"defer", "drop"}),
    ("unusable.dane.test", 2, "dane-tls", "unusable", {"tls"}),
    ("dane-insecure.test", 2, "tls-unverified", "insecure", {"plaintext", "tls", "defer", "drop"}),
])
def test_probe_shows_what_dane_decides(bed, relayd, domain, code, finding, state, levels):
    rc, report = probe(relayd, domain)
    assert rc == code, report
    assert report["addresses"][0]["finding"] == finding, report["addresses"][0]
    host = report["dane"]["hosts"][0]
    assert host["state"] == state, host
    assert set(report["levels"].values()) == levels, report["levels"]
    if state == "verified":
        matched = [m for rec in host["records"] for m in rec["matches"]]
        assert bool(matched) == (finding == "dane-verified"), host
        assert host["addresses"][0]["verified"] == (finding == "dane-verified"), host
