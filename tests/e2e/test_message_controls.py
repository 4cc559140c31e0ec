"""Message-level controls end to end (issue 14 "Must show" 1), against the
test bed: escalation by Subject tag (deferred, or taken by the relay
channel with the tag gone), the S/MIME channel (the copy decrypts with
`openssl cms`), TLS-only forwarding (a forwarded copy is never plaintext
and bounces to the original sender), REQUIRETLS (delivered to a receiver
that offers it, returned with 5.7.30 from one that does not, and never
sent to an MX not found securely), and `TLS-Required: No` (relaxes an
MTA-STS requirement, never the operator's entry).

What happened is read from the receiving side (the bed's receivers record
every session and message) and from relayd's log lines.
"""
import re
import signal
import smtplib
import ssl
import subprocess
import time
import uuid

from bed import DNS_IP, wait_for
from delivery_log import concluded, log_lines, wait_deferred, wait_delivered
from relayd_harness import PASSWORD, RELAYD, USER, Relayd

PLAIN = "127.0.0.22"       # mx.plain.test: no STARTTLS
SINK = "127.0.0.29"        # mx.sender.test: TLS, valid certificate; senders' bounces land here
PORTAL = "127.0.0.30"      # mx.portal.test: the relay channel
STS_SELFSIGNED = "127.0.0.72"
REQUIRETLS_YES = "127.0.0.120"
REQUIRETLS_NO = "127.0.0.121"
REQUIRETLS_INSECURE = "127.0.0.122"


def new_tag(what):
    return f"mc-{what}-{uuid.uuid4().hex[:8]}"


def message(sender, rcpt, tag, subject=None, headers=""):
    return (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject if subject is not None else tag}\r\n"
            f"Message-ID: <{tag}@client.test>\r\n{headers}\r\nbody of {tag}\r\n").encode()


def unverified():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def submit_authenticated(relayd, rcpt, tag, subject=None, headers="", sender="nurse@sender.test"):
    """Port 587: STARTTLS, AUTH, then the message; returns the queue id."""
    with smtplib.SMTP("127.0.0.1", relayd.submission_port, timeout=10) as s:
        s.ehlo("client.test")
        s.starttls(context=unverified())
        s.ehlo("client.test")
        s.login(USER, PASSWORD)
        s.mail(sender)
        s.rcpt(rcpt)
        code, msg = s.data(message(sender, rcpt, tag, subject, headers))
        assert code == 250, msg
        return msg.decode().rsplit(" ", 1)[1]


