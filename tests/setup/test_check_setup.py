"""scripts/check-setup.sh: a missing capability stops `make test` with one
line naming the package, and the Makefile installs every package it names.
Capabilities are hidden with the real tools (a Perl module or Python
package that fails to load), not with fakes of the tools themselves."""
import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check-setup.sh"


def check(mode="test", **env):
    return subprocess.run([str(SCRIPT), mode], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_this_machine_passes():
    r = check()
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


def test_swaks_without_net_ssleay_is_one_line_naming_the_package(tmp_path):
    # What --no-install-recommends leaves: swaks installed, Net::SSLeay not.
    (tmp_path / "Net").mkdir()
    (tmp_path / "Net" / "SSLeay.pm").write_text('die "hidden by the test\\n";\n')
    r = check(PERL5LIB=str(tmp_path))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "setup error: swaks cannot do STARTTLS or TLS on connect (no Net::SSLeay)"
        " — install libnet-ssleay-perl (make test-deps)"]


def test_missing_dnspython_is_one_line_naming_the_package(tmp_path):
    (tmp_path / "dns").mkdir()
    (tmp_path / "dns" / "__init__.py").write_text('raise ImportError("hidden by the test")\n')
    r = check(PYTHONPATH=str(tmp_path))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "setup error: python3 cannot import dns (dnspython) — install python3-dnspython (make test-deps)"]


def test_run_mode_does_not_ask_for_test_peers(tmp_path):
    (tmp_path / "Net").mkdir()
    (tmp_path / "Net" / "SSLeay.pm").write_text('die "hidden by the test\\n";\n')
    r = check("run", PERL5LIB=str(tmp_path))
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


def make_list(name):
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    return set(re.search(rf"^{name}\s*=(.*)$", text, re.M).group(1).split())


def test_makefile_installs_exactly_the_packages_the_checks_name():
    named = set(re.findall(r'fail "(?:[^"\\]|\\.)*" ([\w.+-]+)', SCRIPT.read_text()))
    assert named == make_list("RUN_PKGS") | make_list("TEST_PKGS")


def test_release_builds_name_the_executable():
    """`make run`, `make build` and `make bench` build the release binary
    only: a whole-package release build also compiles RelayTestSupport,
    whose @testable imports fail outside a testing build (this broke
    `make run` once)."""
    text = (REPO / "Makefile").read_text()
    recipes = [line.strip() for line in text.splitlines() if "build -c release" in line]
    assert recipes, "no release build in the Makefile"
    assert all("--product relayd" in r for r in recipes), recipes
