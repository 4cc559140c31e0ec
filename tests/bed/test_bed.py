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
from bed import Bed, DNS_IP, NGINX_IP, load_scenarios, pid_alive, port_open

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
        if s.get("role") != "sink":
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


