#!/usr/bin/env python3
"""Reads a lab results dir (written by lab/dom0/*.sh through the 9p share), prints the
kernel-vs-ours table, writes table.md and summary.json next to the raw files.

Exit status: 0 all functional checks of "ours" passed, 1 "ours" failed, 2 the lab itself
failed (kernel phase broken, or dom0 never reached LAB-DONE)."""
import json
import re
import statistics
import sys
from pathlib import Path

PHASES = ("kernel", "ours")
# checks "ours" must pass (the tag-less ones come from the first domU, "2" from the second
# xl create); a missing one means the script never got there, which is a failure too
OURS_REQUIRED = ["rmmod", "daemon-start", "create", "link", "ping", "ping-runs", "iperf", "detach",
                 "link-attach", "attach", "destroy", "create2", "link2", "ping2", "destroy2",
                 "daemon-alive", "sigterm"]
KERNEL_REQUIRED = ["create", "link", "ping", "ping-runs", "iperf", "destroy"]
HOSTILE_MODES = ["ungranted-ring", "ring-overflow", "bad-tx-gref"]  # lab/dom0/main.sh, HOSTILE=1

# (key, label, unit, better): better = "high" or "low", for the ratio's reading
METRICS = [
    ("tcp_dom0_to_domU", "TCP dom0→domU (guest RX)", "Mbit/s", "high"),
    ("tcp_domU_to_dom0", "TCP domU→dom0 (guest TX, -R)", "Mbit/s", "high"),
    ("tcp_dom0_to_domU_retr", "TCP dom0→domU, retransmits", "segments", "low"),
    ("tcp_domU_to_dom0_retr", "TCP domU→dom0, retransmits", "segments", "low"),
    ("udp64_dom0_to_domU_sent", "UDP 64 B dom0→domU, sent", "kpps", "high"),
    ("udp64_dom0_to_domU_recv", "UDP 64 B dom0→domU, received", "kpps", "high"),
    ("udp64_dom0_to_domU_loss", "UDP 64 B dom0→domU, loss", "%", "low"),
    ("udp64_domU_to_dom0_sent", "UDP 64 B domU→dom0, sent", "kpps", "high"),
    ("udp64_domU_to_dom0_recv", "UDP 64 B domU→dom0, received", "kpps", "high"),
    ("udp64_domU_to_dom0_loss", "UDP 64 B domU→dom0, loss", "%", "low"),
    ("ping_min", "ping -i 0.01, min", "ms", "low"),
    ("ping_median", "ping -i 0.01, median", "ms", "low"),
    ("ping_loss", "ping -i 0.01, loss", "%", "low"),
    ("flood_avg", "ping -f, avg", "ms", "low"),
    ("xl_create_s", "xl create", "s", "low"),
    ("create_to_ping_s", "xl create → first ping", "s", "low"),
    ("xl_destroy_s", "xl destroy", "s", "low"),
    ("detach_s", "xl network-detach", "s", "low"),
    ("attach_to_ping_s", "xl network-attach → ping", "s", "low"),
    ("hostile_s", "hostile frontends (3 nbtest domUs)", "s", "low"),
    ("soak_cycle_s", "soak: one detach + attach cycle", "s", "low"),
]


def load_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def iperf_tcp(path):
    j = load_json(path)
    if not j or "error" in j:
        return None
    return j["end"]["sum_received"]["bits_per_second"] / 1e6


def iperf_retransmits(path):
    """The sender's TCP retransmissions (iperf3 reports them for either end)."""
    j = load_json(path)
    if not j or "error" in j:
        return None
    return j["end"].get("sum_sent", {}).get("retransmits")


