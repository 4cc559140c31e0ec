"""The bed's lifecycle: a second bed right after the first works, and an
interrupted bed leaves no process, port or folder behind. Runs after
test_bed.py's module-wide bed is gone."""
import json
import os
import signal
import subprocess
import time

import bed as bedmod
from bed import AUTH_DNS_IP, Bed, DNS_IP, NGINX_IP, SILENT_IP, pid_alive, port_open


def test_a_second_bed_right_after_works_and_leaves_nothing():
    for _ in range(2):
        b = Bed().start()
        pids, folder = list(b.pids), b.dir
        assert port_open(DNS_IP, 53) or b.dns_answers("valid.test", "MX")[0] == "NOERROR"
        b.stop()
        assert not any(pid_alive(p) for p in pids)
        assert not folder.exists()
        for s, mx in b.mx_hosts():
            assert not port_open(mx["ip"], 25), mx
        assert not port_open(SILENT_IP, 443)
        assert b.dns_answers("dane.test", "SOA", server=AUTH_DNS_IP) is None, "the signed zone's server survived"


def test_sigint_leaves_no_process_port_or_folder():
    proc = subprocess.Popen([bedmod.PYTHON, str(bedmod.HERE / "bed.py")], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        info = json.loads(line)
    except Exception:
        proc.kill()
        raise
    assert all(pid_alive(p) for p in info["pids"])
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in info["pids"]):
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in info["pids"]), "a bed process survived SIGINT"
    assert not os.path.exists(info["dir"]), "the bed folder survived SIGINT"
    for s, mx in Bed(workdir="/nonexistent").mx_hosts():
        assert not port_open(mx["ip"], 25), f"port 25 still open on {mx['ip']}"
    assert not port_open(NGINX_IP, 443)
    assert not port_open(SILENT_IP, 443)
    assert Bed(workdir="/nonexistent").dns_answers("dane.test", "SOA", server=AUTH_DNS_IP) is None
