#!/usr/bin/env python3
"""Summary of the benchmark against issue 5's targets.

Reads the newest bench/results/throughput-*.json (bench/bench.py) and the
newest bench/results/invalidation-*.json (bench/invalidation.py), prints one
table of the targets with the measured value and MET / MISSED, and draws a
chart with matplotlib (`make bench` installs it) to
bench/results/summary-<timestamp>.svg and bench/results/latest.svg.

Verdicts use the median over rounds; the spread (min-max) is shown beside it.
The invalidation targets are stated for 1M entries: they are judged on the
largest size in the file, and the table says which size that was.

usage: bench/report.py [--results DIR]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.ticker import FixedLocator, NullLocator

Json = dict[str, Any]
# {"median": ..., "min": ..., "max": ...} of one metric over the rounds.
Spread = dict[str, float]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (bench.py comparison, target ratio, label)
THROUGHPUT_TARGETS = [
    ("TCACHE.GET vs GET", 0.90, "TCACHE.GET >= 0.90x GET (-P 16)"),
    ("TCACHE.SET 3 tags vs SET", 0.60, "TCACHE.SET 3 tags >= 0.60x SET EX"),
    ("TCACHE.SET 3 tags vs Lua SET+3 SADD", 4.0, "TCACHE.SET 3 tags >= 4x Lua SET+3 SADD"),
    ("PERM.CHECK vs GET", 0.85, "PERM.CHECK >= 0.85x GET"),
]
LAYOUTS = ("tcache", "tcache-sync", "lua")


def latest(directory: str, kind: str) -> tuple[str | None, Json | None]:
    paths = sorted(glob.glob(os.path.join(directory, f"{kind}-*.json")))
    if not paths:
        return None, None
    with open(paths[-1]) as f:
        data: Json = json.load(f)
    return paths[-1], data


# ---------------------------------------------------------------- targets


class Row:
    """One target: label, measured text, verdict (True, False or None = not measured)."""

    def __init__(self, label: str, measured: str = "not measured",
                 ok: bool | None = None) -> None:
        self.label, self.measured, self.ok = label, measured, ok

    @property
    def verdict(self) -> str:
        return {True: "MET", False: "MISSED", None: "n/a"}[self.ok]


def spread(s: Spread | None, fmt: Callable[[float], str]) -> str:
    if s is None:
        return "n/a"
    if s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])})"


def ms(seconds: float) -> str:
    v = seconds * 1000
    return f"{v:.3f} ms" if v < 1 else f"{v:.2f} ms" if v < 10 else f"{v:.0f} ms"


def throughput_rows(data: Json | None) -> list[Row]:
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


def biggest_size(data: Json | None) -> Json | None:
    if not data or not data.get("sizes"):
        return None
    size: Json = max(data["sizes"], key=lambda s: s["entries"])
    return size


def stat(size: Json | None, layout: str, metric: str) -> Spread | None:
    if not size:
        return None
    s: Spread | None = size["summary"].get(layout, {}).get(metric)
    return s


def invalidation_rows(data: Json | None) -> tuple[list[Row], Json | None]:
    size = biggest_size(data)
    at = f" [at {size['entries']:,}]" if size and size["entries"] != 1_000_000 else ""
    rows: list[Row] = []

    def simple(label: str, metric: str, limit: float, fmt: Callable[[float], str],
               layout: str = "tcache") -> None:
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
    reclaim, sync, lua = (stat(size, lay, m) for lay, m in
                          (("tcache", "reclaim_s"), ("tcache-sync", "command_s"),
                           ("lua", "command_s")))
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


def memory_row(data: Json | None) -> Row:
    layouts = {m["layout"]: m for m in (data or {}).get("memory", {}).get("layouts", [])}
    label = "memory per entry, 3 tags <= strings + sets"
    if "tcache" not in layouts or "lua" not in layouts:
        return Row(label)
    t, lu = layouts["tcache"]["bytes_per_entry"], layouts["lua"]["bytes_per_entry"]
    return Row(label, f"{t:.0f} B vs {lu:.0f} B", t <= lu)


def print_table(rows: list[Row]) -> None:
    w0 = max(len(r.label) for r in rows)
    w1 = max(len(r.measured) for r in rows)
    print(f"{'target':{w0}}  {'measured (median, min-max)':{w1}}  verdict")
    for r in rows:
        print(f"{r.label:{w0}}  {r.measured:{w1}}  {r.verdict}")


# ---------------------------------------------------------------- chart (matplotlib)

GREEN, RED, GREY, NEUTRAL = "#3a9d5d", "#d0473b", "#999999", "#8aa8c8"
VERDICT_COLOUR: dict[bool | None, str] = {True: GREEN, False: RED, None: GREY}
WIDTH_IN = 12.0
# Height of one bar row, in inches, for each panel.
ROW_IN = 0.32
RATIO_TICKS = (0.1, 0.25, 0.5, 1, 2, 4, 10)
TIME_TICKS = ((1e-5, "10us"), (1e-4, "0.1ms"), (1e-3, "1ms"), (1e-2, "10ms"),
              (1e-1, "100ms"), (1.0, "1s"), (10.0, "10s"), (100.0, "100s"))
INVAL_METRICS = (("command_s", "command", "#4c72b0"), ("ping.worst_s", "worst PING", "#dd8452"),
                 ("reclaim_s", "reclaimed", "#8172b3"))


def clamp(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


def log_axis(ax: Axes, lo: float, hi: float, ticks: list[tuple[float, str]], label: str) -> None:
    """A log x axis from lo to hi with named ticks and a light grid under the bars."""
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_locator(FixedLocator([v for v, _ in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([name for _, name in ticks], fontsize=9, color="#666666")
    ax.set_xlabel(label, fontsize=10, color="#444444")
    ax.grid(axis="x", color="#e4e4e4", linewidth=1)
    ax.set_axisbelow(True)


def tidy(ax: Axes, title: str) -> None:
    ax.set_title(title, loc="left", fontsize=12, fontweight="bold")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)


def draw_targets(ax: Axes, rows: list[Row], title: str) -> None:
    """The target table in a monospaced font, so that its columns line up:
    label, measured value, verdict in its colour."""
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(len(rows) + 0.4, -2.0)
    ax.text(0, -1.3, title, fontsize=15, fontweight="bold", va="center")
    w0 = max(len(r.label) for r in rows) + 2
    w1 = max(len(r.measured) for r in rows) + 2
    # A monospaced character is 0.6 em wide; shrink the font if a line would not fit.
    width_pt = WIDTH_IN * 72 * ax.get_position().width
    size = min(10.0, width_pt / (0.6 * (w0 + w1 + len("MISSED"))))
    x1 = 0.6 * size * w0 / width_pt
    cells: list[tuple[float, str, str, str, str]] = [
        (-0.3, "target", "measured (median, min-max)", "verdict", "#666666")]
    cells += [(i, r.label, r.measured, r.verdict, VERDICT_COLOUR[r.ok])
              for i, r in enumerate(rows, start=1)]
    for y, label, measured, verdict, colour in cells:
        grey = "#666666" if y < 0 else "#222222"
        ax.text(0, y, label, fontsize=size, va="center", family="monospace", color=grey)
        ax.text(x1, y, measured, fontsize=size, va="center", family="monospace", color=grey)
        ax.text(1, y, verdict, fontsize=size, va="center", family="monospace", ha="right",
                fontweight="normal" if y < 0 else "bold", color=colour)


def draw_throughput(ax: Axes, data: Json) -> None:
    """Median ratio per comparison (bar coloured by verdict), min-max whisker,
    target mark; comparisons without a target in a neutral colour."""
    tidy(ax, "Throughput ratio vs the native command or the Lua script "
         "(median; whisker min-max; | target)")
    lo, hi = RATIO_TICKS[0], RATIO_TICKS[-1]
    by_name = {r["comparison"]: r for r in data["results"]}
    items: list[tuple[str, float | None]] = [
        (name, target) for name, target, _ in THROUGHPUT_TARGETS if name in by_name]
    items += [(r["comparison"], None) for r in data["results"]
              if r["comparison"] not in dict(items)]
    for y, (name, target) in enumerate(items):
        r = by_name[name]
        ok = None if target is None else r["median_ratio"] >= target
        median = clamp(r["median_ratio"], lo, hi)
        ax.barh(y, median - lo, left=lo, height=0.6,
                color={True: GREEN, False: RED, None: NEUTRAL}[ok])
        ax.hlines(y, clamp(r["ratio_min"], lo, hi), clamp(r["ratio_max"], lo, hi),
                  color="#333333", linewidth=1)
        if target is not None:
            ax.vlines(target, y - 0.42, y + 0.42, color="#111111", linewidth=2.5)
        right = max(clamp(v, lo, hi) for v in (r["median_ratio"], r["ratio_max"], target or lo))
        ax.text(right * 1.04, y, f"{r['median_ratio']:.2f}x", fontsize=9, va="center")
    ax.set_yticks(range(len(items)), [name for name, _ in items], fontsize=9)
    ax.set_ylim(len(items) - 0.5, -0.6)
    log_axis(ax, lo, hi, [(v, f"{v:g}x") for v in RATIO_TICKS], "ratio (log scale)")


def draw_invalidation(ax: Axes, size: Json, sync_available: bool) -> None:
    """Per layout: command time, worst concurrent PING and time until reclaimed
    (median bar, min-max whisker), with the targets as dashed lines."""
    n = size["entries"]
    tidy(ax, f"Invalidating a tag of {n:,} entries (median over {size['rounds']} rounds; "
         "whisker min-max)")
    lo, hi = TIME_TICKS[0][0], TIME_TICKS[-1][0]
    ticks, names = [], []
    y = 0.0
    for layout in LAYOUTS:
        first = y
        for metric, label, colour in INVAL_METRICS:
            s = stat(size, layout, metric)
            if s:
                median = clamp(s["median"], lo, hi)
                ax.barh(y, median - lo, left=lo, height=0.75, color=colour)
                ax.hlines(y, clamp(s["min"], lo, hi), clamp(s["max"], lo, hi),
                          color="#333333", linewidth=1)
                right = max(median, clamp(s["max"], lo, hi))
                ax.text(right * 1.15, y, f"{label} {ms(s['median'])}", fontsize=8.5,
                        va="center")
            y += 1
        ticks.append((first + y - 1) / 2)
        names.append(layout + ("" if sync_available or layout != "tcache-sync"
                               else " (no sync config)"))
        y += 0.8
    ax.set_yticks(ticks, names, fontsize=10, fontweight="bold")
    ax.set_ylim(y - 0.8 + 0.1, -0.7)
    sync = stat(size, "tcache-sync", "command_s")
    marks = [(0.001, "1 ms: command target"), (0.010, "10 ms: PING target")]
    if sync:
        marks.append((2 * sync["median"], "2x sync: reclaim target"))
    for v, label in marks:
        ax.axvline(v, color="#cc0000", linewidth=1, linestyle=(0, (4, 3)), label=label)
    ax.legend(loc="lower right", fontsize=8.5, frameon=False, labelcolor="#cc0000",
              handlelength=2.5)
    log_axis(ax, lo, hi, list(TIME_TICKS), "seconds (log scale)")


def draw_bars(ax: Axes, title: str, bars: list[tuple[str, float, str]],
              target: float | None = None, unit: str = "B") -> None:
    """Linear horizontal bars [(label, value, colour)], optional target line."""
    tidy(ax, title)
    hi = max([v for _, v, _ in bars] + [target or 0]) * 1.15 or 1
    for y, (label, value, colour) in enumerate(bars):
        ax.barh(y, value, height=0.6, color=colour)
        ax.text(value + hi * 0.005, y, f"{value:.1f} {unit}", fontsize=9, va="center")
    ax.set_yticks(range(len(bars)), [label for label, _, _ in bars], fontsize=9)
    ax.set_ylim(len(bars) - 0.5, -0.6)
    ax.set_xlim(0, hi)
    ax.tick_params(axis="x", labelsize=9, colors="#666666")
    if target is not None:
        ax.axvline(target, color="#cc0000", linewidth=1, linestyle=(0, (4, 3)),
                   label=f"target {target:g} {unit}")
        ax.legend(loc="lower right", fontsize=8.5, frameon=False, labelcolor="#cc0000")


def chart(rows: list[Row], throughput: Json | None, inval: Json | None,
          sources: list[str]) -> Figure:
    """The whole chart: the targets table across the full width, then one
    panel per measurement, then the sources."""
    # (height in inches, draw function) per panel, top to bottom.
    panels: list[tuple[float, Callable[[Axes], None]]] = []
    if throughput:
        tp = throughput
        panels.append((ROW_IN * len(tp["results"]) + 1.1, lambda ax: draw_throughput(ax, tp)))
    size = biggest_size(inval)
    if inval and size:
        sz, sync_available = size, inval["capabilities"].get("inval_sync_max") is not None
        panels.append((ROW_IN * 11 + 1.1, lambda ax: draw_invalidation(ax, sz, sync_available)))
        per_key = [(lay, stat(sz, lay, "repl_bytes_per_key")) for lay in LAYOUTS]
        repl = [(lay, s["median"], "#55a868") for lay, s in per_key if s]
        if repl:
            panels.append((ROW_IN * len(repl) + 0.9, lambda ax: draw_bars(
                ax, "Replication bytes per deleted key (tcache: the reclaim)", repl,
                target=25)))
    if inval and inval.get("memory"):
        mem = inval["memory"]
        names = {"tcache": "tcache", "lua": "strings + 3 sets"}
        bars = [(names.get(m["layout"], m["layout"]), m["bytes_per_entry"], "#64b5cd")
                for m in mem["layouts"]]
        panels.append((ROW_IN * len(bars) + 0.9, lambda ax: draw_bars(
            ax, f"Memory per entry, 100-byte value and 3 tags ({mem['entries']:,} entries)",
            bars)))
    load = (inval or {}).get("load_average_1min")
    notes = list(sources)
    if load:
        notes.append(f"invalidation run: load average {load['start']:.2f} -> {load['end']:.2f} "
                     f"on {load['cpus']} CPUs (replica and latency probes on the same machine)")
    table = ROW_IN * (len(rows) + 2.5)
    heights = [h for h, _ in panels] + [0.2 * len(notes) + 0.1]
    fig = Figure(figsize=(WIDTH_IN, table + sum(heights)), layout="constrained")
    parts = fig.subfigures(2, 1, height_ratios=[table, sum(heights)])
    assert not isinstance(parts, SubFigure)
    top, rest = parts
    draw_targets(top.add_axes((0.01, 0.0, 0.98, 1.0)), rows, "tcache: issue 5 targets")
    axes = rest.subplots(len(heights), 1, gridspec_kw={"height_ratios": heights})
    for ax, (_, draw) in zip(axes, panels):
        draw(ax)
    foot = axes[-1]
    foot.set_axis_off()
    for i, note in enumerate(notes):
        foot.text(0, 1 - i / len(notes), note, fontsize=8.5, color="#666666", va="top",
                  transform=foot.transAxes)
    return fig


def save_chart(fig: Figure, path: str) -> None:
    """SVG with text kept as text and no timestamp, so that two runs of the
    same figures give the same file."""
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "tcache"}):
        fig.savefig(path, format=os.path.splitext(path)[1][1:] or "svg", facecolor="white",
                    metadata={"Date": None} if path.endswith(".svg") else None)


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    tpath, throughput = latest(args.results, "throughput")
    ipath, inval = latest(args.results, "invalidation")
    if not throughput and not inval:
        sys.exit(f"no throughput-*.json or invalidation-*.json in {args.results}: run make bench")
    inval_rows, _ = invalidation_rows(inval)
    rows = throughput_rows(throughput) + inval_rows + [memory_row(inval)]
    sources = [f"throughput: {os.path.basename(tpath) if tpath else 'none'}",
               f"invalidation: {os.path.basename(ipath) if ipath else 'none'}"]
    print("\nissue 5 targets (" + ", ".join(sources) + ")")
    print_table(rows)
    if inval and inval.get("warnings"):
        print("the invalidation run warned: " + "; ".join(inval["warnings"]))
    path = os.path.join(args.results, time.strftime("summary-%Y%m%dT%H%M%S.svg"))
    save_chart(chart(rows, throughput, inval, sources), path)
    shutil.copyfile(path, os.path.join(args.results, "latest.svg"))
    print(f"chart: {path} (and latest.svg)")


if __name__ == "__main__":
    main()
