#!/usr/bin/python3
"""A TCP listener that accepts every connection and never sends a byte:
the MTA-STS policy host that does not answer (no TLS handshake, no HTTP).
Connections are held until the peer goes away or this process is stopped
(SIGTERM, by the bed, by PID)."""
import argparse
import signal
import socket
import sys
import threading


def hold(conn):
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass
    finally:
        conn.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True, help="IP:port")
    args = p.parse_args()
    host, port = args.listen.rsplit(":", 1)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(64)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=hold, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
