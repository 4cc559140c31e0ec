"""A private Postfix instance (`postfix -c DIR`), never the system's:
its own main.cf, master.cf, queue and log under one folder, listening on
port 25 of one loopback address. Used by the test bed (a receiving MX)
and by the benchmarks (the relay relayd is compared with)."""
import shutil
import subprocess
from pathlib import Path


def write(folder, listen_ip, hostname, log_prefix, extra):
    """Lays out folder/{etc,queue,data}; `extra` is appended to main.cf."""
    d = Path(folder)
    for sub in ("etc", "queue", "data"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    shutil.chown(d / "data", "postfix")
    (d / "etc" / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = {hostname}
mydestination =
mynetworks = 127.0.0.0/8
maillog_file_prefixes = {log_prefix}
maillog_file = {d}/maillog
alias_maps =
alias_database =
biff = no
""" + extra)
    # Debian's master.cf, with the smtpd service bound to our address (a
    # service name "IP:port" needs no interface check) and postlogd for
    # maillog_file.
    out = []
    for line in Path("/usr/share/postfix/master.cf.dist").read_text().splitlines():
        if line.startswith("smtp ") and " smtpd" in line and "inet" in line:
            line = f"{listen_ip}:25 inet n - n - - smtpd"
        out.append(line)
    out.append("postlog   unix-dgram n  -       n       -       1       postlogd")
    (d / "etc" / "master.cf").write_text("\n".join(out) + "\n")
    return d


def start(folder):
    """Starts the instance; returns the master PID."""
    d = Path(folder)
    r = subprocess.run(["postfix", "-c", str(d / "etc"), "start"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        log = (d / "maillog").read_text(errors="replace") if (d / "maillog").exists() else ""
        raise RuntimeError(f"postfix did not start: {r.stdout}{r.stderr}{log[-2000:]}")
    pidfile = d / "queue" / "pid" / "master.pid"
    import time
    deadline = time.monotonic() + 15
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(pidfile.read_text().split()[0])


def stop(folder):
    subprocess.run(["postfix", "-c", str(Path(folder) / "etc"), "stop"], capture_output=True, timeout=60)
