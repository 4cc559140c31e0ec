"""Outbound delivery in the test bed: the SPEC's policy table checked
against what the receiving side actually recorded, not relayd's own log.

One relayd per policy level sends one message to every destination in
tests/bed/scenarios.toml; each must end as the table's `expect` says.
"""
import re
import smtplib
import time
import uuid

import pytest

from bed import DNS_IP, load_scenarios, wait_for
from relayd_harness import Relayd

LEVELS = ["none", "opportunistic", "forced", "verify", "tls-exclusive"]
# Rows with a role (the sinks, the MTA-STS rows of test_mta_sts.py) are not
# destinations of the level table.
SCENARIOS = [s for s in load_scenarios() if not s.get("role")]
SINK = "127.0.0.29"        # mx.sender.test: where bounces arrive
PORTAL = "127.0.0.30"      # mx.portal.test: the fallback relay
LIFETIME = 6


def outbound_relayd(tmp_path, bed, level, outbound_extra="", queue=None, name=None):
    return Relayd(tmp_path / (name or f"relayd-{level}"), relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert,
                  queue=queue or f'retry_schedule = ["1s"]\nmax_lifetime = "{LIFETIME}s"',
                  outbound=f'default_level = "{level}"\nconnect_timeout = "3s"\n{outbound_extra}'
                           '\n[outbound.domains]\n"sender.test" = "opportunistic"\n')


