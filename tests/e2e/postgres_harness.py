"""A private PostgreSQL for end-to-end tests: initdb and pg_ctl from the
Debian package in a temp dir, 127.0.0.1 only at a free port, no Unix
socket, trust auth for one role; stopped by the postmaster's PID. As root
the server runs as the `postgres` user (PostgreSQL refuses root)."""
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bed import wait_for
from relayd_harness import REPO, free_port


def wait_schema_ready(*instances):
    """Waits until every relayd instance has logged that the shared-state
    schema is ready (its migrations ran or were found applied)."""
    wait_for(lambda: all("shared state: schema ready" in r.log_text() for r in instances), 30,
             "every instance to see the shared-state schema")


def binaries():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return str(Path(found[-1]).parent) if found else None


class Postgres:
    USER = "relayd_test"

    def __init__(self):
        self.bin = binaries()
        if self.bin is None:
            raise RuntimeError("PostgreSQL server binaries missing: install the postgresql package")
        # Its own folder under /tmp: the postgres user cannot enter pytest's
        # (0700, root's) tmp_path.
        self.dir = Path(tempfile.mkdtemp(prefix="relayd-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.pid = None
        self.run_as = "postgres" if os.geteuid() == 0 else None
        if self.run_as:
            shutil.chown(self.dir, self.run_as, self.run_as)
        self._tool("initdb", "-D", str(self.data), "-U", self.USER, "--auth=trust", "-E", "UTF8", "--no-sync")

    def _tool(self, name, *args):
        argv = [f"{self.bin}/{name}", *args]
        if self.run_as:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        return subprocess.run(argv, cwd=self.dir, capture_output=True, text=True, check=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    def url(self, database="postgres"):
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{database}"

    def start(self):
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off"
        self._tool("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", options, "-w", "-t", "60", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split("\n")[0])
        return self

    def stop(self):
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            os.kill(pid, signal.SIGINT)  # fast shutdown
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (self.data / "postmaster.pid").exists():
            time.sleep(0.05)
        if (self.data / "postmaster.pid").exists():
            os.kill(pid, signal.SIGKILL)

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def state_section(self, instance, sync_interval="1s"):
        """relayd's [state] table for this server: loopback without TLS,
        quick syncs, the repository's migrations."""
        return f"""[state]
backend = "postgres"
postgres = "{self.url()}"
sslmode = "disable"
instance = "{instance}"
sync_interval = "{sync_interval}"
statement_timeout = "2s"
migrations = "{REPO / 'migrations'}"
"""

    def psql(self, sql, database="postgres"):
        return self._tool("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER, "-d", database,
                          "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql).stdout.strip()
