"""`relayd state migrate` and the start-time migration against a real
PostgreSQL (issue 17's foundation): --dry-run changes nothing, two racing
migrators apply the schema once, `relayd run` applies it at start and
starts anyway when the database is down, and a password in the URL is
refused by check-config."""
import subprocess
import time
from pathlib import Path

import pytest

from postgres_harness import binaries
from relayd_harness import RELAYD, REPO, Relayd

pytestmark = pytest.mark.skipif(binaries() is None, reason="PostgreSQL server binaries missing (postgresql package)")


def state_section(pg, extra=""):
    return f"""
[state]
backend = "postgres"
postgres = "{pg.url()}"
sslmode = "disable"
instance = "e2e-a"
migrations = "{REPO / 'migrations'}"
{extra}
"""


def migrate(config, *args):
    return subprocess.run([str(RELAYD), "state", "migrate", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60)


def test_dry_run_prints_and_applies_nothing_then_migrate_applies_once(pg, tmp_path):
    r = Relayd(tmp_path / "relayd", extra=state_section(pg))
    dry = migrate(r.config, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would apply 0001_initial.sql (version 1):" in dry.stdout
    assert "CREATE TABLE mta_sts_policies" in dry.stdout
    assert pg.psql("SELECT to_regclass('relayd_schema_migrations') IS NULL") == "t"

    # Two migrators at once: both succeed, the schema is applied once.
    procs = [subprocess.Popen([str(RELAYD), "state", "migrate", "--config", str(r.config)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = sorted(o[0].strip() for o in outs)
    assert said == ["applied 0001_initial.sql (version 1)\napplied 0002_tlsrpt_rows.sql (version 2)\n"
                    "applied 0003_learned_actions_until.sql (version 3)",
                    "schema up to date (3 migrations applied)"], said
    assert pg.psql("SELECT version || ':' || name FROM relayd_schema_migrations ORDER BY version").split() == \
        ["1:initial", "2:tlsrpt_rows", "3:learned_actions_until"]

    again = migrate(r.config, "--dry-run")
    assert again.returncode == 0 and again.stdout.strip() == "schema up to date (3 migrations applied)"


def test_run_applies_at_start_and_starts_without_the_database(pg, tmp_path):
    r = Relayd(tmp_path / "relayd", extra=state_section(pg)).start()
    try:
        deadline = time.monotonic() + 15
        while "shared state: schema ready" not in r.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "applied=0001_initial.sql,0002_tlsrpt_rows.sql,0003_learned_actions_until.sql" in r.log_text()
    finally:
        r.stop()
    assert pg.psql("SELECT count(*) FROM relayd_schema_migrations") == "3"

    pg.stop()
    down = Relayd(tmp_path / "relayd-down", extra=state_section(pg)).start()
    try:
        deadline = time.monotonic() + 15
        while "migrations not applied" not in down.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "shared state: migrations not applied" in down.log_text()
        assert "PostgreSQL unreachable" in down.log_text()
    finally:
        down.stop()


def test_check_config_refuses_a_password_in_the_url(tmp_path):
    r = Relayd(tmp_path / "relayd", extra="""
[state]
backend = "postgres"
postgres = "postgresql://relayd:hunter2@127.0.0.1/relayd"
sslmode = "disable"
""")
    out = subprocess.run([str(RELAYD), "check-config", "--config", str(r.config)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "state.postgres: the URL holds a password; put it in a passfile" in out.stderr
    assert "hunter2" not in out.stdout + out.stderr