def iperf_udp(path):
    """(sent kpps, received kpps, loss %) of a UDP run: sent from the sender's intervals,
    received/lost from the receiver's end summary."""
    j = load_json(path)
    if not j or "error" in j:
        return None
    end = j["end"]
    recv = end.get("sum_received") or end.get("sum")
    sent = end.get("sum_sent") or end.get("sum")
    secs = sent.get("seconds") or j["start"]["test_start"]["duration"]
    # sum_sent.packets counts what the sender sent; the receiver's sum has lost_packets
    sent_pkts = sent.get("packets")
    if sent_pkts is None:
        sent_pkts = sum(i["sum"].get("packets", 0) for i in j.get("intervals", []))
    r_pkts = recv.get("packets", 0)
    lost = recv.get("lost_packets", 0)
    r_secs = recv.get("seconds") or secs
    got = max(r_pkts - lost, 0)
    loss = 100.0 * lost / r_pkts if r_pkts else 100.0
    return sent_pkts / secs / 1e3, got / r_secs / 1e3, loss


def ping_stats(path):
    try:
        text = path.read_text()
    except OSError:
        return None
    times = [float(t) for t in re.findall(r"time=([0-9.]+) ms", text)]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    loss = 100.0 * (1 - int(m.group(2)) / int(m.group(1))) if m and int(m.group(1)) else None
    if not times:
        return None, None, loss
    return min(times), statistics.median(times), loss


def flood_avg(path):
    try:
        m = re.search(r"rtt min/avg/max/mdev = [0-9.]+/([0-9.]+)/", path.read_text())
    except OSError:
        return None
    return float(m.group(1)) if m else None


def collect(res, phase):
    """metric key -> list of values over the runs"""
    d = res / phase
    vals = {k: [] for k, *_ in METRICS}
    runs = sorted({int(m.group(1)) for p in d.glob("run*-*") if (m := re.match(r"run(\d+)-", p.name))})
    for k in runs:
        for key in ("tcp_dom0_to_domU", "tcp_domU_to_dom0"):
            v = iperf_tcp(d / f"run{k}-{key.replace('_', '-')}.json")
            if v is not None:
                vals[key].append(v)
            r = iperf_retransmits(d / f"run{k}-{key.replace('_', '-')}.json")
            if r is not None:
                vals[key + "_retr"].append(float(r))
        for key in ("udp64_dom0_to_domU", "udp64_domU_to_dom0"):
            v = iperf_udp(d / f"run{k}-{key.replace('_', '-')}.json")
            if v is not None:
                vals[key + "_sent"].append(v[0])
                vals[key + "_recv"].append(v[1])
                vals[key + "_loss"].append(v[2])
        p = ping_stats(d / f"run{k}-ping.txt")
        if p:
            for key, v in zip(("ping_min", "ping_median", "ping_loss"), p):
                if v is not None:
                    vals[key].append(v)
        f = flood_avg(d / f"run{k}-flood.txt")
        if f is not None:
            vals["flood_avg"].append(f)
    try:
        for line in (res / "metrics.tsv").read_text().splitlines():
            ph, name, _tag, value = (line.split("\t") + ["", "", "", ""])[:4]
            if ph == phase and name in vals:
                vals[name].append(float(value))
    except (OSError, ValueError):
        pass
    return vals


def fmt(v):
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def read_checks(res):
    checks = []
    try:
        for line in (res / "checks.tsv").read_text().splitlines():
            parts = (line.split("\t") + ["", "", "", ""])[:4]
            checks.append(dict(zip(("phase", "check", "status", "detail"), parts)))
    except OSError:
        pass
    return checks


