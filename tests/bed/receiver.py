#!/usr/bin/python3
"""A small SMTP receiver for the test bed's odd cases, run as its own
process (so the bed can record and stop its PID).

Modes:
  plain       no STARTTLS offered
  tls         STARTTLS offered with --cert/--key (and, to play a limited
              peer, --ciphers for TLS <= 1.2, --max-version, and
              --min-version for a peer that speaks only TLS 1.0/1.1)
  broken-tls  STARTTLS offered, 220 sent, then garbage instead of a handshake
  greet-421   answers every connection with 421 and closes
--requiretls  (tls mode) also offers REQUIRETLS (RFC 8689) once the session
              is TLS, and accepts the MAIL parameter there

Every event is appended to --record as one JSON line:
  {"event": "mail", "tls": true, "version": "TLSv1.3", "cipher": "...", "from": ..., "to": [...], "data": ...}
  {"event": "session", "tls": false} at each EHLO, so a test can prove a
  client never sent MAIL without TLS.
  {"event": "connect"} as each connection is accepted, before the greeting,
  so a test can prove a client never connected at all.
"""
import argparse
import warnings
import json
import signal
import socket
import socketserver
import ssl
import sys
import threading


class Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def setup(self):
        super().setup()
        self.tls = None

    def record(self, **event):
        event["peer"] = self.client_address[0]
        event["tls"] = self.tls is not None
        if self.tls is not None:
            event["version"] = self.tls.version()
            event["cipher"] = self.tls.cipher()[0]
        with self.server.lock, open(self.server.args.record, "a") as f:
            f.write(json.dumps(event) + "\n")

    def send(self, line):
        self.wfile.write((line + "\r\n").encode())
        self.wfile.flush()

    def readline(self):
        line = self.rfile.readline(4096)
        if not line:
            raise EOFError
        return line.rstrip(b"\r\n").decode("utf-8", "replace")

    def handle(self):
        args = self.server.args
        self.record(event="connect")
        if args.mode == "greet-421":
            self.send("421 4.3.2 try again later")
            return
        self.send(f"220 {args.name} ESMTP test receiver")
        mail_from, rcpts, mail_params = None, [], []
        try:
            while True:
                line = self.readline()
                verb = line.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    self.record(event="session", helo=line[5:])
                    lines = [args.name, "PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8"]
                    if args.mode in ("tls", "broken-tls") and self.tls is None:
                        lines.append("STARTTLS")
                    if args.requiretls and self.tls is not None:
                        lines.append("REQUIRETLS")
                    if verb == "HELO":
                        lines = lines[:1]
                    for i, l in enumerate(lines):
                        self.send(("250 " if i == len(lines) - 1 else "250-") + l)
                elif verb == "STARTTLS" and args.mode in ("tls", "broken-tls") and self.tls is None:
                    self.send("220 2.0.0 ready")
                    if args.mode == "broken-tls":
                        self.wfile.write(b"\x15\x03\x03\x00\x02\x02\x28 this is not a TLS handshake\r\n")
                        self.wfile.flush()
                        return
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    ctx.load_cert_chain(args.cert, args.key)
                    if args.ciphers:
                        ctx.set_ciphers(args.ciphers)
                    if args.max_version:
                        ctx.maximum_version = ssl.TLSVersion[args.max_version.replace(".", "_")]
                    if args.min_version:
                        # TLS 1.0/1.1 need OpenSSL's security level 0 as well.
                        ctx.minimum_version = ssl.TLSVersion[args.min_version.replace(".", "_")]
                        ctx.set_ciphers((args.ciphers or "DEFAULT") + ":@SECLEVEL=0")
                    self.tls = ctx.wrap_socket(self.request, server_side=True)
                    self.rfile = self.tls.makefile("rb")
                    self.wfile = self.tls.makefile("wb")
                    mail_from, rcpts, mail_params = None, [], []
                elif verb == "MAIL":
                    mail_from = line[10:].split(">")[0].lstrip("<")
                    params = line.split(">", 1)[1].split() if ">" in line else []
                    if "REQUIRETLS" in (p.upper() for p in params) and not (args.requiretls and self.tls is not None):
                        self.send("555 5.5.4 REQUIRETLS not offered here")
                        continue
                    mail_params = params
                    rcpts = []
                    self.send("250 2.1.0 ok")
                elif verb == "RCPT":
                    rcpts.append(line[8:].split(">")[0].lstrip("<"))
                    self.send("250 2.1.5 ok")
                elif verb == "DATA":
                    self.send("354 go ahead")
                    data = []
                    while True:
                        l = self.rfile.readline(100000)
                        if not l or l == b".\r\n":
                            break
                        data.append(l[1:] if l.startswith(b"..") else l)
                    self.record(event="mail", **{"from": mail_from, "to": rcpts}, params=mail_params,
                                data=b"".join(data).decode("utf-8", "replace"))
                    self.send("250 2.0.0 ok: accepted")
                elif verb == "RSET":
                    mail_from, rcpts, mail_params = None, [], []
                    self.send("250 2.0.0 ok")
                elif verb == "NOOP":
                    self.send("250 2.0.0 ok")
                elif verb == "QUIT":
                    self.send("221 2.0.0 bye")
                    return
                else:
                    self.send("502 5.5.1 not implemented")
        except (EOFError, ConnectionError, ssl.SSLError, socket.timeout):
            return


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    # ssl.TLSVersion.TLSv1/TLSv1_1 are deprecated: the old-TLS peer means it.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True, help="IP:port")
    p.add_argument("--mode", choices=["plain", "tls", "broken-tls", "greet-421"], required=True)
    p.add_argument("--requiretls", action="store_true")
    p.add_argument("--name", default="mx.test")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--ciphers", help="OpenSSL cipher list for TLS <= 1.2")
    p.add_argument("--max-version", choices=["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"])
    p.add_argument("--min-version", choices=["TLSv1", "TLSv1.1"], help="allow protocols below TLS 1.2")
    p.add_argument("--record", required=True)
    args = p.parse_args()
    host, port = args.listen.rsplit(":", 1)
    server = Server((host, int(port)), Handler)
    server.args = args
    server.lock = threading.Lock()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print("ready", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    sys.exit(main())
