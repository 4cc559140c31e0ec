"""The test bed's own self-check (run by `make e2e`): every peer the
scenario table names is up and behaves as the table says, and the bed
tears down completely, also when interrupted."""
import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import urllib.request

import pytest

import bed as bedmod
from bed import Bed, DNS_IP, NGINX_IP, SILENT_IP, STS_BODY_CAP, STS_HTTP, load_scenarios, pid_alive, port_open

SCENARIOS = load_scenarios()


@pytest.fixture(scope="module")
def bed():
    b = Bed().start()
    yield b
    b.stop()


def smtp_to(ip, name):
    """An SMTP client to `ip` whose STARTTLS checks the certificate for `name`."""
    s = smtplib.SMTP(ip, 25, timeout=10)
    s._host = name  # smtplib passes this as server_hostname to STARTTLS
    return s


def greeting(ip):
    with socket.create_connection((ip, 25), timeout=5) as s:
        s.settimeout(5)
        return s.recv(1024)


def test_table_has_the_required_scenarios():
    names = {s["name"] for s in SCENARIOS}
    assert {"valid-tls", "no-starttls", "self-signed", "wrong-hostname", "broken-handshake",
            "starttls-stripped", "backup-mx", "null-mx", "servfail"} <= names
    levels = {"none", "opportunistic", "forced", "verify", "tls-exclusive"}
    for s in SCENARIOS:
        if not s.get("role"):
            assert set(s["expect"]) == levels, s["name"]


def test_every_receiver_answers_as_its_kind(bed):
    for s, mx in bed.mx_hosts():
        kind = mx["receiver"]
        if kind == "none":
            with pytest.raises(OSError):
                socket.create_connection((mx["ip"], 25), timeout=2)
        elif kind == "greet-421":
            assert greeting(mx["ip"]).startswith(b"421"), mx
        else:
            assert greeting(mx["ip"]).startswith(b"220"), mx


def test_dns_answers_as_the_table_says(bed):
    for s in SCENARIOS:
        rcode, answers = bed.dns_answers(s["domain"], "MX")
        if s.get("dns") == "servfail":
            assert rcode == "SERVFAIL", s["name"]
        elif s.get("cname"):
            assert rcode == "NOERROR" and f"{s['cname']}." in answers, (s["name"], answers)
        elif s.get("mx") == ".":
            assert (rcode, answers) == ("NOERROR", ["0 ."]), s["name"]
        else:
            expected = sorted(f"{m['preference']} {m['name']}." for m in s["mx"])
            assert (rcode, sorted(answers)) == ("NOERROR", expected), s["name"]
            for m in s["mx"]:
                assert bed.dns_answers(m["name"], "A") == ("NOERROR", [m["ip"]])
                if m.get("ipv6"):
                    assert bed.dns_answers(m["name"], "AAAA") == ("NOERROR", [m["ipv6"]])
    assert bed.dns_answers("unknown.test", "A")[0] == "NXDOMAIN"


def test_strip_proxy_removes_starttls_and_tls_cannot_be_had(bed):
    proxy = next(mx for _, mx in bed.mx_hosts() if mx["receiver"] == "strip")
    postfix = next(mx for _, mx in bed.mx_hosts() if mx["receiver"] == "postfix")
    with smtplib.SMTP(postfix["ip"], 25, timeout=10) as direct:
        direct.ehlo("check.test")
        assert direct.has_extn("starttls"), "the MX behind the proxy does offer STARTTLS"
    with smtplib.SMTP(proxy["ip"], 25, timeout=10) as s:
        s.ehlo("check.test")
        assert not s.has_extn("starttls")
        assert s.has_extn("pipelining"), "the rest of the EHLO reply survives"
        code, _ = s.docmd("STARTTLS")
        assert code == 454
        assert s.noop()[0] == 250, "the session goes on in plaintext"
    # A TLS client that insists (sends STARTTLS anyway, then a handshake)
    # gets nowhere either.
    raw = socket.create_connection((proxy["ip"], 25), timeout=5)
    f = raw.makefile("rb")
    f.readline()
    raw.sendall(b"EHLO check.test\r\n")
    while not f.readline()[3:4] == b" ":
        pass
    raw.sendall(b"STARTTLS\r\n")
    assert f.readline().startswith(b"454")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, OSError)):
        ctx.wrap_socket(raw, server_hostname=proxy["name"])
    raw.close()


