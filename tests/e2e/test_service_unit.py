"""config/relayd.service: systemd accepts it, its sandbox rates an offline
exposure of 2.0 or lower, and a real relayd run stays inside that sandbox.

There is no systemd as PID 1 on the test machine, so the sandbox cannot be
switched on for real. Instead relayd runs under strace through everything
the service does (check-config, TLS submission with AUTH, a delivery over
STARTTLS after a DNS MX lookup, SIGHUP, SIGUSR1, SIGTERM), and every system
call, socket family, /proc and /dev path and written path it used is
checked against what the committed unit allows.
"""
import os
import re
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import threading
import time

from conftest import need
from relayd_harness import FIXTURES, PASSWORD, RELAYD, REPO, USER, Relayd, free_port

UNIT = REPO / "config" / "relayd.service"
RECEIVER = REPO / "tests" / "bed" / "receiver.py"
MAX_EXPOSURE = 2.0
INSTALLED_BINARY = "/usr/local/bin/relayd"


def unit_settings(path=UNIT):
    """[Service] settings of a unit file, key -> list of values in order."""
    settings, section = {}, None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def unit_with_built_binary(tmp_path):
    """The committed unit with only the binary's path changed, so `verify`
    can check that ExecStart/ExecStartPre name an executable."""
    text = UNIT.read_text()
    assert INSTALLED_BINARY in text
    copy = tmp_path / "relayd.service"
    copy.write_text(text.replace(INSTALLED_BINARY, str(RELAYD)))
    return copy


def test_systemd_accepts_the_unit(tmp_path):
    need("systemd-analyze")
    copy = unit_with_built_binary(tmp_path)
    out = subprocess.run(["systemd-analyze", "verify", "--man=false", str(copy)],
                         capture_output=True, text=True, timeout=60)
    # verify exits 0 even for an unknown key or a bad value ("ignoring"),
    # so any message about the unit is a failure too.
    complaints = [l for l in (out.stdout + out.stderr).splitlines() if "relayd.service" in l]
    assert out.returncode == 0 and not complaints, out.stdout + out.stderr


def test_offline_security_exposure_is_at_most_2():
    need("systemd-analyze")
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for relayd\.service: (\d+(?:\.\d+)?)", out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, out.stdout


# --- the sandbox against a real run ------------------------------------------

def syscall_groups():
    """Every @group systemd knows, name -> members (names and @groups)."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), set())
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.add(line.strip())
    return groups


def expand(names, groups):
    result = set()
    for n in names:
        result |= expand(groups[n], groups) if n.startswith("@") else {n}
    return result


def allowed_syscalls(filters, groups):
    """systemd's reading of SystemCallFilter= lines: the first one sets an
    allow list (or a deny list with ~); later lines add to it, ~ lines take
    away."""
    assert filters and not filters[0].startswith("~"), "SystemCallFilter= must start with an allow list"
    allowed = set()
    for value in filters:
        deny = value.startswith("~")
        names = expand(value.lstrip("~").split(), groups)
        allowed = allowed - names if deny else allowed | names
    return allowed


def dns_server(records):
    """A UDP DNS server on loopback answering from `records`
    ((name, qtype) -> [rdata]); other names get NXDOMAIN. Returns its port
    and a stop function."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    names = {name for name, _ in records}
    stop = threading.Event()

    def answer(query):
        qid, flags = struct.unpack(">HH", query[:4])
        i, labels = 12, []
        while query[i]:
            labels.append(query[i + 1:i + 1 + query[i]].decode().lower())
            i += 1 + query[i]
        qtype = struct.unpack(">H", query[i + 1:i + 3])[0]
        question = query[12:i + 5]
        name = ".".join(labels)
        rdatas = records.get((name, qtype), [])
        rcode = 0 if name in names else 3
        header = struct.pack(">HHHHHH", qid, 0x8180 | (flags & 0x0100) | rcode, 1, len(rdatas), 0, 0)
        rrs = b"".join(b"\xc0\x0c" + struct.pack(">HHIH", qtype, 1, 60, len(r)) + r for r in rdatas)
        return header + question + rrs

    def serve():
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(4096)
                sock.sendto(answer(query), peer)
            except (socket.timeout, IndexError, struct.error):
                continue

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    def close():
        stop.set()
        t.join(5)
        sock.close()
    return sock.getsockname()[1], close


