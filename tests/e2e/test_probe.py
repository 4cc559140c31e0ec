"""`relayd probe` end to end against the bed's destinations: the real
Postfix with a valid certificate, the test receivers (self-signed, wrong
name, no STARTTLS, TLS 1.0/1.1 only), the STARTTLS-stripping proxy, a
named address and port, and an address where nothing listens. Each run is
checked in text and in JSON — what was found (STARTTLS, version,
verification, the failing step, the certificate's names and expiry), what
each level would do, and the exit code — and the receivers must never
have seen MAIL: a probe says EHLO, STARTTLS, EHLO, QUIT and nothing else.

relayd is not started: the probe reads only its config (the bed's DNS,
the bed's CA as trust store, MTA-STS on).
"""
import json
import subprocess

import pytest

from bed import DNS_IP
from relayd_harness import RELAYD, Relayd, free_port

POSTFIX = "127.0.0.21"


@pytest.fixture(scope="module")
def config(bed, tmp_path_factory):
    r = Relayd(tmp_path_factory.mktemp("probe") / "relayd", relay_domains=(), dns_servers=(DNS_IP,),
               ca_bundle=bed.ca.cert, extra='[mta_sts]\nenabled = true\nfetch_timeout = "2s"\n',
               outbound='default_level = "opportunistic"\nconnect_timeout = "3s"\n')
    return r.config


def probe(config, *args):
    """Runs `relayd probe` as text and as JSON; returns (text, json, exit code)."""
    argv = [str(RELAYD), "probe", "-c", str(config), "--timeout", "5", *args]
    text = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    js = subprocess.run(argv + ["--json"], capture_output=True, text=True, timeout=120)
    assert text.returncode == js.returncode, (text.stdout, text.stderr, js.stderr)
    assert text.stdout.strip(), text.stderr
    return text.stdout, json.loads(js.stdout), text.returncode


def no_mail(bed, ip, before):
    """The receiver at `ip` recorded sessions from the probe but no MAIL."""
    events = bed.events(ip)[before:]
    assert any(e["event"] == "session" for e in events), events
    assert not any(e["event"] == "mail" for e in events), events


def address(report, ip):
    return next(a for a in report["addresses"] if a["address"] == ip)


def test_valid_postfix_is_fit_for_verify(bed, config):
    before = len(bed.postfix_messages())
    text, report, code = probe(config, "valid.test")
    assert code == 0, text
    assert report["exit_code"] == 0 and report["fit_for"] == "verify"
    assert [h["name"] for h in report["mx"]["hosts"]] == ["mx.valid.test"]
    a = address(report, POSTFIX)
    assert a["starttls_offered"] is True and a["failure"] is None
    assert a["tls"]["version"] in ("TLSv1.3", "TLSv1.2")
    assert a["tls"]["verification"]["result"] == "trusted"
    leaf = a["certificates"][0]
    assert "mx.valid.test" in leaf["dns_names"]
    assert leaf["not_after"] > leaf["not_before"] > 0
    assert len(leaf["spki_sha256"]) == 64
    assert report["levels"] == {"none": "plaintext", "opportunistic": "tls", "forced": "tls",
                                "verify": "verified-tls", "tls-exclusive": "verified-tls"}
    assert report["dane"] is None and "not checked" in report["dane_note"]
    assert report["decision"]["level"] == "opportunistic" and report["decision"]["outcome"] == "tls"
    assert "STARTTLS     offered" in text
    assert "verification trusted (chain and name mx.valid.test verified)" in text
    assert "names    mx.valid.test" in text and "days left" in text
    assert "DANE: not checked: [dns] dnssec is off" in text
    assert "Fit for verify (exit 0)" in text
    assert len(bed.postfix_messages()) == before


