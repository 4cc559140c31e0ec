#!/usr/bin/python3
"""Renders a bench/run.py JSON result as the Markdown tables of
bench/RESULTS.md, with each goal of the benchmark issue checked."""
import json
import sys


def fmt(v):
    return "–" if v is None else f"{v}"


def ratio(r):
    return "–" if not r else f"{r['median']} ({r['min']}–{r['max']})"


def bigmsg_table(c):
    """The bigmsg cell: peak memory per run, the ratios, the bytes moved."""
    n, big_mib = c["sessions"], round(c["big_bytes"] / 2 ** 20, 1)

    def mib(kib):
        return round(kib / 1024, 1)
    rows = ["", f"Big messages: {n} concurrent sessions, one message each, STARTTLS in and out.", "",
            "| run | peak RSS (MiB) | VmHWM (MiB) | peak PSS (MiB) | RSS after (MiB) | accepted in (s) | delivered | last delivery (s) | MB in / out | CPU (s) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for key, label in (("relayd_big", f"relayd, {n} x {big_mib:g} MiB"), ("relayd_small", f"relayd, {n} x 4 KiB"),
                       ("postfix_big", f"Postfix, {n} x {big_mib:g} MiB"), ("postfix_small", f"Postfix, {n} x 4 KiB"),
                       ("ceiling", f"no relay, generator -> TLS sink (the sink's memory), {n} x {big_mib:g} MiB")):
        r = c[key]
        hwm = mib(r["vmhwm_kib"]) if r["processes"] == 1 and key.startswith("relayd") else "–"
        rows.append(f"| {label} | {mib(r['peak_rss_kib'])} | {hwm} | {mib(r['peak_pss_kib'])} | {mib(r['rss_end_kib'])} | "
                    f"{r['accepted_s']} | {r['delivered']}/{r['sent']} | {r['delivered_s']} | "
                    f"{round(r['bytes'] / 1e6, 1)} / {round(r['bytes_out'] / 1e6, 1)} | {r['cpu_s']} |")
    rows += ["", f"- relayd peak RSS, {big_mib:g} MiB ÷ 4 KiB: {c['relayd_hwm_ratio']}× (VmHWM), {c['relayd_rss_ratio']}× (sampled).",
             f"- relayd ÷ Postfix on {big_mib:g} MiB: {c['relayd_over_postfix_pss']}× PSS, {c['relayd_over_postfix_rss']}× RSS "
             "(Postfix summed over its processes)."]
    return rows


