#!/usr/bin/python3
"""A short load through a ThreadSanitizer build of relayd: N messages by
submission (STARTTLS + AUTH) from several clients at once, through the
queue, delivered over STARTTLS to a sink (bench/sink.py). Everything on
loopback, bounded in count and time; relayd and the sink are stopped by
PID. Exit status 0 only if every message arrived and relayd's output holds
no ThreadSanitizer report.

usage: load.py RELAYD_BINARY [--messages N] [--clients C]"""
import argparse
import concurrent.futures
import os
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "Tests" / "RelayTestSupport" / "Fixtures"
IP, SINK_IP = "127.0.0.61", "127.0.0.62"
SUBMISSION, SMTP, SINK_PORT = 2587, 2525, 2500
USER, PASSWORD = "tsan", "tsan-password-1"


def wait_port(host, port, deadline, proc=None):
    import socket
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def send(i, ctx):
    with smtplib.SMTP(IP, SUBMISSION, timeout=60) as s:
        s.ehlo("tsan.test")
        s.starttls(context=ctx)
        s.ehlo("tsan.test")
        s.login(USER, PASSWORD)
        for j in range(i[1]):
            s.sendmail("load@tsan.test", [f"rcpt{j}@far.test"],
                       (f"From: <load@tsan.test>\r\nSubject: tsan {i[0]}-{j}\r\n\r\n" + ("x" * 76 + "\r\n") * 30).encode())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("relayd")
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--clients", type=int, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="relayd-tsan-"))
    hashed = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=PASSWORD.encode(),
                            capture_output=True, check=True).stdout.decode().strip()
    (work / "users").write_text(f"{USER}:{hashed}\n")
    (work / "relayd.conf").write_text(f"""
[server]
hostname = "tsan.relay.test"
spool_dir = "{work / 'spool'}"
users_file = "{work / 'users'}"
[[listener]]
address = "{IP}:{SMTP}"
kind = "smtp"
[[listener]]
address = "{IP}:{SUBMISSION}"
kind = "submission"
[tls]
certificate = "{FIX / 'mx.pem'}"
key = "{FIX / 'mx.key'}"
ca_bundle = "{FIX / 'ca.pem'}"
[relay]
client_networks = []
[queue]
retry_schedule = ["1s"]
[outbound]
smarthost = "sink"
[[outbound.relay]]
name = "sink"
address = "{SINK_IP}:{SINK_PORT}"
level = "forced"
[log]
level = "info"
""")
    count_file = work / "count"
    sink = subprocess.Popen(["/usr/bin/python3", str(REPO / "bench" / "sink.py"), "--listen", f"{SINK_IP}:{SINK_PORT}",
                             "--cert", str(FIX / "mx.pem"), "--key", str(FIX / "mx.key"),
                             "--count-file", str(count_file)], start_new_session=True)
    log = open(work / "relayd.log", "wb")
    env = dict(os.environ, TSAN_OPTIONS=os.environ.get("TSAN_OPTIONS", "") + " halt_on_error=0 exitcode=66")
    relayd = subprocess.Popen([args.relayd, "run", "--config", str(work / "relayd.conf"), "--grace", "5"],
                              stdout=log, stderr=log, env=env, start_new_session=True)
    ok = False
    try:
        deadline = time.monotonic() + 120
        if not (wait_port(SINK_IP, SINK_PORT, deadline) and wait_port(IP, SUBMISSION, deadline, relayd)):
            print("tsan load: relayd or the sink did not start", file=sys.stderr)
            return 1
        ctx = ssl.create_default_context(cafile=str(FIX / "ca.pem"))
        ctx.check_hostname = False
        per = max(1, args.messages // args.clients)
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda i: send((i, per), ctx), range(args.clients)))
        total = per * args.clients
        deadline = time.monotonic() + 300
        got = 0
        while time.monotonic() < deadline:
            try:
                got = int(Path(f"{count_file}.0").read_text().split()[0])
            except (FileNotFoundError, ValueError, IndexError):
                got = 0
            if got >= total:
                break
            time.sleep(0.5)
        print(f"tsan load: {got} of {total} messages delivered")
        ok = got >= total
    finally:
        for p in (relayd, sink):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in (relayd, sink):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        log.close()
    text = (work / "relayd.log").read_text(errors="replace")
    if "ThreadSanitizer" in text:
        start = text.index("WARNING: ThreadSanitizer") if "WARNING: ThreadSanitizer" in text else text.index("ThreadSanitizer")
        print(text[start:start + 6000], file=sys.stderr)
        print(f"tsan load: ThreadSanitizer reported (full log {work / 'relayd.log'})", file=sys.stderr)
        return 1
    if not ok:
        print(text[-3000:], file=sys.stderr)
        return 1
    print("tsan load: no ThreadSanitizer report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
