"""`make bench` must keep working: a one-round, one-second run of the
accept suite against the debug build (the numbers mean nothing here; the
harness, the Postfix instance, the sinks and the ratio table must)."""
import json
import subprocess

from relayd_harness import REPO, RELAYD


def test_bench_harness_runs_and_prints_ratios(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run(["/usr/bin/python3", str(REPO / "bench" / "run.py"), "--suites", "accept", "--rounds", "1",
                        "--seconds", "1", "--relayd", str(RELAYD), "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "ceiling" in r.stdout and "ratio" in r.stdout
    result = json.loads(out.read_text())
    assert result["sink"] == "c", "the compiled sink is the default"
    accept = [c for c in result["cells"] if c["suite"] == "accept"]
    # Issue 16's four cells, and the one-session cell.
    assert sorted(c["cell"] for c in accept) == sorted([
        "STARTTLS 4KiB 10 sessions", "STARTTLS 4KiB 100 sessions", "plain 4KiB 10 sessions",
        "plain 4KiB 100 sessions", "STARTTLS 4KiB 1 session"])
    for c in accept:
        assert c["relayd"]["msgs_per_s"] > 0 and c["postfix"]["msgs_per_s"] > 0, c
        assert c["throughput_ratio"]["median"] > 0
        assert c["relayd"]["refused"] == 0, c
        # Both p99 measures, and each cell's share of the generator's ceiling.
        assert c["relayd"]["p99_ms"] and c["relayd"]["txn_p99_ms"], c
        assert c["txn_p99_ratio"]["median"] > 0, c
        assert 0 < c["relayd_share_of_ceiling"] < 1, c
        # The servers' CPU is taken after their backlog was delivered.
        assert c["relayd"]["delivered_per_s"] is not None and c["postfix"]["delivered_per_s"] is not None, c
    report = subprocess.run(["/usr/bin/python3", str(REPO / "bench" / "report.py"), str(out)],
                            capture_output=True, text=True, timeout=30)
    assert report.returncode == 0 and "Goals:" in report.stdout