def main(path):
    r = json.load(open(path))
    cells = r["cells"]
    setup = ""
    if "generator" in r:  # runs before the compiled generator did not say
        setup = (f" Generator: {'bench/loadgen.c' if r['generator'] == 'c' else 'bench/loadgen.py'};"
                 f" certificates: {r.get('certs')}" + (f", client sigalgs {r['client_sigalgs']}" if r.get("client_sigalgs") else "")
                 + ".")
    out = [f"Run of {r['date']}, {r['cpus']} CPUs, {r['rounds']} interleaved rounds, {r['seconds']} s in all.{setup}", ""]
    out += ["| cell | relayd msg/s | Postfix msg/s | relayd ÷ Postfix (min–max) | p99 relayd / Postfix (ms) | p99 ratio | CPU ms/msg relayd / Postfix | peak PSS relayd / Postfix (MiB) |",
            "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        if c["suite"] in ("accept", "e2e"):
            a, b = c["relayd"], c["postfix"]
            out.append(f"| {c['suite']}: {c['cell']} | {fmt(a['msgs_per_s'])} | {fmt(b['msgs_per_s'])} | {ratio(c['throughput_ratio'])} | "
                       f"{fmt(a['p99_ms'])} / {fmt(b['p99_ms'])} | {ratio(c['p99_ratio'])} | {fmt(a['cpu_ms_per_msg'])} / {fmt(b['cpu_ms_per_msg'])} | "
                       f"{round(a['peak_rss_kib'] / 1024, 1)} / {round(b['peak_rss_kib'] / 1024, 1)} |")
    out.append("")
    for c in cells:
        if c["suite"] == "ceiling":
            gen = c["sink"].get("gen_cpu_s")
            gen = f"; generator CPU {round(gen * 1000 / max(1, c['sink']['sent']), 3)} ms/msg" if gen is not None else ""
            out.append(f"- Generator ceiling, {c['cell']}: {c['sink']['msgs_per_s']} msg/s (p99 {c['sink']['p99_ms']} ms{gen}).")
        if c.get("relayd_share_of_ceiling") is not None:
            out.append(f"- relayd, {c['suite']}: {c['cell']}: {round(100 * c['relayd_share_of_ceiling'])} % of the generator->sink "
                       "ceiling of its TLS mode.")
        if c["suite"] == "idle":
            a, b = c["relayd"], c["postfix"]
            out.append(f"- {c['cell']}: relayd held {a.get('held')} sessions at {a['kib_per_session']} KiB each; "
                       f"Postfix held {b.get('held')} at {b['kib_per_session']} KiB each (PSS).")
        if c["suite"] == "durability":
            out.append(f"- Durability: fsync on {c['fsync_on']} msg/s, off {c['fsync_off']} msg/s, on ÷ off {ratio(c['ratio'])}.")
        if c["suite"] == "e2e":
            out.append(f"- e2e delivered ÷ accepted (relayd): {c.get('delivered_over_accepted_relayd')}; "
                       f"delivered/s relayd {c['relayd']['delivered_per_s']}, Postfix {c['postfix']['delivered_per_s']}.")
    for c in cells:
        if c["suite"] == "bigmsg":
            out += bigmsg_table(c)
    by = {(c["suite"], c["cell"]): c for c in cells}

    def get(s, cell):
        return by.get((s, cell), {})
    goals = []
    four = ["STARTTLS 4KiB 10 sessions", "plain 4KiB 10 sessions", "STARTTLS 4KiB 100 sessions", "plain 4KiB 100 sessions"]
    ratios = {cell: get("accept", cell).get("throughput_ratio") for cell in four}
    s100 = get("accept", "STARTTLS 4KiB 100 sessions")
    p99, txn_p99 = s100.get("p99_ratio"), s100.get("txn_p99_ratio")
    refused = s100.get("relayd", {}).get("refused")
    shares = [get("accept", cell).get("relayd_share_of_ceiling") for cell in four if cell.startswith("STARTTLS")]
    idle_tls = get("idle", "idle TLS").get("relayd", {}).get("kib_per_session")
    idle_plain = get("idle", "idle plain").get("relayd", {}).get("kib_per_session")
    dur = next((c["ratio"] for c in cells if c["suite"] == "durability"), None)
    e2e = get("e2e", "STARTTLS in+out 10 sessions").get("delivered_over_accepted_relayd")
    one = get("accept", "STARTTLS 4KiB 1 session").get("relayd", {}).get("p50_ms")

    def check(ok):
        return "met" if ok else "**not met**"

    def spread(r):
        return f"{r['median']}× ({r['min']}–{r['max']})"
    if all(ratios.values()):
        goals.append("1. acceptance ≥ 3× Postfix in each cell (median of the rounds; per-round min–max): "
                     + ", ".join(f"{cell} {spread(r)}" for cell, r in ratios.items())
                     + f" — {check(all(r['median'] >= 3 for r in ratios.values()))}"
                     + ("" if all(r["min"] >= 3 for r in ratios.values()) else " (some rounds under 3×)"))
    if shares and all(x is not None for x in shares):
        goals.append(f"   relayd's share of the generator→sink ceiling, STARTTLS: {', '.join(f'{round(100 * x)} %' for x in shares)}"
                     f" (target ≥ 70 %) — {check(all(x >= 0.7 for x in shares))}")
    if p99 and txn_p99:
        goals.append(f"2. p99 at 100 sessions ≤ ½ Postfix's, no 4xx: from MAIL to the 250 {txn_p99['median']}× "
                     f"({txn_p99['min']}–{txn_p99['max']}) — {check(txn_p99['median'] <= 0.5 and not refused)}; "
                     f"from the end of the body {p99['median']}× ({p99['min']}–{p99['max']}) — {check(p99['median'] <= 0.5)}")
    if idle_tls is not None:
        goals.append(f"   10,000 idle sessions: TLS {idle_tls} KiB (≤ 32), plain {idle_plain} KiB (≤ 16) — {check(idle_tls <= 32 and idle_plain <= 16)}")
    if dur:
        goals.append(f"   fsync on ≥ 0.9× fsync off: {dur['median']}× ({dur['min']}–{dur['max']}) — {check(dur['median'] >= 0.9)}")
    if e2e is not None:
        goals.append(f"   e2e delivered/s ≥ 0.95× accepted/s: {e2e} — {check(e2e >= 0.95)}")
    if one is not None:
        goals.append(f"   one STARTTLS session, p50 ≤ 5 ms: {one} ms — {check(one <= 5)}")
    if goals:
        out += ["", "Goals:", ""] + goals
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/last-run.json")
