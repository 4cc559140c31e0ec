"""The Prometheus scrape listener ([metrics] address) against real sockets:
counters move by what was done, bad requests get 400/404/405, slow and
surplus clients cost neither scrapes nor SMTP, and the daemon stays up.

Every loop here is bounded in count and in time."""
import re
import signal
import smtplib
import socket
import time

import pytest

from relayd_harness import free_port

MESSAGE = b"From: a@example.test\r\nTo: b@example.org\r\nSubject: metrics\r\n\r\nbody\r\n"


@pytest.fixture
def metered(make_relayd):
    port = free_port()
    # 127.0.0.1 is not a client network: mail for example.org is accepted,
    # anything else is refused (relay_denied). DNS is the dead default, so
    # every delivery defers.
    r = make_relayd(client_networks=("10.255.255.1/32",), extra=f'\n[metrics]\naddress = "127.0.0.1:{port}"\n').start()
    # Started before the SMTP listeners, so already listening.
    assert "metrics listening" in r.log_text()
    r.metrics_port = port
    return r


def http(port, raw, timeout=10):
    """Sends raw bytes, reads to the close; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return status, headers, body


def scrape(port):
    status, headers, body = http(port, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def send(relayd, rcpts, port=None):
    with smtplib.SMTP("127.0.0.1", port or relayd.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("a@example.test")
        accepted = []
        for r in rcpts:
            code, _ = s.rcpt(r)
            if code == 250:
                accepted.append(r)
        if accepted:
            code, _ = s.data(MESSAGE)
            assert code == 250
        return accepted


def wait_for(port, name, at_least, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = scrape(port)
        if s.get(name, 0) >= at_least:
            return s
        time.sleep(0.2)
    raise AssertionError(f"{name} did not reach {at_least}: {scrape(port).get(name)}")


def test_counters_move_by_what_was_done(metered):
    r, port = metered, metered.metrics_port
    listener = f'listener="127.0.0.1:{r.smtp_port}"'
    before = scrape(port)
    assert before[f'relayd_messages_received_total{{{listener}}}'] == 0
    assert re.match(r"\d", str(before['relayd_smtp_sessions_active{' + listener + '}']))
    assert any(k.startswith("relayd_build_info{version=") for k in before)

    assert send(r, ["b@example.org", "c@elsewhere.example"]) == ["b@example.org"]
    assert send(r, ["d@example.org"]) == ["d@example.org"]

    after = wait_for(port, f'relayd_smtp_sessions_total{{{listener},tls="no"}}', 2)
    assert after[f'relayd_messages_received_total{{{listener}}}'] == 2
    assert after[f'relayd_smtp_sessions_total{{{listener},tls="no"}}'] == 2
    assert after[f'relayd_smtp_sessions_total{{{listener},tls="yes"}}'] == 0
    assert after['relayd_messages_refused_total{reason="relay_denied"}'] == 1
    assert after['relayd_messages_refused_total{reason="size"}'] == 0
    assert after[f'relayd_smtp_sessions_active{{{listener}}}'] == 0
    assert after["relayd_spool_commit_duration_seconds_count"] >= 1
    # Dead DNS: both messages' attempts defer.
    after = wait_for(port, 'relayd_delivery_attempts_total{result="deferred"}', 2)
    assert after['relayd_delivery_attempts_total{result="delivered"}'] == 0
    assert after["relayd_delivery_duration_seconds_count"] >= 2
    # The runner publishes the queue gauges on its timer.
    after = wait_for(port, 'relayd_queue_messages{state="deferred"}', 2, timeout=30)
    assert after["relayd_queue_oldest_message_age_seconds"] >= 0


def test_reload_keeps_the_listener_and_the_counts(metered):
    r, port = metered, metered.metrics_port
    send(r, ["b@example.org"])
    listener = f'relayd_messages_received_total{{listener="127.0.0.1:{r.smtp_port}"}}'
    assert wait_for(port, listener, 1)[listener] == 1
    r.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "msg=reloaded" not in r.log_text():
        assert time.monotonic() < deadline, r.log_text()
        time.sleep(0.05)
    assert scrape(port)[listener] == 1
    send(r, ["c@example.org"])
    assert wait_for(port, listener, 2)[listener] == 2
    assert r.log_text().count("metrics listening") == 1


def test_bad_requests_are_refused(metered):
    port = metered.metrics_port
    assert http(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404
    assert http(port, b"GET /metrics/x HTTP/1.0\r\n\r\n")[0] == 404
    status, headers, _ = http(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert status == 405 and headers["allow"] == "GET"
    assert http(port, b"GET /metrics\r\n\r\n")[0] == 400
    assert http(port, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\n\n")[0] == 400
    assert http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 9000 + b"\r\n\r\n")[0] in (400, 431)
    assert http(port, b"GET /metrics HTTP/1.0\r\n\r\n")[0] == 200
    assert metered.proc.poll() is None


def test_slow_clients_stop_neither_scrapes_nor_smtp(metered):
    r, port = metered, metered.metrics_port
    slow = []
    try:
        # Below the cap: a scrape is answered at once beside them.
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHo")
            slow.append(s)
        t0 = time.monotonic()
        scrape(port)
        assert time.monotonic() - t0 < 2.0
    finally:
        for s in slow:
            s.close()
    slow = []
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /met")
            slow.append(s)
        # An SMTP EHLO is answered at once while they hang.
        t0 = time.monotonic()
        with smtplib.SMTP("127.0.0.1", r.smtp_port, timeout=5) as smtp:
            code, _ = smtp.ehlo("client.test")
        assert code == 250
        assert time.monotonic() - t0 < 2.0
        # The slow ones are dropped at the read deadline (5 s); then a
        # scrape works again. Bounded: 15 s.
        deadline = time.monotonic() + 15
        dropped = 0
        for s in slow:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                if s.recv(1024) == b"":
                    dropped += 1
            except ConnectionResetError:
                # Those beyond the cap were closed with their bytes unread.
                dropped += 1
            except socket.timeout:
                pass
        assert dropped == len(slow), f"only {dropped} of {len(slow)} slow clients were dropped"
        assert scrape(port)["relayd_auth_failures_total"] == 0
    finally:
        for s in slow:
            s.close()


def test_connections_beyond_the_cap_are_closed(metered):
    port = metered.metrics_port
    held = []
    try:
        for _ in range(40):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)
        closed = 0
        for s in held[16:]:
            s.settimeout(2)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except ConnectionResetError:
                closed += 1
            except socket.timeout:
                pass
        # 16 are kept open (until their deadline), the rest closed unread.
        assert closed >= 40 - 16 - 2, f"{closed} closed"
    finally:
        for s in held:
            s.close()
    # Once they are gone, scraping works and the daemon is up.
    deadline = time.monotonic() + 10
    while True:
        try:
            scrape(port)
            break
        except (AssertionError, ConnectionError, IndexError, ValueError):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert metered.proc.poll() is None
