"""Learned TLS status end to end (issue 12 "Must show" 2), against the
bed's learned-strip.test: its MX is a STARTTLS-strip proxy that starts
switched off, in front of a TLS receiver whose certificate names the MX.

One relayd at default level opportunistic delivers there over TLS, which
teaches it the domain does TLS. With the attack switched on, the next
message is deferred (never sent in plaintext) with a "suspected TLS
downgrade" warning, through a restart too (the record is on disk);
switched off, the retry goes over TLS; `relayd policy forget` makes
plaintext possible again. The operator commands work against the running
daemon and without one.

What happened is read from the receiving side (the receiver's records) and
from relayd's log lines and CLI, never from relayd's files.
"""
import json
import re
import subprocess
import uuid

from bed import DNS_IP, wait_for
from delivery_log import arrived, concluded, log_lines, submit, wait_arrived, wait_deferred, wait_delivered
from relayd_harness import RELAYD, Relayd

DOMAIN = "learned-strip.test"
BACKEND = "127.0.0.93"     # the TLS receiver behind the proxy
DOWNGRADE = "suspected TLS downgrade; not sent below the learned level, deferred"


def learned_relayd(workdir, bed):
    return Relayd(workdir, relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert,
                  extra='[mta_sts]\nenabled = false\n',
                  queue='retry_schedule = ["1s"]\nmax_lifetime = "10m"',
                  # No kept connections: each message must meet the proxy
                  # as it is switched now (a TLS session kept from before
                  # the attack would rightly carry the next message).
                  outbound='default_level = "opportunistic"\nconnect_timeout = "3s"\nconnection_reuse = "0s"\n'
                           '[outbound.domains]\n"sender.test" = "opportunistic"\n')


