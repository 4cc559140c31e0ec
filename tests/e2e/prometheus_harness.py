"""A private Prometheus for end-to-end tests: it scrapes the given targets
every second, evaluates contrib/prometheus/alerts.yml every second, and
answers PromQL through its HTTP API.

    prom = Prometheus(tmp_path / "prom", ["127.0.0.1:9464"]).start()
    try:
        prom.wait_for_targets_up(timeout=10)
        prom.wait_for_value('relayd_messages_received_total{listener="smtp"}', lambda v: v >= 1, timeout=10)
        prom.query('sum by (result) (relayd_delivery_attempts_total)')  # [Sample(labels, value), ...]
        prom.wait_for_alert("RelaydTLSExclusiveDrop", timeout=10)
    finally:
        prom.stop()

The server is the Debian `prometheus` binary, started as its own process
(own session) on 127.0.0.1:<free port> with its TSDB in the work folder;
its PID is recorded in <workdir>/pids and it is stopped by that PID
(SIGTERM, then SIGKILL to its process group after a bounded wait), also at
interpreter exit. Every wait is bounded. The config is written as JSON,
which is YAML, so no YAML library is needed.
"""
import atexit
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import namedtuple
from pathlib import Path

from relayd_harness import REPO, free_port

ALERTS = REPO / "contrib" / "prometheus" / "alerts.yml"
PROMETHEUS = "prometheus"
PROMTOOL = "promtool"

Sample = namedtuple("Sample", "labels value")


class PrometheusError(RuntimeError):
    pass


class Prometheus:
    """One Prometheus server on its own config, TSDB folder and port."""

    def __init__(self, workdir, targets, rule_files=(ALERTS,), job="relayd", metrics_path="/metrics",
                 scrape_interval="1s", evaluation_interval="1s"):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.tsdb = self.dir / "tsdb"
        self.config = self.dir / "prometheus.yml"
        self.log_path = self.dir / "prometheus.log"
        self.proc = None
        self.config.write_text(json.dumps({
            "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                       "evaluation_interval": evaluation_interval},
            "rule_files": [str(Path(f).resolve()) for f in rule_files],
            "scrape_configs": [{"job_name": job, "metrics_path": metrics_path,
                                "static_configs": [{"targets": list(targets)}]}],
        }, indent=2) + "\n")

    # --- lifecycle ----------------------------------------------------------

    def start(self, timeout=30):
        """Checks the config with promtool, starts the server and waits (at
        most `timeout` seconds) until /-/ready answers 200."""
        check = subprocess.run([PROMTOOL, "check", "config", str(self.config)], capture_output=True, text=True,
                               timeout=30)
        if check.returncode != 0:
            raise PrometheusError(f"promtool check config failed:\n{check.stdout}{check.stderr}")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.tsdb}",
                 f"--web.listen-address={self.address}", "--storage.tsdb.retention.time=1d",
                 "--log.level=info"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        with open(self.dir / "pids", "a") as f:
            f.write(f"{self.proc.pid}\n")
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"prometheus was not ready in {timeout}s:\n{self.log_text()[-3000:]}")

    def _ready(self):
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout=15):
        """SIGTERM to the recorded PID, a bounded wait, then SIGKILL to its
        process group. Returns the exit status (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # --- HTTP API -----------------------------------------------------------

    def api(self, path, params=None, timeout=5):
        """GET /api/v1/<path>; returns `data` of a success answer, raises
        PrometheusError with Prometheus' error text otherwise."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            try:
                body = json.load(e)
            except ValueError:
                raise PrometheusError(f"{path}: HTTP {e.code}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params or ''}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr, at=None):
        """Evaluates `expr` now (or at the Unix time `at`): a list of
        Sample(labels: dict, value: float) for an instant vector, one Sample
        with empty labels for a scalar. NaN and ±Inf come back as floats."""
        params = {"query": expr}
        if at is not None:
            params["time"] = str(at)
        data = self.api("query", params)
        kind, result = data["resultType"], data["result"]
        if kind == "vector":
            return [Sample(r["metric"], float(r["value"][1])) for r in result]
        if kind == "scalar":
            return [Sample({}, float(result[1]))]
        raise PrometheusError(f"{expr}: a {kind} result, not an instant vector or scalar")

    def value(self, expr):
        """The one value of `expr`, None when it has no sample; more than
        one series is an error (aggregate them in the expression)."""
        samples = self.query(expr)
        if len(samples) > 1:
            raise PrometheusError(f"{expr}: {len(samples)} series, expected one: {samples}")
        return samples[0].value if samples else None

    def wait_for_value(self, expr, predicate, timeout=15, interval=0.25):
        """Polls until predicate(value(expr)) is true and returns the value.
        The predicate only ever gets a float: while `expr` has no sample it
        is not called and the wait goes on. TimeoutError after `timeout`
        seconds names the last value seen (None: no sample)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = self.value(expr)
            if last is not None and predicate(last):
                return last
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{expr}: no value satisfying the predicate in {timeout}s (last: {last})")
            time.sleep(interval)

    def wait_for_samples(self, expr, predicate, timeout=15, interval=0.25):
        """Like wait_for_value, for expressions with several series:
        predicate gets the list of Samples (possibly empty)."""
        deadline = time.monotonic() + timeout
        while True:
            samples = self.query(expr)
            if predicate(samples):
                return samples
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{expr}: no result satisfying the predicate in {timeout}s (last: {samples})")
            time.sleep(interval)

    def targets_up(self):
        """{instance: True when its last scrape succeeded} for every active
        target; an instance not scraped yet is False."""
        data = self.api("targets", {"state": "active"})
        return {t["labels"].get("instance", t["scrapeUrl"]): t["health"] == "up" for t in data["activeTargets"]}

    def wait_for_targets_up(self, timeout=15):
        """Waits until every target has been scraped successfully."""
        deadline = time.monotonic() + timeout
        while True:
            up = self.targets_up()
            if up and all(up.values()):
                return up
            if time.monotonic() >= deadline:
                raise TimeoutError(f"targets not all up in {timeout}s: {up}")
            time.sleep(0.25)

    def rules(self):
        """{rule name: its type ("alerting" or "recording")} loaded now."""
        return {r["name"]: r["type"] for g in self.api("rules")["groups"] for r in g["rules"]}

    def alerts(self, state=None):
        """Active alerts (pending or firing, or only `state`): a list of
        dicts with labels, annotations, state, value."""
        found = self.api("alerts")["alerts"]
        return [a for a in found if state is None or a["state"] == state]

    def wait_for_alert(self, name, state="firing", timeout=15):
        """Waits until alert `name` is in `state`; returns its alerts."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [a for a in self.alerts(state) if a["labels"].get("alertname") == name]
            if hits:
                return hits
            if time.monotonic() >= deadline:
                raise TimeoutError(f"alert {name} not {state} in {timeout}s (active: {self.alerts()})")
            time.sleep(0.25)
