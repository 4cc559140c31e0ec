#!/usr/bin/python3
"""A fast SMTP sink for the outbound side of the benchmarks: accepts
everything, offers STARTTLS when given a certificate, keeps nothing but a
count of messages and of DATA bytes, which it writes to --count-file every
100 ms. A body of any size (the bigmsg suite sends 30 MiB) is read in
pieces of at most the stream limit and counted, never held whole.
asyncio, one process per --processes (SO_REUSEPORT spreads the
connections)."""
import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import socket
import ssl
import sys
import time


async def handle(reader, writer, args, ctx, counter):
    try:
        writer.write(b"220 sink ESMTP\r\n")
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                ext = b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                if ctx and writer.get_extra_info("sslcontext") is None:
                    ext += b"250-STARTTLS\r\n"
                writer.write(ext + b"250 SIZE 100000000\r\n")
            elif verb == b"STAR" and ctx:
                writer.write(b"220 go ahead\r\n")
                await writer.drain()
                await writer.start_tls(ctx)
            elif verb == b"DATA":
                writer.write(b"354 go\r\n")
                # One read up to the end marker when the body fits the
                # stream limit (the sink must never be the bottleneck it is
                # there to rule out); a bigger one is taken and dropped in
                # limit-sized pieces as readuntil says they hold no marker.
                size = 0
                while True:
                    try:
                        size += len(await reader.readuntil(b"\r\n.\r\n"))
                        break
                    except asyncio.LimitOverrunError as e:
                        size += len(await reader.readexactly(e.consumed))
                counter[0] += 1
                counter[1] += size
                writer.write(b"250 2.0.0 ok\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            elif verb == b"RSET" or verb == b"NOOP" or verb == b"MAIL" or verb == b"RCPT":
                writer.write(b"250 ok\r\n")
            else:
                writer.write(b"502 no\r\n")
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(args, index):
    ctx = None
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        if args.ec_cert:  # a second chain of another key type (the dual setup)
            ctx.load_cert_chain(args.ec_cert, args.ec_key)
    counter = [0, 0]  # messages, DATA bytes (dot-stuffed, with the end marker)
    host, port = args.listen.rsplit(":", 1)
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets
    # that say so, and without it Nagle adds ~40 ms to pipelined replies.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, int(port)))
    sock.listen(1024)
    server = await asyncio.start_server(lambda r, w: handle(r, w, args, ctx, counter), sock=sock, limit=1 << 20)
    path = f"{args.count_file}.{index}"
    async with server:
        while True:
            with open(path + ".tmp", "w") as f:
                f.write(f"{counter[0]} {counter[1]}")
            os.replace(path + ".tmp", path)
            await asyncio.sleep(0.1)


def run(args, index):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(serve(args, index))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--ec-cert", help="an ECDSA chain beside --cert (dual certificates)")
    p.add_argument("--ec-key")
    p.add_argument("--count-file", required=True)
    p.add_argument("--processes", type=int, default=1)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    procs = [mp.Process(target=run, args=(args, i), daemon=True) for i in range(args.processes)]
    for pr in procs:
        pr.start()
    print("ready", flush=True)
    try:
        for pr in procs:
            pr.join()
    finally:
        for pr in procs:
            pr.terminate()


def totals(count_file, processes):
    """(messages, DATA bytes) received by all the sink's processes."""
    messages = size = 0
    for i in range(processes):
        try:
            fields = open(f"{count_file}.{i}").read().split()
            messages += int(fields[0]) if fields else 0
            size += int(fields[1]) if len(fields) > 1 else 0
        except (FileNotFoundError, ValueError):
            pass
    return messages, size


def count(count_file, processes):
    return totals(count_file, processes)[0]


if __name__ == "__main__":
    main()