def verdict(checks, cfg, done):
    nb_fatal = str(cfg.get("nbtest_fatal", "0")) == "1"
    hostile_fatal = str(cfg.get("hostile_fatal", "0")) == "1"
    problems = {"kernel": [], "ours": [], "lab": []}
    if not done:
        problems["lab"].append("dom0 never printed LAB-DONE (crash or QEMU timeout; see serial.log)")
    for c in checks:
        if c["status"] != "fail":
            continue
        if c["check"] == "netfront-test" and not nb_fatal:
            continue
        if c["check"].startswith("hostile-") and not hostile_fatal:
            continue
        problems.setdefault(c["phase"], []).append(f"{c['check']}: {c['detail']}")
    for phase, required in (("kernel", KERNEL_REQUIRED), ("ours", OURS_REQUIRED)):
        seen = {c["check"] for c in checks if c["phase"] == phase}
        missing = [r for r in required if r not in seen]
        if missing and not any(p for p in problems[phase]):
            problems[phase].append("never reached: " + ", ".join(missing))
        elif missing:
            problems[phase].append("not reached: " + ", ".join(missing))
    if nb_fatal and str(cfg.get("nbtest", "0")) != "0":
        if not any(c["phase"] == "ours" and c["check"] == "netfront-test" for c in checks):
            problems["ours"].append("netfront-test: never ran")
    if hostile_fatal and str(cfg.get("hostile", "0")) != "0" and not problems["ours"]:
        ran = {c["check"] for c in checks if c["phase"] == "ours" and c["check"].startswith("hostile-")}
        missing = [m for m in HOSTILE_MODES if "hostile-" + m not in ran]
        if missing:
            problems["ours"].append("hostile modes never ran: " + ", ".join(missing))
    return problems


def other_cpu(res):
    """phase -> cores' worth of host CPU used by processes other than QEMU during the phase
    (from host-cpu.tsv: the host's busy jiffies and QEMU's at every LAB-T mark)"""
    import os
    hz = os.sysconf("SC_CLK_TCK")
    marks = {}
    try:
        for line in (res / "host-cpu.tsv").read_text().splitlines()[1:]:
            t, mark, busy, qemu = line.split("\t")
            marks[mark] = (float(t), int(busy), int(qemu))
    except (OSError, ValueError):
        return {}
    out = {}
    for phase, (a, b) in {"kernel": ("phase-kernel", "phase-kernel-done"), "ours": ("phase-ours", "lab-done")}.items():
        if a in marks and b in marks and marks[b][0] > marks[a][0]:
            (ta, ba, qa), (tb, bb, qb) = marks[a], marks[b]
            out[phase] = max(0.0, round(((bb - ba) - (qb - qa)) / hz / (tb - ta), 2))
    return out


