"""MTA-STS (RFC 8461) end to end, issue 11 "Must show" 2: a relayd that
asks the bed's DNS (unbound, 127.0.0.153) for `_mta-sts.<domain>`,
fetches policies from the bed's nginx (test CA, SNI per mta-sts.<domain>)
and delivers to the bed's real receivers on port 25.

Every relayd here has default level opportunistic, `[tls] ca_bundle` the
bed's CA and `[mta_sts] enabled = true` with a short fetch timeout (2 s,
so the silent policy host costs little); retries every second, so a
deferral shows in the log at once. What happened is read from the
receiving side (the test receivers' records, Postfix's mailbox) and from
relayd's log lines; relayd's cache is only ever changed by what the bed
publishes, never by touching its files.

Each scenario is its own domain (tests/bed/scenarios.toml, role
"mta-sts"), so one test's cached policy never meets another's mail.
"""
import json
import re
import subprocess
import time
import uuid

import pytest

from bed import DNS_IP, wait_for
from delivery_log import (arrived, attempts, concluded, log_lines, submit, wait_arrived, wait_deferred,
                          wait_delivered)
from relayd_harness import Relayd

POSTFIX = "127.0.0.21"      # behind every strip receiver
FETCH_TIMEOUT = 2


def sts_relayd(workdir, bed):
    return Relayd(workdir, relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert,
                  extra=f'[mta_sts]\nenabled = true\nfetch_timeout = "{FETCH_TIMEOUT}s"\n',
                  queue='retry_schedule = ["1s"]\nmax_lifetime = "10m"',
                  outbound='default_level = "opportunistic"\nconnect_timeout = "3s"\n'
                           '[outbound.domains]\n"sender.test" = "opportunistic"\n')


@pytest.fixture(scope="module")
def relayd(bed, tmp_path_factory):
    """One relayd for the tests that need no restart: each uses its own
    domain, so they cannot see each other's policies."""
    r = sts_relayd(tmp_path_factory.mktemp("sts") / "relayd", bed).start()
    yield r
    r.stop()


# --- sending and reading ------------------------------------------------------

def new_tag(what):
    return f"sts-{what}-{uuid.uuid4().hex[:8]}"


def connects(bed, ip):
    """TCP connections the test receiver at `ip` accepted (so far)."""
    return len([e for e in bed.events(ip) if e["event"] == "connect"])


def fetched(relayd, domain, since=0, **fields):
    return log_lines(relayd, "MTA-STS policy fetched", since, domain=domain, **fields)


RECHECK = "MTA-STS: delivery failed under the policy; fetching it again"


def fetched_ids(relayd, domain, since=0):
    """The ids fetched, in order, a fetch repeating the one before folded
    in: a failure under an enforce policy refetches it under the same id
    (issue 11: the cure for a stale policy whose id was not bumped)."""
    out = []
    for f in fetched(relayd, domain, since):
        if not out or out[-1] != f["id"]:
            out.append(f["id"])
    return out


def rechecks(relayd, domain, since=0):
    """Refetches after a failure: at most one per domain every few
    minutes, so one in each of these short tests."""
    return len(log_lines(relayd, RECHECK, since, domain=domain))


def assert_enforced_deferral(lines, sts_id):
    for a in lines:
        assert a["mta_sts"] == "enforce" and a["mta_sts_id"] == sts_id, a
        assert a["layer"] == "mta-sts" and a["level"] == "verify", a
        assert re.fullmatch(r"4\.7\.\d+", a["status"]), a
        # What the sender's DSN will carry names MTA-STS and the policy.
        assert "MTA-STS policy" in a["detail"] and sts_id in a["detail"], a


# --- enforce --------------------------------------------------------------------

def test_enforce_with_a_good_mx_is_delivered_with_verification(bed, relayd):
    tag = new_tag("good")
    qid = submit(relayd, "user@sts-enforce.test", tag)
    line = wait_delivered(relayd, qid)
    assert line["mta_sts"] == "enforce" and line["mta_sts_id"] == "enforce1", line
    assert line["layer"] == "mta-sts" and line["level"] == "verify", line
    assert line["verify"] == "trusted" and line["tls"] == "TLSv1.3", line
    assert line["mx"] == "mx.sts-enforce.test" and line["ip"] == "127.0.0.70" and line["port"] == "25", line
    got = wait_arrived(bed, "127.0.0.70", tag)
    assert len(got) == 1 and got[0]["tls"] and got[0]["version"] == "TLSv1.3", got
    f = fetched(relayd, "sts-enforce.test")
    assert [(x["id"], x["mode"], x["mx"]) for x in f] == [("enforce1", "enforce", "mx.sts-enforce.test")], f


