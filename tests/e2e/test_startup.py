"""Start-up and the spool (issue 18, item 3): a listener that cannot bind
ends relayd with exit 1 and a message, one daemon per spool, and
`relayd queue` signals only the daemon that holds the spool lock."""
import os
import signal
import socket
import subprocess
import time

from relayd_harness import RELAYD, Relayd


def run(*args, timeout=30):
    return subprocess.run([str(RELAYD), *args], capture_output=True, text=True, timeout=timeout)


def snapshot(root):
    """Every file under the spool with its bytes (directories as None)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


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


def test_a_second_daemon_on_the_same_spool_exits_1_and_touches_nothing(relayd):
    # A write in progress (tmp/) and a message being delivered (active/):
    # start-up recovery would delete the first and take back the second.
    (relayd.spool / "tmp" / "AAAAAAAAAAAAAAAAAAAAA").write_bytes(b"relayd-queue 1\nhalf written")
    (relayd.spool / "active" / "BBBBBBBBBBBBBBBBBBBBB").write_bytes(b"being delivered")
    before = snapshot(relayd.spool)
    second = Relayd(relayd.dir.parent / "second")  # its own ports, the same spool
    second.config.write_text(second.config.read_text().replace('spool_dir = "spool"', f'spool_dir = "{relayd.spool}"'))
    out = run("run", "--config", str(second.config), timeout=15)
    assert out.returncode == 1, out.stderr[-2000:]
    assert f"locked by relayd pid {relayd.proc.pid}" in out.stderr, out.stderr[-2000:]
    assert snapshot(relayd.spool) == before
    assert relayd.proc.poll() is None, "the first daemon still runs"
    assert int((relayd.spool / "relayd.pid").read_text()) == relayd.proc.pid


def test_a_stale_pid_file_never_gets_sigusr1(tmp_path):
    r = Relayd(tmp_path / "r")
    # A crashed daemon's pid file, and that pid now belongs to someone else:
    # SIGUSR1's default action would kill it.
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        r.spool.mkdir(parents=True, exist_ok=True)
        (r.spool / "relayd.pid").write_text(f"{bystander.pid}\n")
        out = run("queue", "flush", "--config", str(r.config))
        assert out.returncode == 0, out.stderr
        assert "flushed 0 messages" in out.stdout, out.stdout
        time.sleep(0.2)
        assert bystander.poll() is None, f"the unrelated process got a signal ({bystander.returncode})"
    finally:
        bystander.kill()
        bystander.wait(timeout=10)


def test_queue_waits_for_a_lock_holder_that_takes_no_requests_and_never_signals_it(tmp_path):
    """The lock held by a process that is not a ready daemon (here a bare
    flock, as a daemon still recovering its spool holds it): no signal, and
    after the timeout a clear error."""
    r = Relayd(tmp_path / "r")
    r.spool.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        ["python3", "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT, 0o644)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)",
         str(r.spool / "relayd.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        (r.spool / "relayd.pid").write_text(f"{holder.pid}\n")
        start = time.monotonic()
        out = run("queue", "flush", "--config", str(r.config))
        assert out.returncode == 1
        assert "takes no queue requests" in out.stderr, out.stderr
        assert time.monotonic() - start >= 9
        assert holder.poll() is None, "the lock holder got a signal"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
