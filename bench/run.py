#!/usr/bin/python3
"""relayd against Postfix on this machine, in the same run.

Each cell runs the same load (the compiled generator, bench/loadgen.c, built
into .build-bench/loadgen by `make -C bench`; --generator python picks the
old bench/loadgen.py explicitly) against relayd and against
a private Postfix instance (`postfix -c DIR`, default durability) doing the
same job — accept on 127.0.0.x:25, relay to a sink — interleaved A B A B
for --rounds rounds, and prints relayd ÷ Postfix with the min–max of the
per-round ratios. The generator's own ceiling (generator → sink, no relay)
is measured too. Everything is on loopback, every load is bounded in count
and time, and every process started here is stopped here.

Suites: accept, e2e, idle, durability (the default set), and bigmsg:
peak memory with 20 concurrent 30 MiB messages, STARTTLS in and out, as a
ratio to the same run with 4 KiB messages (see bench/RESULTS.md).

Certificates (--certs): rsa (default: one RSA 2048 chain, both servers, as
a Postfix install has), ecdsa (one P-256 chain), or dual (an RSA and an ECDSA chain together:
relayd's [tls] certificate + ec_certificate, Postfix's smtpd_tls_cert_file
+ smtpd_tls_eccert_file). Which one a client gets depends on what it
offers: --client-sigalgs passes a signature algorithm list to the
generator (e.g. "rsa_pss_rsae_sha256:RSA+SHA256" to play an RSA-only
client against the dual setup); the generator reports the key type of
the leaves it got (tls_peer_keys).
"""
import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "bed"))
import postfix_instance  # noqa: E402  (shared with the test bed)
RELAYD = REPO / ".build" / "release" / "relayd"
LOADGEN = REPO / ".build-bench" / "loadgen"
SINK = REPO / ".build-bench" / "sink"
PY = "/usr/bin/python3"
# Set by main: which generator, its extra arguments (--client-sigalgs), which sink.
GENERATOR = {"kind": "c", "extra": [], "threads": 1, "sink": "c"}
RELAYD_IP, SINK_IP, POSTFIX_IP, TLS_SINK_IP = "127.0.0.41", "127.0.0.42", "127.0.0.43", "127.0.0.44"
CLK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


# --- process accounting -------------------------------------------------------