def test_postfix_receives_over_tls13(bed):
    postfix = next(mx for s, mx in bed.mx_hosts() if mx["receiver"] == "postfix")
    domain = next(s["domain"] for s, mx in bed.mx_hosts() if mx is postfix)
    ctx = ssl.create_default_context(cafile=str(bed.ca.cert))
    before = len(bed.postfix_messages())
    with smtp_to(postfix["ip"], postfix["name"]) as s:
        s.ehlo("check.test")
        s.starttls(context=ctx)
        s.ehlo("check.test")
        s.sendmail("selfcheck@sender.test", [f"user@{domain}"], b"Subject: bed self-check\r\n\r\nhello\r\n")
    bedmod.wait_for(lambda: len(bed.postfix_messages()) > before, 15, "postfix delivery")
    m = bed.postfix_messages()[-1]
    assert m["tls"] and m["version"] == "TLSv1.3", m
    assert "bed self-check" in m["data"]


def test_test_receivers_record_tls(bed):
    tls = next(mx for s, mx in bed.mx_hosts() if mx["receiver"] == "tls" and mx.get("cert") == "valid")
    ctx = ssl.create_default_context(cafile=str(bed.ca.cert))
    with smtp_to(tls["ip"], tls["name"]) as s:
        s.ehlo("check.test")
        s.starttls(context=ctx)
        s.ehlo("check.test")
        s.sendmail("selfcheck@sender.test", ["u@x.test"], b"Subject: receiver check\r\n\r\nhi\r\n")
    events = [e for e in bed.events(tls["ip"]) if e["event"] == "mail"]
    assert events and events[-1]["tls"] and events[-1]["version"] == "TLSv1.3"


def test_static_rsa_receiver_offers_nothing_else(bed):
    """The limited peer of the static-rsa-only row really is one: TLS 1.2
    with its one static-RSA suite works, an ephemeral key exchange or TLS
    1.3 does not."""
    mx = next(mx for s, mx in bed.mx_hosts() if mx.get("ciphers") == "AES256-GCM-SHA384")

    def handshake(ciphers, version):
        ctx = ssl.create_default_context(cafile=str(bed.ca.cert))
        ctx.maximum_version = ctx.minimum_version = version
        if ciphers:
            ctx.set_ciphers(ciphers)
        with smtp_to(mx["ip"], mx["name"]) as s:
            s.ehlo("check.test")
            s.starttls(context=ctx)
            return s.sock.version(), s.sock.cipher()[0]

    assert handshake("AES256-GCM-SHA384", ssl.TLSVersion.TLSv1_2) == ("TLSv1.2", "AES256-GCM-SHA384")
    for ciphers, version in [("ECDHE+AESGCM:DHE+AESGCM", ssl.TLSVersion.TLSv1_2), (None, ssl.TLSVersion.TLSv1_3)]:
        with pytest.raises((ssl.SSLError, OSError)):
            handshake(ciphers, version)