@pytest.mark.parametrize("domain,ip,reason", [
    ("selfsigned.test", "127.0.0.23", "certificate-untrusted"),
    ("wronghost.test", "127.0.0.24", "hostname-mismatch"),
])
def test_unverifiable_certificate_is_fit_for_forced_only(bed, config, domain, ip, reason):
    before = len(bed.events(ip))
    text, report, code = probe(config, domain)
    assert code == 2, text
    a = address(report, ip)
    assert a["starttls_offered"] is True and a["failure"] is None
    assert a["tls"]["verification"]["result"] == "failed"
    assert a["tls"]["verification"]["reason"] == reason
    assert report["levels"] == {"none": "plaintext", "opportunistic": "tls", "forced": "tls",
                                "verify": "defer", "tls-exclusive": "drop"}
    assert f"verification FAILED: {reason}" in text
    assert "Fit for forced only (exit 2)" in text
    no_mail(bed, ip, before)


def test_no_starttls_is_fit_for_neither(bed, config):
    before = len(bed.events("127.0.0.22"))
    text, report, code = probe(config, "plain.test")
    assert code == 3, text
    a = address(report, "127.0.0.22")
    assert a["starttls_offered"] is False and a["tls"] is None
    assert report["levels"] == {"none": "plaintext", "opportunistic": "plaintext", "forced": "defer",
                                "verify": "defer", "tls-exclusive": "drop"}
    assert "STARTTLS     NOT offered" in text
    assert "Fit for neither forced nor verify (exit 3)" in text
    no_mail(bed, "127.0.0.22", before)


def test_stripped_starttls_is_fit_for_neither(bed, config):
    before = len(bed.postfix_messages())
    text, report, code = probe(config, "stripped.test")
    assert code == 3, text
    a = address(report, "127.0.0.26")
    assert a["starttls_offered"] is False
    assert report["levels"]["forced"] == "defer" and report["levels"]["opportunistic"] == "plaintext"
    assert len(bed.postfix_messages()) == before


def test_old_tls_only_fails_the_handshake_on_the_protocol_version(bed, config):
    before = len(bed.events("127.0.0.35"))
    text, report, code = probe(config, "oldtls.test")
    assert code == 3, text
    a = address(report, "127.0.0.35")
    assert a["starttls_offered"] is True and a["tls"] is None
    assert a["failure"]["step"] == "handshake"
    assert a["failure"]["tls_reason"] == "protocol-below-floor"
    assert "version" in a["failure"]["detail"]
    assert report["levels"] == {"none": "plaintext", "opportunistic": "plaintext", "forced": "defer",
                                "verify": "defer", "tls-exclusive": "drop"}
    assert "FAILED at    handshake: protocol-below-floor" in text
    events = bed.events("127.0.0.35")[before:]
    assert not any(e["event"] == "mail" for e in events), events


def test_named_address_and_port(bed, config):
    """--ip skips the MX lookup's choice; --mx-name names the certificate's
    expected host; --port sets the port."""
    before = len(bed.events("127.0.0.23"))
    text, report, code = probe(config, "partner.example", "--ip", "127.0.0.23", "--mx-name", "mx.selfsigned.test",
                               "--port", "25")
    assert code == 2, text
    assert report["mx"]["status"] == "skipped"
    [a] = report["addresses"]
    assert (a["host"], a["address"], a["port"]) == ("mx.selfsigned.test", "127.0.0.23", 25)
    assert a["tls"]["verification"]["reason"] == "certificate-untrusted"
    no_mail(bed, "127.0.0.23", before)

    # Without --mx-name the first MX host names the address.
    text, report, code = probe(config, "valid.test", "--ip", POSTFIX)
    assert code == 0, text
    assert report["addresses"][0]["host"] == "mx.valid.test"


def test_unreachable_address_names_the_connect_step(config):
    port = free_port()
    text, report, code = probe(config, "valid.test", "--ip", "127.0.0.1", "--port", str(port))
    assert code == 1, text
    [a] = report["addresses"]
    assert a["port"] == port
    assert a["failure"]["step"] == "connect" and "refused" in a["failure"]["detail"]
    assert a["starttls_offered"] is None
    assert report["fit_for"] == "unknown"
    assert "FAILED at    connect:" in text and "Could not tell (exit 1)" in text


def test_failed_mx_lookup_could_not_tell(config):
    text, report, code = probe(config, "servfail.test")
    assert code == 1, text
    assert report["mx"]["status"] == "failed" and report["addresses"] == []
    assert "MX lookup failed" in text
