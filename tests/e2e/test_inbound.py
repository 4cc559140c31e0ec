"""Inbound acceptance against real clients: swaks, Python's smtplib, raw
sockets for the hostile cases, and testssl.sh for the TLS surface."""
import base64
import json
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import need
from relayd_harness import PASSWORD, USER

MESSAGE = (b"From: Alice <alice@example.test>\r\n"
           b"To: Bob <bob@far.example>\r\n"
           b"Subject: e2e\r\n"
           b"Message-ID: <e2e-1@example.test>\r\n"
           b"\r\n"
           b"first line\r\n"
           b".leading dot survives\r\n"
           b"\xc3\xa9 eight-bit line\r\n")


def client_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def assert_queued_exactly(relayd, qid, submitted):
    records, body = relayd.read_queued(qid)
    received, sep, rest = body.partition(b"\r\n\t(using ")
    assert sep, f"no TLS clause in Received header: {body[:300]!r}"
    header_end = body.index(b"\r\n", body.index(b"; ", len(received))) + 2
    header = body[:header_end].decode()
    assert header.startswith("Received: from ")
    assert "with ESMTPSA id " + qid in header
    assert re.search(r"\(using TLSv1\.3 with cipher TLS_[A-Z0-9_]+ \(\d+ bits\)\)", header), header
    assert body[header_end:] == submitted, "queued body differs from what was submitted"
    assert body.count(b"Received:") == 1
    assert records["tls"].startswith("TLSv1.3 ")
    return records


def test_smtplib_submission_587_starttls_auth(relayd):
    with smtplib.SMTP("127.0.0.1", relayd.submission_port, timeout=10) as s:
        s.ehlo("client.test")
        assert "auth" not in s.esmtp_features, "AUTH offered before STARTTLS"
        s.starttls(context=client_context())
        s.ehlo("client.test")
        assert "PLAIN" in s.esmtp_features["auth"]
        s.login(USER, PASSWORD)
        code, msg = s.mail("alice@example.test")
        assert code == 250
        s.rcpt("bob@far.example")
        code, msg = s.data(MESSAGE)
    assert code == 250
    qid = re.match(rb"2\.0\.0 Ok: queued as (\S+)", msg).group(1).decode()
    records = assert_queued_exactly(relayd, qid, MESSAGE)
    assert records["auth"] == USER.replace("@", "@")
    assert relayd.queued_ids() == [qid]


def test_smtplib_implicit_tls_465(relayd):
    with smtplib.SMTP_SSL("127.0.0.1", relayd.smtps_port, timeout=10, context=client_context()) as s:
        s.ehlo("client.test")
        assert "starttls" not in s.esmtp_features
        s.login(USER, PASSWORD)
        s.mail("alice@example.test")
        s.rcpt("bob@far.example")
        code, msg = s.data(MESSAGE)
    assert code == 250
    qid = re.match(rb"2\.0\.0 Ok: queued as (\S+)", msg).group(1).decode()
    assert_queued_exactly(relayd, qid, MESSAGE)


@pytest.mark.parametrize("mode", ["starttls-587", "implicit-465"])
def test_swaks_submission(relayd, tmp_path, mode):
    need("swaks")
    # swaks ends the data with CRLF "." CRLF itself, so a file that already
    # ends in CRLF would gain an empty line; send it without the last CRLF.
    data = tmp_path / "message.eml"
    data.write_bytes(MESSAGE[:-2])
    port, tls = (relayd.submission_port, "--tls") if mode == "starttls-587" else (relayd.smtps_port, "--tlsc")
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", tls, "--auth", "LOGIN",
                          "--auth-user", USER, "--auth-password", PASSWORD,
                          "--from", "alice@example.test", "--to", "bob@far.example",
                          "--data", str(data), "--timeout", "10"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    qid = re.search(r"250 2\.0\.0 Ok: queued as (\S+)", out.stdout).group(1)
    # swaks sends the file as is; relayd must store exactly that.
    assert_queued_exactly(relayd, qid, MESSAGE)


def test_unauthenticated_outside_networks_is_not_a_relay(relayd):
    with smtplib.SMTP("127.0.0.1", relayd.smtp_port, timeout=10, source_address=("127.0.0.2", 0)) as s:
        s.ehlo("outsider.test")
        s.mail("spammer@evil.test")
        for rcpt in ["victim@far.example", "u%far.example@example.org", '"u@far.example"@example.org',
                     "@example.org:u@far.example", "far.example!u@example.org"]:
            code, msg = s.rcpt(rcpt)
            assert (code, msg[:5]) == (554, b"5.7.1"), (rcpt, code, msg)
        code, _ = s.rcpt("postmaster@example.org")
        assert code == 250, "mail for a relay domain is accepted from anyone"
        s.rset()
        s.mail("spammer@evil.test")
        s.rcpt("victim@far.example")
        code, _ = s.docmd("DATA")
        assert code == 554
    assert relayd.queued_ids() == []
    assert "Relay access denied" in relayd.log_text()