def test_enforce_with_starttls_stripped_is_deferred_never_plaintext(bed, relayd):
    tag = new_tag("strip")
    qid = submit(relayd, "user@sts-strip.test", tag)
    deferred = wait_deferred(relayd, qid)
    assert_enforced_deferral(deferred, "strip1")
    # The wildcard pattern "*.sts-strip.test" listed the host: it was tried.
    assert all(a["mx"] == "mx.sts-strip.test" and a["tls"] == "none" for a in deferred), deferred
    assert not concluded(relayd, qid, "delivered")
    assert not arrived(bed, POSTFIX, tag), "the MX behind the stripping proxy got the message"


@pytest.mark.parametrize("domain, ip, sts_id, failure", [
    ("sts-selfsigned.test", "127.0.0.72", "selfsigned1", "certificate"),
    ("sts-wrongname.test", "127.0.0.73", "wrongname1", "hostname"),
])
def test_enforce_with_an_unverifiable_mx_certificate_is_deferred(bed, relayd, domain, ip, sts_id, failure):
    tag = new_tag(domain.split(".")[0])
    qid = submit(relayd, f"user@{domain}", tag)
    deferred = wait_deferred(relayd, qid)
    assert_enforced_deferral(deferred, sts_id)
    assert all(failure in a.get("tls_failure", "").lower() for a in deferred), deferred
    sessions = [e for e in bed.events(ip) if e["event"] == "session"]
    assert sessions, "the MX was tried"
    assert not [e for e in bed.events(ip) if e["event"] == "mail"], "the MX got mail"


def test_mx_not_in_the_policy_is_never_contacted(bed, relayd):
    """mx1 (preference 10) is not in the policy but holds a valid
    certificate for mx2, which is: it must not even get a connection."""
    before = connects(bed, "127.0.0.74")
    tag = new_tag("unlisted")
    qid = submit(relayd, "user@sts-unlisted.test", tag)
    line = wait_delivered(relayd, qid)
    assert line["mx"] == "mx2.sts-unlisted.test" and line["ip"] == "127.0.0.75", line
    assert line["mta_sts"] == "enforce" and line["verify"] == "trusted", line
    assert [a["mx"] for a in attempts(relayd, qid)] == ["mx2.sts-unlisted.test"]
    got = wait_arrived(bed, "127.0.0.75", tag)
    assert len(got) == 1 and got[0]["tls"], got
    skipped = log_lines(relayd, "MTA-STS: MX host not in the policy; not contacted", id=qid)
    assert [s["mx"] for s in skipped] == ["mx1.sts-unlisted.test"], skipped
    assert connects(bed, "127.0.0.74") == before, "the unlisted MX was contacted"


def test_mx_not_in_the_policy_is_never_contacted_even_when_the_listed_one_is_down(bed, relayd):
    before = connects(bed, "127.0.0.76")
    tag = new_tag("unlisted-down")
    qid = submit(relayd, "user@sts-unlisted-down.test", tag)
    deferred = wait_deferred(relayd, qid)
    for a in deferred:
        assert a["mx"] == "mx2.sts-unlisted-down.test" and a["mta_sts"] == "enforce", a
        assert a["status"].startswith("4."), a
    assert {a["mx"] for a in attempts(relayd, qid)} == {"mx2.sts-unlisted-down.test"}
    assert len(log_lines(relayd, "MTA-STS: MX host not in the policy; not contacted", id=qid)) >= 2
    assert connects(bed, "127.0.0.76") == before, "the unlisted MX was contacted"
    assert not [e for e in bed.events("127.0.0.76") if e["event"] == "mail"]


# --- testing --------------------------------------------------------------------

def test_testing_mode_delivers_and_logs_what_enforce_would_refuse(bed, relayd):
    """The MX's certificate is self-signed: opportunistic delivers over
    TLS anyway, and the line says enforce would not have."""
    tag = new_tag("testing")
    qid = submit(relayd, "user@sts-testing.test", tag)
    line = wait_delivered(relayd, qid)
    assert line["mta_sts"] == "testing" and line["mta_sts_id"] == "testing1", line
    assert line["mta_sts_would_fail"] == "certificate-not-trusted", line
    assert line["layer"] == "default" and line["level"] == "opportunistic", line
    got = wait_arrived(bed, "127.0.0.78", tag)
    assert len(got) == 1 and got[0]["tls"], got
    assert fetched(relayd, "sts-testing.test", id="testing1", mode="testing")


# --- a policy host that misbehaves ------------------------------------------------

BROKEN = {
    # variant: (domain, the strip MX, what relayd's log says about the fetch)
    "301": ("sts-301.test", "127.0.0.80", "redirect 301"),
    "html": ("sts-html.test", "127.0.0.81", "text/html"),
    "oversized": ("sts-oversized.test", "127.0.0.82", "body over 65536 bytes"),
    "silent": ("sts-silent.test", "127.0.0.83", "timed out"),
    "badcert": ("sts-badcert.test", "127.0.0.84", "TLS"),
}


