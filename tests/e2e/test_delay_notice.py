"""Delay notices in the test bed: a message that keeps deferring (plain.test
forced to TLS, which it does not offer) gets exactly one `Action: delayed`
DSN at the sender's sink once it has waited `delay_warning`, then its
bounce at the lifetime; with NOTIFY=NEVER it gets neither."""
import re
import smtplib
import uuid

from bed import DNS_IP, wait_for
from relayd_harness import Relayd
from test_outbound import SINK, bounces


def send(relayd, rcpt, tag, rcpt_options=()):
    with smtplib.SMTP("127.0.0.1", relayd.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("s@sender.test")
        code, msg = s.rcpt(rcpt, options=list(rcpt_options))
        assert code == 250, msg
        code, msg = s.data(f"From: <s@sender.test>\r\nTo: <{rcpt}>\r\nSubject: {tag}\r\n\r\nbody of {tag}\r\n".encode())
        assert code == 250, msg
        return msg.decode().rsplit(" ", 1)[1]


def notices(bed, tag, action):
    return [m for m in bounces(bed, tag) if f"Action: {action}" in m["data"]]


def test_one_delay_notice_then_the_bounce(bed, tmp_path):
    relayd = Relayd(tmp_path / "delay", relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert,
                    queue='retry_schedule = ["1s"]\nmax_lifetime = "10s"\ndelay_warning = "2s"',
                    outbound='default_level = "opportunistic"\nconnect_timeout = "3s"\n'
                             '[outbound.domains]\n"plain.test" = "forced"\n"sender.test" = "opportunistic"\n').start()
    try:
        tag = f"delay-{uuid.uuid4().hex[:8]}"
        never = f"delay-never-{uuid.uuid4().hex[:8]}"
        qid = send(relayd, "user@plain.test", tag)
        never_id = send(relayd, "user@plain.test", never, rcpt_options=["NOTIFY=NEVER"])
        wait_for(lambda: notices(bed, tag, "failed"), 40, "the bounce after the lifetime")
        wait_for(lambda: re.search(rf"msg=removed .*id={never_id}", relayd.log_text()), 20, "the NOTIFY=NEVER message given up")

        delayed = notices(bed, tag, "delayed")
        assert len(delayed) == 1, [m["data"][:300] for m in delayed]
        text = delayed[0]["data"]
        assert "Final-Recipient: rfc822; user@plain.test" in text
        assert re.search(r"Status: 4\.7\.\d+", text), text
        assert "Will-Retry-Until: " in text
        assert "The message is waiting for TLS" in text, "TLS is why it waits, and the notice says so"
        assert f"X-Relayd-Queue-ID: {qid}" in text
        # the notice came before the bounce, and only one bounce
        assert len(notices(bed, tag, "failed")) == 1
        log = relayd.log_text()
        assert len(re.findall(rf"msg=\"delay notice queued\".*original={qid}", log)) == 1, log

        assert not bounces(bed, never), "NOTIFY=NEVER: no delay notice and no bounce"
        assert not re.search(rf"msg=\"delay notice queued\".*original={never_id}", log)
    finally:
        relayd.stop()
