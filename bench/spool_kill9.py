# kill -9 under load with recycled queue files in use (Spool.swift): 20
# submitters while relayd delivers to a sink that records each Message-ID,
# so finished files go to free/ and are reused during the load. Each round
# kills relayd with SIGKILL, restarts it on the same spool, waits for the
# queue to drain and prints acknowledged / delivered / lost / delivered
# twice, and what is in corrupt/, tmp/ and free/. Manual, as root (port 25
# of 127.0.0.41/42, like bench/run.py); the release build:
#   python3 bench/spool_kill9.py [rounds]
# The e2e kill -9 test (tests/e2e/test_inbound.py) delivers nothing, so it
# never reuses a file; this does.
import sys, tempfile, os, time, threading, smtplib, socketserver, signal, collections
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import run
run.RELAYD = Path(os.environ.get("RELAYD", str(run.RELAYD)))
delivered = collections.Counter()
lock = threading.Lock()
class H(socketserver.StreamRequestHandler):
    def handle(self):
        w = lambda s: self.wfile.write(s.encode() + b"\r\n")
        w("220 sink")
        while True:
            line = self.rfile.readline()
            if not line: return
            v = line[:4].upper()
            if v == b"DATA":
                w("354 go"); tags = []
                while True:
                    l = self.rfile.readline()
                    if l in (b".\r\n", b""): break
                    if l.startswith(b"Message-ID: <"): tags.append(l[13:].split(b"@")[0].decode())
                with lock:
                    for t in tags: delivered[t] += 1
                w("250 ok")
            elif v == b"QUIT": w("221 bye"); return
            elif v == b"EHLO": w("250-sink"); w("250 8BITMIME")
            else: w("250 ok")
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True; daemon_threads = True
srv = S((run.SINK_IP, 25), H); threading.Thread(target=srv.serve_forever, daemon=True).start()
work = Path(tempfile.mkdtemp(prefix="relayd-kill-")); os.chmod(work, 0o755)
certs = run.make_certs(work, "ecdsa")
out = f'smarthost = "sink"\n[[outbound.relay]]\nname = "sink"\naddress = "{run.SINK_IP}:25"\nlevel = "none"\n'
r = run.Relayd(work, certs, out); r.start()
acked, stop, errs = [], threading.Event(), []
def submit(n):
    while not stop.is_set():
        try:
            with smtplib.SMTP(run.RELAYD_IP, 25, timeout=5) as s:
                s.ehlo(f"c{n}.test")
                while not stop.is_set():
                    tag = f"c{n}-{time.monotonic_ns()}"
                    m = s.mail("load@example.test"); rc = s.rcpt("u@example.org")
                    if m[0] != 250 or rc[0] != 250:
                        if not errs: errs.append(1); print("mail/rcpt", m, rc, flush=True)
                    code, _ = s.data(f"Subject: {tag}\r\nMessage-ID: <{tag}@load>\r\n\r\n" + "x" * (200 + (hash(tag) % 3000)) + "\r\n")
                    if code == 250: acked.append(tag)
        except Exception as e:
            if not errs: errs.append(repr(e)); print("submit error", repr(e), flush=True)
            time.sleep(0.05)
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
for rnd in range(rounds):
    stop.clear()
    ts = [threading.Thread(target=submit, args=(n,), daemon=True) for n in range(20)]
    for t in ts: t.start()
    time.sleep(4)
    os.killpg(r.proc.pid, signal.SIGKILL); r.proc.wait()
    stop.set()
    for t in ts: t.join(10)
    spool = r.dir / "spool"
    print(f"round {rnd + 1}: killed with free/ {len(os.listdir(spool / 'free'))} files, queued "
          f"{sum(len(os.listdir(spool / f)) for f in ('incoming', 'active', 'deferred'))}, tmp {len(os.listdir(spool / 'tmp'))}", flush=True)
    r.start()
    deadline = time.time() + 60
    while time.time() < deadline and sum(len(os.listdir(spool / f)) for f in ('incoming', 'active', 'deferred')) > 0:
        time.sleep(0.5)
    time.sleep(1)
    with lock:
        lost = [t for t in acked if delivered[t] == 0]
        dup = sum(1 for t in acked if delivered[t] > 1)
    print(f"  acknowledged {len(acked)}, delivered {len(delivered)}, lost {len(lost)}, delivered twice {dup}, "
          f"corrupt/ {os.listdir(spool / 'corrupt')}, tmp/ {os.listdir(spool / 'tmp')}, free/ {len(os.listdir(spool / 'free'))}", flush=True)
log = (r.dir / "relayd.log").read_text()
print("self-check failures in log:", log.count("failed its self-check"))
os.killpg(r.proc.pid, signal.SIGTERM); r.proc.wait(15)
