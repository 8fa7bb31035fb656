#!/usr/bin/env python3
"""Summary of the benchmark against issue 5's targets.

Reads the newest bench/results/throughput-*.json (bench/bench.py) and the
newest bench/results/invalidation-*.json (bench/invalidation.py), prints one
table of the targets with the measured value and MET / MISSED, and draws a
chart (hand-written SVG, no dependencies) to
bench/results/summary-<timestamp>.svg and bench/results/latest.svg.

Verdicts use the median over rounds; the spread (min-max) is shown beside it.
The invalidation targets are stated for 1M entries: they are judged on the
largest size in the file, and the table says which size that was.

usage: bench/report.py [--results DIR]
"""
import argparse
import glob
import json
import math
import os
import shutil
import sys
import time
from xml.sax.saxutils import escape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (bench.py comparison, target ratio, label)
THROUGHPUT_TARGETS = [
    ("TCACHE.GET vs GET", 0.90, "TCACHE.GET >= 0.90x GET (-P 16)"),
    ("TCACHE.SET 3 tags vs SET", 0.60, "TCACHE.SET 3 tags >= 0.60x SET EX"),
    ("TCACHE.SET 3 tags vs Lua SET+3 SADD", 4.0, "TCACHE.SET 3 tags >= 4x Lua SET+3 SADD"),
    ("PERM.CHECK vs GET", 0.85, "PERM.CHECK >= 0.85x GET"),
]
LAYOUTS = ("tcache", "tcache-sync", "lua")


def latest(directory, kind):
    paths = sorted(glob.glob(os.path.join(directory, f"{kind}-*.json")))
    if not paths:
        return None, None
    with open(paths[-1]) as f:
        return paths[-1], json.load(f)


# ---------------------------------------------------------------- targets


class Row:
    """One target: label, measured text, verdict (True, False or None = not measured)."""

    def __init__(self, label, measured="not measured", ok=None):
        self.label, self.measured, self.ok = label, measured, ok

    @property
    def verdict(self):
        return {True: "MET", False: "MISSED", None: "n/a"}[self.ok]


def spread(s, fmt):
    if s is None:
        return "n/a"
    if s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])})"


def ms(seconds):
    v = seconds * 1000
    return f"{v:.3f} ms" if v < 1 else f"{v:.2f} ms" if v < 10 else f"{v:.0f} ms"


def throughput_rows(data):
    by_name = {r["comparison"]: r for r in data["results"]} if data else {}
    rows = []
    for name, target, label in THROUGHPUT_TARGETS:
        r = by_name.get(name)
        if not r:
            rows.append(Row(label))
            continue
        s = {"median": r["median_ratio"], "min": r["ratio_min"], "max": r["ratio_max"]}
        rows.append(Row(label, spread(s, lambda v: f"{v:.2f}x"), r["median_ratio"] >= target))
    return rows


def biggest_size(data):
    return max(data["sizes"], key=lambda s: s["entries"]) if data and data.get("sizes") else None


def stat(size, layout, metric):
    return size["summary"].get(layout, {}).get(metric) if size else None


