"""contrib/: the Grafana dashboard and the Prometheus alert rules, checked
with the real promtool, and the Prometheus harness (prometheus_harness.py)
checked against the real prometheus scraping a stub exposition. No relayd
is needed (NEEDS_RELAYD, see conftest.py)."""
import http.server
import json
import re
import socket
import subprocess
import threading

import pytest

from bed import pid_alive
from conftest import need
from prometheus_harness import ALERTS, Prometheus, PrometheusError
from relayd_harness import REPO

NEEDS_RELAYD = False

DASHBOARD = REPO / "contrib" / "grafana" / "relayd.json"
ALERTS_TEST = REPO / "contrib" / "prometheus" / "alerts_test.yml"

# What relayd exports (its /metrics), with each metric's labels.
COUNTERS_AND_GAUGES = {
    "relayd_smtp_sessions_total": {"listener", "tls"},
    "relayd_smtp_sessions_active": {"listener"},
    "relayd_messages_received_total": {"listener"},
    "relayd_messages_refused_total": {"reason"},
    "relayd_auth_failures_total": set(),
    "relayd_delivery_attempts_total": {"result"},
    "relayd_outbound_tls_sessions_total": {"layer", "outcome"},
    "relayd_tls_failures_total": {"result_type"},
    "relayd_queue_messages": {"state"},
    "relayd_queue_oldest_message_age_seconds": set(),
    "relayd_tls_exclusive_drops_total": set(),
    "relayd_downgrades_suspected_total": set(),
    "relayd_policy_cache_entries": {"kind"},
    "relayd_build_info": {"version", "openssl", "cares"},
}
HISTOGRAMS = {"relayd_delivery_duration_seconds", "relayd_spool_commit_duration_seconds"}
METRICS = {**COUNTERS_AND_GAUGES,
           **{h + "_bucket": {"le"} for h in HISTOGRAMS},
           **{h + s: set() for h in HISTOGRAMS for s in ("_sum", "_count")}}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}

REQUIRED_PANELS = {
    "Mail in", "Mail out by result", "TLS outcome share by layer", "TLS failures by type",
    "Queue size by state", "Oldest queued message age", "Sessions per listener", "Refusals",
    "TLS-exclusive drops", "Spool commit latency", "Suspected downgrades",
}
ALERT_NAMES = {"RelaydQueueGrowing", "RelaydQueueOldMessage", "RelaydTLSFailuresRising",
               "RelaydTLSExclusiveDrop", "RelaydDowngradeSuspected"}

# Grafana's interval variables, and what promtool sees instead.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                "offset", "bool", "inf", "nan", "atan2",
                # aggregations, which may be followed by `by (...)` before their parenthesis
                "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile"}


@pytest.fixture(autouse=True)
def _tools():
    need("promtool")


def dashboard():
    return json.loads(DASHBOARD.read_text())


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def dashboard_exprs():
    """(panel title, refId, expr) of every query target."""
    return [(p["title"], t.get("refId"), t["expr"])
            for p in all_panels(dashboard()["panels"]) for t in p.get("targets", []) if "expr" in t]


def promql(expr):
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def alert_rules():
    """{alert name: its text block} from alerts.yml, read without a YAML
    library (promtool checks the YAML itself)."""
    text = ALERTS.read_text()
    starts = [m for m in re.finditer(r"^\s*- alert: (\S+)\s*$", text, re.M)]
    return {m.group(1): text[m.end():(starts[i + 1].start() if i + 1 < len(starts) else len(text))]
            for i, m in enumerate(starts)}


def alert_expr(block):
    m = re.search(r"^(\s*)expr: \|\n((?:\1  .*\n|\s*\n)+)", block, re.M)
    if m:
        return m.group(2)
    return re.search(r"^\s*expr: (.+)$", block, re.M).group(1)


