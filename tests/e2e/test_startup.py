"""Start-up: a listener that cannot bind ends relayd with exit 1 and a
message (issue 18, item 3)."""
import socket
import subprocess

from relayd_harness import RELAYD, Relayd


def run(*args, timeout=30):
    return subprocess.run([str(RELAYD), *args], capture_output=True, text=True, timeout=timeout)


def test_a_listener_whose_port_is_taken_ends_relayd_with_exit_1(tmp_path):
    r = Relayd(tmp_path / "r")
    # The second of three listeners: the first is bound when the second
    # fails, and closing it is what used to crash (SIGILL from libdispatch).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", r.submission_port))
        taken.listen()
        out = run("run", "--config", str(r.config))
    assert out.returncode == 1, f"exit {out.returncode} (negative: killed by a signal)\n{out.stderr[-2000:]}"
    assert f"cannot listen on 127.0.0.1:{r.submission_port}: Address already in use" in out.stderr
    assert "msg=listening" not in out.stderr, "no listener was announced"