def wire_name(name):
    return b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"


def wait_until(predicate, timeout, what, details=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} within {timeout}s\n{details()}")


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


STRACE = ["strace", "-f", "-qq", "-y", "-s", "64", "-e", "signal=none"]
CALL = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)")


WRITES = re.compile(r"^\d+\s+(open|openat|creat|mkdir|mkdirat|unlink|unlinkat|rename|renameat|renameat2|link|linkat|"
                    r"truncate|chmod|fchmodat|utimensat)\((.*)$")
WRITE_FLAGS = re.compile(r"O_(WRONLY|RDWR|CREAT|TRUNC)")


def written_paths(call, args, cwd):
    """Paths a file-changing call names, made absolute: a relative name is
    taken against the `-y` annotation of the dirfd before it, or `cwd`."""
    if call in ("open", "openat") and not WRITE_FLAGS.search(args):
        return []
    paths = []
    for dirfd, name in re.findall(r'(?:(AT_FDCWD|\d+<[^>]*>), )?"([^"]*)"', args):
        if name.startswith("/"):
            paths.append(name)
        elif dirfd.endswith(">"):
            paths.append(dirfd[dirfd.index("<") + 1:-1] + "/" + name)
        else:
            paths.append(f"{cwd}/{name}")
    return paths


def traced(trace, cwd):
    """What an strace -f -y log shows: system call names, socket families,
    /proc and /dev paths opened or looked at (a name that does not exist
    is left out: looking for it is harmless), and paths written."""
    calls, families, paths, writes = set(), set(), set(), set()
    for line in trace.read_text(errors="replace").splitlines():
        m = CALL.match(line)
        if not m:
            continue
        calls.add(m.group(1))
        f = re.search(r"\bsocket\((AF_\w+)", line)
        if f:
            families.add(f.group(1))
        if not line.rstrip().endswith("ENOENT (No such file or directory)"):
            paths.update(re.findall(r'(?:open|openat|stat|newfstatat|statx|access|faccessat2?|readlink|readlinkat)\('
                                    r'(?:[^,"]*, )?"(/(?:proc|dev)[^"]*)"', line))
        w = WRITES.match(line)
        if w:
            writes.update(written_paths(w.group(1), w.group(2), cwd))
    return calls, families, paths, writes


# What PrivateDevices= leaves in /dev (systemd.exec(5)), and what
# ProcSubset=pid + ProtectProc=invisible leave in /proc: a process's own
# entries only.
PRIVATE_DEV = re.compile(r"^/dev(/(null|zero|full|random|urandom|tty|ptmx|pts(/.*)?|shm(/.*)?|mqueue(/.*)?|log|stdin|stdout|stderr|fd(/.*)?))?$")
OWN_PROC = re.compile(r"^/proc(/(self|thread-self|\d+)(/.*)?)?$")