def policy(relayd, *args, check=True):
    r = subprocess.run([str(RELAYD), "policy", *args, "--config", str(relayd.config)],
                       capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def new_tag(what):
    return f"learned-{what}-{uuid.uuid4().hex[:8]}"


def explain(relayd):
    return json.loads(policy(relayd, "explain", DOMAIN, "--json").stdout)


def assert_learned_deferral(lines):
    for a in lines:
        assert a["layer"] == "learned" and a["level"] == "forced", a
        assert a["tls"] == "none", a
        assert re.fullmatch(r"4\.7\.\d+", a["status"]), a
        assert "learned TLS status" in a["detail"], a


def test_downgrade_is_deferred_survives_a_restart_and_forget_allows_plaintext(bed, tmp_path):
    bed.set_strip(DOMAIN, False)
    relayd = learned_relayd(tmp_path / "relayd", bed).start()
    try:
        # 1. The first delivery goes over TLS at the default level.
        first = new_tag("first")
        qid = submit(relayd, f"user@{DOMAIN}", first)
        line = wait_delivered(relayd, qid)
        assert line["layer"] == "default" and line["level"] == "opportunistic", line
        assert line["tls"].startswith("TLSv1.") and line["verify"] == "trusted", line
        got = wait_arrived(bed, BACKEND, first)
        assert got[0]["tls"], got
        raised = log_lines(relayd, "learned TLS status raised", domain=DOMAIN)
        assert raised and raised[0]["to"] in ("tls", "verified") and raised[0]["answers"] == "forced", raised
        j = explain(relayd)
        assert j["layer"] == "learned" and j["level"] == "forced", j
        assert j["learned"]["decides"] and j["learned"]["record"]["learned"] == "tls", j["learned"]

        # 2. The attack: STARTTLS stripped. Deferred, never plaintext.
        bed.set_strip(DOMAIN, True)
        since = len(relayd.log_text())
        stripped = new_tag("stripped")
        qid = submit(relayd, f"user@{DOMAIN}", stripped)
        assert_learned_deferral(wait_deferred(relayd, qid, since=since))
        warnings = log_lines(relayd, DOWNGRADE, since, domain=DOMAIN)
        assert warnings, relayd.log_text()[since:]
        w = warnings[0]
        raw = next(l for l in relayd.log_text()[since:].splitlines() if DOWNGRADE in l)
        assert raw.split(" msg=")[0].endswith("level=warning"), raw
        assert w["level"] == "forced", w  # the policy level (the later field)
        assert w["mx"] == "mx.learned-strip.test" and w["ip"] == "127.0.0.92", w
        assert w["missing"] == "starttls-not-offered" and "learned tls" in w["learned"], w
        assert not arrived(bed, BACKEND, stripped), "sent through the stripping proxy"

        # 3. A restart keeps the record: still deferred.
        assert relayd.stop() == 0
        relayd.restart()
        since = len(relayd.log_text())
        assert_learned_deferral(wait_deferred(relayd, qid, since=since))
        assert not arrived(bed, BACKEND, stripped)

        # 4. The attack ends: the retry goes over TLS.
        bed.set_strip(DOMAIN, False)
        line = wait_delivered(relayd, qid, since=since)
        assert line["tls"].startswith("TLSv1.") and line["layer"] == "learned", line
        assert wait_arrived(bed, BACKEND, stripped)[0]["tls"]

        # 5. Forget, while the attack is on: plaintext is possible again.
        bed.set_strip(DOMAIN, True)
        since = len(relayd.log_text())
        later = new_tag("forget")
        qid = submit(relayd, f"user@{DOMAIN}", later)
        assert_learned_deferral(wait_deferred(relayd, qid, since=since))
        out = policy(relayd, "forget", DOMAIN).stdout
        assert f"{DOMAIN}: learned record forgotten" in out, out
        line = wait_delivered(relayd, qid, since=since)
        assert line["tls"] == "none" and line["layer"] == "default", line
        plain = wait_arrived(bed, BACKEND, later)
        assert not plain[0]["tls"], plain
        changed = log_lines(relayd, "learned TLS status changed by operator", since, domain=DOMAIN)
        assert changed and "forget" in changed[0]["change"], changed
        audit = (relayd.spool / "audit" / "learned.log").read_text()
        assert "forget" in audit and DOMAIN in audit, audit
        assert explain(relayd)["learned"]["record"] is None
    finally:
        bed.set_strip(DOMAIN, False)
        relayd.stop()


def test_pin_unpin_and_list_with_and_without_a_daemon(bed, tmp_path):
    relayd = learned_relayd(tmp_path / "relayd", bed).start()
    try:
        out = policy(relayd, "pin", "partner.test", "verify", "--until", "2099-01-01", "--reason", "contract 7").stdout
        assert "partner.test: pinned to verify until 2099-01-01 00:00:00 UTC" in out, out
        j = json.loads(policy(relayd, "explain", "partner.test", "--json").stdout)
        assert j["layer"] == "learned" and j["level"] == "verify" and j["requires_verification"], j
        pin = j["learned"]["record"]["pin"]
        assert pin["level"] == "verify" and pin["reason"] == "contract 7" and pin["active"], pin
        listed = json.loads(policy(relayd, "list", "--learned", "--json").stdout)
        assert [r["domain"] for r in listed["records"]] == ["partner.test"], listed
        text = policy(relayd, "list", "--learned").stdout
        assert re.search(r"^partner\.test\s+-\s+verify\s+verify until 2099-01-01", text, re.M), text
        # The daemon carried it out: its log says so.
        assert log_lines(relayd, "learned TLS status changed by operator", domain="partner.test")
        bad = policy(relayd, "pin", "partner.test", "tls-exclusive", check=False)
        assert bad.returncode != 0 and "one of none, opportunistic, forced, verify" in bad.stderr, bad
        assert "unpinned" in policy(relayd, "unpin", "partner.test").stdout
        assert "no learned TLS records" in policy(relayd, "list", "--learned").stdout
    finally:
        relayd.stop()
    # Without a daemon the CLI applies the change itself, under the spool lock.
    out = policy(relayd, "pin", "offline.test", "forced").stdout
    assert "offline.test: pinned to forced until unpinned" in out, out
    relayd.restart()
    try:
        j = json.loads(policy(relayd, "explain", "offline.test", "--json").stdout)
        assert j["layer"] == "learned" and j["level"] == "forced", j
    finally:
        relayd.stop()
    audit = (relayd.spool / "audit" / "learned.log").read_text().splitlines()
    assert len(audit) == 3 and all("by" in line or "uid" in line or "root" in line for line in audit), audit


def mails_at_backend(bed):
    return len([e for e in bed.events(BACKEND) if e["event"] == "mail"])


def test_reprobe_records_what_the_mx_offers_now_and_sends_no_mail(bed, tmp_path):
    """The daily probe's path, started on demand: the daemon probes with
    EHLO/STARTTLS/handshake/QUIT and files what it found in the record."""
    bed.set_strip(DOMAIN, False)
    relayd = learned_relayd(tmp_path / "relayd", bed).start()
    try:
        wait_delivered(relayd, submit(relayd, f"user@{DOMAIN}", new_tag("before-probe")))
        mails = mails_at_backend(bed)

        bed.set_strip(DOMAIN, True)
        since = len(relayd.log_text())
        assert "probe started" in policy(relayd, "reprobe", DOMAIN).stdout
        wait_for(lambda: log_lines(relayd, "probe", since, domain=DOMAIN), 30, "probe logged")
        line = log_lines(relayd, "probe", since, domain=DOMAIN)[0]
        assert line["seen"] == "plaintext" and line["mx"] == "mx.learned-strip.test", line
        r = explain(relayd)["learned"]["record"]
        assert r["last_probe"]["seen"] == "plaintext" and r["last_probe"]["starttls_offered"] is False, r
        assert r["probes_below"] == 1 and r["probes_below_since"], r
        assert r["learned"] == "tls", "one probe never lowers what was learned"
        text = policy(relayd, "explain", DOMAIN).stdout
        assert re.search(r"^  relax\s+1 probe below since .* once 3 probes have found the same", text, re.M), text

        bed.set_strip(DOMAIN, False)
        since = len(relayd.log_text())
        policy(relayd, "reprobe", DOMAIN)
        wait_for(lambda: log_lines(relayd, "probe: TLS level changed", since, domain=DOMAIN), 30, "probe change logged")
        changed = log_lines(relayd, "probe: TLS level changed", since, domain=DOMAIN)[0]
        assert changed["previous"] == "plaintext" and changed["seen"] == "verified", changed
        r = explain(relayd)["learned"]["record"]
        assert r["probes_below"] == 0 and r["probes_below_since"] is None, r
        assert len(r["keys"]) == 1 and re.fullmatch(r"[0-9a-f]{64}", r["keys"][0]), r
        assert mails_at_backend(bed) == mails, "a probe sent mail"
    finally:
        bed.set_strip(DOMAIN, False)
        relayd.stop()
    # Without a daemon the CLI probes itself and writes the record.
    out = policy(relayd, "reprobe", DOMAIN).stdout
    assert f"{DOMAIN}: probed; verified at mx.learned-strip.test" in out, out