def invalidation_rows(data):
    size = biggest_size(data)
    at = f" [at {size['entries']:,}]" if size and size["entries"] != 1_000_000 else ""
    rows = []

    def simple(label, metric, limit, fmt, layout="tcache"):
        s = stat(size, layout, metric)
        rows.append(Row(label + at, spread(s, fmt), s["median"] <= limit) if s else Row(label + at))

    simple("INVALTAG 1M entries: command <= 1 ms", "command_s", 0.001, ms)
    simple("worst concurrent PING <= 10 ms", "ping.worst_s", 0.010, ms)
    idle, p99 = stat(size, "tcache", "ping_idle.worst_s"), stat(size, "tcache", "ping.p99_s")
    if rows[-1].ok is not None and (idle or p99):
        # The same probe on the same server while idle: the machine's own worst case.
        extra = [f"p99 {ms(p99['median'])}"] if p99 else []
        extra += [f"idle server: worst {spread(idle, ms)}"] if idle else []
        rows[-1].measured += "; " + "; ".join(extra)
    reclaim, sync, lua = (stat(size, l, m) for l, m in
                          (("tcache", "reclaim_s"), ("tcache-sync", "command_s"), ("lua", "command_s")))
    label = "reclaim done within 2x synchronous delete" + at
    if reclaim and sync:
        text = (f"{ms(reclaim['median'])} vs 2 x {ms(sync['median'])} (sync)"
                + (f"; lua {ms(lua['median'])}" if lua else ""))
        rows.append(Row(label, text, reclaim["median"] <= 2 * sync["median"]))
    else:
        rows.append(Row(label))
    simple("replication, logical step <= 1 KB", "repl_logical_bytes", 1024,
           lambda b: f"{b:.0f} B")
    simple("replication <= 25 B per reclaimed key", "repl_bytes_per_key", 25,
           lambda b: f"{b:.1f} B")
    return rows, size


def memory_row(data):
    layouts = {m["layout"]: m for m in (data or {}).get("memory", {}).get("layouts", [])}
    label = "memory per entry, 3 tags <= strings + sets"
    if "tcache" not in layouts or "lua" not in layouts:
        return Row(label)
    t, l = layouts["tcache"]["bytes_per_entry"], layouts["lua"]["bytes_per_entry"]
    return Row(label, f"{t:.0f} B vs {l:.0f} B", t <= l)


def print_table(rows):
    w0 = max(len(r.label) for r in rows)
    w1 = max(len(r.measured) for r in rows)
    print(f"{'target':{w0}}  {'measured (median, min-max)':{w1}}  verdict")
    for r in rows:
        print(f"{r.label:{w0}}  {r.measured:{w1}}  {r.verdict}")


# ---------------------------------------------------------------- SVG


class Svg:
    def __init__(self, width):
        self.width, self.items, self.y = width, [], 0

    def text(self, x, y, s, size=12, anchor="start", weight="normal", fill="#222"):
        self.items.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" '
                          f'text-anchor="{anchor}" font-weight="{weight}" fill="{fill}">'
                          f'{escape(str(s))}</text>')

    def rect(self, x, y, w, h, fill):
        self.items.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" '
                          f'height="{h:.1f}" fill="{fill}"/>')

    def line(self, x1, y1, x2, y2, stroke="#999", width=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.items.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                          f'stroke="{stroke}" stroke-width="{width}"{d}/>')

    def render(self):
        height = self.y + 20
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{height}" '
                f'viewBox="0 0 {self.width} {height}" font-family="sans-serif">\n'
                f'<rect width="100%" height="100%" fill="white"/>\n'
                + "\n".join(self.items) + "\n</svg>\n")


GREEN, RED, GREY = "#3a9d5d", "#d0473b", "#999"
LEFT, RIGHT = 300, 60


class LogAxis:
    def __init__(self, svg, lo, hi):
        self.svg, self.lo, self.hi = svg, math.log10(lo), math.log10(hi)
        self.x0, self.x1 = LEFT, svg.width - RIGHT

    def x(self, v):
        v = min(max(v, 10 ** self.lo), 10 ** self.hi)
        return self.x0 + (math.log10(v) - self.lo) / (self.hi - self.lo) * (self.x1 - self.x0)

    def draw(self, top, bottom, ticks, label, under=None):
        """Grid, tick labels and axis label; the grid goes under the items
        drawn since index `under` of the picture."""
        later = self.svg.items[under:] if under is not None else []
        del self.svg.items[len(self.svg.items) - len(later):]
        for v, name in ticks:
            self.svg.line(self.x(v), top, self.x(v), bottom, "#e4e4e4")
            self.svg.text(self.x(v), bottom + 14, name, 10, "middle", fill="#666")
        self.svg.text((self.x0 + self.x1) / 2, bottom + 28, label, 11, "middle", fill="#444")
        self.svg.items += later