@pytest.mark.parametrize("variant", list(BROKEN))
def test_broken_policy_host_means_no_policy_or_the_cached_one(bed, relayd, variant):
    """Every policy host here would hand over a valid enforce policy if
    relayd broke the rule in question (followed the redirect, took
    text/html, read past 64 KiB, or skipped verification); the MX strips
    STARTTLS, so "no policy" shows as plaintext and "enforce" as a wait."""
    domain, _strip, problem = BROKEN[variant]
    assert bed.sts[domain]["http"] == variant

    # Nothing cached: the failed fetch means no policy; opportunistic goes
    # on in plaintext.
    tag = new_tag(f"{variant}-nocache")
    qid = submit(relayd, f"user@{domain}", tag)
    line = wait_delivered(relayd, qid, timeout=FETCH_TIMEOUT + 20)
    assert "mta_sts" not in line and line["layer"] == "default", line
    got = wait_arrived(bed, POSTFIX, tag)
    assert len(got) == 1 and not got[0]["tls"], got
    no_policy = log_lines(relayd, "MTA-STS: no policy known", domain=domain)
    assert no_policy and all(problem in n["problem"] for n in no_policy), no_policy
    assert not fetched(relayd, domain)

    # A good fetch first...
    good_id, bad_id = f"good{variant}", f"broken{variant}"
    bed.set_sts(domain, http="good", id=good_id)
    tag = new_tag(f"{variant}-cached")
    qid = submit(relayd, f"user@{domain}", tag)
    assert_enforced_deferral(wait_deferred(relayd, qid), good_id)
    assert fetched_ids(relayd, domain) == [good_id]
    assert rechecks(relayd, domain) == 1

    # ...then the host breaks again and the id changes: the cached policy
    # still applies, for new mail and for the mail already waiting.
    bed.set_sts(domain, http=variant, id=bad_id)
    mark = len(relayd.log_text())
    tag2 = new_tag(f"{variant}-stale")
    qid2 = submit(relayd, f"user@{domain}", tag2)
    assert_enforced_deferral(wait_deferred(relayd, qid2, timeout=2 * FETCH_TIMEOUT + 20, since=mark), good_id)
    assert_enforced_deferral(wait_deferred(relayd, qid, since=mark), good_id)
    kept = log_lines(relayd, "MTA-STS refresh failed; applying the cached policy", since=mark, domain=domain)
    assert kept and all(k["id"] == good_id and problem in k["problem"] for k in kept), kept
    assert fetched_ids(relayd, domain) == [good_id]
    assert rechecks(relayd, domain) == 1
    assert not arrived(bed, POSTFIX, tag) and not arrived(bed, POSTFIX, tag2)


# --- the id -------------------------------------------------------------------------

def test_an_id_change_refetches_and_the_new_policy_applies(bed, relayd):
    domain, ip = "sts-idchange.test", "127.0.0.79"
    # testing, listing the MX: delivered; a second message does not refetch.
    first = [submit(relayd, f"user@{domain}", new_tag(f"id1-{n}")) for n in range(2)]
    for qid in first:
        line = wait_delivered(relayd, qid)
        assert line["mta_sts"] == "testing" and line["mta_sts_id"] == "idchange1", line
        assert "mta_sts_would_fail" not in line, line
    assert [(f["id"], f["mode"]) for f in fetched(relayd, domain)] == [("idchange1", "testing")]

    # enforce, listing another host: refetched; the MX is no longer contacted.
    bed.set_sts(domain, id="idchange2", mode="enforce", mx=["mx9.sts-idchange.test"])
    before = connects(bed, ip)
    tag = new_tag("id2")
    qid = submit(relayd, f"user@{domain}", tag)
    deferred = wait_deferred(relayd, qid)
    for a in deferred:
        assert (a["mta_sts"], a["mta_sts_id"], a["status"]) == ("enforce", "idchange2", "4.7.5"), a
    assert fetched_ids(relayd, domain) == ["idchange1", "idchange2"]
    assert {(f["mode"], f["mx"]) for f in fetched(relayd, domain, id="idchange2")} == {("enforce", "mx9.sts-idchange.test")}
    assert log_lines(relayd, "MTA-STS: MX host not in the policy; not contacted", id=qid, mx="mx.sts-idchange.test")
    assert connects(bed, ip) == before, "an MX the policy does not list was contacted"

    # enforce, listing the MX again: refetched; the waiting message goes,
    # verified.
    bed.set_sts(domain, id="idchange3", mx=["mx.sts-idchange.test"])
    line = wait_delivered(relayd, qid)
    assert (line["mta_sts"], line["mta_sts_id"], line["verify"]) == ("enforce", "idchange3", "trusted"), line
    got = wait_arrived(bed, ip, tag)
    assert len(got) == 1 and got[0]["tls"], got
    assert fetched_ids(relayd, domain) == ["idchange1", "idchange2", "idchange3"]
    assert len(fetched(relayd, domain, id="idchange1")) == 1, "refetched with the id unchanged and nothing failed"


