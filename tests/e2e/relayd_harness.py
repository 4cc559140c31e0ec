"""Starting and stopping relayd for end-to-end tests, and reading its spool.

Every process is started with a recorded PID and stopped by it; every wait
is bounded; only 127.0.0.0/8 addresses are used.
"""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RELAYD = REPO / ".build" / "debug" / "relayd"
FIXTURES = REPO / "Tests" / "RelayTestSupport" / "Fixtures"
PASSWORD = "s3cret-pass"
USER = "alice@example.test"


_handed_out = set()


def free_port(host="127.0.0.1"):
    """A port free now and not handed out before in this test run: the
    kernel may give the same ephemeral port to two binds in a row once the
    first socket is closed, and two listeners on one port stop relayd."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh ephemeral port in 200 tries")


def hash_password(password):
    out = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password.encode(),
                         capture_output=True, check=True, timeout=10)
    return out.stdout.decode().strip()


class Relayd:
    """One relayd process on its own config, spool and ports."""

    def __init__(self, workdir, client_networks=("127.0.0.1/32",), relay_domains=("example.org",),
                 extra="", limits="", outbound="", queue="", dns_servers=("127.0.0.1:9",), ca_bundle=None,
                 idle_timeout="30s", certificate="mx", tls="", dns="", metrics=False):
        # DNS defaults to a dead loopback port: a test relayd must never ask
        # the machine's own resolver (which is not on loopback).
        # `certificate` names a fixture pair: "mx" (P-256, signed by the test
        # CA) or "rsa" (self-signed RSA, the only kind static-RSA key
        # exchange can be tried against).
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.spool = self.dir / "spool"
        self.smtp_port = free_port()
        self.submission_port = free_port()
        self.smtps_port = free_port()
        self.log_path = self.dir / "relayd.log"
        self.proc = None
        # metrics=True adds a [metrics] table on a free port: scrape
        # self.metrics_address (prometheus_harness.Prometheus takes it as a target).
        self.metrics_port = free_port() if metrics else None
        self.metrics_address = f"127.0.0.1:{self.metrics_port}" if metrics else None
        metrics_table = f'[metrics]\naddress = "{self.metrics_address}"\n' if metrics else ""
        users = self.dir / "users"
        if not users.exists():
            users.write_text(f"{USER}:{hash_password(PASSWORD)}\n")
        nets = ", ".join(f'"{n}"' for n in client_networks)
        doms = ", ".join(f'"{d}"' for d in relay_domains)
        self.config = self.dir / "relayd.conf"
        self.config.write_text(f"""
[server]
hostname = "relay.e2e.test"
spool_dir = "spool"
users_file = "users"

[[listener]]
address = "127.0.0.1:{self.smtp_port}"
kind = "smtp"

[[listener]]
address = "127.0.0.1:{self.submission_port}"
kind = "submission"

[[listener]]
address = "127.0.0.1:{self.smtps_port}"
kind = "smtps"

[tls]
certificate = "{FIXTURES / (certificate + '.pem')}"
key = "{FIXTURES / (certificate + '.key')}"
ca_bundle = "{ca_bundle or ''}"
{tls}

[relay]
client_networks = [{nets}]
domains = [{doms}]
{extra}
[queue]
min_free_space = 0
{queue}

[dns]
servers = [{", ".join(f'"{d}"' for d in dns_servers)}]
{dns}

[outbound]
{outbound}

[limits]
idle_timeout = "{idle_timeout}"
{limits}
[log]
level = "debug"
{metrics_table}""")

    def start(self, timeout=15):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(RELAYD), "run", "--config", str(self.config), "--grace", "5"],
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relayd exited with {self.proc.returncode}:\n{self.log_text()}")
            if self.log_text().count("msg=listening") >= 3 + self._listening_before:
                return self
            time.sleep(0.05)
        raise TimeoutError(f"relayd did not listen in {timeout}s:\n{self.log_text()}")

    _listening_before = 0

    def restart(self):
        self._listening_before = self.log_text().count("msg=listening")
        return self.start()

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send_signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
            raise
        finally:
            self.log.close()

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()

    # --- spool -------------------------------------------------------------

    def queued_ids(self, folder=None):
        """Queue ids in one spool folder, or (no folder) wherever the queue
        runner may have moved them: incoming, active, deferred, hold."""
        if folder is None:
            return sorted({i for f in ("incoming", "active", "deferred", "hold") for i in self.queued_ids(f)})
        d = self.spool / folder
        return sorted(p.name for p in d.iterdir()) if d.exists() else []

    def read_queued(self, qid, folder=None):
        """The queue file of `qid`, wherever the queue runner has put it."""
        folders = [folder] if folder else ["incoming", "active", "deferred", "hold"]
        for f in folders:
            p = self.spool / f / qid
            try:
                return parse_queue_file(p.read_bytes())
            except FileNotFoundError:
                continue
        raise FileNotFoundError(qid)



def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def parse_queue_file(data):
    """An independent reader of relayd's queue file format (Queue/QueueFile.swift)."""
    end_len = 4 + 16 + 1
    assert data.endswith(b"\n") and len(data) > end_len, "no end record"
    end = data[-end_len:-1].decode()
    assert end.startswith("end "), "no end record"
    assert end[4:] == "%016x" % fnv1a64(data[:-end_len]), "checksum mismatch"
    header, _, rest = data.partition(b"\n\n")
    lines = header.decode().split("\n")
    assert lines[0] == "relayd-queue 1"
    records = {}
    rcpts = []
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        if key == "rcpt":
            rcpts.append(value)
        else:
            records[key] = value
    size = int(records["size"])
    body = rest[:size]
    assert rest[size:size + 1] == b"\n" and len(rest) == size + 1 + end_len
    records["rcpt"] = rcpts
    return records, body
