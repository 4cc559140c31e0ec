#!/usr/bin/python3
"""SMTP load generator for relayd's benchmarks: N parallel sessions, each
sending up to M messages of S bytes (plaintext or STARTTLS), bounded by
count and by time. Spread over P worker processes (asyncio in each) so the
generator is not limited to one core.

Big messages (the bigmsg suite: 30 MiB each) are built once per worker
process and shared by its sessions; each session sends its own header
lines, then the shared body in 256 KiB pieces, waiting for each to be
taken by the socket, so the generator holds one body per process, not one
per session. --dot-lines mixes in lines that start with "." (sent
dot-stuffed), so the server's transparency handling is exercised.

Prints one JSON object: sent, refused (4xx/5xx), errors, elapsed seconds,
msgs_per_s, bytes (DATA bytes on the wire, dot-stuffed, of the messages
accepted) and the p50/p99 latency per message (MAIL sent -> 250 after the
body), in milliseconds.
"""
import argparse
import asyncio
import functools
import json
import multiprocessing as mp
import os
import ssl
import time


def message_head(tag):
    return f"From: <bench@sender.test>\r\nTo: <sink@sink.test>\r\nSubject: bench {tag}\r\nMessage-ID: <{tag}@bench>\r\n\r\n".encode()


# Body lines with dot lines among them: a lone ".", "..", a dot before
# text, and lines from short to near the 998-octet limit, so that line and
# chunk boundaries fall in different places. As the client writes them:
# a leading "." is doubled on the wire (RFC 5321 §4.5.2).
DOT_BLOCK = [b"x" * 76, b".", b"y" * 40, b"..", b".leading dot " + b"z" * 60, b"x" * 76, b"w" * 997,
             b"." + b"v" * 996, b"", b"x" * 76, b"...three", b"u" * 12]


@functools.lru_cache(maxsize=4)
def message_body(room, dot_lines):
    """The body after the header lines, as sent (dot-stuffed), without the
    end marker: at most `room` octets of content (what the server keeps
    after removing the stuffing). Built once per size: a 30 MiB body is
    one bytes object shared by every session of the process."""
    if not dot_lines:
        return (b"x" * 76 + b"\r\n") * max(0, room // 78)
    block_content = sum(len(l) + 2 for l in DOT_BLOCK)
    block_wire = b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in DOT_BLOCK)
    blocks = room // block_content
    fill = (room - blocks * block_content) // 78
    return block_wire * blocks + (b"x" * 76 + b"\r\n") * fill


def build_message(size, tag, dot_lines=False):
    """(header lines, shared body, end marker): about `size` octets of content."""
    head = message_head(tag)
    return head, message_body(max(0, size - len(head)), dot_lines), b".\r\n"


PIECE = 256 * 1024


async def read_reply(reader):
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        lines.append(line)
        if len(line) < 4 or line[3:4] == b" ":
            return int(line[:3]), lines


async def session(args, deadline, stats, ctx, n):
    host, port = args.target.rsplit(":", 1)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port), limit=65536), 10)
    except Exception as e:
        stats["errors"] += 1
        return
    try:
        code, _ = await read_reply(reader)
        if code != 220:
            stats["refused"] += 1
            return
        writer.write(b"EHLO bench.test\r\n")
        code, lines = await read_reply(reader)
        if args.starttls:
            writer.write(b"STARTTLS\r\n")
            code, _ = await read_reply(reader)
            if code != 220:
                stats["errors"] += 1
                return
            await writer.start_tls(ctx, server_hostname=args.servername)
            writer.write(b"EHLO bench.test\r\n")
            await read_reply(reader)
        head, body, end = build_message(args.size, f"{os.getpid()}-{n}", args.dot_lines)
        wire = len(head) + len(body) + len(end)
        for i in range(args.messages):
            if time.monotonic() > deadline:
                break
            t0 = time.monotonic()
            writer.write(f"MAIL FROM:<bench@sender.test>\r\nRCPT TO:<{args.rcpt}>\r\nDATA\r\n".encode())
            codes = []
            for _ in range(3):
                c, _ = await read_reply(reader)
                codes.append(c)
            if codes[2] != 354:
                stats["refused"] += 1
                writer.write(b"RSET\r\n")
                await read_reply(reader)
                await asyncio.sleep(0.05)
                continue
            if len(body) <= PIECE:
                writer.write(head + body + end)
            else:
                writer.write(head)
                view = memoryview(body)
                for at in range(0, len(body), PIECE):
                    writer.write(view[at:at + PIECE])
                    await writer.drain()
                writer.write(end)
            c, _ = await read_reply(reader)
            if c == 250:
                stats["sent"] += 1
                stats["bytes"] += wire
                stats["lat"].append(time.monotonic() - t0)
            else:
                stats["refused"] += 1
        writer.write(b"QUIT\r\n")
        await writer.drain()
    except Exception:
        stats["errors"] += 1
    finally:
        writer.close()


async def worker_main(args, sessions, deadline):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    stats = {"sent": 0, "refused": 0, "errors": 0, "bytes": 0, "lat": []}
    tasks = [asyncio.ensure_future(session(args, deadline, stats, ctx, n)) for n in range(sessions)]
    # A session stuck on a server that stopped answering must not outlive
    # the bound: whatever has not ended 30 s after it counts as an error.
    done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()) + 30)
    for t in pending:
        t.cancel()
    stats["errors"] += len(pending)
    if pending:
        await asyncio.wait(pending, timeout=5)
    return stats


def worker(args, sessions, deadline, out):
    out.put(asyncio.run(worker_main(args, sessions, deadline)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--messages", type=int, default=100, help="per session")
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--servername", default="localhost")
    p.add_argument("--rcpt", default="sink@sink.test")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=30)
    p.add_argument("--dot-lines", action="store_true", help="mix lines starting with '.' into the body")
    args = p.parse_args()
    procs = max(1, min(args.processes, args.sessions))
    start = time.monotonic()
    deadline = start + args.max_seconds
    out = mp.Queue()
    workers = []
    for i in range(procs):
        share = args.sessions // procs + (1 if i < args.sessions % procs else 0)
        w = mp.Process(target=worker, args=(args, share, deadline, out))
        w.start()
        workers.append(w)
    results = [out.get(timeout=args.max_seconds + 60) for _ in workers]
    for w in workers:
        w.join(timeout=10)
    elapsed = time.monotonic() - start
    lat = sorted(l for r in results for l in r["lat"])
    sent = sum(r["sent"] for r in results)

    def pct(q):
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else None
    print(json.dumps({"sent": sent, "refused": sum(r["refused"] for r in results),
                      "errors": sum(r["errors"] for r in results), "elapsed": round(elapsed, 3),
                      "msgs_per_s": round(sent / elapsed, 1) if elapsed else 0, "bytes": sum(r["bytes"] for r in results),
                      "p50_ms": pct(0.5), "p99_ms": pct(0.99)}))


if __name__ == "__main__":
    main()