def test_587_refuses_auth_and_mail_before_starttls(relayd):
    with smtplib.SMTP("127.0.0.1", relayd.submission_port, timeout=10) as s:
        s.ehlo("client.test")
        assert "auth" not in s.esmtp_features
        creds = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        assert s.docmd("AUTH", "PLAIN " + creds) == (530, b"5.7.0 Must issue a STARTTLS command first")
        assert s.docmd("MAIL", "FROM:<alice@example.test>") == (530, b"5.7.0 Must issue a STARTTLS command first")
    assert "user=alice" not in relayd.log_text(), "credentials were looked at in plaintext"


def read_reply(sock, timeout=5):
    """Reads one complete (possibly multi-line) SMTP reply."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data


def test_starttls_injection_is_never_executed(relayd):
    raw = socket.create_connection(("127.0.0.1", relayd.smtp_port), timeout=10)
    assert read_reply(raw).startswith(b"220 ")
    raw.sendall(b"EHLO client.test\r\n")
    read_reply(raw)
    raw.sendall(b"STARTTLS\r\nNOOP\r\n")  # one packet
    reply = read_reply(raw)
    assert reply == b"220 2.0.0 Ready to start TLS\r\n", reply  # nothing for NOOP in plaintext
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.settimeout(1.0)
    with pytest.raises(socket.timeout):
        extra = tls.recv(4096)  # a reply to the injected NOOP would arrive here
        pytest.fail(f"reply to injected command inside TLS: {extra!r}")
    tls.settimeout(5)
    tls.sendall(b"EHLO client.test\r\n")
    assert read_reply(tls).startswith(b"250-relay.e2e.test"), "session is in sync after TLS"
    tls.sendall(b"QUIT\r\n")
    assert read_reply(tls).startswith(b"221")
    tls.close()
    assert "discarded plaintext pipelined after STARTTLS" in relayd.log_text()


SMUGGLE = (b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
           b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")


@pytest.mark.parametrize("separator", [b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\n.\n", b"\r\n\r.\r\n"],
                         ids=["LF.CRLF", "CRLF.LF", "CR.CRLF", "CRLF.CR", "LF.LF", "CRLF-CR.CRLF"])
def test_smuggling_never_yields_two_messages(relayd, separator):
    raw = socket.create_connection(("127.0.0.1", relayd.smtp_port), timeout=10)
    read_reply(raw)
    raw.sendall(b"EHLO client.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
    replies = b""
    deadline = time.monotonic() + 5
    while b"354" not in replies and time.monotonic() < deadline:
        replies += raw.recv(4096)
    raw.sendall(b"Subject: first\r\n\r\nfirst" + separator + SMUGGLE + b"QUIT\r\n")
    rest = b""
    raw.settimeout(5)
    try:
        while True:
            chunk = raw.recv(4096)
            if not chunk:
                break
            rest += chunk
    except socket.timeout:
        pass
    raw.close()
    ids = relayd.queued_ids()
    assert len(ids) <= 1, f"two messages from one DATA: {ids}"
    for qid in ids:
        _, body = relayd.read_queued(qid)
        assert b"smuggled" not in body.split(b"Subject: first")[0]
        records, _ = relayd.read_queued(qid)
        assert records["from"] != "evil@attacker.test"
    assert rest.startswith(b"554 5.5.2"), rest


def submit_loop(port, stop, acknowledged, errors, n):
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as s:
                s.ehlo(f"client{n}.test")
                while not stop.is_set():
                    tag = f"client{n}-{time.monotonic_ns()}"
                    s.mail("load@example.test")
                    s.rcpt("u@example.org")
                    code, msg = s.data(f"Subject: {tag}\r\nMessage-ID: <{tag}@load>\r\n\r\nbody {tag}\r\n".encode())
                    if code == 250:
                        qid = msg.decode().rsplit(" ", 1)[1]
                        acknowledged.append((qid, tag))
        except (OSError, smtplib.SMTPException) as e:
            errors.append(repr(e))
            time.sleep(0.05)


def test_kill9_loses_no_acknowledged_message(relayd):
    stop = threading.Event()
    acknowledged, errors = [], []
    threads = [threading.Thread(target=submit_loop, args=(relayd.smtp_port, stop, acknowledged, errors, n), daemon=True)
               for n in range(20)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    relayd.kill9()
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert len(acknowledged) >= 50, f"too little load before the kill: {len(acknowledged)} ({errors[:3]})"
    relayd.restart()
    on_disk = set(relayd.queued_ids())
    for qid, tag in acknowledged:
        assert qid in on_disk, f"acknowledged message {qid} lost"
        _, body = relayd.read_queued(qid)  # asserts completeness and checksum
        assert f"Message-ID: <{tag}@load>".encode() in body
    assert relayd.queued_ids("corrupt") == [], "a complete file was taken for corrupt"
    assert relayd.queued_ids("tmp") == []
    assert "failed its self-check" not in relayd.log_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT (Ctrl-C)"])
def test_stop_signals_stop_cleanly(relayd, sig):
    assert relayd.stop(sig) == 0
    assert "msg=stopped" in relayd.log_text()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", relayd.smtp_port), timeout=2)


def test_sighup_with_broken_config_keeps_serving(relayd):
    good = relayd.config.read_text()
    relayd.config.write_text(good.replace('hostname = "relay.e2e.test"', 'hostname = "relay.e2e.test"\nbogus = 1'))
    relayd.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "reload refused" not in relayd.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "reload refused" in relayd.log_text()
    with smtplib.SMTP("127.0.0.1", relayd.smtp_port, timeout=5) as s:
        assert s.noop()[0] == 250
    relayd.config.write_text(good)
    relayd.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "msg=reloaded" not in relayd.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "msg=reloaded" in relayd.log_text()


def test_per_ip_connection_limit(make_relayd):
    r = make_relayd(limits="max_connections_per_ip = 2").start()
    held = [socket.create_connection(("127.0.0.1", r.smtp_port), timeout=5) for _ in range(2)]
    for s in held:
        assert read_reply(s).startswith(b"220")
    third = socket.create_connection(("127.0.0.1", r.smtp_port), timeout=5)
    assert read_reply(third).startswith(b"421 4.7.0")
    other = socket.create_connection(("127.0.0.1", r.smtp_port), timeout=5, source_address=("127.0.0.3", 0))
    assert read_reply(other).startswith(b"220"), "the limit is per address"
    for s in held + [third, other]:
        s.close()


def test_testssl_starttls_surface(relayd, tmp_path):
    need("testssl")
    out = tmp_path / "testssl.json"
    proc = subprocess.run(["testssl", "--quiet", "--color", "0", "--warnings", "off", "--starttls", "smtp",
                           "--protocols", "--std", "--jsonfile", str(out), f"127.0.0.1:{relayd.smtp_port}"],
                          capture_output=True, text=True, timeout=300)
    findings = {f["id"]: f["finding"] for f in json.loads(out.read_text())}
    for proto in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"]:
        assert findings[proto].startswith("not offered"), (proto, findings[proto], proc.stdout[-2000:])
    assert findings["TLS1_2"].startswith("offered")
    assert findings["TLS1_3"].startswith("offered")
    # Every category with ciphers under 128 bits (3DES is 112) or without
    # encryption or authentication; "AVERAGE" (128-bit CBC) is allowed.
    for weak in ["cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW", "cipherlist_3DES_IDEA"]:
        assert findings[weak].startswith("not offered"), (weak, findings[weak])


def test_slow_data_is_cut_off(make_relayd):
    r = make_relayd(limits='data_timeout = "2s"').start()
    raw = socket.create_connection(("127.0.0.1", r.smtp_port), timeout=10)
    read_reply(raw)
    raw.sendall(b"EHLO c\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
    got = b""
    while b"354" not in got:
        got += raw.recv(4096)
    reply = b""
    deadline = time.monotonic() + 10
    raw.settimeout(0.5)
    while time.monotonic() < deadline and b"421" not in reply:
        try:
            raw.sendall(b"x")
            reply += raw.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
    assert reply.startswith(b"421 4.4.2"), reply
    assert r.queued_ids() == []


def test_inbound_tls_session_resumption(relayd):
    """A returning client resumes its TLS session (TLS 1.3 ticket) on 465."""
    ctx = client_context()
    session = None
    for attempt in range(2):
        raw = socket.create_connection(("127.0.0.1", relayd.smtps_port), timeout=10)
        tls = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        assert read_reply(tls).startswith(b"220 ")  # tickets arrive with the first data
        tls.sendall(b"QUIT\r\n")
        read_reply(tls)
        if attempt == 1:
            assert tls.session_reused, "the second connection did a full handshake"
        session = tls.session
        tls.close()
    assert "resumed=true" in relayd.log_text()