def profile_section(res):
    """The daemon's syscalls and context switches per frame, per workload (PROFILE=1)."""
    path = res / "ours" / "profile.tsv"
    try:
        rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    except OSError:
        return []
    out = ["## Our daemon's cost per frame", "",
           "Frames: the TAP's rx+tx packets while one workload runs. Context switches (all the daemon's "
           "threads) come from a plain pass, syscalls from a second pass under `strace -c -f`, whose "
           "rates are not the table's. Top syscalls: `ours/profile-<workload>-strace.txt`; notifications "
           "and batch sizes: `ours/profile-<workload>-stats-{before,after}.txt`.", "",
           "| workload | frames | context switches per frame | frames (strace pass) | syscalls | per frame |",
           "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        if len(row) < 5:
            continue
        label, frames, ctx, sframes, calls = row[0], *(int(x or 0) for x in row[1:5])
        per = lambda n, d: f"{n / d:.2f}" if d else "–"
        out.append(f"| {label} | {frames} | {per(ctx, frames)} | {sframes} | {calls} | {per(calls, sframes)} |")
    out.append("")
    return out


def main():
    res = Path(sys.argv[1])
    cfg = load_json(res / "config.json") or {}
    serial = res / "serial.log"
    done = serial.exists() and "LAB-DONE" in serial.read_text(errors="replace")
    checks = read_checks(res)
    stats = {}
    for phase in PHASES:
        stats[phase] = {}
        for key, vs in collect(res, phase).items():
            stats[phase][key] = {"values": vs, "min": min(vs) if vs else None,
                                 "median": statistics.median(vs) if vs else None, "max": max(vs) if vs else None}
    problems = verdict(checks, cfg, done)
    noise = other_cpu(res)
    lab_ok = not problems["lab"] and not problems["kernel"]
    ours_ok = not problems["ours"]

    out = []
    out.append(f"# netback lab: kernel xen-netback vs ours ({cfg.get('mode', '?')})")
    out.append("")
    out.append(f"{cfg.get('date', '?')}, git {cfg.get('git_rev', '?')}, RUNS={cfg.get('runs')}, "
               f"iperf3 TCP {cfg.get('iperf_secs')} s, UDP {cfg.get('udp_secs')} s, "
               f"{cfg.get('ping_count')} pings at 10 ms, flood {cfg.get('flood_count')}; QEMU TCG, "
               f"{cfg.get('smp')} vCPUs, {cfg.get('mem')}; host load at start {cfg.get('host_load')}; "
               f"{cfg.get('versions', '')} daemon: `{cfg.get('netback_bin')} --xen {cfg.get('netback_args')}`"
               + (f", then `nbctl set {cfg['nbctl_set']}`" if cfg.get("nbctl_set") else "") + ". "
               "Numbers are min / median / max over the runs; TCG on a shared 2-core host is noisy: "
               "host CPU taken by other processes during the phase (cores): "
               + ", ".join(f"{p} {v}" for p, v in noise.items()) + ".")
    noisy = [p for p, v in noise.items() if v > 0.3]
    if noisy:
        out.append("")
        out.append(f"**NOISY**: other processes took more than 0.3 cores during {', '.join(noisy)}; QEMU runs "
                   "under nice, so its vCPUs then get a small share and the numbers of that phase are not "
                   "comparable. Repeat on a quiet host (or with NICE=0).")
    out.append("")
    out.append("| metric | unit | kernel min | kernel median | kernel max | ours min | ours median | ours max | ours/kernel |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for key, label, unit, _better in METRICS:
        k, o = stats["kernel"][key], stats["ours"][key]
        if not k["values"] and not o["values"]:
            continue
        ratio = "–"
        if k["median"] and o["median"] is not None:
            ratio = f"{o['median'] / k['median']:.2f}"
        okk = o["values"] or [None]
        out.append(f"| {label} | {unit} | {fmt(k['min'])} | {fmt(k['median'])} | {fmt(k['max'])} | "
                   f"{fmt(o['min']) if okk[0] is not None else 'FAILED'} | {fmt(o['median'])} | {fmt(o['max'])} | {ratio} |")
    out.append("")
    out.extend(profile_section(res))
    out.append("| phase | check | result | detail |")
    out.append("|---|---|---|---|")
    for c in checks:
        st = c["status"].upper() if c["status"] in ("fail", "warn") else c["status"]
        out.append(f"| {c['phase']} | {c['check']} | {st} | {c['detail'].replace('|', '/')} |")
    out.append("")
    if lab_ok and ours_ok:
        out.append("**Verdict: PASS**: the lab works and our daemon passed every functional check.")
    else:
        if not lab_ok:
            out.append("**Verdict: LAB FAILED**: " + "; ".join(problems["lab"] + problems["kernel"]))
        if not ours_ok:
            out.append("**Verdict: OURS FAILED**: " + "; ".join(problems["ours"]))
            out.append("")
            out.append("Diagnostics: `ours/netback.log`, `ours/diag-*.txt`, `xen-logs/`, `serial.log`.")
    out.append("")
    text = "\n".join(out)
    (res / "table.md").write_text(text)
    summary = {"config": cfg, "other_cpu_cores": noise, "lab_ok": lab_ok, "ours_ok": ours_ok, "problems": problems,
               "checks": checks, "metrics": stats, "lab_done": done}
    (res / "summary.json").write_text(json.dumps(summary, indent=1))
    print(text)
    sys.exit(0 if lab_ok and ours_ok else (2 if not lab_ok else 1))


if __name__ == "__main__":
    main()