# --- restart -------------------------------------------------------------------------

def test_the_cache_survives_a_restart_and_applies_when_the_txt_record_vanishes(bed, tmp_path):
    domain = "sts-restart.test"
    relayd = sts_relayd(tmp_path / "restart", bed).start()
    try:
        tag1 = new_tag("restart-before")
        qid1 = submit(relayd, f"user@{domain}", tag1)
        assert_enforced_deferral(wait_deferred(relayd, qid1, times=1), "restart1")
        assert fetched_ids(relayd, domain) == ["restart1"]
        relayd.stop()
        assert (relayd.spool / "mta-sts" / domain).is_file(), "no cache record under the spool"

        # The TXT record vanishes, and the policy host would not verify
        # either: whatever applies now comes from the cache.
        bed.set_sts(domain, txt=False, http="badcert")
        mark = len(relayd.log_text())
        relayd.restart()
        tag2 = new_tag("restart-after")
        qid2 = submit(relayd, f"user@{domain}", tag2)
        assert_enforced_deferral(wait_deferred(relayd, qid2, since=mark), "restart1")
        assert_enforced_deferral(wait_deferred(relayd, qid1, times=1, since=mark), "restart1")
        # Nothing was fetched, not even by the refetch the failure asked
        # for: with no TXT record that finds nothing, and keeps the cache.
        assert not fetched(relayd, domain, since=mark)
        assert rechecks(relayd, domain, since=mark) == 1
        assert not log_lines(relayd, "MTA-STS: no policy known", since=mark, domain=domain)
        assert not arrived(bed, POSTFIX, tag1) and not arrived(bed, POSTFIX, tag2)
    finally:
        relayd.stop()


# --- relayd policy, while the daemon runs ----------------------------------------

def policy_cli(relayd, *args):
    from relayd_harness import RELAYD
    return subprocess.run([str(RELAYD), "policy", *args, "--config", str(relayd.config)],
                          capture_output=True, text=True, timeout=60)


def test_policy_explain_refresh_and_flush_while_the_daemon_runs(bed, relayd):
    """Runs after the enforce test (same domain): the policy is cached. The
    CLI reads it, refetches it and forgets it without stopping the daemon,
    and the daemon follows: after a flush its next delivery fetches the
    policy again."""
    d = "sts-enforce.test"
    qid = submit(relayd, f"user@{d}", new_tag("cli"))
    wait_delivered(relayd, qid)

    r = policy_cli(relayd, "explain", d, "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["layer"] == "mta-sts" and j["level"] == "verify" and j["requires_verification"], j
    assert j["mta_sts"]["id"] == "enforce1" and j["mta_sts"]["mode"] == "enforce" and not j["mta_sts"]["expired"], j
    assert j["mta_sts"]["mx"] == ["mx.sts-enforce.test"], j
    text = policy_cli(relayd, "explain", d).stdout
    assert text.startswith(f"{d}: verify (verified) decided by mta-sts"), text
    assert "  mx          mx.sts-enforce.test" in text and "last fetch" in text, text

    r = policy_cli(relayd, "refresh", d)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{d}: fetched policy id enforce1" in r.stdout, r.stdout
    assert f"reloaded the MTA-STS policy of {d} (id enforce1, mode enforce)" in r.stdout, r.stdout

    since = len(relayd.log_text())
    r = policy_cli(relayd, "flush", d)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{d}: cached MTA-STS policy removed" in r.stdout, r.stdout
    assert f"no MTA-STS policy cached for {d} any more" in r.stdout, r.stdout
    j = json.loads(policy_cli(relayd, "explain", d, "--json").stdout)
    # With the policy gone, the next layer down answers: the TLS deliveries
    # under it taught learned status that the domain does TLS.
    assert j["mta_sts"] is None and j["layer"] == "learned" and j["level"] == "forced", j

    # The daemon forgot it too: its next delivery looks the policy up again.
    qid = submit(relayd, f"user@{d}", new_tag("cli-after-flush"))
    line = wait_delivered(relayd, qid, since=since)
    assert line["mta_sts"] == "enforce" and line["verify"] == "trusted", line
    assert [f["id"] for f in fetched(relayd, d, since=since)] == ["enforce1"]
