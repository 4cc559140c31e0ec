import shutil
import subprocess
from pathlib import Path

import pytest

from bed import Bed
from postgres_harness import Postgres
from relayd_harness import RELAYD, Relayd


def pytest_collection_modifyitems(session, config, items):
    # A module that sets NEEDS_RELAYD = False (test_contrib.py: the
    # dashboard, the alert rules and the Prometheus harness) runs without a
    # relayd build; any other collected test still stops the run up front.
    if RELAYD.exists():
        return
    here = Path(__file__).resolve().parent
    if any(getattr(item.module, "NEEDS_RELAYD", True) for item in items
           if item.module is not None and here in Path(item.module.__file__).resolve().parents):
        raise pytest.UsageError(f"{RELAYD} is missing: run `swift build --product relayd` first")


@pytest.fixture(scope="module")
def bed():
    """The test bed (DNS, receivers, policy hosts), one per test module
    that asks for it, stopped when the module is done."""
    b = Bed().start()
    yield b
    b.stop()


@pytest.fixture
def pg():
    """A private PostgreSQL (initdb/pg_ctl in a temporary folder) per test,
    removed after it."""
    server = Postgres().start()
    yield server
    server.remove()


@pytest.fixture
def relayd(tmp_path):
    """A running relayd with trusted network 127.0.0.1/32 and relay domain example.org."""
    r = Relayd(tmp_path / "relayd").start()
    yield r
    r.stop()


@pytest.fixture
def make_relayd(tmp_path):
    started = []

    def make(**kw):
        r = Relayd(tmp_path / f"relayd{len(started)}", **kw)
        started.append(r)
        return r

    yield make
    for r in started:
        try:
            r.stop()
        except Exception:
            pass


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (make test-deps installs it)")