def test_a_real_run_stays_inside_the_sandbox(tmp_path):
    need("strace")
    need("systemd-analyze")
    settings = unit_settings()
    allowed = allowed_syscalls(settings["SystemCallFilter"], syscall_groups())
    families = set(" ".join(settings["RestrictAddressFamilies"]).split())
    assert not any(f.startswith("~") for f in families), "RestrictAddressFamilies= is expected to be an allow list"

    mx_port = free_port()
    dns_port, stop_dns = dns_server({
        ("dest.test", 15): [struct.pack(">H", 10) + wire_name("mx.dest.test")],
        ("mx.dest.test", 1): [socket.inet_aton("127.0.0.1")],
        ("mx.dest.test", 28): [],
    })
    record = tmp_path / "received.jsonl"
    receiver = subprocess.Popen(["/usr/bin/python3", str(RECEIVER), "--listen", f"127.0.0.1:{mx_port}",
                                 "--mode", "tls", "--name", "mx.dest.test", "--record", str(record),
                                 "--cert", str(FIXTURES / "mx.pem"), "--key", str(FIXTURES / "mx.key")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relayd = Relayd(tmp_path / "relayd", relay_domains=(), dns_servers=(f"127.0.0.1:{dns_port}",),
                    queue='retry_schedule = ["1s"]',
                    outbound=f'default_level = "opportunistic"\nmx_port = {mx_port}\nconnect_timeout = "3s"')
    traces = [tmp_path / "check-config.trace", tmp_path / "run.trace"]
    proc = None
    try:
        wait_until(lambda: port_open(mx_port), 15, "receiver listening")

        # ExecStartPre= runs under the same sandbox.
        out = subprocess.run([*STRACE, "-o", str(traces[0]), str(RELAYD), "check-config", "--config", str(relayd.config)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr

        log = open(relayd.log_path, "ab")
        proc = subprocess.Popen([*STRACE, "-o", str(traces[1]), str(RELAYD), "run", "--config", str(relayd.config),
                                 "--grace", "5"], stdout=log, stderr=log, cwd=relayd.dir, start_new_session=True)
        log.close()
        wait_until(lambda: relayd.log_text().count("msg=listening") >= 3 or proc.poll() is not None, 60, "listening",
                   relayd.log_text)
        assert proc.poll() is None, relayd.log_text()
        wait_until(lambda: (relayd.spool / "relayd.pid").exists(), 10, "pid file", relayd.log_text)
        pid = int((relayd.spool / "relayd.pid").read_text().split()[0])

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        # Submission: STARTTLS and AUTH (crypt_r), then a message to relay.
        with smtplib.SMTP("127.0.0.1", relayd.submission_port, timeout=30) as s:
            s.starttls(context=ctx)
            s.login(USER, PASSWORD)
            s.sendmail(USER, ["user@dest.test"], b"Subject: sandbox-1\r\n\r\nbody\r\n")
        # SMTPS: implicit TLS, AUTH, a second message.
        with smtplib.SMTP_SSL("127.0.0.1", relayd.smtps_port, timeout=30, context=ctx) as s:
            s.login(USER, PASSWORD)
            s.sendmail(USER, ["user@dest.test"], b"Subject: sandbox-2\r\n\r\nbody\r\n")

        def delivered():
            text = record.read_text() if record.exists() else ""
            return "sandbox-1" in text and "sandbox-2" in text
        wait_until(delivered, 60, "both messages delivered", relayd.log_text)
        assert '"tls": true' in record.read_text()

        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: "msg=reloaded" in relayd.log_text(), 30, "reload", relayd.log_text)
        flush = subprocess.run([str(RELAYD), "queue", "flush", "--config", str(relayd.config)],
                               capture_output=True, text=True, timeout=30)
        assert flush.returncode == 0, flush.stderr
        time.sleep(1)
        os.kill(pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, relayd.log_text()
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        receiver.terminate()
        receiver.wait(timeout=10)
        stop_dns()

    calls, used_families, paths, writes = set(), set(), set(), set()
    for t in traces:
        c, f, p, w = traced(t, relayd.dir)
        calls |= c
        used_families |= f
        paths |= p
        writes |= w
    assert calls, "strace recorded nothing"
    assert not calls - allowed, f"system calls outside SystemCallFilter=: {sorted(calls - allowed)}"
    assert used_families <= families, f"socket families outside RestrictAddressFamilies=: {sorted(used_families - families)}"
    outside = sorted(p for p in paths if not (OWN_PROC.match(p) or PRIVATE_DEV.match(p)))
    assert not outside, f"/proc or /dev paths the sandbox hides: {outside}"
    # ProtectSystem=strict: only ReadWritePaths= (the spool) is writable.
    spool = str(relayd.spool) + "/"
    assert writes, "strace recorded no writes"
    read_only = sorted(p for p in writes if not (p + "/").startswith(spool) and p != "/dev/null")
    assert not read_only, f"writes outside the spool (ReadWritePaths=): {read_only}"