def submit(relayd, sender, rcpt, tag, count=1):
    with smtplib.SMTP("127.0.0.1", relayd.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        ids = []
        for n in range(count):
            t = tag if count == 1 else f"{tag}-{n}"
            code, msg = s.data if False else (None, None)
            s.mail(sender)
            s.rcpt(rcpt)
            code, msg = s.data(f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {t}\r\nMessage-ID: <{t}@client.test>\r\n\r\nbody of {t}\r\n".encode())
            assert code == 250, msg
            ids.append(msg.decode().rsplit(" ", 1)[1])
        return ids


def arrived(bed, ip, tag):
    return [m for m in bed.messages(ip) if f"Subject: {tag}" in m["data"]]


def bounces(bed, tag):
    return [m for m in bed.messages(SINK) if f"Subject: {tag}" in m["data"] and "multipart/report" in m["data"]]


CONCLUSIONS = {"delivered", "deferred", "bounced", "dropped", "mixed"}
ON_THE_WAY = {"next-address", "tls-failed-retrying-plaintext", "fallback"}


def field(line, key):
    m = re.search(rf" {key}=(\S+)", line)
    return m.group(1) if m else None


def assert_outcomes_logged(expect, lines, dsn):
    """The `outcome` of a message's delivery attempt lines says what the
    queue did: its last line concludes the attempt, and each concluding
    line names one outcome with the status the queue filed."""
    assert lines, "no delivery attempt line"
    outcomes = [field(l, "outcome") for l in lines]
    assert set(outcomes) <= CONCLUSIONS | ON_THE_WAY, outcomes
    assert outcomes[-1] in CONCLUSIONS, lines[-1]
    concluding = [l for l in lines if field(l, "outcome") in CONCLUSIONS]
    if expect in ("tls", "plain"):
        assert [field(l, "outcome") for l in concluding] == ["delivered"], concluding
    elif expect == "dropped":
        assert field(concluding[-1], "outcome") == "dropped", concluding
    elif expect == "bounced":
        # Permanent at once (null MX): one attempt, bounced with its 5.x.x.
        assert [(field(l, "outcome"), field(l, "status")) for l in concluding] == [("bounced", "5.1.10")], concluding
    elif expect == "deferred":
        # Each attempt within the lifetime deferred with a 4.x.x status; the
        # one that ended past it bounced with the status the DSN carries.
        *before, last = concluding
        assert before and all(field(l, "outcome") == "deferred" and re.fullmatch(r"4\.\d+\.\d+", field(l, "status"))
                              for l in before), concluding
        dsn_status = re.search(r"^Status: (\S+)", dsn, re.M).group(1)
        assert (field(last, "outcome"), field(last, "status")) == ("bounced", dsn_status), (last, dsn_status)
        assert dsn_status.startswith("5.")


@pytest.mark.parametrize("level", LEVELS)
def test_policy_table(bed, tmp_path, level):
    relayd = outbound_relayd(tmp_path, bed, level).start()
    try:
        tags, ids = {}, {}
        for s in SCENARIOS:
            tag = f"{level}-{s['name']}-{uuid.uuid4().hex[:8]}"
            tags[s["name"]] = tag
            ids[s["name"]] = submit(relayd, f"sender-{level}@sender.test", f"user@{s['domain']}", tag)[0]

        def settled(s):
            expect, tag = s["expect"][level], tags[s["name"]]
            if expect in ("tls", "plain"):
                return bool(arrived(bed, bed.landing_ip(s), tag))
            if expect in ("deferred", "bounced"):
                return bool(bounces(bed, tag))
            if expect == "dropped":
                return f"audit=tls-exclusive-drop" in relayd.log_text() and ids[s["name"]] in relayd.log_text()
            raise AssertionError(expect)

        try:
            wait_for(lambda: all(settled(s) for s in SCENARIOS), LIFETIME + 20, "every scenario to reach its outcome")
        except TimeoutError:
            raise TimeoutError("not settled: " + ", ".join(s["name"] for s in SCENARIOS if not settled(s)))
        time.sleep(1)  # let any wrong extra delivery show up
        log = relayd.log_text()
        attempts = [l for l in log.splitlines() if 'msg="delivery attempt"' in l]
        for s in SCENARIOS:
            expect, tag, name = s["expect"][level], tags[s["name"]], s["name"]
            everywhere = [m for ip in {mx["ip"] for mx in s.get("mx", []) if isinstance(s.get("mx"), list)}
                          for m in arrived(bed, ip, tag)]
            if expect == "tls":
                want = {"version": "TLSv1.3", "fs": "yes", **s.get("tls", {})}
                got = arrived(bed, bed.landing_ip(s), tag)
                assert got and all(m["tls"] for m in got), (name, got)
                assert got[0]["version"] == want["version"], (name, got[0])
                if "cipher" in want:
                    assert got[0]["cipher"] == want["cipher"], (name, got[0])
                # relayd's own line for the TLS session says whether it had
                # forward secrecy (a static-RSA-only receiver: fs=no).
                tls_lines = [l for l in log.splitlines()
                             if 'msg="delivery attempt"' in l and f"id={ids[name]} " in l and "tls=TLS" in l]
                assert tls_lines and all(f" fs={want['fs']} " in l for l in tls_lines), (name, tls_lines)
            elif expect == "plain":
                got = arrived(bed, bed.landing_ip(s), tag)
                assert got and not any(m["tls"] for m in got), (name, "expected plaintext", got)
            else:
                assert not everywhere, (name, "delivered although policy forbids it", everywhere)
            if expect == "deferred":
                dsn = bounces(bed, tag)[0]["data"]
                assert "Action: failed" in dsn, (name, dsn[:6000])
                if name == "servfail":
                    assert "SERVFAIL" in dsn, dsn
                else:
                    assert re.search(r"TLS|STARTTLS", dsn), (name, dsn)
            if expect == "bounced":
                dsn = bounces(bed, tag)[0]["data"]
                assert "Status: 5.1.10" in dsn, dsn
                assert re.search(rf"msg=removed attempts=1 .*id={ids[name]}", log), "null MX bounces on the first attempt"
            if expect == "dropped":
                assert not bounces(bed, tag), (name, "tls-exclusive must not bounce")
                assert re.search(rf"audit=tls-exclusive-drop .*id={ids[name]}", log)
            assert_outcomes_logged(expect, [l for l in attempts if f"id={ids[name]} " in l],
                                   bounces(bed, tag)[0]["data"] if expect in ("deferred", "bounced") else None)
        # One structured line per attempt with the TLS facts and the layer.
        assert attempts
        for l in attempts:
            for key in ("tls=", "cipher=", "verify=", "layer=", "level=", "outcome=", "id=", "domain="):
                assert key in l, (key, l)
    finally:
        relayd.stop()


def test_fallback_channel_receives_when_tls_cannot_be_had(bed, tmp_path):
    relayd = Relayd(tmp_path / "fallback", relay_domains=(), dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert,
                    queue='retry_schedule = ["1s"]\nmax_lifetime = "30s"',
                    outbound='default_level = "opportunistic"\n'
                             '[[outbound.relay]]\nname = "portal"\naddress = "mx.portal.test:25"\nlevel = "verify"\n'
                             '[outbound.domains]\n"plain.test" = { level = "forced", fallback = "portal" }\n').start()
    try:
        tag = f"fallback-{uuid.uuid4().hex[:8]}"
        submit(relayd, "s@sender.test", "user@plain.test", tag)
        wait_for(lambda: arrived(bed, PORTAL, tag), 15, "delivery to the fallback relay")
        got = arrived(bed, PORTAL, tag)
        assert got[0]["tls"] and got[0]["version"] == "TLSv1.3"
        assert not arrived(bed, "127.0.0.22", tag), "the plaintext MX never got it"
        assert "handing to fallback relay" in relayd.log_text()
    finally:
        relayd.stop()


def test_retries_never_relax_tls(bed, tmp_path):
    relayd = outbound_relayd(tmp_path, bed, "forced", queue='retry_schedule = ["1s"]\nmax_lifetime = "8s"')
    relayd.start()
    try:
        before = {ip: len(bed.events(ip)) for ip in ("127.0.0.22", "127.0.0.25")}
        tags = {d: f"norelax-{d}-{uuid.uuid4().hex[:6]}" for d in ("plain.test", "broken.test")}
        for d, tag in tags.items():
            submit(relayd, "s@sender.test", f"user@{d}", tag)
        wait_for(lambda: all(bounces(bed, t) for t in tags.values()), 30, "bounces after the lifetime")
        for ip in ("127.0.0.22", "127.0.0.25"):
            new = bed.events(ip)[before[ip]:]
            sessions = [e for e in new if e["event"] == "session"]
            assert len(sessions) >= 3, (ip, "expected several attempts", len(sessions))
            assert not [e for e in new if e["event"] == "mail"], (ip, "relayd sent mail without TLS")
    finally:
        relayd.stop()


def test_kill9_during_delivery_loses_nothing(bed, tmp_path):
    relayd = outbound_relayd(tmp_path, bed, "opportunistic", queue='retry_schedule = ["1s"]\nmax_lifetime = "5m"',
                             name="kill9")
    relayd.start()
    tag = f"k9-{uuid.uuid4().hex[:6]}"
    try:
        for batch in range(4):
            submit(relayd, "s@sender.test", "user@sender.test", f"{tag}-{batch}", count=50)
        wait_for(lambda: len([m for m in bed.messages(SINK) if tag in m["data"]]) >= 10, 30, "some deliveries")
        relayd.kill9()
        delivered_before = {m["data"].split("Subject: ")[1].split("\n")[0].strip() for m in bed.messages(SINK) if tag in m["data"]}
        assert len(delivered_before) < 200, "the kill came too late to test anything"
        relayd.restart()
        expected = {f"{tag}-{b}-{n}" for b in range(4) for n in range(50)}

        def seen():
            return {m["data"].split("Subject: ")[1].split("\n")[0].strip() for m in bed.messages(SINK) if tag in m["data"]}
        wait_for(lambda: expected <= seen(), 90, "all 200 messages at the receiver")
        assert expected <= seen()
    finally:
        relayd.stop()


def test_kill9_under_20_submitters_with_recycled_queue_files(bed, tmp_path):
    """The spool of issue 16 under the kill -9 test's load while it
    delivers, so finished queue files go to free/ and new messages are
    written into them in place: 20 submitters, kill -9 once the pool is in
    use, restart. Every acknowledged message reaches the receiver; nothing
    is taken for corrupt; a message arrives twice only if its first copy
    had arrived before the kill (a delivery whose end the crash cut off)."""
    import collections
    import threading
    relayd = outbound_relayd(tmp_path, bed, "opportunistic", queue='retry_schedule = ["1s"]\nmax_lifetime = "5m"',
                             name="kill9-recycled")
    relayd.start()
    tag = f"k9r-{uuid.uuid4().hex[:6]}"
    stop, acknowledged, errors = threading.Event(), [], []

    def submitter(n):
        i = 0
        while not stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", relayd.smtp_port, timeout=5) as s:
                    s.ehlo(f"client{n}.test")
                    while not stop.is_set():
                        subject = f"{tag}-{n}-{i}"
                        i += 1
                        s.mail("s@sender.test")
                        s.rcpt("user@sender.test")
                        code, _ = s.data(f"Subject: {subject}\r\nMessage-ID: <{subject}@load>\r\n\r\nbody {subject}\r\n".encode())
                        if code == 250:
                            acknowledged.append(subject)
            except (OSError, smtplib.SMTPException) as e:
                errors.append(repr(e))
                time.sleep(0.05)

    def subjects():
        return [m["data"].split("Subject: ")[1].split("\n")[0].strip() for m in bed.messages(SINK) if tag in m["data"]]

    threads = [threading.Thread(target=submitter, args=(n,), daemon=True) for n in range(20)]
    try:
        for t in threads:
            t.start()
        saw_free = []

        def loaded():
            # Recycling in play: finished files in free/, waiting for reuse.
            if relayd.queued_ids("free"):
                saw_free.append(True)
            return len(acknowledged) >= 300 and len(subjects()) >= 100 and bool(saw_free)
        wait_for(loaded, 60, "load, with deliveries under way and files in free/")
        relayd.kill9()
        arrived_before = set(subjects())
        stop.set()
        for t in threads:
            t.join(timeout=10)
        assert len(acknowledged) >= 300, errors[:3]
        relayd.restart()
        wait_for(lambda: set(acknowledged) <= set(subjects()), 120, "every acknowledged message at the receiver")
        assert relayd.queued_ids("corrupt") == [], "a complete file was taken for corrupt"
        twice = [s for s, c in collections.Counter(subjects()).items() if c > 1]
        assert set(twice) <= arrived_before, f"delivered twice without a crash in between: {sorted(set(twice) - arrived_before)[:5]}"
        assert "failed its self-check" not in relayd.log_text()
    finally:
        stop.set()
        relayd.stop()


def test_smarthost_with_auth_over_implicit_tls(tmp_path):
    """relayd → relayd: the smarthost hop uses port 465, verifies the
    upstream's certificate against the configured CA and authenticates."""
    from relayd_harness import FIXTURES, PASSWORD, USER
    upstream = Relayd(tmp_path / "upstream", relay_domains=()).start()
    try:
        secret = tmp_path / "smarthost.password"
        secret.write_text(PASSWORD + "\n")
        front = Relayd(tmp_path / "front", relay_domains=(), ca_bundle=FIXTURES / "ca.pem",
                       outbound=f'default_level = "opportunistic"\nsmarthost = "up"\n'
                                f'[[outbound.relay]]\nname = "up"\naddress = "127.0.0.1:{upstream.smtps_port}"\n'
                                f'implicit_tls = true\nlevel = "verify"\nusername = "{USER}"\npassword_file = "{secret}"\n').start()
        try:
            tag = f"smarthost-{uuid.uuid4().hex[:6]}"
            submit(front, "s@sender.test", "someone@far.example", tag)
            wait_for(lambda: "msg=queued" in upstream.log_text(), 20, "the upstream relay to queue the message")
            qid = re.search(r"msg=queued .*id=(\S+)", upstream.log_text()).group(1)
            records, body = upstream.read_queued(qid)
            assert f"Subject: {tag}".encode() in body
            assert records["auth"] == USER
            assert records["tls"].startswith("TLSv1.3")
            log = front.log_text()
            assert re.search(r'msg="delivery attempt".*outcome=delivered.*tls=TLSv1\.3.*verify=trusted.*via="relay up"', log), log[-3000:]
        finally:
            front.stop()
    finally:
        upstream.stop()


def test_connection_reuse_for_the_next_message_to_the_same_hop(bed, tmp_path):
    relayd = outbound_relayd(tmp_path, bed, "verify", name="reuse").start()
    try:
        before = len([e for e in bed.events(SINK) if e["event"] == "session"])
        tag = f"reuse-{uuid.uuid4().hex[:6]}"
        for n in range(3):
            submit(relayd, "s@example.test", "user@sender.test", f"{tag}-{n}")
            wait_for(lambda: arrived(bed, SINK, f"{tag}-{n}"), 15, f"message {n}")
        got = [m for m in bed.messages(SINK) if tag in m["data"]]
        assert len(got) == 3 and all(m["tls"] and m["version"] == "TLSv1.3" for m in got)
        sessions = [e for e in bed.events(SINK) if e["event"] == "session"][before:]
        # One connection: EHLO before and after STARTTLS, then RSET for the
        # next messages instead of new connections.
        assert len(sessions) == 2, sessions
    finally:
        relayd.stop()
