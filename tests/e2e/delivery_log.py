"""What the e2e tests share about one message's trip: handing it to
relayd, reading relayd's logfmt delivery lines, and finding it at the bed's
receivers."""
import re
import smtplib

from bed import wait_for


def submit(relayd, rcpt, tag, sender="sts-e2e@sender.test"):
    """Hands one message for `rcpt` to relayd; returns its queue id."""
    with smtplib.SMTP("127.0.0.1", relayd.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail(sender)
        s.rcpt(rcpt)
        code, msg = s.data(f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {tag}\r\n"
                           f"Message-ID: <{tag}@client.test>\r\n\r\nbody of {tag}\r\n".encode())
        assert code == 250, msg
        return msg.decode().rsplit(" ", 1)[1]


LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse(line):
    return {k: (v[1:-1].replace('\\"', '"') if v.startswith('"') else v) for k, v in LOGFMT.findall(line)}


def log_lines(relayd, msg, since=0, **fields):
    """relayd's log lines with message `msg` (and the given field values),
    from byte offset `since` of the log."""
    out = []
    for line in relayd.log_text()[since:].splitlines():
        f = parse(line)
        if f.get("msg") == msg and all(f.get(k) == v for k, v in fields.items()):
            out.append(f)
    return out


def attempts(relayd, qid, since=0):
    return log_lines(relayd, "delivery attempt", since, id=qid)


def concluded(relayd, qid, outcome, since=0):
    return [a for a in attempts(relayd, qid, since) if a.get("outcome") == outcome]


def wait_deferred(relayd, qid, times=2, timeout=20, since=0):
    """Waits until `qid` has been deferred `times` times (the retries come
    every second): the second shows a retry is no more lenient."""
    try:
        wait_for(lambda: len(concluded(relayd, qid, "deferred", since)) >= times, timeout, f"{qid} deferred {times}x")
    except TimeoutError:
        raise AssertionError(f"{qid} not deferred {times}x: {attempts(relayd, qid, since)}\n{relayd.log_text()[-4000:]}")
    return concluded(relayd, qid, "deferred", since)


def wait_delivered(relayd, qid, timeout=20, since=0):
    try:
        wait_for(lambda: concluded(relayd, qid, "delivered", since), timeout, f"{qid} delivered")
    except TimeoutError:
        raise AssertionError(f"{qid} not delivered: {attempts(relayd, qid, since)}\n{relayd.log_text()[-4000:]}")
    return concluded(relayd, qid, "delivered", since)[0]


def arrived(bed, ip, tag):
    return [m for m in bed.messages(ip) if f"Subject: {tag}" in m["data"]]


def wait_arrived(bed, ip, tag, timeout=15):
    """Postfix files a message in the mailbox a moment after its 250."""
    wait_for(lambda: arrived(bed, ip, tag), timeout, f"{tag} at {ip}")
    return arrived(bed, ip, tag)
