"""The relayd test bed: real peers on 127.0.0.0/8, brought up from the
scenario table (scenarios.toml) and torn down by recorded PID.

  - a DNS server (unbound) for the private .test TLD at 127.0.0.153:53,
    with the MX/A/TXT records of every scenario, SERVFAIL where asked;
    it validates DNSSEC: names under dane.test (DNSSEC_ZONE) come from a
    zone the bed signs at start (ldnsutils) and serves from a second,
    authoritative unbound at 127.0.0.155, with that zone's DS as trust
    anchor, so they are secure (AD) or, where a row spoils a signature,
    bogus (SERVFAIL); the rest of .test is unsigned local data (no AD).
    Every query a client asks is logged (dns_queries());
  - a test CA and certificates: valid for each MX name, self-signed,
    one for the wrong name, expired ones; a second CA, the DANE trust
    anchor (dane_ca), that relayd is not told to trust; TLSA records
    computed from what the receivers present (tlsa_records());
  - receivers on port 25 of their own 127.0.0.x address: a real Postfix
    (its own config, queue and mailbox under the bed's temp folder), the
    small test receivers of receiver.py, and the STARTTLS-stripping proxy;
  - nginx on 127.0.0.31:443 with a test-CA certificate for mta-sts.*;
    a row with `sts` publishes an MTA-STS policy (the _mta-sts TXT record
    and its own policy file), and `sts_http` makes its policy host
    misbehave (see scenarios.toml), one variant being a listener on
    127.0.0.89:443 that accepts and never answers. set_sts() changes what
    a domain publishes while the bed runs (unbound-control, nginx reload).

Every process is started with its PID recorded in <workdir>/pids and
stopped by it; stop() also runs at interpreter exit and on SIGINT/SIGTERM,
so an interrupted run leaves no process, port or temp folder behind.
Every wait is bounded.
"""
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
DNS_IP = "127.0.0.153"
SERVFAIL_IP = "127.0.0.154"
NGINX_IP = "127.0.0.31"
SILENT_IP = "127.0.0.89"   # the MTA-STS policy host that never answers
DNSSEC_ZONE = "dane.test"  # the signed zone: names under it validate (AD=1)
AUTH_DNS_IP = "127.0.0.155"  # its authoritative server (a second unbound)
STS_HTTP = ("good", "301", "html", "oversized", "silent", "badcert")
STS_BODY_CAP = 64 * 1024   # RFC 8461 §3.3 lets a fetcher stop here
PYTHON = "/usr/bin/python3"


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def port_open(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def load_scenarios(path=HERE / "scenarios.toml"):
    with open(path, "rb") as f:
        return tomllib.load(f)["scenario"]


class CA:
    """A throwaway certificate authority (openssl CLI) in the bed folder."""

    def __init__(self, folder, cn="relayd test bed CA"):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert = self.dir / "ca.pem"
        self.key = self.dir / "ca.key"
        self._run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", self.key)
        self._run("req", "-x509", "-new", "-key", self.key, "-sha256", "-days", "30", "-subj", f"/CN={cn}",
                  "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                  "-out", self.cert)

    def _run(self, *args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)

    def issue(self, name, sans=None, key_type="ec"):
        """A leaf for `name` signed by this CA, with a P-256 key or (key_type
        "rsa") an RSA-2048 one; returns (cert, key)."""
        stem = name if key_type == "ec" else f"{name}-{key_type}"
        cert, key, csr, ext = (self.dir / f"{stem}.pem", self.dir / f"{stem}.key", self.dir / f"{stem}.csr", self.dir / f"{stem}.ext")
        if cert.exists():
            return cert, key
        if key_type == "rsa":
            self._run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key)
        else:
            self._run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        self._run("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
        ext.write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in (sans or [name])) +
                       "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        self._run("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial",
                  "-sha256", "-days", "30", "-extfile", ext, "-out", cert)
        return cert, key

    def issue_expired(self, name):
        """A leaf for `name` signed by this CA whose validity ended yesterday
        (notBefore 30 days ago): `openssl ca` is what sets dates in the past
        on OpenSSL 3.0 (x509 -req only counts -days from now). Returns
        (cert, key)."""
        cert, key, csr = self.dir / f"{name}-expired.pem", self.dir / f"{name}-expired.key", self.dir / f"{name}-expired.csr"
        if cert.exists():
            return cert, key
        db = self.dir / "ca-db"
        db.mkdir(exist_ok=True)
        (db / "index.txt").touch()
        conf = self.dir / "ca-expired.cnf"
        conf.write_text(f"""[ca]
default_ca = bed
[bed]
database = {db}/index.txt
new_certs_dir = {db}
serial = {db}/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
[leaf]
subjectAltName = DNS:{name}
basicConstraints = CA:FALSE
extendedKeyUsage = serverAuth
""")
        self._run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        self._run("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
        now = time.time()
        fmt = lambda t: time.strftime("%Y%m%d%H%M%SZ", time.gmtime(t))
        self._run("ca", "-batch", "-config", conf, "-cert", self.cert, "-keyfile", self.key, "-in", csr, "-out", cert,
                  "-rand_serial", "-notext", "-extensions", "leaf",
                  "-startdate", fmt(now - 30 * 86400), "-enddate", fmt(now - 86400))
        return cert, key

    def self_signed(self, name):
        cert, key = self.dir / f"self-{name}.pem", self.dir / f"self-{name}.key"
        if cert.exists():
            return cert, key
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
                  "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}", "-keyout", key, "-out", cert)
        return cert, key