def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(root):
    kids, out, todo = children_map(), [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(root):
    """User+system CPU of a process tree, including reaped children."""
    total = 0
    for p in tree(root):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / CLK


def rss_kib(root):
    """Proportional set size (PSS) of a process tree: shared pages are
    divided among the processes sharing them, so a many-process server
    (Postfix) is not charged its libraries once per process."""
    total = 0
    for p in tree(root):
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            try:
                total += int(open(f"/proc/{p}/statm").read().split()[1]) * PAGE_KIB
            except (FileNotFoundError, ProcessLookupError):
                pass
    return total


class Sampler:
    """Peak RSS of a process tree, sampled every 100 ms in the background."""

    def __init__(self, root):
        self.root, self.peak, self.proc = root, 0, None

    def __enter__(self):
        import threading
        self.stop = threading.Event()

        def loop():
            while not self.stop.is_set():
                self.peak = max(self.peak, rss_kib(self.root))
                self.stop.wait(0.1)
        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.thread.join(timeout=2)


def status_kib(pid, field):
    """One "VmRSS:"/"VmHWM:" style field of /proc/PID/status, in KiB (0 if gone)."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class MemorySampler:
    """Memory of a process tree over time, every `interval` seconds in the
    background: the sum of VmRSS and the sum of PSS over the tree (both
    peaks kept, and a timeline of the RSS sum), and the root process's
    own VmHWM, the kernel's exact peak RSS, which no sample can miss."""

    def __init__(self, root, interval=0.1):
        self.root, self.interval = root, interval
        self.peak_rss = self.peak_pss = self.hwm = self.processes = 0
        self.timeline = []

    def sample(self):
        pids = tree(self.root)
        rss = sum(status_kib(p, "VmRSS:") for p in pids)
        pss = rss_kib(self.root)
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        self.processes = max(self.processes, len(pids))
        self.hwm = max(self.hwm, status_kib(self.root, "VmHWM:"))
        self.timeline.append((round(time.monotonic() - self.t0, 2), rss))
        return rss

    def __enter__(self):
        import threading
        self.stop, self.t0 = threading.Event(), time.monotonic()

        def loop():
            while not self.stop.is_set():
                self.sample()
                self.stop.wait(self.interval)
        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.thread.join(timeout=10)
        self.sample()

    def coarse_timeline(self, points=200):
        step = max(1, len(self.timeline) // points)
        return self.timeline[::step]


def port_open(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(ip, port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{ip}:{port} did not open")


def raise_nofile():
    """As many descriptors as the hard limit allows (the idle suite needs
    10,000 in relayd and as many in the generator)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard) if want <= hard else want))
            return
        except (ValueError, OSError):
            continue


# --- the servers ----------------------------------------------------------------

class Relayd:
    name = "relayd"

    def __init__(self, work, certs, outbound, env=None):
        self.dir = work / "relayd"
        ec = f'ec_certificate = "{certs["ec"][0]}"\nec_key = "{certs["ec"][1]}"\n' if certs.get("ec") else ""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "relayd.conf").write_text(f"""
[server]
hostname = "relay.bench.test"
spool_dir = "spool"
[[listener]]
address = "{RELAYD_IP}:25"
kind = "smtp"
[tls]
certificate = "{certs["main"][0]}"
key = "{certs["main"][1]}"
{ec}[relay]
client_networks = ["127.0.0.0/8"]
[queue]
min_free_space = 0
retry_schedule = ["10s"]
[dns]
servers = ["127.0.0.1:9"]
[limits]
max_connections = 30000
max_connections_per_ip = 30000
[log]
level = "warning"
[outbound]
{outbound}
""")
        self.env = dict(os.environ, **(env or {}))
        self.proc = None

    def start(self):
        self.log = open(self.dir / "relayd.log", "ab")
        self.proc = subprocess.Popen([str(RELAYD), "run", "--config", str(self.dir / "relayd.conf"), "--grace", "2"],
                                     stdout=self.log, stderr=self.log, env=self.env, preexec_fn=raise_nofile,
                                     start_new_session=True)
        wait_port(RELAYD_IP, 25)
        self.root = self.proc.pid
        return self

    @property
    def target(self):
        return f"{RELAYD_IP}:25"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.log.close()
        shutil.rmtree(self.dir / "spool", ignore_errors=True)


class Postfix:
    name = "postfix"

    def __init__(self, work, certs, relay_tls, extra=""):
        self.dir = work / "postfix"
        cert, key = certs["main"]
        if certs.get("ec"):
            extra = f"smtpd_tls_eccert_file = {certs['ec'][0]}\nsmtpd_tls_eckey_file = {certs['ec'][1]}\n" + extra
        postfix_instance.write(self.dir, POSTFIX_IP, "relay.bench.test", work, f"""relayhost = [{TLS_SINK_IP if relay_tls else SINK_IP}]:25
smtp_tls_security_level = {"encrypt" if relay_tls else "none"}
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_received_header = yes
smtp_host_lookup = native
disable_dns_lookups = yes
""" + extra)

    def start(self):
        self.root = postfix_instance.start(self.dir)
        wait_port(POSTFIX_IP, 25)
        return self

    @property
    def target(self):
        return f"{POSTFIX_IP}:25"

    def stop(self):
        postfix_instance.stop(self.dir)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(self.root, 0)
                time.sleep(0.1)
            except ProcessLookupError:
                break


class Sink:
    def __init__(self, work, ip, certs=None, processes=2):
        self.ip, self.count_file, self.processes = ip, work / f"sink-{ip}.count", processes
        program = [str(SINK)] if GENERATOR["sink"] == "c" else [PY, str(HERE / "sink.py")]
        argv = [*program, "--listen", f"{ip}:25", "--count-file", str(self.count_file), "--processes", str(processes)]
        if certs:
            argv += ["--cert", str(certs["main"][0]), "--key", str(certs["main"][1])]
            if certs.get("ec"):
                argv += ["--ec-cert", str(certs["ec"][0]), "--ec-key", str(certs["ec"][1])]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(ip, 25)

    def count(self):
        return self.totals()[0]

    def totals(self):
        """(messages, DATA bytes) the sink has taken."""
        sys.path.insert(0, str(HERE))
        import sink
        return sink.totals(self.count_file, self.processes)

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=10)


# --- load -----------------------------------------------------------------------

def ensure_loadgen():
    """Builds the compiled generator (make -C bench) when it is missing or
    older than its source. Without gcc or libssl-dev the run stops here with
    a clear error: it never falls back to the Python generator on its own,
    whose figures are not comparable (it takes a large share of the cores)."""
    if all(b.exists() and b.stat().st_mtime >= (HERE / src).stat().st_mtime
           for b, src in ((LOADGEN, "loadgen.c"), (SINK, "sink.c"))):
        return
    if not shutil.which("gcc"):
        sys.exit("bench/loadgen.c needs gcc to build (apt-get install gcc libssl-dev), "
                 "or run with --generator python for the old, slower generator")
    if not Path("/usr/include/openssl/ssl.h").exists():
        sys.exit("bench/loadgen.c needs OpenSSL's headers (apt-get install libssl-dev), "
                 "or run with --generator python for the old, slower generator")
    r = subprocess.run(["make", "-s", "-C", str(HERE), f"OUT={LOADGEN.parent}"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not LOADGEN.exists() or not SINK.exists():
        sys.exit(f"building bench/loadgen.c and bench/sink.c failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")


def load(target, sessions, messages, starttls, seconds, size=4096, extra=()):
    common = ["--target", target, "--sessions", str(sessions), "--messages", str(messages), "--size", str(size),
              "--max-seconds", str(seconds), *extra]
    if GENERATOR["kind"] == "python":
        argv = [PY, str(HERE / "loadgen.py"), *common, "--processes", "2"]
    else:
        argv = [str(LOADGEN), *common, "--threads", str(GENERATOR["threads"]), *GENERATOR["extra"]]
    if starttls:
        argv.append("--starttls")
    # Its own process group, so that a generator past its bound is stopped
    # with its worker processes, by its PID.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=raise_nofile,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        raise RuntimeError(f"the load generator outlived its bound of {seconds} s")
    if proc.returncode != 0:
        raise RuntimeError(stderr[-2000:])
    return json.loads(stdout.strip().splitlines()[-1])


def drained(sink, timeout=90):
    """Waits until the sink's count has not moved for a second: the
    server measured before (relayd or Postfix, the cells alternate) has
    delivered its backlog. Without this, a server that accepts faster than
    it delivers (Postfix, by about a third in the 10-session cells) goes on
    delivering through the other server's turn, on the same two cores.
    Returns the sink's message count."""
    last, still, deadline = sink.count(), 0, time.monotonic() + timeout
    while time.monotonic() < deadline and still < 4:
        time.sleep(0.25)
        now = sink.count()
        still = still + 1 if now == last else 0
        last = now
    return last


def measure(server, sessions, messages, starttls, seconds, sink=None):
    """One load against `server`. With a sink, the run starts once the
    sink is quiet, and the server's CPU is taken when it is quiet again:
    the CPU per message includes delivering what was accepted (for both
    servers), not only accepting it."""
    delivered0 = drained(sink) if sink else 0
    cpu0 = cpu_seconds(server.root)
    with Sampler(server.root) as mem:
        r = load(server.target, sessions, messages, starttls, seconds)
    if sink:
        r["delivered_per_s"] = round((sink.count() - delivered0) / r["elapsed"], 1)
        drained(sink)
    r["cpu_ms_per_msg"] = round((cpu_seconds(server.root) - cpu0) * 1000 / max(1, r["sent"]), 3)
    r["peak_rss_kib"] = mem.peak
    return r


async def hold_idle(target, n, starttls, ready, release):
    host, port = target.split(":")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conns = []
    sem = asyncio.Semaphore(200)

    async def one():
        async with sem:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 30)
                await r.readline()
                w.write(b"EHLO idle.test\r\n")
                while (await r.readline())[3:4] == b"-":
                    pass
                if starttls:
                    w.write(b"STARTTLS\r\n")
                    await r.readline()
                    await w.start_tls(ctx)
                    w.write(b"EHLO idle.test\r\n")
                    while (await r.readline())[3:4] == b"-":
                        pass
                conns.append(w)
            except Exception:
                pass
    await asyncio.gather(*(one() for _ in range(n)))
    ready(len(conns))
    await release()
    for w in conns:
        w.close()


def idle_cost(server, n, starttls, seconds=120):
    """KiB of server memory per idle session, holding `n` sessions."""
    import threading
    base = rss_kib(server.root)
    result = {}
    held = threading.Event()
    done = threading.Event()

    async def release():
        while not done.is_set():
            await asyncio.sleep(0.1)

    def ready(k):
        result["held"] = k
        time.sleep(1.0)
        result["rss_kib"] = rss_kib(server.root)
        held.set()
        done.set()

    raise_nofile()
    t = threading.Thread(target=lambda: asyncio.run(hold_idle(server.target, n, starttls, ready, release)), daemon=True)
    t.start()
    held.wait(timeout=seconds)
    t.join(timeout=60)
    result["kib_per_session"] = round((result.get("rss_kib", base) - base) / max(1, result.get("held", 0)), 1)
    time.sleep(1)
    return result


def settled_totals(sink, timeout=10):
    """The sink's (messages, bytes) once they stop moving. Its processes
    write their counts every 100 ms, so a reading taken right after a load
    can miss that load's last messages and make the next run's delta too big."""
    last, deadline = sink.totals(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = sink.totals()
        if now == last:
            break
        last = now
    return last


def big_run(server, sink, sessions, size, seconds):
    """`sessions` concurrent STARTTLS sessions, one message of `size` bytes
    each (with dot lines), through `server` to `sink`. Memory is sampled
    from the first connection until the sink has every accepted message
    (bounded by `seconds` in all), and one second more."""
    msgs0, bytes0 = settled_totals(sink)
    start = time.monotonic()
    cpu0 = cpu_seconds(server.root)
    with MemorySampler(server.root) as mem:
        r = load(server.target, sessions, 1, True, seconds, size=size, extra=("--dot-lines",))
        r["accepted_s"] = round(time.monotonic() - start, 2)
        deadline = start + seconds

        def delivered():
            # Bytes too: a relay adds a Received field, never takes bytes away.
            msgs, size_out = sink.totals()
            return msgs - msgs0 >= r["sent"] and size_out - bytes0 >= r["bytes"]
        while not delivered() and time.monotonic() < deadline:
            time.sleep(0.1)
        r["delivered_s"] = round(time.monotonic() - start, 2)
        time.sleep(1.0)
    msgs, size_out = settled_totals(sink)
    r["delivered"], r["bytes_out"] = msgs - msgs0, size_out - bytes0
    r["rss_end_kib"] = mem.timeline[-1][1]
    r.update(peak_rss_kib=mem.peak_rss, peak_pss_kib=mem.peak_pss, vmhwm_kib=mem.hwm, processes=mem.processes,
             cpu_s=round(cpu_seconds(server.root) - cpu0, 2), timeline_rss_kib=mem.coarse_timeline())
    return r


def mib(kib):
    return round(kib / 1024, 1)


# --- the suites -----------------------------------------------------------------

def make_cert(work, kind):
    """(cert, key) of one self-signed chain: kind "ec" (P-256) or "rsa" (2048)."""
    key, cert = work / f"key-{kind}.pem", work / f"cert-{kind}.pem"
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if kind == "ec" else ["-newkey", "rsa:2048"]
    subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes",
                    "-days", "2", "-subj", "/CN=relay.bench.test", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def make_certs(work, setup):
    """{"main": (cert, key), "ec": (cert, key) or absent} for --certs."""
    if setup == "ecdsa":
        return {"main": make_cert(work, "ec")}
    if setup == "rsa":
        return {"main": make_cert(work, "rsa")}
    return {"main": make_cert(work, "rsa"), "ec": make_cert(work, "ec")}


def ratio_cell(rounds_a, rounds_b, key, higher_is_better=True):
    ratios = [a[key] / b[key] for a, b in zip(rounds_a, rounds_b) if a.get(key) and b.get(key)]
    if not ratios:
        return None
    return {"median": round(statistics.median(ratios), 2), "min": round(min(ratios), 2), "max": round(max(ratios), 2)}


def interleaved(a, b, rounds, fn):
    ra, rb = [], []
    for _ in range(rounds):
        ra.append(fn(a))
        rb.append(fn(b))
    return ra, rb


def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return round(statistics.median(vals), 2) if vals else None


# What each cell keeps of a run (the median over the rounds).
CELL_KEYS = ("msgs_per_s", "p50_ms", "p99_ms", "txn_p50_ms", "txn_p99_ms", "cpu_ms_per_msg", "peak_rss_kib",
             "delivered_per_s", "refused")


def main():
    global RELAYD
    p = argparse.ArgumentParser(
        description="relayd against a private Postfix on this machine, in the same run (bench/RESULTS.md).",
        epilog="Suites: accept, e2e, idle, durability (the default set); bigmsg, run only when named "
               "(--suites bigmsg): relayd's peak RSS with --big-sessions concurrent --big-mib MiB messages, STARTTLS in "
               "and out to a TLS sink, divided by the same run with 4 KiB messages, and relayd's peak divided by "
               "Postfix's on the same big load.")
    p.add_argument("--suites", "--suite", default="accept,e2e,idle,durability",
                   help="comma-separated: accept,e2e,idle,durability,bigmsg,spool (default: all but bigmsg and spool)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell (relayd, Postfix, relayd, ...)")
    p.add_argument("--certs", choices=("ecdsa", "rsa", "dual"), default="rsa",
                   help="server certificates: one RSA chain (default: what a Postfix install has), one ECDSA chain, "
                        "or dual RSA + ECDSA (relayd ec_certificate, Postfix smtpd_tls_eccert_file)")
    p.add_argument("--client-sigalgs", default=None,
                   help="signature algorithms the generator offers (OpenSSL list), e.g. to play an RSA-only client")
    p.add_argument("--generator", choices=("c", "python"), default="c",
                   help="c: bench/loadgen.c, built into .build-bench/ (default); python: bench/loadgen.py")
    p.add_argument("--gen-threads", type=int, default=1, help="event loops of the compiled generator")
    p.add_argument("--sink", choices=("c", "python"), default="c",
                   help="c: bench/sink.c, built into .build-bench/ (default); python: bench/sink.py, the sink of the "
                        "runs before 2026-12-02 afternoon, about five times the CPU per message")
    p.add_argument("--seconds", type=float, default=8, help="bound of each load cell")
    p.add_argument("--messages", type=int, default=100000,
                   help="messages per session in each load cell (a second bound beside --seconds; small for a smoke run)")
    p.add_argument("--idle", type=int, default=10000, help="idle sessions held by relayd")
    p.add_argument("--postfix-idle", type=int, default=100, help="idle sessions for Postfix (one process each)")
    p.add_argument("--json", default=str(HERE / "last-run.json"))
    p.add_argument("--relayd", default=None, help="the relayd binary (default: the release build)")
    p.add_argument("--big-sessions", type=int, default=20, help="bigmsg: concurrent sessions, one message each")
    p.add_argument("--big-mib", type=float, default=30, help="bigmsg: size of each big message in MiB")
    p.add_argument("--big-seconds", type=float, default=420,
                   help="bigmsg: bound of each run, from the first connection to the last delivery")
    args = p.parse_args()
    if args.relayd:
        RELAYD = Path(args.relayd)
    GENERATOR.update(kind=args.generator, threads=args.gen_threads, sink=args.sink,
                     extra=["--sigalgs", args.client_sigalgs] if args.client_sigalgs else [])
    if args.client_sigalgs and args.generator == "python":
        sys.exit("--client-sigalgs needs the compiled generator")
    if args.generator == "c" or args.sink == "c":
        ensure_loadgen()
    if os.geteuid() != 0:
        sys.exit("run as root: the servers listen on port 25 of 127.0.0.x")
    suites = args.suites.split(",")
    known = {"accept", "e2e", "idle", "durability", "bigmsg", "spool"}
    if not set(suites) <= known:
        sys.exit(f"unknown suite(s) {', '.join(sorted(set(suites) - known))}; known: {', '.join(sorted(known))}")
    if not RELAYD.exists():
        sys.exit(f"{RELAYD} is missing: swift build -c release --product relayd (make bench does)")
    # The sinks bind with SO_REUSEPORT, so a second bench run (make e2e's
    # bench smoke test uses these addresses too) would not fail to bind:
    # it would silently share the sinks' connections and counts with this
    # one. Refuse to start beside one; serialise with flock(1) if both may run.
    busy = [ip for ip in (RELAYD_IP, SINK_IP, POSTFIX_IP, TLS_SINK_IP) if port_open(ip, 25)]
    if busy:
        sys.exit(f"something already listens on {', '.join(ip + ':25' for ip in busy)}: another bench run?")
    work = Path(tempfile.mkdtemp(prefix="relayd-bench-"))
    os.chmod(work, 0o755)
    certs = make_certs(work, args.certs)
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": args.rounds,
               "cpus": os.cpu_count(), "generator": args.generator, "sink": args.sink, "certs": args.certs,
               "client_sigalgs": args.client_sigalgs, "cells": []}
    print(f"generator {'bench/loadgen.c' if args.generator == 'c' else 'bench/loadgen.py'}, sink bench/sink.{'c' if args.sink == 'c' else 'py'}, certificates {args.certs}"
          f"{', client sigalgs ' + args.client_sigalgs if args.client_sigalgs else ''}, {args.rounds} interleaved rounds",
          flush=True)
    started = []
    ceilings = {}  # TLS mode -> generator->sink msg/s, for each cell's share of it
    t_start = time.monotonic()

    def cell(suite, label, ra, rb, extra=None):
        c = {"suite": suite, "cell": label,
             "relayd": {k: med(ra, k) for k in CELL_KEYS},
             "postfix": {k: med(rb, k) for k in CELL_KEYS},
             "throughput_ratio": ratio_cell(ra, rb, "msgs_per_s"),
             "p99_ratio": ratio_cell(ra, rb, "p99_ms"),
             "txn_p99_ratio": ratio_cell(ra, rb, "txn_p99_ms"),
             "cpu_ratio": ratio_cell(ra, rb, "cpu_ms_per_msg")}
        if extra:
            c.update(extra)
        # Which leaves the clients got (the dual setup: ECDSA or RSA), summed over the rounds.
        if ra and "tls_peer_keys" in ra[0]:
            c["tls_peer_keys"] = {name: {k: sum(r["tls_peer_keys"][k] for r in rs) for k in rs[0]["tls_peer_keys"]}
                                  for name, rs in (("relayd", ra), ("postfix", rb))}
        results["cells"].append(c)
        r, q = c["relayd"], c["postfix"]
        tr = c["throughput_ratio"] or {}
        ceiling = ceilings.get("STARTTLS" if label.startswith("STARTTLS") else "plain")
        share = ""
        if ceiling and r["msgs_per_s"]:
            c["relayd_share_of_ceiling"] = round(r["msgs_per_s"] / ceiling, 2)
            share = f" | relayd {round(100 * r['msgs_per_s'] / ceiling)} % of ceiling"
        pr, tp = c["p99_ratio"] or {}, c["txn_p99_ratio"] or {}
        print(f"{suite:10} {label:28} relayd {r['msgs_per_s']:>8} msg/s p99 {r['p99_ms']:>8} ms  | postfix {q['msgs_per_s']:>8} msg/s p99 {q['p99_ms']:>8} ms"
              f" | ratio {tr.get('median')} ({tr.get('min')}–{tr.get('max')}){share}"
              f" | p99 ratio {pr.get('median')}, from MAIL {tp.get('median')} ({tp.get('min')}–{tp.get('max')})", flush=True)
        if "tls_peer_keys" in c and args.certs == "dual":
            print(f"{'':10} leaves the clients got: {c['tls_peer_keys']}", flush=True)

    try:
        plain_sink = Sink(work, SINK_IP)
        tls_sink = Sink(work, TLS_SINK_IP, certs)
        started += [plain_sink, tls_sink]

        # The generator's own ceiling: straight into the sinks.
        class Direct:
            def __init__(self, ip, root): self.target, self.root = f"{ip}:25", root
        for tls in (False, True):
            sink = tls_sink if tls else plain_sink
            r = measure(Direct(sink.ip, sink.proc.pid), 10, args.messages, tls, args.seconds)
            ceilings["STARTTLS" if tls else "plain"] = r["msgs_per_s"]
            results["cells"].append({"suite": "ceiling", "cell": f"generator->sink {'STARTTLS' if tls else 'plain'} 10 sessions", "sink": r})
            gen_cpu = f", generator CPU {round(r['gen_cpu_s'] * 1000 / max(1, r['sent']), 3)} ms/msg" if "gen_cpu_s" in r else ""
            keys = f", leaves {r['tls_peer_keys']}" if tls and "tls_peer_keys" in r else ""
            print(f"{'ceiling':10} generator->sink {'STARTTLS' if tls else 'plain':9} 10 sessions: {r['msgs_per_s']} msg/s p99 {r['p99_ms']} ms"
                  f"{gen_cpu}{keys}", flush=True)

        if "accept" in suites:
            relayd = Relayd(work, certs, f'smarthost = "sink"\n[[outbound.relay]]\nname = "sink"\naddress = "{SINK_IP}:25"\nlevel = "none"\n').start()
            postfix = Postfix(work, certs, relay_tls=False).start()
            started += [relayd, postfix]
            for label, sessions, tls in [("STARTTLS 4KiB 10 sessions", 10, True), ("STARTTLS 4KiB 100 sessions", 100, True),
                                         ("plain 4KiB 10 sessions", 10, False), ("plain 4KiB 100 sessions", 100, False)]:
                ra, rb = interleaved(relayd, postfix, args.rounds,
                                     lambda s: measure(s, sessions, args.messages, tls, args.seconds, sink=plain_sink))
                cell("accept", label, ra, rb)
            ra, rb = interleaved(relayd, postfix, args.rounds,
                                 lambda s: measure(s, 1, args.messages, True, args.seconds / 2, sink=plain_sink))
            cell("accept", "STARTTLS 4KiB 1 session", ra, rb)
            relayd.stop(); postfix.stop()
            started = [s for s in started if s not in (relayd, postfix)]

        if "e2e" in suites:
            relayd = Relayd(work, certs, f'smarthost = "tls-sink"\n[[outbound.relay]]\nname = "tls-sink"\naddress = "{TLS_SINK_IP}:25"\nlevel = "forced"\n').start()
            postfix = Postfix(work, certs, relay_tls=True).start()
            started += [relayd, postfix]
            ra, rb = interleaved(relayd, postfix, args.rounds,
                                 lambda s: measure(s, 10, args.messages, True, args.seconds, sink=tls_sink))
            cell("e2e", "STARTTLS in+out 10 sessions", ra, rb,
                 {"delivered_over_accepted_relayd": round(med(ra, "delivered_per_s") / max(1, med(ra, "msgs_per_s")), 2)})
            relayd.stop(); postfix.stop()
            started = [s for s in started if s not in (relayd, postfix)]

        if "idle" in suites:
            # Fresh servers for each measurement: memory a server kept from
            # an earlier batch of sessions (Postfix's idle smtpd processes,
            # relayd's grown heap) would otherwise be missed.
            for tls in (False, True):
                relayd = Relayd(work, certs, 'default_level = "none"\n').start()
                a = idle_cost(relayd, args.idle, tls)
                relayd.stop()
                postfix = Postfix(work, certs, relay_tls=False).start()
                b = idle_cost(postfix, args.postfix_idle, tls)
                postfix.stop()
                results["cells"].append({"suite": "idle", "cell": f"idle {'TLS' if tls else 'plain'}", "relayd": a, "postfix": b})
                print(f"{'idle':10} {'TLS' if tls else 'plain':28} relayd {a.get('held')} held, {a['kib_per_session']} KiB/session"
                      f" | postfix {b.get('held')} held, {b['kib_per_session']} KiB/session", flush=True)

        if "durability" in suites:
            out = f'smarthost = "sink"\n[[outbound.relay]]\nname = "sink"\naddress = "{SINK_IP}:25"\nlevel = "none"\n'
            on = Relayd(work, certs, out)
            off = Relayd(work, certs, out, env={"RELAYD_UNSAFE_NO_FSYNC": "1"})
            ra, rb = [], []
            for _ in range(args.rounds):
                for server, bucket in ((on, ra), (off, rb)):
                    server.start()
                    bucket.append(measure(server, 10, args.messages, False, args.seconds, sink=plain_sink))
                    server.stop()
            c = {"suite": "durability", "cell": "plain 4KiB 10 sessions, fsync on / off",
                 "fsync_on": med(ra, "msgs_per_s"), "fsync_off": med(rb, "msgs_per_s"), "ratio": ratio_cell(ra, rb, "msgs_per_s")}
            results["cells"].append(c)
            print(f"{'durability':10} fsync on {c['fsync_on']} msg/s, off {c['fsync_off']} msg/s, on/off {c['ratio']}", flush=True)
        if "spool" in suites:
            # The recycled queue files (Spool.swift) against the old spool
            # (pool size 0: a new inode per message, unlinked when done): the
            # same build, relayd alone, interleaved, relaying to the sink.
            out = f'smarthost = "sink"\n[[outbound.relay]]\nname = "sink"\naddress = "{SINK_IP}:25"\nlevel = "none"\n'
            on = Relayd(work, certs, out)
            off = Relayd(work, certs, out, env={"RELAYD_SPOOL_FREE_FILES": "0"})
            ra, rb = [], []
            for i in range(args.rounds):
                for server, bucket, name in ((off, rb, "unlink"), (on, ra, "recycle")):
                    server.start()
                    r = measure(server, 10, args.messages, False, args.seconds, sink=plain_sink)
                    server.stop()
                    bucket.append(r)
                    print(f"{'spool':10} round {i + 1} {name:8} {r['msgs_per_s']:>8} msg/s p99 {r['p99_ms']} ms"
                          f" CPU {r['cpu_ms_per_msg']} ms/msg delivered {r.get('delivered_per_s')}/s", flush=True)
            c = {"suite": "spool", "cell": "plain 4KiB 10 sessions, recycled queue files / unlink per message",
                 "recycle": {k: [r[k] for r in ra] for k in ("msgs_per_s", "p99_ms", "cpu_ms_per_msg", "delivered_per_s")},
                 "unlink": {k: [r[k] for r in rb] for k in ("msgs_per_s", "p99_ms", "cpu_ms_per_msg", "delivered_per_s")},
                 "ratio": ratio_cell(ra, rb, "msgs_per_s")}
            results["cells"].append(c)
            print(f"{'spool':10} recycle / unlink msg/s {c['ratio']}", flush=True)
        if "bigmsg" in suites:
            big = int(args.big_mib * 1024 * 1024)
            n = args.big_sessions
            forced = f'smarthost = "tls-sink"\n[[outbound.relay]]\nname = "tls-sink"\naddress = "{TLS_SINK_IP}:25"\nlevel = "forced"\n'
            runs = {}
            # The generator and sink alone, for scale: how fast this machine
            # moves the same bytes with no relay in between.
            class Direct:
                def __init__(self, ip, root): self.target, self.root = f"{ip}:25", root
            runs["ceiling"] = big_run(Direct(TLS_SINK_IP, tls_sink.proc.pid), tls_sink, n, big, args.big_seconds)
            # A fresh relayd for each size, so its VmHWM is that run's peak.
            for label, size in (("relayd_big", big), ("relayd_small", 4096)):
                relayd = Relayd(work, certs, forced).start()
                started.append(relayd)
                time.sleep(0.5)
                runs[label] = big_run(relayd, tls_sink, n, size, args.big_seconds)
                runs[label]["rss_idle_kib"] = status_kib(relayd.root, "VmRSS:")
                relayd.stop()
                started.remove(relayd)
            for label, size in (("postfix_big", big), ("postfix_small", 4096)):
                postfix = Postfix(work, certs, relay_tls=True,
                                  extra=f"message_size_limit = {big * 2}\n").start()
                started.append(postfix)
                time.sleep(0.5)
                runs[label] = big_run(postfix, tls_sink, n, size, args.big_seconds)
                postfix.stop()
                started.remove(postfix)
            rb, rs, pb, ps = runs["relayd_big"], runs["relayd_small"], runs["postfix_big"], runs["postfix_small"]
            c = {"suite": "bigmsg", "cell": f"{n} x {args.big_mib:g} MiB vs {n} x 4 KiB, STARTTLS in+out", "sessions": n,
                 "big_bytes": big, **runs,
                 "relayd_hwm_ratio": round(rb["vmhwm_kib"] / max(1, rs["vmhwm_kib"]), 2),
                 "relayd_rss_ratio": round(rb["peak_rss_kib"] / max(1, rs["peak_rss_kib"]), 2),
                 "relayd_over_postfix_pss": round(rb["peak_pss_kib"] / max(1, pb["peak_pss_kib"]), 2),
                 "relayd_over_postfix_rss": round(rb["peak_rss_kib"] / max(1, pb["peak_rss_kib"]), 2)}
            results["cells"].append(c)

            def line(name, r, size_label):
                # VmHWM is one process's own: the figure for relayd, not for
                # Postfix's many processes (its master's says nothing).
                hwm = f"VmHWM {mib(r['vmhwm_kib'])}, " if r["processes"] == 1 else ""
                return (f"{'bigmsg':10} {name:7} {n} x {size_label:>9}: peak RSS {mib(r['peak_rss_kib']):>7} MiB"
                        f" ({hwm}PSS {mib(r['peak_pss_kib'])}, {r['processes']} process(es)),"
                        f" end {mib(r['rss_end_kib'])} MiB | accepted {r['sent']}/{n} in {r['accepted_s']} s,"
                        f" delivered {r['delivered']} by {r['delivered_s']} s | {round(r['bytes'] / 1e6, 1)} MB in,"
                        f" {round(r['bytes_out'] / 1e6, 1)} MB out | CPU {r['cpu_s']} s")
            q = runs["ceiling"]
            print(f"{'bigmsg':10} ceiling generator->TLS sink {n} x {args.big_mib:g} MiB: {round(q['bytes'] / 1e6, 1)} MB"
                  f" in {q['accepted_s']} s", flush=True)
            print(line("relayd", rb, f"{args.big_mib:g} MiB"), flush=True)
            print(line("relayd", rs, "4 KiB"), flush=True)
            print(line("postfix", pb, f"{args.big_mib:g} MiB"), flush=True)
            print(line("postfix", ps, "4 KiB"), flush=True)
            print(f"{'bigmsg':10} relayd peak RSS {args.big_mib:g} MiB / 4 KiB: {c['relayd_hwm_ratio']}x (VmHWM),"
                  f" {c['relayd_rss_ratio']}x (sampled) | relayd / Postfix on {args.big_mib:g} MiB:"
                  f" {c['relayd_over_postfix_pss']}x PSS, {c['relayd_over_postfix_rss']}x RSS", flush=True)
    finally:
        for s in reversed(started):
            try:
                s.stop()
            except Exception as e:
                print(f"stopping {s}: {e}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = round(time.monotonic() - t_start, 1)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"total {results['seconds']} s; details in {args.json}")


if __name__ == "__main__":
    main()