def draw_targets(svg, rows, title):
    svg.text(20, svg.y + 24, title, 16, weight="bold")
    svg.y += 44
    for r in rows:
        colour = {True: GREEN, False: RED, None: GREY}[r.ok]
        svg.text(20, svg.y, r.label, 12)
        svg.text(420, svg.y, r.measured, 12)
        svg.text(svg.width - 20, svg.y, r.verdict, 12, "end", "bold", colour)
        svg.y += 18
    svg.y += 10


def draw_throughput(svg, data):
    svg.text(20, svg.y + 16, "Throughput ratio vs the native command or the Lua script "
             "(median; whisker min-max; | target)", 13, weight="bold")
    top = svg.y + 28
    axis = LogAxis(svg, 0.1, 10)
    by_name = {r["comparison"]: r for r in data["results"]}
    rows = [(name, target) for name, target, _ in THROUGHPUT_TARGETS if name in by_name]
    rows += [(r["comparison"], None) for r in data["results"]
             if r["comparison"] not in dict(rows)]
    y, under = top, len(svg.items)
    for name, target in rows:
        r = by_name[name]
        ok = None if target is None else r["median_ratio"] >= target
        svg.text(LEFT - 8, y + 13, name, 11, "end")
        svg.rect(axis.x0, y + 3, axis.x(r["median_ratio"]) - axis.x0, 14,
                 {True: GREEN, False: RED, None: "#8aa8c8"}[ok])
        svg.line(axis.x(r["ratio_min"]), y + 10, axis.x(r["ratio_max"]), y + 10, "#333")
        if target is not None:
            svg.line(axis.x(target), y, axis.x(target), y + 20, "#111", 2.5)
        label_x = max(axis.x(v) for v in (r["median_ratio"], r["ratio_max"], target or 0.1))
        svg.text(label_x + 5, y + 14, f"{r['median_ratio']:.2f}x", 10)
        y += 24
    axis.draw(top - 4, y, [(v, f"{v:g}x") for v in (0.1, 0.25, 0.5, 1, 2, 4, 10)],
              "ratio (log scale)", under)
    svg.y = y + 44


def draw_invalidation(svg, size, sync_available):
    n = size["entries"]
    svg.text(20, svg.y + 16, f"Invalidating a tag of {n:,} entries (median over "
             f"{size['rounds']} rounds; whisker min-max)", 13, weight="bold")
    top = svg.y + 28
    axis = LogAxis(svg, 1e-5, 100)
    metrics = [("command_s", "command", "#4c72b0"), ("ping.worst_s", "worst PING", "#dd8452"),
               ("reclaim_s", "reclaimed", "#8172b3")]
    y, under = top, len(svg.items)
    for layout in LAYOUTS:
        name = layout + ("" if sync_available or layout != "tcache-sync" else " (no sync config)")
        svg.text(LEFT - 8, y + 26, name, 12, "end", "bold")
        for metric, label, colour in metrics:
            s = size["summary"][layout].get(metric)
            if s:
                svg.rect(axis.x0, y + 2, axis.x(s["median"]) - axis.x0, 12, colour)
                svg.line(axis.x(s["min"]), y + 8, axis.x(s["max"]), y + 8, "#333")
                svg.text(axis.x(s["median"]) + 4, y + 12, f"{label} {ms(s['median'])}", 10)
            y += 15
        y += 12
    sync = stat(size, "tcache-sync", "command_s")
    marks = [(0.001, "1 ms: command target"), (0.010, "10 ms: PING target")]
    if sync:
        marks.append((2 * sync["median"], "2x sync: reclaim target"))
    for i, (v, label) in enumerate(marks):
        svg.line(axis.x(v), top - 4, axis.x(v), y, "#c00", 1, "4,3")
        right = axis.x(v) > svg.width - 200
        svg.text(axis.x(v) + (-3 if right else 3), y + 44 + 12 * i, label, 10,
                 "end" if right else "start", fill="#c00")
    axis.draw(top - 4, y, [(10 ** e, label) for e, label in
                           ((-5, "10us"), (-4, "0.1ms"), (-3, "1ms"), (-2, "10ms"),
                            (-1, "100ms"), (0, "1s"), (1, "10s"), (2, "100s"))],
              "seconds (log scale)", under)
    svg.y = y + 44 + 12 * len(marks)


