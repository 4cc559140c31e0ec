"""Forward secrecy on every inbound listener (SPEC: "Inbound listeners
always require forward secrecy (no static-RSA key exchange)").

relayd runs with an RSA certificate here: with the usual P-256 one a
static-RSA suite could never be chosen anyway, and a refusal would prove
nothing. The client is `openssl s_client`, limited to TLS 1.2 and one
suite, directly on 465 and through STARTTLS on 25 and 587.
"""
import re
import subprocess

import pytest

from conftest import need

STATIC_RSA = "AES256-GCM-SHA384"
ECDHE = "ECDHE-RSA-AES256-GCM-SHA384"
LISTENERS = ["smtp", "submission", "smtps"]


def port_of(relayd, listener):
    return {"smtp": relayd.smtp_port, "submission": relayd.submission_port, "smtps": relayd.smtps_port}[listener]


def s_client(port, cipher, starttls):
    """One TLS 1.2 handshake offering only `cipher`; returns (negotiated
    cipher or None, s_client's output)."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2", "-cipher", cipher]
    if starttls:
        argv += ["-starttls", "smtp"]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    out = proc.stdout + proc.stderr
    m = re.search(r"New, TLSv1\.2, Cipher is (\S+)", out)
    negotiated = m.group(1) if m and m.group(1) != "(NONE)" else None
    return negotiated, out


def failures(relayd, listener):
    return [l for l in relayd.log_text().splitlines()
            if 'msg="TLS handshake failed"' in l and f"listener={listener} " in l + " "]


# The operator's list may name static-RSA suites, even first: inbound
# they are removed all the same, and what is left still works.
CIPHERS = {"default": "", "operator lists static RSA first": f'ciphers = "{STATIC_RSA}:{ECDHE}"'}


@pytest.mark.parametrize("ciphers", CIPHERS.values(), ids=CIPHERS.keys())
@pytest.mark.parametrize("listener", LISTENERS)
def test_static_rsa_client_is_refused_on_every_listener(make_relayd, listener, ciphers):
    need("openssl")
    relayd = make_relayd(certificate="rsa", tls=ciphers).start()
    port, starttls = port_of(relayd, listener), listener != "smtps"

    negotiated, out = s_client(port, STATIC_RSA, starttls)
    assert negotiated is None, f"{listener} accepted static-RSA key exchange ({negotiated}):\n{out[-1500:]}"
    assert re.search(r"handshake failure|no cipher|alert", out), out[-1500:]
    # The refusal has its log line, with the reason.
    logged = failures(relayd, listener)
    assert len(logged) == 1 and "reason=no-shared-cipher" in logged[0], relayd.log_text()[-3000:]

    # Control: the same client and certificate with an ECDHE suite is served,
    # so the refusal above is about the key exchange and nothing else.
    negotiated, out = s_client(port, ECDHE, starttls)
    assert negotiated == ECDHE, out[-1500:]
    established = [l for l in relayd.log_text().splitlines()
                   if 'msg="TLS established"' in l and f"cipher={ECDHE}" in l and f"listener={listener}" in l]
    assert established and all("fs=yes" in l for l in established), relayd.log_text()[-3000:]
    assert len(failures(relayd, listener)) == 1


def test_a_cipher_list_with_nothing_forward_secret_is_a_config_error(make_relayd):
    """Nothing left for the inbound side but static RSA: relayd says so at
    start (check-config and run alike) instead of serving TLS 1.2 without
    forward secrecy."""
    from relayd_harness import RELAYD
    relayd = make_relayd(certificate="rsa", tls=f'ciphers = "{STATIC_RSA}"')
    proc = subprocess.run([str(RELAYD), "check-config", "--config", str(relayd.config)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "forward secrecy" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
