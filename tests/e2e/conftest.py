import shutil
import subprocess

import pytest

from relayd_harness import RELAYD, Relayd


def pytest_configure(config):
    if not RELAYD.exists():
        raise pytest.UsageError(f"{RELAYD} is missing: run `swift build --product relayd` first")


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