def names_in(expr):
    """The metric names and the label names an expression uses."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                 # string literals
    bare = re.sub(r"\[[^\]]*\]", "", bare)                            # range and subquery windows
    labels = set()
    for m in re.finditer(r"\{([^}]*)\}", bare):                       # selectors' matchers
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", m.group(1)))
    bare = re.sub(r"\{[^}]*\}", " ", bare)
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", bare):
        labels |= {l.strip() for l in m.group(1).split(",") if l.strip()}
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", bare)
    idents = re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", bare)
    metrics = {i for i in idents if i.lower() not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]", i)}
    return metrics, labels


def check_names(expr):
    metrics, labels = names_in(expr)
    assert metrics, f"no metric in {expr!r}"
    unknown = metrics - METRICS.keys()
    assert not unknown, f"{expr!r} uses {sorted(unknown)}, not a relayd metric"
    allowed = set().union(*(METRICS[m] for m in metrics)) | TARGET_LABELS
    assert labels <= allowed, f"{expr!r} uses labels {sorted(labels - allowed)} that none of {sorted(metrics)} has"


def promtool(*args, timeout=60):
    return subprocess.run(["promtool", *map(str, args)], capture_output=True, text=True, timeout=timeout)


# --- the dashboard -----------------------------------------------------------

def test_dashboard_loads_with_a_prometheus_datasource_variable():
    d = dashboard()
    assert 36 <= d["schemaVersion"] <= 39
    assert d["uid"] == "relayd" and d["title"] == "relayd"
    ds_vars = [v for v in d["templating"]["list"] if v["type"] == "datasource" and v["query"] == "prometheus"]
    assert [v["name"] for v in ds_vars] == ["DS_PROMETHEUS"]
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in all_panels(d["panels"])]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in all_panels(d["panels"]):
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
            assert p["targets"], f"panel {p['title']!r} has no query"
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]


def test_dashboard_has_the_required_panels():
    titles = {p["title"] for p in all_panels(dashboard()["panels"])}
    assert REQUIRED_PANELS <= titles, f"missing: {sorted(REQUIRED_PANELS - titles)}"


def test_every_dashboard_query_is_valid_promql(tmp_path):
    exprs = dashboard_exprs()
    assert len(exprs) >= len(REQUIRED_PANELS)
    for title, ref, expr in exprs:
        left = re.findall(r"\$\w+", promql(expr))
        assert not left, f"{title} {ref}: variables promtool cannot check: {left}"
    # promtool checks PromQL in rule files: each query becomes a recording
    # rule. JSON is YAML, so the rule file needs no YAML library.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel{i}", "expr": promql(expr)} for i, (_, _, expr) in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules, indent=2))
    r = promtool("check", "rules", path)
    assert r.returncode == 0, "\n".join(f"panel{i}: {t} {ref}: {e}" for i, (t, ref, e) in enumerate(exprs)) + r.stdout + r.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in r.stdout


def test_an_invalid_query_is_caught(tmp_path):
    # The check above would notice a broken query: promtool does reject one.
    path = tmp_path / "bad.yml"
    path.write_text(json.dumps({"groups": [{"name": "d", "rules": [
        {"record": "dashboard:bad", "expr": "sum by (listener) (rate(relayd_messages_received_total[5m])"}]}]}))
    assert promtool("check", "rules", path).returncode != 0


def test_dashboard_queries_use_only_relayd_metrics_and_their_labels():
    for title, ref, expr in dashboard_exprs():
        check_names(expr)


def test_dashboard_shows_every_metric_relayd_exports():
    used = set().union(*(names_in(e)[0] for _, _, e in dashboard_exprs()))
    exported = set(COUNTERS_AND_GAUGES) | {h + "_bucket" for h in HISTOGRAMS}
    assert exported <= used, f"not on the dashboard: {sorted(exported - used)}"


def test_histograms_are_read_through_their_buckets():
    for title, ref, expr in dashboard_exprs():
        if "histogram_quantile" in expr:
            assert re.search(r"rate\(relayd_\w+_seconds_bucket\[", expr) and "by (le)" in expr, (title, expr)


def test_name_check_catches_a_stranger():
    with pytest.raises(AssertionError):
        check_names("rate(node_cpu_seconds_total[5m])")
    with pytest.raises(AssertionError):
        check_names("sum by (domain) (relayd_delivery_attempts_total)")
    with pytest.raises(AssertionError):
        check_names("relayd_delivery_duration_seconds")   # a histogram has no bare series
    check_names('sum by (le) (rate(relayd_spool_commit_duration_seconds_bucket{job="relayd"}[5m]))')


# --- the alert rules ---------------------------------------------------------

def test_alert_rules_pass_promtool_check():
    r = promtool("check", "rules", ALERTS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in r.stdout


def test_every_alert_has_for_severity_summary_and_description():
    rules = alert_rules()
    assert set(rules) == ALERT_NAMES
    for name, block in rules.items():
        assert re.search(r"^\s*for: \d+[smh]\s*$", block, re.M), name
        assert re.search(r"^\s*severity: (warning|critical)\s*$", block, re.M), name
        assert re.search(r"^\s*summary: \S", block, re.M), name
        assert re.search(r"^\s*description: \S", block, re.M), name


def test_alert_rules_use_only_relayd_metrics_and_their_labels():
    for name, block in alert_rules().items():
        check_names(alert_expr(block))


def test_alert_unit_tests_pass():
    # Each alert fires on its synthetic series and stays quiet on the quiet ones.
    r = promtool("test", "rules", ALERTS_TEST, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_is_unit_tested_firing_and_quiet():
    text = ALERTS_TEST.read_text()
    for name in ALERT_NAMES:
        evals = re.findall(rf"alertname: {name}\n\s*exp_alerts:( \[\])?", text)
        assert "" in evals, f"{name}: no test where it fires"
        assert " []" in evals, f"{name}: no test where it stays quiet"


# --- the Prometheus harness --------------------------------------------------

class Stub:
    """A loopback HTTP server serving a text exposition at /metrics: build
    info, a counter that counts the scrapes, and a drop counter the test
    sets. Served from a thread of this process (no PID of its own)."""

    def __init__(self):
        self.scrapes = 0
        self.drops = 0
        self.lock = threading.Lock()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                with stub.lock:
                    stub.scrapes += 1
                    body = (
                        "# HELP relayd_build_info relayd build\n"
                        "# TYPE relayd_build_info gauge\n"
                        'relayd_build_info{version="x",openssl="y",cares="z"} 1\n'
                        "# HELP relayd_messages_received_total Messages accepted\n"
                        "# TYPE relayd_messages_received_total counter\n"
                        f'relayd_messages_received_total{{listener="smtp"}} {stub.scrapes}\n'
                        "# TYPE relayd_tls_exclusive_drops_total counter\n"
                        f"relayd_tls_exclusive_drops_total {stub.drops}\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = "127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def stub():
    with Stub() as s:
        yield s


@pytest.fixture
def prometheus(tmp_path, stub):
    need("prometheus")
    prom = Prometheus(tmp_path / "prom", [stub.address]).start(timeout=30)
    yield prom
    prom.stop()


def test_harness_scrapes_a_target_and_answers_queries(prometheus, stub):
    assert prometheus.wait_for_targets_up(timeout=15) == {stub.address: True}
    info = prometheus.wait_for_samples("relayd_build_info", lambda s: len(s) == 1, timeout=10)
    assert info[0].value == 1
    assert {k: info[0].labels[k] for k in ("version", "openssl", "cares", "instance", "job")} == \
        {"version": "x", "openssl": "y", "cares": "z", "instance": stub.address, "job": "relayd"}
    # Scraped every second: the scrape counter keeps climbing.
    first = prometheus.wait_for_value('relayd_messages_received_total{listener="smtp"}', lambda v: v >= 1, timeout=10)
    later = prometheus.wait_for_value('relayd_messages_received_total{listener="smtp"}', lambda v: v >= first + 3,
                                      timeout=15)
    assert later <= stub.scrapes
    assert prometheus.wait_for_value("sum(rate(relayd_messages_received_total[10s]))", lambda v: v > 0, timeout=10) < 5
    assert prometheus.value("relayd_no_such_metric") is None
    assert [s.value for s in prometheus.query("scalar(vector(2))")] == [2.0]
    with pytest.raises(PrometheusError):
        prometheus.query("sum(")


def test_harness_loads_the_alert_rules_and_an_alert_fires(prometheus, stub):
    assert prometheus.rules() == {name: "alerting" for name in ALERT_NAMES}
    prometheus.wait_for_value("relayd_tls_exclusive_drops_total", lambda v: v == 0, timeout=15)
    assert prometheus.alerts() == []
    with stub.lock:
        stub.drops = 1
    alert = prometheus.wait_for_alert("RelaydTLSExclusiveDrop", timeout=20)[0]
    assert alert["labels"] == {"alertname": "RelaydTLSExclusiveDrop", "severity": "critical",
                               "instance": stub.address}
    assert "tls-exclusive" in alert["annotations"]["summary"]


def test_harness_stops_prometheus_by_pid(tmp_path, stub):
    need("prometheus")
    prom = Prometheus(tmp_path / "prom", [stub.address]).start(timeout=30)
    pid = prom.proc.pid
    assert (tmp_path / "prom" / "pids").read_text().split() == [str(pid)]
    assert pid_alive(pid)
    assert prom.stop() == 0
    assert not pid_alive(pid)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", prom.port), timeout=1).close()
    assert prom.stop() == 0      # a second stop is harmless


def test_harness_refuses_a_broken_rules_file(tmp_path, stub):
    need("prometheus")
    bad = tmp_path / "bad.yml"
    bad.write_text('{"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "sum("}]}]}')
    prom = Prometheus(tmp_path / "prom", [stub.address], rule_files=[bad])
    with pytest.raises(PrometheusError, match="check config"):
        prom.start()
    assert prom.proc is None