def test_nginx_serves_https_with_the_test_ca(bed):
    ctx = ssl.create_default_context(cafile=str(bed.ca.cert))
    with socket.create_connection((NGINX_IP, 443), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="mta-sts.valid.test") as s:
            s.sendall(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.valid.test\r\nConnection: close\r\n\r\n")
            body = b""
            while chunk := s.recv(4096):
                body += chunk
    assert body.startswith(b"HTTP/1.1 200")
    assert b"version: STSv1" in body




def test_mta_sts_rows_publish_their_record_and_policy(bed):
    """Each row with `sts` has its TXT record and its own policy file, and
    its policy host misbehaves as `sts_http` says; the other rows publish
    no TXT record."""
    rows = [s for s in SCENARIOS if s.get("sts")]
    assert {s.get("sts_http", "good") for s in rows} == set(STS_HTTP)
    for s in rows:
        d, sts, http = s["domain"], s["sts"], s.get("sts_http", "good")
        assert bed.dns_answers(f"_mta-sts.{d}", "TXT") == ("NOERROR", [f'"v=STSv1; id={sts["id"]};"']), d
        policy = (f"version: STSv1\nmode: {sts['mode']}\n" + "".join(f"mx: {m}\n" for m in sts["mx"])
                  + f"max_age: {sts['max_age']}\n")
        if http == "silent":
            assert bed.dns_answers(f"mta-sts.{d}", "A") == ("NOERROR", [SILENT_IP])
            t = time.monotonic()
            assert bed.policy_host_state(d, ip=SILENT_IP, timeout=1) is None, "the silent host answered"
            assert time.monotonic() - t >= 0.9, "the silent host refused rather than held the connection"
            continue
        assert bed.dns_answers(f"mta-sts.{d}", "A") == ("NOERROR", [NGINX_IP]), d
        state = bed.policy_host_state(d)
        if http == "good":
            assert state == ("200", "text/plain", policy), (d, state)
        elif http == "301":
            assert state[0] == "301", (d, state)
            # Where it points, the very same policy is served.
            assert bed.policy_host_state(d, path="/moved/mta-sts.txt") == ("200", "text/plain", policy)
        elif http == "html":
            assert state == ("200", "text/html", policy), (d, state)
        elif http == "oversized":
            assert state == ("200", "text/plain", "oversized"), (d, state)
        elif http == "badcert":
            assert state == ("tls", "certificate verify failed", None), (d, state)
    oversized = next(s["domain"] for s in rows if s.get("sts_http") == "oversized")
    body = (bed.nginx_dir / "www" / f"mta-sts.{oversized}" / ".well-known" / "mta-sts.txt").read_text()
    assert len(body) > STS_BODY_CAP and body.startswith("version: STSv1\nmode: enforce\n")
    for s in SCENARIOS:
        if not s.get("sts") and s.get("dns") != "servfail":
            assert bed.dns_answers(f"_mta-sts.{s['domain']}", "TXT")[1] == [], s["name"]


def test_set_sts_changes_what_a_domain_publishes_while_the_bed_runs(bed):
    d = next(s["domain"] for s in SCENARIOS if s.get("sts") and "sts_http" not in s)
    original = dict(bed.sts[d])
    try:
        for http in STS_HTTP:
            bed.set_sts(d, http=http, id=f"v{http}")
            assert bed.dns_answers(f"_mta-sts.{d}", "TXT") == ("NOERROR", [f'"v=STSv1; id=v{http};"'])
            want_ip = SILENT_IP if http == "silent" else NGINX_IP
            assert bed.dns_answers(f"mta-sts.{d}", "A") == ("NOERROR", [want_ip])
            if http != "silent":
                assert bed.policy_host_state(d) == bed.expected_policy_host_state(d), http
        bed.set_sts(d, http="good", mode="testing", mx=["a.example.test", "*.b.example.test"], max_age=600, id="newer")
        assert bed.policy_host_state(d) == ("200", "text/plain",
                                            "version: STSv1\nmode: testing\nmx: a.example.test\nmx: *.b.example.test\n"
                                            "max_age: 600\n")
        bed.set_sts(d, txt=False)
        assert bed.dns_answers(f"_mta-sts.{d}", "TXT") == ("NXDOMAIN", [])
        assert bed.policy_host_state(d)[0] == "200", "the policy stays where it was"
    finally:
        bed.set_sts(d, **original)
    assert bed.dns_answers(f"_mta-sts.{d}", "TXT") == ("NOERROR", [f'"v=STSv1; id={original["id"]};"'])


def test_requiretls_receivers_offer_it_only_after_starttls(bed):
    """The REQUIRETLS peers of test_message_controls.py: a receiver with
    requiretls = true lists REQUIRETLS in its EHLO on the TLS session only
    (RFC 8689 §4.1) and takes the MAIL parameter there; one without never
    lists it and refuses the parameter."""
    rows = {mx["ip"]: mx for s, mx in bed.mx_hosts() if s.get("role") == "requiretls"}
    assert {mx.get("requiretls", False) for mx in rows.values()} == {True, False}
    for ip, mx in rows.items():
        with smtp_to(ip, mx["name"]) as s:
            s.ehlo("bed-test")
            assert not s.has_extn("requiretls"), mx
            s.starttls(context=ssl.create_default_context(cafile=str(bed.ca.cert)))
            s.ehlo("bed-test")
            assert s.has_extn("requiretls") == mx.get("requiretls", False), (mx, s.esmtp_features)
            code, _ = s.mail("probe@bed.test", ["REQUIRETLS"])
            assert (code == 250) == mx.get("requiretls", False), (mx, code)
