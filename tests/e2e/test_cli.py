"""The relayd command line: version, check-config exit codes and messages."""
import re
import subprocess

from relayd_harness import REPO, RELAYD, Relayd


def run(*args):
    return subprocess.run([str(RELAYD), *args], capture_output=True, text=True, timeout=30)


def test_version_names_openssl3_and_cares():
    out = run("version")
    assert out.returncode == 0
    assert re.search(r"^OpenSSL 3\.\d+\.\d+", out.stdout, re.M), out.stdout
    m = re.search(r"^c-ares (\d+)\.(\d+)\.(\d+)", out.stdout, re.M)
    assert m and (int(m.group(1)), int(m.group(2))) >= (1, 18), out.stdout


def test_check_config_accepts_the_example():
    out = run("check-config", "--config", str(REPO / "config" / "relayd.conf.example"))
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout


def test_check_config_reports_every_problem_with_line_and_key(tmp_path):
    r = Relayd(tmp_path / "r")
    text = r.config.read_text()
    text = text.replace('hostname = "relay.e2e.test"', 'hostname = "relay.e2e.test"\nhostnmae = "typo"')
    text = text.replace('idle_timeout = "30s"', 'idle_timeout = "30s"\nmax_recipients = "many"')
    text = text.replace(f'certificate = "', 'certificate = "/nonexistent')
    text = text.replace("[outbound]\n", '[outbound]\ndefault_level = "secure"\n')
    r.config.write_text(text)
    lines = text.split("\n")
    out = run("check-config", "--config", str(r.config))
    assert out.returncode == 1
    errors = out.stderr.strip().split("\n")

    def line_of(fragment):
        return next(i + 1 for i, l in enumerate(lines) if fragment in l)

    expected = {
        "server.hostnmae": line_of("hostnmae"),
        "limits.max_recipients": line_of('max_recipients = "many"'),
        "tls.certificate": line_of("certificate ="),
        "outbound.default_level": line_of('default_level = "secure"'),
    }
    for key, line in expected.items():
        assert any(f"relayd.conf:{line}: {key}: " in e for e in errors), (key, line, errors)
    assert errors[-1].endswith("4 problems found")


def test_run_refuses_a_broken_config(tmp_path):
    r = Relayd(tmp_path / "r")
    r.config.write_text(r.config.read_text().replace('kind = "smtps"', 'kind = "smtps"\nrequire_tls = false'))
    out = run("run", "--config", str(r.config))
    assert out.returncode == 1
    assert "listener[2].require_tls" in out.stderr