def draw_bars(svg, title, bars, target=None, unit="B"):
    """Linear horizontal bars: [(label, value, colour)], optional target line."""
    svg.text(20, svg.y + 16, title, 13, weight="bold")
    top, y = svg.y + 28, svg.y + 28
    hi = max([v for _, v, _ in bars] + [target or 0]) * 1.15 or 1
    scale = lambda v: LEFT + v / hi * (svg.width - RIGHT - LEFT)
    for label, value, colour in bars:
        svg.text(LEFT - 8, y + 13, label, 11, "end")
        svg.rect(LEFT, y + 3, scale(value) - LEFT, 14, colour)
        svg.text(scale(value) + 4, y + 14, f"{value:.1f} {unit}", 10)
        y += 22
    svg.line(LEFT, top - 4, LEFT, y, "#666")
    if target is not None:
        svg.line(scale(target), top - 4, scale(target), y, "#c00", 1, "4,3")
        svg.text(scale(target) + 3, y + 12, f"target {target:g} {unit}", 10, fill="#c00")
    svg.y = y + 26


def chart(rows, throughput, inval, sources):
    svg = Svg(960)
    draw_targets(svg, rows, "tcache: issue 5 targets")
    if throughput:
        draw_throughput(svg, throughput)
    size = biggest_size(inval)
    if size:
        draw_invalidation(svg, size, inval["capabilities"].get("inval_sync_max") is not None)
        per_key = [(l, stat(size, l, "repl_bytes_per_key")) for l in LAYOUTS]
        draw_bars(svg, "Replication bytes per deleted key (tcache: the reclaim)",
                  [(l, s["median"], "#55a868") for l, s in per_key if s], target=25)
    if inval and inval.get("memory"):
        mem = inval["memory"]
        names = {"tcache": "tcache", "lua": "strings + 3 sets"}
        draw_bars(svg, f"Memory per entry, 100-byte value and 3 tags ({mem['entries']:,} entries)",
                  [(names[m["layout"]], m["bytes_per_entry"], "#64b5cd") for m in mem["layouts"]])
    load = (inval or {}).get("load_average_1min")
    if load:
        sources.append(f"invalidation run: load average {load['start']:.2f} -> {load['end']:.2f} "
                       f"on {load['cpus']} CPUs (replica and latency probes on the same machine)")
    for s in sources:
        svg.text(20, svg.y, s, 10, fill="#666")
        svg.y += 14
    return svg.render()


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    tpath, throughput = latest(args.results, "throughput")
    ipath, inval = latest(args.results, "invalidation")
    if not throughput and not inval:
        sys.exit(f"no throughput-*.json or invalidation-*.json in {args.results}: run make bench")
    inval_rows, size = invalidation_rows(inval)
    rows = throughput_rows(throughput) + inval_rows + [memory_row(inval)]
    sources = [f"throughput: {os.path.basename(tpath) if tpath else 'none'}",
               f"invalidation: {os.path.basename(ipath) if ipath else 'none'}"]
    print("\nissue 5 targets (" + ", ".join(sources) + ")")
    print_table(rows)
    if inval and inval.get("warnings"):
        print("the invalidation run warned: " + "; ".join(inval["warnings"]))
    path = os.path.join(args.results, time.strftime("summary-%Y%m%dT%H%M%S.svg"))
    with open(path, "w") as f:
        f.write(chart(rows, throughput, inval, sources))
    shutil.copyfile(path, os.path.join(args.results, "latest.svg"))
    print(f"chart: {path} (and latest.svg)")


if __name__ == "__main__":
    main()