def submit(relayd, rcpt, tag, subject=None, headers="", sender="someone@sender.test", requiretls=False):
    """Port 25 from a trusted network (no AUTH); REQUIRETLS after STARTTLS."""
    with smtplib.SMTP("127.0.0.1", relayd.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        if requiretls:
            s.starttls(context=unverified())
            s.ehlo("client.test")
            assert s.has_extn("requiretls"), s.esmtp_features
        code, msg = s.mail(sender, ["REQUIRETLS"] if requiretls else [])
        assert code == 250, msg
        s.rcpt(rcpt)
        code, msg = s.data(message(sender, rcpt, tag, subject, headers))
        assert code == 250, msg
        return msg.decode().rsplit(" ", 1)[1]


def arrived(bed, ip, tag):
    return [m for m in bed.messages(ip) if f"<{tag}@client.test>" in m["data"]]


def bounces(bed, tag):
    return [m for m in bed.messages(SINK) if f"<{tag}@client.test>" in m["data"] and "multipart/report" in m["data"]]


def relayd_for(tmp_path, bed, name, extra="", outbound="", relay_domains=(), dns="", lifetime="10m"):
    return Relayd(tmp_path / name, relay_domains=relay_domains, dns_servers=(DNS_IP,), ca_bundle=bed.ca.cert, dns=dns,
                  extra='[mta_sts]\nenabled = false\n' + extra if "[mta_sts]" not in extra else extra,
                  queue=f'retry_schedule = ["1s"]\nmax_lifetime = "{lifetime}"',
                  outbound='default_level = "opportunistic"\nconnect_timeout = "3s"\nconnection_reuse = "0s"\n' + outbound)


ESCALATION = '[escalation]\nsubject_tags = ["[secure]"]\nheader = "X-Relayd-Escalate"\n'


def test_tagged_message_waits_for_tls_while_untagged_goes_in_plaintext(bed, tmp_path):
    relayd = relayd_for(tmp_path, bed, "escalate", extra=ESCALATION).start()
    try:
        plain_tag, secure_tag = new_tag("plain"), new_tag("secure")
        plain_id = submit_authenticated(relayd, "user@plain.test", plain_tag, subject=f"Lab results {plain_tag}")
        secure_id = submit_authenticated(relayd, "user@plain.test", secure_tag, subject=f"[SECURE] Lab results {secure_tag}")
        wait_delivered(relayd, plain_id)
        got = arrived(bed, PLAIN, plain_tag)
        assert len(got) == 1 and not got[0]["tls"], got
        deferred = wait_deferred(relayd, secure_id, times=2)
        for a in deferred:
            assert a["escalated"] == "verify by subject-tag", a
            assert a["layer"] == "message" and a["level"] == "verify", a
            assert a["tls"] == "none" and re.fullmatch(r"4\.7\.\d+", a["status"]), a
            assert "required by this message: escalated verify by subject-tag" in a["detail"], a
        assert arrived(bed, PLAIN, secure_tag) == [], "an escalated message never goes in plaintext"
        # relayd queue show carries the escalation (the queue file keeps it).
        show = subprocess.run([str(RELAYD), "queue", "show", secure_id, "--config", str(relayd.config)],
                              capture_output=True, text=True, timeout=30)
        assert "escalated=verify by subject-tag" in show.stdout, show.stdout + show.stderr
        assert "Subject: Lab results " + secure_tag in show.stdout, "the tag is out of the queued Subject"
        # A restart keeps it.
        since = len(relayd.log_text())
        relayd.stop()
        relayd.restart()
        again = wait_deferred(relayd, secure_id, times=1, since=since)
        assert again[0]["escalated"] == "verify by subject-tag", again
    finally:
        relayd.stop()


def test_relay_channel_takes_the_tagged_message_without_its_tag(bed, tmp_path):
    portal = ('[[outbound.relay]]\nname = "portal"\naddress = "mx.portal.test:25"\nlevel = "verify"\n')
    relayd = relayd_for(tmp_path, bed, "channel-relay", extra=ESCALATION + 'channel = "relay:portal"\n',
                        outbound=portal).start()
    try:
        tag = new_tag("portal")
        # The tag alone escalates (the header has its own unit tests).
        qid = submit_authenticated(relayd, "user@plain.test", tag, subject=f"[secure] Scan {tag}")
        wait_for(lambda: arrived(bed, PORTAL, tag), 30, "the tagged message at the portal")
        got = arrived(bed, PORTAL, tag)
        assert len(got) == 1 and got[0]["tls"], got
        data = got[0]["data"]
        assert f"Subject: Scan {tag}\r\n" in data, data
        assert "[secure]" not in data.lower() and "x-relayd-escalate" not in data.lower(), data
        assert arrived(bed, PLAIN, tag) == []
        assert log_lines(relayd, "TLS to destination unavailable; handing to fallback relay", id=qid)
    finally:
        relayd.stop()


def make_recipient_certificate(folder, address):
    """A self-signed RSA certificate and key for `address`, as a user's
    S/MIME certificate would be; filed as <address>.pem."""
    key, cert = folder / f"{address}.key", folder / f"{address}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "30", "-subj", f"/CN={address}", "-addext", f"subjectAltName=email:{address}"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_smime_channel_delivers_a_copy_that_openssl_decrypts(bed, tmp_path):
    certs = tmp_path / "smime"
    certs.mkdir()
    cert, key = make_recipient_certificate(certs, "dr.smith@plain.test")
    key.rename(tmp_path / "dr.smith.key")   # the key is the recipient's, not relayd's
    relayd = relayd_for(tmp_path, bed, "channel-smime",
                        extra=ESCALATION + 'channel = "smime"\n' + f'[smime]\ncertificate_directory = "{certs}"\n').start()
    try:
        tag = new_tag("smime")
        qid = submit_authenticated(relayd, "dr.smith@plain.test", tag, subject=f"[secure] Biopsy {tag}")
        nocert_tag = new_tag("nocert")
        nocert = submit_authenticated(relayd, "someone@plain.test", nocert_tag, subject=f"[secure] Biopsy {nocert_tag}")
        wait_for(lambda: arrived(bed, PLAIN, tag), 30, "the encrypted copy at plain.test")
        got = arrived(bed, PLAIN, tag)
        assert len(got) == 1, got
        data = got[0]["data"]
        assert "Content-Type: application/pkcs7-mime" in data and "Subject: ...\r\n" in data, data[:800]
        assert f"body of {tag}" not in data and "Biopsy" not in data, "nothing of the content in the clear"
        smime = tmp_path / "arrived.eml"
        smime.write_bytes(data.encode())
        out = subprocess.run(["openssl", "cms", "-decrypt", "-in", str(smime), "-recip", str(cert),
                              "-inkey", str(tmp_path / "dr.smith.key")], capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr.decode()
        inner = out.stdout.decode()
        assert inner.startswith("Content-Type: message/rfc822"), inner[:200]
        assert f"Subject: Biopsy {tag}\r\n" in inner and f"body of {tag}" in inner, inner
        assert log_lines(relayd, "S/MIME channel: TLS unavailable; delivering encrypted copies", id=qid)
        lines = concluded(relayd, qid, "delivered")
        assert lines and lines[-1]["channel"] == "smime", lines
        # Two recipients with certificates: a copy each, each naming only its
        # own recipient (a shared CMS would show every recipient the others).
        cert2, key2 = make_recipient_certificate(certs, "dr.jones@plain.test")
        key2.rename(tmp_path / "dr.jones.key")
        pair = new_tag("pair")
        with smtplib.SMTP("127.0.0.1", relayd.submission_port, timeout=10) as s:
            s.ehlo("client.test")
            s.starttls(context=unverified())
            s.ehlo("client.test")
            s.login(USER, PASSWORD)
            s.sendmail("nurse@sender.test", ["dr.smith@plain.test", "dr.jones@plain.test"],
                       message("nurse@sender.test", "dr.smith@plain.test", pair, subject=f"[secure] Both {pair}"))
        wait_for(lambda: len(arrived(bed, PLAIN, pair)) == 2, 30, "one encrypted copy per recipient")
        for m in arrived(bed, PLAIN, pair):
            (rcpt,) = m["to"]
            mine, theirs = (("dr.smith", "dr.jones") if rcpt.startswith("dr.smith") else ("dr.jones", "dr.smith"))
            eml = tmp_path / f"{mine}.eml"
            eml.write_bytes(m["data"].encode())
            ok = subprocess.run(["openssl", "cms", "-decrypt", "-in", str(eml), "-recip", str(certs / f"{mine}@plain.test.pem"),
                                 "-inkey", str(tmp_path / f"{mine}.key")], capture_output=True, timeout=60)
            assert ok.returncode == 0 and f"body of {pair}" in ok.stdout.decode(), ok.stderr.decode()
            other = subprocess.run(["openssl", "cms", "-decrypt", "-in", str(eml), "-recip",
                                    str(certs / f"{theirs}@plain.test.pem"), "-inkey", str(tmp_path / f"{theirs}.key")],
                                   capture_output=True, timeout=60)
            assert other.returncode != 0, "a copy is encrypted to its own recipient only"
        # No certificate, no relay: the message waits, saying what is missing.
        deferred = wait_deferred(relayd, nocert, times=1)
        assert arrived(bed, PLAIN, nocert_tag) == []
        missing = log_lines(relayd, "S/MIME channel: no certificate; the recipient waits for TLS", id=nocert)
        assert missing and "no S/MIME certificate for <someone@plain.test>" in missing[0]["reason"], missing
        assert deferred
    finally:
        relayd.stop()


def test_forwarded_copy_under_tls_only_is_never_plaintext_and_bounces_to_the_sender(bed, tmp_path):
    forwarding = ('[forwarding]\ntls_only = true\n[forwarding.aliases]\n'
                  '"info@clinic.test" = ["user@plain.test", "archive@sender.test"]\n')
    relayd = relayd_for(tmp_path, bed, "forwarding", extra=forwarding, relay_domains=("clinic.test",), lifetime="6s")
    relayd = relayd.start()
    try:
        tag = new_tag("forward")
        # From outside (port 25, the relay domain is ours): no AUTH needed.
        qid = submit(relayd, "info@clinic.test", tag, sender="patient@sender.test")
        wait_for(lambda: arrived(bed, SINK, tag) and bounces(bed, tag), 40, "the TLS copy and the bounce")
        tls_copy = [m for m in arrived(bed, SINK, tag) if "multipart/report" not in m["data"]]
        assert len(tls_copy) == 1 and tls_copy[0]["tls"] and tls_copy[0]["to"] == ["archive@sender.test"], tls_copy
        assert tls_copy[0]["from"] == "patient@sender.test", "no SRS: the original sender stays"
        assert arrived(bed, PLAIN, tag) == [], "the forwarded copy to a host without TLS never went in plaintext"
        bounce = bounces(bed, tag)
        assert len(bounce) == 1 and bounce[0]["to"] == ["patient@sender.test"], bounce
        dsn = bounce[0]["data"]
        assert "Final-Recipient: rfc822; user@plain.test" in dsn and "Original-Recipient: rfc822;info@clinic.test" in dsn, dsn
        assert re.search(r"Status: 5\.7\.\d+", dsn) and "forwarded copy: tls_only forced" in dsn, dsn
        plain_attempts = [a for a in log_lines(relayd, "delivery attempt", id=qid) if a.get("domain") == "plain.test"]
        assert plain_attempts and all(a["tls"] == "none" and a["outcome"] != "delivered" for a in plain_attempts)
        assert all(a["floor"] == "forwarded copy: tls_only forced" for a in plain_attempts), plain_attempts
        control = log_lines(relayd, "message control", id=qid)
        assert control and "forwarded <info@clinic.test>" in control[0]["control"], control
        # The operator hears of it: at start, at each reload, and from check-config.
        warned = lambda: [w for w in log_lines(relayd, "forwarding target cannot take TLS") if "→ plain.test" in w["check"]]
        wait_for(warned, 20, "the start-up forwarding warning")
        assert "probe: no usable TLS (mx.plain.test[127.0.0.22] no-starttls)" in warned()[0]["check"], warned()
        assert not [w for w in log_lines(relayd, "forwarding target cannot take TLS") if "sender.test" in w["check"]]
        relayd.send_signal(signal.SIGHUP)
        wait_for(lambda: len(warned()) >= 2, 20, "the reload's forwarding warning")
        check = subprocess.run([str(RELAYD), "check-config", "--config", str(relayd.config)],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "warning: [forwarding] <info@clinic.test> → plain.test is tls_only, but probe: no usable TLS" in check.stderr, check.stderr
    finally:
        relayd.stop()


def test_requiretls_is_delivered_where_offered_and_returned_with_5730_elsewhere(bed, tmp_path):
    relayd = relayd_for(tmp_path, bed, "requiretls", dns="dnssec = true").start()
    try:
        yes, no, insecure = new_tag("rt-yes"), new_tag("rt-no"), new_tag("rt-insecure")
        yes_id = submit(relayd, "user@requiretls.dane.test", yes, requiretls=True)
        no_id = submit(relayd, "user@no-requiretls.dane.test", no, requiretls=True, sender="rt@sender.test")
        insecure_id = submit(relayd, "user@requiretls-insecure.test", insecure, requiretls=True, sender="rt@sender.test")
        wait_delivered(relayd, yes_id, timeout=30)
        got = arrived(bed, REQUIRETLS_YES, yes)
        assert len(got) == 1 and got[0]["tls"] and "REQUIRETLS" in got[0]["params"], got
        line = concluded(relayd, yes_id, "delivered")[-1]
        assert line["requiretls"] == "yes" and line["verify"] == "trusted", line
        for qid, tag in ((no_id, no), (insecure_id, insecure)):
            wait_for(lambda: concluded(relayd, qid, "bounced"), 30, f"{qid} returned")
            assert concluded(relayd, qid, "bounced")[-1]["status"] == "5.7.30"
            wait_for(lambda: bounces(bed, tag), 30, f"the DSN for {tag}")
            dsn = bounces(bed, tag)[0]
            assert "Status: 5.7.30" in dsn["data"] and "text/rfc822-headers" in dsn["data"], dsn["data"]
            assert f"body of {tag}" not in dsn["data"], "the return is redacted to the headers"
            assert "REQUIRETLS" not in dsn["params"], "the DSN is sent without REQUIRETLS"
        assert arrived(bed, REQUIRETLS_NO, no) == []
        assert not any(e for e in bed.events(REQUIRETLS_NO) if e["event"] == "mail" and no in e.get("data", ""))
        assert [e for e in bed.events(REQUIRETLS_INSECURE) if e["event"] == "session"] == [], \
            "an MX not found securely is never contacted for a REQUIRETLS message"
    finally:
        relayd.stop()


def test_tls_required_no_relaxes_mta_sts_but_not_the_operator_entry(bed, tmp_path):
    sts = '[mta_sts]\nenabled = true\nfetch_timeout = "5s"\n'
    relayd = relayd_for(tmp_path, bed, "tls-required-no", extra=sts).start()
    try:
        strict, relaxed = new_tag("sts-strict"), new_tag("sts-relaxed")
        strict_id = submit(relayd, "user@sts-selfsigned.test", strict)
        relaxed_id = submit(relayd, "user@sts-selfsigned.test", relaxed, headers="TLS-Required: No\r\n")
        wait_delivered(relayd, relaxed_id, timeout=30)
        got = arrived(bed, STS_SELFSIGNED, relaxed)
        assert len(got) == 1 and got[0]["tls"], "opportunistic TLS is still tried"
        line = concluded(relayd, relaxed_id, "delivered")[-1]
        assert line["tls_required_no"] == "honoured" and line["layer"] == "default", line
        assert log_lines(relayd, "TLS-Required: No honoured: MTA-STS, DANE and learned status do not apply", id=relaxed_id)
        deferred = wait_deferred(relayd, strict_id, times=1)
        assert deferred[0]["layer"] == "mta-sts", deferred
        assert arrived(bed, STS_SELFSIGNED, strict) == []
    finally:
        relayd.stop()
    entry = '[outbound.domains]\n"sts-selfsigned.test" = "verify"\n'
    relayd = relayd_for(tmp_path, bed, "tls-required-no-operator", extra=sts, outbound=entry).start()
    try:
        tag = new_tag("operator")
        qid = submit(relayd, "user@sts-selfsigned.test", tag, headers="TLS-Required: No\r\n")
        deferred = wait_deferred(relayd, qid, times=2)
        for a in deferred:
            assert a["layer"] == "operator" and a["level"] == "verify", a
        assert arrived(bed, STS_SELFSIGNED, tag) == [], "the operator's entry is never relaxed"
    finally:
        relayd.stop()
