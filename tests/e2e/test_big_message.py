"""A body much larger than relayd's 64 KiB delivery chunk, through the
test bed over TLS, must arrive byte-identical: once kept in memory after
the hand-over and once streamed from the spool file (memory_budget = 0),
with dot lines everywhere so some fall on chunk boundaries."""
import random
import re
import smtplib
import uuid

import pytest

from bed import wait_for
from test_outbound import SINK, outbound_relayd


def big_body(tag, size):
    rng = random.Random(tag)
    lines = [f"From: <s@example.test>", f"To: <user@sender.test>", f"Subject: {tag}", f"Message-ID: <{tag}@client.test>", ""]
    total = sum(len(l) + 2 for l in lines)
    while total < size:
        kind = rng.randrange(6)
        if kind == 0:
            line = "."                                 # a line the receiver must not take for the end
        elif kind == 1:
            line = ".." + "d" * rng.randrange(70)
        elif kind == 2:
            line = "." + "x" * rng.randrange(990)     # long lines move the boundaries around
        else:
            line = "".join(rng.choice("abc .:-") for _ in range(rng.randrange(78)))
        lines.append(line)
        total += len(line) + 2
    return "\r\n".join(lines) + "\r\n"


@pytest.mark.parametrize("budget", ["default", "0"])
def test_big_body_arrives_byte_identical_over_tls(bed, tmp_path, budget):
    queue = 'retry_schedule = ["1s"]' + ("" if budget == "default" else f"\nmemory_budget = {budget}")
    relayd = outbound_relayd(tmp_path, bed, "forced", queue=queue, name=f"big-{budget}").start()
    try:
        tag = f"big-{budget}-{uuid.uuid4().hex[:8]}"
        body = big_body(tag, 3 * 1024 * 1024)
        with smtplib.SMTP("127.0.0.1", relayd.smtp_port, timeout=30) as s:
            s.ehlo("client.test")
            s.mail("s@example.test")
            s.rcpt("user@sender.test")
            code, msg = s.data(body.encode())
            assert code == 250, msg

        def arrived():
            return [m for m in bed.messages(SINK) if m["event"] == "mail" and f"Subject: {tag}\r\n" in m["data"]]
        wait_for(arrived, 60, "the big message at the receiver")
        got = arrived()
        assert len(got) == 1
        m = got[0]
        assert m["tls"] and m["version"] == "TLSv1.3"
        data = m["data"]
        # relayd's Received header, then the body exactly as submitted.
        assert data.startswith("Received: from client.test"), data[:300]
        head = data[:len(data) - len(body)]
        assert re.fullmatch(r"Received: [^\r]*(\r\n\t[^\r]*)*\r\n", head), head
        assert data[len(head):] == body
        log = relayd.log_text()
        assert re.search(r'msg="delivery attempt".*outcome=delivered', log)
    finally:
        relayd.stop()
