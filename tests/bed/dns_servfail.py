#!/usr/bin/python3
"""A broken upstream name server: answers every query at once with
SERVFAIL. The bed's unbound forwards the SERVFAIL scenario's zone here, so
relayd's resolver sees a genuine SERVFAIL quickly (a dead address would
make unbound time out instead)."""
import signal
import socket
import sys


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, int(port)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    while True:
        query, addr = s.recvfrom(4096)
        if len(query) < 12:
            continue
        # Same id and question, QR=1, RD copied, RA=1, RCODE=2.
        flags = bytes([0x80 | (query[2] & 0x01), 0x82])
        s.sendto(query[:2] + flags + query[4:6] + b"\x00\x00\x00\x00\x00\x00" + question(query), addr)


def question(query):
    i = 12
    while i < len(query) and query[i] != 0:
        i += query[i] + 1
    return query[12:i + 5]


if __name__ == "__main__":
    main()