class Bed:
    def __init__(self, workdir=None, scenarios=None):
        self.owns_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="relayd-bed-"))
        self.scenarios = scenarios or load_scenarios()
        self.procs = []          # (name, Popen)
        self.pids = []           # every PID we must stop, including daemonised ones
        self.postfix_dir = self.dir / "postfix"
        self.records = self.dir / "records"
        # What each MTA-STS domain publishes now (set_sts changes it).
        self.sts = {s["domain"]: {**s["sts"], "http": s.get("sts_http", "good"), "txt": True}
                    for s in self.scenarios if s.get("sts")}
        self.started = False
        self.stopped = False

    # --- lifecycle ----------------------------------------------------------

    def start(self):
        # Postfix's unprivileged processes must reach their folders inside.
        os.chmod(self.dir, 0o755)
        self.records.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)

            def handler(signum, frame, previous=previous):
                self.stop()
                if callable(previous):
                    previous(signum, frame)
                else:
                    raise KeyboardInterrupt
            signal.signal(sig, handler)
        try:
            self.ca = CA(self.dir / "ca")
            # The DANE trust anchor of `issuer = "dane-ta"` rows: a CA that
            # relayd's [tls] ca_bundle does not hold, so only DANE trusts it.
            self.dane_ca = CA(self.dir / "dane-ca", cn="relayd test bed DANE trust anchor")
            self._start_dns()
            self._start_postfix()
            self._start_receivers()
            self._start_nginx()
            self._start_silent()
        except BaseException:
            self.stop()
            raise
        self.started = True
        return self

    def _spawn(self, name, argv, ready=None, timeout=15):
        log = open(self.dir / f"{name}.log", "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append((name, p))
        self._record_pid(p.pid)
        if ready:
            wait_for(lambda: p.poll() is not None or ready(), timeout, f"{name} to start")
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited: {(self.dir / f'{name}.log').read_text(errors='replace')[-2000:]}")
        return p

    def _record_pid(self, pid):
        self.pids.append(pid)
        with open(self.dir / "pids", "a") as f:
            f.write(f"{pid}\n")

    def stop(self):
        if self.stopped:
            return
        self.stopped = True
        if (self.postfix_dir / "etc" / "main.cf").exists():
            subprocess.run(["postfix", "-c", str(self.postfix_dir / "etc"), "stop"], capture_output=True, timeout=30)
        for pid in self.pids:
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for name, p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        for pid in self.pids:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- DNS ----------------------------------------------------------------

    def is_signed(self, name):
        """Whether `name` lives in the DNSSEC-signed zone (DNSSEC_ZONE) rather
        than in the resolver's unsigned local data."""
        name = name.rstrip(".").lower()
        return name == DNSSEC_ZONE or name.endswith("." + DNSSEC_ZONE)

    def scenario_rrs(self, s):
        """The resource records a scenario publishes, as zone-file lines
        (absolute owner names). Where each one goes, unbound's local data or
        the signed zone, is decided by its owner name (is_signed)."""
        d = s["domain"]
        rrs = [f'{d}. 300 IN TXT "relayd test bed: {s["name"]}"']
        if s.get("cname"):
            # The domain is an alias: its MX comes from the target's data.
            return rrs + [f'{d}. 300 IN CNAME {s["cname"]}.']
        if s.get("mx") == ".":
            return rrs + [f"{d}. 300 IN MX 0 ."]
        for mx in s.get("mx", []):
            rrs.append(f'{d}. 300 IN MX {mx["preference"]} {mx["name"]}.')
            rrs.append(f'{mx["name"]}. 300 IN A {mx["ip"]}')
            if mx.get("ipv6"):
                rrs.append(f'{mx["name"]}. 300 IN AAAA {mx["ipv6"]}')
            for rec in self.tlsa_records(mx["name"]) if mx.get("tlsa") else []:
                rrs.append(f'_25._tcp.{mx["name"]}. 300 IN TLSA {rec}')
        if d in self.sts:
            rrs += self.sts_records(d)
        else:
            rrs.append(f"mta-sts.{d}. 300 IN A {NGINX_IP}")
        return rrs

    def zone_lines(self):
        # Everything under .test is answered here; nothing is ever looked
        # up on the Internet (see the catch-all forward-zone below). The
        # signed zone is the one exception: transparent here, so its names
        # are resolved (stub-zone) from its authoritative server and
        # validated against the trust anchor.
        lines = ['local-zone: "test." static', f'local-zone: "{DNSSEC_ZONE}." transparent']
        for s in self.scenarios:
            d = s["domain"]
            if s.get("dns") == "servfail":
                # Transparent: no local data, so it goes to its forward-zone,
                # dns_servfail.py, and the resolver answers SERVFAIL.
                lines.append(f'local-zone: "{d}." transparent')
                continue
            if not self.is_signed(d):
                lines.append(f'local-zone: "{d}." static')
            for rr in self.scenario_rrs(s):
                if not self.is_signed(rr.split()[0]):
                    lines.append(f"local-data: '{rr}'")
        return lines

    def signed_zone_text(self):
        """The unsigned text of the DNSSEC zone: its apex (SOA, NS and the
        name server's address) and every scenario record under it."""
        z = DNSSEC_ZONE
        lines = [f"{z}. 300 IN SOA ns.{z}. hostmaster.{z}. 1 3600 600 86400 300",
                 f"{z}. 300 IN NS ns.{z}.", f"ns.{z}. 300 IN A {AUTH_DNS_IP}"]
        for s in self.scenarios:
            if s.get("dns") != "servfail":
                lines += [rr for rr in self.scenario_rrs(s) if self.is_signed(rr.split()[0])]
        return "\n".join(lines) + "\n"

    def sts_records(self, domain):
        """The MTA-STS records of `domain` as it publishes now: the policy
        host's address and, unless removed, the _mta-sts TXT record (TTL 1:
        they change while the bed runs)."""
        st = self.sts[domain]
        ip = SILENT_IP if st["http"] == "silent" else NGINX_IP
        rrs = [f"mta-sts.{domain}. 1 IN A {ip}"]
        if st["txt"]:
            rrs.append(f'_mta-sts.{domain}. 1 IN TXT "v=STSv1; id={st["id"]};"')
        return rrs

    def _start_dns(self):
        d = self.dir / "unbound"
        d.mkdir()
        conf = d / "unbound.conf"
        servfail = [s["domain"] for s in self.scenarios if s.get("dns") == "servfail"]
        forward = "".join(f'forward-zone:\n  name: "{n}."\n  forward-addr: {SERVFAIL_IP}@53\n' for n in servfail)
        forward += 'forward-zone:\n  name: "."\n  forward-addr: 127.0.0.1@9\n'
        if servfail:
            self._spawn("dns-servfail", [PYTHON, str(HERE / "dns_servfail.py"), f"{SERVFAIL_IP}:53"],
                        ready=lambda: (self.dir / "dns-servfail.log").exists()
                        and "ready" in (self.dir / "dns-servfail.log").read_text())
        self._start_dnssec()
        body = "\n  ".join(self.zone_lines())
        conf.write_text(f"""server:
  interface: {DNS_IP}
  port: 53
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{d}"
  pidfile: "{d}/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  log-queries: yes
  module-config: "validator iterator"
  trust-anchor: "{self.dnssec_ds}"
  trust-anchor-signaling: no
  root-key-sentinel: no
  val-permissive-mode: no
  val-log-level: 2
  num-threads: 1
  outgoing-range: 64
  so-reuseport: no
  harden-referral-path: no
  serve-expired: no
  infra-host-ttl: 1
  {body}
remote-control:
  control-enable: yes
  control-interface: "{d}/unbound.ctl"
  control-use-cert: no
stub-zone:
  name: "{DNSSEC_ZONE}."
  stub-addr: {AUTH_DNS_IP}@53
{forward}""")
        check = subprocess.run(["unbound-checkconf", str(conf)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError("unbound config: " + check.stdout + check.stderr)
        self._spawn("unbound", ["unbound", "-d", "-c", str(conf)], ready=lambda: self.dns_answers("valid.test", "MX"))
        self.unbound_conf = conf

    def _start_dnssec(self):
        """Signs DNSSEC_ZONE (fresh ECDSA P-256 keys, NSEC, in the bed's
        folder) with ldnsutils, spoils the TLSA RRsets of `tlsa_bogus` hosts
        after signing, and serves the result from a second, authoritative
        unbound (auth-zone) at AUTH_DNS_IP. self.dnssec_ds is the trust
        anchor (the KSK's DS) the validating resolver is given."""
        d = self.dnssec_dir = self.dir / "dnssec"
        d.mkdir()
        zone = d / f"{DNSSEC_ZONE}.zone"
        zone.write_text(self.signed_zone_text())

        def ldns(*argv):
            r = subprocess.run([*map(str, argv)], cwd=d, capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise RuntimeError(f"{argv[0]}: {r.stdout}{r.stderr}")
            return r.stdout.strip()
        ksk = ldns("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", DNSSEC_ZONE)
        zsk = ldns("ldns-keygen", "-a", "ECDSAP256SHA256", DNSSEC_ZONE)
        self.dnssec_ds = ldns("ldns-key2ds", "-n", "-2", f"{ksk}.key")
        signed = d / f"{DNSSEC_ZONE}.zone.signed"
        ldns("ldns-signzone", "-f", signed, zone, zsk, ksk)
        bogus = {f"_25._tcp.{mx['name']}." for _, mx in self.mx_hosts() if mx.get("tlsa_bogus")}
        if bogus:
            out = []
            for line in signed.read_text().splitlines():
                f = line.split()
                if len(f) >= 8 and f[0].lower() in bogus and f[3] == "TLSA":
                    # The last hex digit of the data changes; its RRSIG stays.
                    line = line[:-1] + ("0" if line[-1].lower() != "0" else "1")
                out.append(line)
            signed.write_text("\n".join(out) + "\n")
        self.signed_zone = signed
        conf = d / "unbound-auth.conf"
        conf.write_text(f"""server:
  interface: {AUTH_DNS_IP}
  port: 53
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{d}"
  pidfile: "{d}/unbound-auth.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  num-threads: 1
  outgoing-range: 64
  so-reuseport: no
  # unbound refuses .test (RFC 6761) by default, before any auth-zone.
  local-zone: "test." nodefault
remote-control:
  control-enable: no
auth-zone:
  name: "{DNSSEC_ZONE}."
  zonefile: "{signed}"
  for-downstream: yes
  for-upstream: no
  fallback-enabled: no
""")
        check = subprocess.run(["unbound-checkconf", str(conf)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError("unbound-auth config: " + check.stdout + check.stderr)
        self._spawn("unbound-auth", ["unbound", "-d", "-c", str(conf)],
                    ready=lambda: (self.dns_answers(DNSSEC_ZONE, "SOA", server=AUTH_DNS_IP) or ("",))[0] == "NOERROR")

    def unbound_control(self, *args, stdin=None):
        r = subprocess.run(["unbound-control", "-c", str(self.unbound_conf), *args], input=stdin,
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0 or r.stdout.strip() not in ("ok", ""):
            raise RuntimeError(f"unbound-control {args}: {r.stdout}{r.stderr}")

    def dns_answers(self, name, rdtype, server=DNS_IP):
        """Queries the bed's resolver; returns (rcode text, [rdata text])."""
        import dns.rcode
        r = self.dns_query(name, rdtype, ad=False, server=server)
        if r is None:
            return None
        return dns.rcode.to_text(r.rcode()), [rd.to_text() for rrset in r.answer for rd in rrset]

    def dns_query(self, name, rdtype, *, ad=True, cd=False, dnssec=False, server=DNS_IP, timeout=2):
        """One query to the bed's resolver (or `server`), as a dnspython
        message, or None when nothing answered. The resolver sets AD in a
        reply only when the query had AD (ad=True, RFC 6840 §5.7) or DO
        (dnssec=True, which also brings the RRSIGs); cd=True asks it not to
        validate (relayd never does)."""
        import dns.flags
        import dns.message
        import dns.query
        q = dns.message.make_query(name, rdtype, want_dnssec=dnssec)
        if ad:
            q.flags |= dns.flags.AD
        if cd:
            q.flags |= dns.flags.CD
        try:
            return dns.query.udp(q, server, timeout=timeout, port=53)
        except Exception:
            return None

    def dns_queries(self, since=0):
        """The (name, type) pairs clients asked the bed's resolver, in order
        (unbound's log-queries lines in unbound.log), names without the
        final dot, e.g. ("_25._tcp.mx.ee-wrongname.dane.test", "TLSA").
        `since` skips that many: take len(bed.dns_queries()) as a mark
        before an action, pass it after. The bed's own checks are in it too."""
        import re
        log = self.dir / "unbound.log"
        if not log.exists():
            return []
        out = []
        for line in log.read_text(errors="replace").splitlines():
            m = re.search(r"\] unbound\[\d+:\d+\] info: \S+ (\S+)\. (\S+) IN$", line)
            if m:
                out.append((m.group(1).lower(), m.group(2)))
        return out[since:]

    # --- receivers ----------------------------------------------------------

    def scenario(self, domain):
        return next(s for s in self.scenarios if s["domain"] == domain)

    def landing_ip(self, s):
        """Where a scenario's mail is expected to arrive."""
        if s.get("cname"):
            return self.landing_ip(self.scenario(s["cname"]))
        return s.get("via") or s["mx"][0]["ip"]

    def mx_hosts(self):
        for s in self.scenarios:
            if isinstance(s.get("mx"), list):
                for mx in s["mx"]:
                    yield s, mx

    def _start_postfix(self):
        names = [mx for _, mx in self.mx_hosts() if mx["receiver"] == "postfix"]
        if not names:
            return
        mx = names[0]
        domains = [s["domain"] for s, m in self.mx_hosts() if m["receiver"] in ("postfix", "strip")]
        domains += [s["domain"] for s in self.scenarios if s.get("cname") in domains]
        import postfix_instance
        d = self.postfix_dir
        (d / "mail").mkdir(parents=True, exist_ok=True)
        cert, key = self.ca.issue(mx["name"])
        uid, gid = pwd_ids("postfix")
        postfix_instance.write(d, mx["ip"], mx["name"], self.dir, f"""virtual_mailbox_domains = {" ".join(domains)}
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = static:inbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_received_header = yes
smtputf8_enable = yes
""")
        shutil.chown(d / "mail", "postfix", "postfix")
        self._record_pid(postfix_instance.start(d))
        wait_for(lambda: port_open(mx["ip"], 25), 15, "postfix on port 25")

    def _start_receivers(self):
        upstream = None
        for s, mx in self.mx_hosts():
            if mx["receiver"] == "postfix":
                upstream = mx["ip"]
        for s, mx in self.mx_hosts():
            kind = mx["receiver"]
            if kind in ("postfix", "none"):
                continue
            listen = f"{mx['ip']}:25"
            if kind == "strip":
                argv = [PYTHON, str(HERE / "strip_proxy.py"), "--listen", listen,
                        "--upstream", f"{mx.get('upstream', upstream)}:25"]
                if mx.get("switch"):
                    argv += ["--switch", str(self.strip_switch(mx["ip"]))]
                    if mx["switch"] == "on":
                        self.strip_switch(mx["ip"]).touch()
                self._spawn(f"strip-{mx['ip']}", argv, ready=lambda ip=mx["ip"]: port_open(ip, 25))
                continue
            argv = [PYTHON, str(HERE / "receiver.py"), "--listen", listen, "--mode", kind, "--name", mx["name"],
                    "--record", str(self.record_file(mx["ip"]))]
            if kind in ("tls", "broken-tls"):
                cert, key, issuer = self.mx_cert(mx)
                if mx.get("send_ca"):
                    # The chain the receiver presents: leaf, then its issuer.
                    chain = self.dir / "chains" / f"{mx['name']}.pem"
                    chain.parent.mkdir(exist_ok=True)
                    chain.write_text(cert.read_text() + issuer.read_text())
                    cert = chain
                argv += ["--cert", str(cert), "--key", str(key)]
                if mx.get("ciphers"):
                    argv += ["--ciphers", mx["ciphers"]]
                if mx.get("max_version"):
                    argv += ["--max-version", mx["max_version"]]
                if mx.get("min_version"):
                    argv += ["--min-version", mx["min_version"]]
                if mx.get("requiretls"):
                    argv += ["--requiretls"]
            self._spawn(f"receiver-{mx['ip']}", argv, ready=lambda ip=mx["ip"]: port_open(ip, 25))

    def mx_cert(self, mx):
        """(leaf, key, issuer certificate) of a TLS test receiver, from its
        row's cert, cert_name, key and issuer fields (a self-signed leaf is
        its own issuer)."""
        which = mx.get("cert", "valid")
        ca = self.dane_ca if mx.get("issuer") == "dane-ta" else self.ca
        if which == "selfsigned":
            cert, key = ca.self_signed(mx["name"])
            return cert, key, cert
        if which == "wrongname":
            cert, key = ca.issue("mx.elsewhere.test")
        elif which == "expired":
            cert, key = ca.issue_expired(mx.get("cert_name", mx["name"]))
        else:
            cert, key = ca.issue(mx.get("cert_name", mx["name"]), key_type=mx.get("key", "ec"))
        return cert, key, ca.cert

    def mx_at(self, ip):
        return next(m for _, m in self.mx_hosts() if m["ip"] == ip)

    def served_chain(self, host):
        """The certificates (PEM paths, leaf first) that the MX host `host`
        presents after STARTTLS: a strip proxy's are those of the MX behind
        it (though it never lets a handshake happen), Postfix's its leaf."""
        mx = next(m for _, m in self.mx_hosts() if m["name"] == host)
        if mx["receiver"] == "strip":
            upstream = mx.get("upstream") or next(m["ip"] for _, m in self.mx_hosts() if m["receiver"] == "postfix")
            return self.served_chain(self.mx_at(upstream)["name"])
        if mx["receiver"] == "postfix":
            return [self.ca.issue(mx["name"])[0]]
        cert, _, issuer = self.mx_cert(mx)
        return [cert, issuer] if mx.get("send_ca") else [cert]

    def trust_anchor_of(self, host):
        """The certificate that a `ta` TLSA spec of `host` names: the issuer
        of the leaf it presents (whether or not it sends it)."""
        mx = next(m for _, m in self.mx_hosts() if m["name"] == host)
        if mx["receiver"] == "strip":
            return self.trust_anchor_of(self.mx_at(mx.get("upstream"))["name"]) if mx.get("upstream") else self.ca.cert
        if mx["receiver"] == "postfix":
            return self.ca.cert
        return self.mx_cert(mx)[2]

    def tlsa_records(self, host):
        """The TLSA records ("usage selector matching hex") published at
        _25._tcp.<host>, computed from the row's `tlsa` specs and the
        certificates the bed issued. For a `tlsa_bogus` host these are the
        records as signed; what the zone serves differs in the last digit."""
        mx = next(m for _, m in self.mx_hosts() if m["name"] == host)
        out = []
        for spec in mx.get("tlsa", []):
            usage, selector, mtype, what = spec.split()
            if what == "none":
                data = b"relayd test bed: this matches no certificate"
                if mtype == "0":
                    raise ValueError(f"{host}: matching type 0 with `none` has no meaning")
            else:
                cert = {"leaf": lambda: self.served_chain(host)[0], "ta": lambda: self.trust_anchor_of(host)}[what]()
                data = tlsa_selected(cert, int(selector))
            out.append(f"{usage} {selector} {mtype} {tlsa_digest(data, int(mtype))}")
        return out

    def _start_nginx(self):
        d = self.nginx_dir = self.dir / "nginx"
        (d / "www" / ".well-known").mkdir(parents=True)
        (d / "www" / ".well-known" / "mta-sts.txt").write_text("version: STSv1\nmode: testing\nmx: mx.valid.test\nmax_age: 86400\n")
        for domain in self.sts:
            self._write_policy_files(domain)
        (d / "nginx.conf").write_text(self.nginx_conf())
        self._spawn("nginx", ["nginx", "-c", str(d / "nginx.conf"), "-p", str(d), "-e", str(d / "error.log")],
                    ready=lambda: port_open(NGINX_IP, 443))
        self.nginx_pid = self.procs[-1][1].pid

    def nginx_conf(self):
        """One server for every scenario's mta-sts name (the one shared
        policy file), and one per MTA-STS row with its own policy and its
        misbehaviour."""
        d = self.nginx_dir
        names = [f"mta-sts.{s['domain']}" for s in self.scenarios]
        cert, key = self.ca.issue("mta-sts.bed", sans=names)
        servers = []
        for domain, st in self.sts.items():
            host = f"mta-sts.{domain}"
            c, k = self.ca.self_signed(host) if st["http"] == "badcert" else (cert, key)
            extra = ""
            if st["http"] == "301":
                # To where the very same policy is served: a fetcher that
                # followed it would find a valid policy.
                extra = f"location = /.well-known/mta-sts.txt {{ return 301 https://{host}/moved/mta-sts.txt; }}"
            elif st["http"] == "html":
                extra = "location = /.well-known/mta-sts.txt { types { } default_type text/html; }"
            servers.append(f"""  server {{
    listen {NGINX_IP}:443 ssl;
    server_name {host};
    ssl_certificate {c};
    ssl_certificate_key {k};
    root {d}/www/{host};
    {extra}
  }}
""")
        shared = [n for n in names if n.removeprefix("mta-sts.") not in self.sts]
        return f"""daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/tmp-body;
  proxy_temp_path {d}/tmp-proxy;
  fastcgi_temp_path {d}/tmp-fastcgi;
  uwsgi_temp_path {d}/tmp-uwsgi;
  scgi_temp_path {d}/tmp-scgi;
  default_type text/plain;
  server {{
    listen {NGINX_IP}:443 ssl;
    server_name {" ".join(shared)};
    ssl_certificate {cert};
    ssl_certificate_key {key};
    root {d}/www;
  }}
{"".join(servers)}}}
"""

    def sts_policy_text(self, domain):
        st = self.sts[domain]
        return (f"version: STSv1\nmode: {st['mode']}\n" + "".join(f"mx: {m}\n" for m in st["mx"])
                + f"max_age: {st['max_age']}\n")

    def _write_policy_files(self, domain):
        """www/mta-sts.<domain>/.well-known/mta-sts.txt, and the same policy
        at /moved/mta-sts.txt (where the 301 points). Oversized: the policy
        then padding lines (unknown keys, which a parser ignores), so only
        the size cap stands between a fetcher and a valid policy."""
        root = self.nginx_dir / "www" / f"mta-sts.{domain}"
        text = self.sts_policy_text(domain)
        body = text
        if self.sts[domain]["http"] == "oversized":
            pad = "padding: " + "x" * 90 + "\n"
            body += pad * (STS_BODY_CAP // len(pad) + 64)
        for path, content in ((root / ".well-known" / "mta-sts.txt", body), (root / "moved" / "mta-sts.txt", text)):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(content)
            os.replace(tmp, path)

    def _start_silent(self):
        """The policy host that never answers: accepts on SILENT_IP:443 and
        holds every connection without a byte (no TLS, no HTTP)."""
        self._spawn("silent-443", [PYTHON, str(HERE / "silent_listener.py"), "--listen", f"{SILENT_IP}:443"],
                    ready=lambda: port_open(SILENT_IP, 443))

    # --- MTA-STS while the bed runs ------------------------------------------

    def set_sts(self, domain, *, id=None, mode=None, mx=None, max_age=None, http=None, txt=None, timeout=15):
        """Changes what `domain` publishes: the policy (id, mode, mx,
        max_age), the policy host's behaviour (http: one of STS_HTTP) and
        whether the TXT record exists (txt). The policy host changes first
        and the TXT record last, so a new id is never seen before its
        policy. Returns once the bed's DNS and policy host answer as asked
        (bounded by `timeout`)."""
        if self.is_signed(domain):
            raise ValueError(f"{domain} is in the signed zone, signed once at start: set_sts cannot change it")
        st = self.sts[domain]
        new = dict(st)
        for k, v in (("id", id), ("mode", mode), ("mx", mx), ("max_age", max_age), ("http", http), ("txt", txt)):
            if v is not None:
                new[k] = v
        assert new["http"] in STS_HTTP, new["http"]
        old_conf = self.nginx_conf()
        old_records = self.sts_records(domain)
        self.sts[domain] = new
        self._write_policy_files(domain)
        conf = self.nginx_conf()
        if conf != old_conf:
            (self.nginx_dir / "nginx.conf").write_text(conf)
            self._reload_nginx(timeout)
        if new["http"] != "silent":
            wait_for(lambda: self.policy_host_state(domain) == self.expected_policy_host_state(domain), timeout,
                     f"the policy host of {domain} to answer as {new['http']}")
        records = self.sts_records(domain)
        if records != old_records:
            # The A record first (where the policy host is), the TXT record last.
            for name in (f"mta-sts.{domain}.", f"_mta-sts.{domain}."):
                self.unbound_control("local_data_remove", name)
            for rr in records:
                self.unbound_control("local_data", rr)
        want_txt = [f'"v=STSv1; id={new["id"]};"'] if new["txt"] else []
        wait_for(lambda: self.dns_answers(f"_mta-sts.{domain}", "TXT") is not None
                 and self.dns_answers(f"_mta-sts.{domain}", "TXT")[1] == want_txt
                 and self.dns_answers(f"mta-sts.{domain}", "A")[1] == [records[0].split()[-1]],
                 timeout, f"the DNS of {domain} to publish {records}")

    def _reload_nginx(self, timeout):
        """A graceful reload by the master's PID, waited out: until every
        worker that ran the old configuration has exited. Until then an old
        worker may still accept a connection and answer the old way, even
        after a new one has answered the new way."""
        old = self.nginx_workers()
        os.kill(self.nginx_pid, signal.SIGHUP)
        wait_for(lambda: (lambda now: now and not now & old)(self.nginx_workers()), timeout,
                 "nginx's old workers to exit after a reload")

    def nginx_workers(self):
        """PIDs of the live child processes of the nginx master."""
        out = set()
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                state, ppid = (p / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue
            if int(ppid) == self.nginx_pid and state != "Z":
                out.add(int(p.name))
        return out

    def expected_policy_host_state(self, domain):
        st = self.sts[domain]
        text = self.sts_policy_text(domain)
        return {"good": ("200", "text/plain", text), "301": ("301", None, None),
                "html": ("200", "text/html", text), "oversized": ("200", "text/plain", "oversized"),
                "badcert": ("tls", "certificate verify failed", None)}[st["http"]]

    def policy_host_state(self, domain, ip=NGINX_IP, timeout=2, path="/.well-known/mta-sts.txt"):
        """GET https://mta-sts.<domain><path> at `ip`,
        the chain checked against the bed's CA: (status, media type, body)
        with an oversized body as "oversized", or ("tls", reason, None), or
        None when nothing answered in `timeout`."""
        import ssl
        host = f"mta-sts.{domain}"
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        try:
            with socket.create_connection((ip, 443), timeout=timeout) as raw:
                with ctx.wrap_socket(raw, server_hostname=host) as s:
                    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
        except ssl.SSLCertVerificationError as e:
            return ("tls", "certificate verify failed" if "certificate verify failed" in str(e) else str(e), None)
        except (socket.timeout, TimeoutError):
            return None
        except OSError:
            return None
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split()[1]
        ctype = next((l.split(":", 1)[1].split(";")[0].strip() for l in lines[1:] if l.lower().startswith("content-type:")), None)
        if status != "200":
            return (status, None, None)
        text = body.decode("utf-8", "replace")
        return (status, ctype, "oversized" if len(body) > STS_BODY_CAP else text)

    # --- what the receivers saw ---------------------------------------------

    def strip_switch(self, ip):
        return self.dir / f"strip-{ip}.on"

    def set_strip(self, domain, on):
        """Switches the STARTTLS-strip attack of the domain's switchable
        strip proxies on or off (new connections only)."""
        s = self.scenario(domain)
        switched = [mx for mx in s["mx"] if mx["receiver"] == "strip" and mx.get("switch")]
        assert switched, f"{domain} has no switchable strip proxy"
        for mx in switched:
            if on:
                self.strip_switch(mx["ip"]).touch()
            else:
                self.strip_switch(mx["ip"]).unlink(missing_ok=True)

    def record_file(self, ip):
        return self.records / f"{ip}.jsonl"

    def events(self, ip):
        """Events recorded by the test receiver at `ip`."""
        f = self.record_file(ip)
        if not f.exists():
            return []
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]

    def messages(self, ip):
        """Messages that arrived at `ip`: dicts with tls, version, cipher, data."""
        mx = next((m for _, m in self.mx_hosts() if m["ip"] == ip), None)
        if mx and mx["receiver"] in ("postfix", "strip"):
            return self.postfix_messages()
        return [e for e in self.events(ip) if e["event"] == "mail"]

    def postfix_messages(self):
        inbox = self.postfix_dir / "mail" / "inbox"
        if not inbox.exists():
            return []
        out = []
        for chunk in inbox.read_text(errors="replace").split("\nFrom ")[0:]:
            if not chunk.strip():
                continue
            # Postfix's own Received header is first; it records the TLS
            # the sender used ("(using TLSv1.3 with cipher ...)").
            head = chunk.split("\n\n", 1)[0]
            first_received = head.split("\nReceived:", 2)[1] if "\nReceived:" in head else ""
            import re
            m = re.search(r"\(using (TLSv[\d.]+) with cipher (\S+)", first_received)
            out.append({"tls": bool(m), "version": m.group(1) if m else None,
                        "cipher": m.group(2) if m else None, "data": chunk})
        return out


_tlsa_cache = {}


def tlsa_selected(cert, selector):
    """What a TLSA selector picks from a PEM certificate: 0 its full DER,
    1 (and any other value) its SubjectPublicKeyInfo DER."""
    key = (str(cert), os.stat(cert).st_mtime_ns, 0 if selector == 0 else 1)
    if key not in _tlsa_cache:
        if selector == 0:
            der = subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True,
                                 capture_output=True, timeout=30).stdout
        else:
            pub = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"], check=True,
                                 capture_output=True, timeout=30).stdout
            der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, check=True,
                                 capture_output=True, timeout=30).stdout
        _tlsa_cache[key] = der
    return _tlsa_cache[key]


def tlsa_digest(data, mtype):
    """TLSA association data in hex: matching type 0 the data itself, 1
    SHA-256, 2 SHA-512, any other (unknown) type SHA-256 as well."""
    import hashlib
    if mtype == 0:
        return data.hex()
    return (hashlib.sha512 if mtype == 2 else hashlib.sha256)(data).hexdigest()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def pwd_ids(user):
    import pwd
    p = pwd.getpwnam(user)
    return p.pw_uid, p.pw_gid


def main():
    """`python3 bed.py up`: bring the bed up and hold it until interrupted."""
    bed = Bed().start()
    print(json.dumps({"dir": str(bed.dir), "pids": bed.pids, "dns": DNS_IP}), flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        bed.stop()


if __name__ == "__main__":
    sys.exit(main())
