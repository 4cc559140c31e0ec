"""Mail loops (issue 18): a message that has been through too many hops is
refused, and a relayd whose next hop is itself bounces the mail on the
first attempt instead of sending it round and round.

The bounce is observed where the sender's domain receives mail: a second
relayd that sender.test is routed to, whose spool holds the DSN.
"""
import re
import smtplib
import subprocess
import time
import uuid

import pytest

from bed import wait_for
from relayd_harness import RELAYD, Relayd


def received_headers(n):
    return "".join(f"Received: from hop{i}.example ([192.0.2.{i % 250 + 1}])\r\n"
                   f"\tby hop{i + 1}.example with ESMTP; Mon, 1 Jan 2024 00:00:{i % 60:02d} +0000\r\n" for i in range(n))


def test_sixty_received_headers_are_refused_and_nothing_is_queued(relayd):
    tag = f"hops-{uuid.uuid4().hex[:6]}"
    with smtplib.SMTP("127.0.0.1", relayd.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("s@sender.test")
        s.rcpt("user@example.org")
        body = received_headers(60) + f"Subject: {tag}\r\n\r\nReceived: a body line, not a header\r\n"
        code, msg = s.data(body.encode())
        assert code == 554 and msg.startswith(b"5.4.6 "), (code, msg)
        assert relayd.queued_ids() == []
        # The session goes on; a message that has travelled less is taken.
        s.mail("s@sender.test")
        s.rcpt("user@example.org")
        code, msg = s.data((received_headers(10) + f"Subject: {tag}-ok\r\n\r\nbody\r\n").encode())
        assert code == 250, msg
    log = relayd.log_text()
    assert re.search(r'msg=refused .*command=DATA .*reply="554 5\.4\.6 Error: too many hops \(60 Received headers', log), log[-3000:]
    assert log.count("msg=queued ") == 1
    assert len(relayd.queued_ids()) == 1


@pytest.mark.parametrize("route", ["smarthost", "transport"])
def test_a_next_hop_that_is_relayd_itself_bounces_at_once(tmp_path, route):
    """The smarthost (or the transport relay for the destination) is
    relayd's own smtp listener: one attempt, no connection to itself, a
    5.4.6 bounce to the sender."""
    sink = Relayd(tmp_path / "sink", relay_domains=("sender.test",)).start()
    try:
        looping = Relayd(tmp_path / "looping", relay_domains=(), queue='retry_schedule = ["1s"]',
                         outbound=(f'default_level = "opportunistic"\n'
                                   + ('smarthost = "self"\n' if route == "smarthost" else "")
                                   + '[[outbound.relay]]\nname = "self"\naddress = "127.0.0.1:SELF_PORT"\nlevel = "none"\n'
                                   + f'[[outbound.relay]]\nname = "sink"\naddress = "127.0.0.1:{sink.smtp_port}"\nlevel = "none"\n'
                                   + '[outbound.transport]\n"sender.test" = "sink"\n'
                                   + ('"far.example" = "self"\n' if route == "transport" else "")))
        looping.config.write_text(looping.config.read_text().replace("SELF_PORT", str(looping.smtp_port)))
        looping.start()
        try:
            tag = f"loop-{route}-{uuid.uuid4().hex[:6]}"
            with smtplib.SMTP("127.0.0.1", looping.smtp_port, timeout=10) as s:
                s.ehlo("client.test")
                s.mail("s@sender.test")
                s.rcpt("someone@far.example")
                code, msg = s.data(f"From: <s@sender.test>\r\nTo: <someone@far.example>\r\nSubject: {tag}\r\n\r\nbody\r\n".encode())
                assert code == 250, msg
                qid = msg.decode().rsplit(" ", 1)[1]
            wait_for(lambda: "msg=queued" in sink.log_text(), 20, "the bounce to reach the sender's domain")
            dsn_id = re.search(r"msg=queued .*id=(\S+)", sink.log_text()).group(1)
            records, dsn = sink.read_queued(dsn_id)
            dsn = dsn.decode()
            assert records["from"] == "", records  # the null sender
            assert "Status: 5.4.6" in dsn, dsn
            assert "mail for far.example loops back to myself" in dsn, dsn
            assert f"Subject: {tag}" in dsn, dsn
            time.sleep(1)  # let a second hop show up, if there is one
            log = looping.log_text()
            assert re.search(rf"msg=removed attempts=1 bounced=1 .*id={qid}", log), log[-3000:]
            assert re.search(rf'msg="mail loops back to myself; not attempted" .*id={qid} .*port={looping.smtp_port} .*status=5\.4\.6', log), log[-3000:]
            # No second hop: the only connection relayd accepted is ours,
            # the only message it queued the original, nothing attempted.
            assert log.count("msg=connect ") == 1, log[-3000:]
            assert log.count("msg=queued ") == 1, log[-3000:]
            assert not re.search(rf'msg="delivery attempt".* id={qid}', log), log[-3000:]
        finally:
            looping.stop()
    finally:
        sink.stop()


def test_check_config_warns_about_a_relay_that_is_relayd_itself(tmp_path):
    r = Relayd(tmp_path / "r", relay_domains=("example.org",),
               outbound='[[outbound.relay]]\nname = "self"\naddress = "127.0.0.1:SELF_PORT"\n')
    r.config.write_text(r.config.read_text().replace("SELF_PORT", str(r.smtp_port)))
    out = subprocess.run([str(RELAYD), "check-config", "--config", str(r.config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout
    warnings = out.stderr.strip().split("\n")
    assert any(f"warning: [[outbound.relay]] self (127.0.0.1:{r.smtp_port}) is relayd's own listener" in w for w in warnings), warnings
    # The test relayd's DNS is a dead port: the relay domain cannot be
    # checked, which is a warning, not a failed check.
    assert any("warning: relay domain example.org: its MX hosts could not be checked" in w for w in warnings), warnings
