#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The benchmark plots for docs/BENCHMARKS.md, PNGs written with Debian's matplotlib.

  round_time.png   round time vs clients, one panel per model size, one line per system
  peak_memory.png  server peak memory vs clients, same layout
  fold.png         fold kernel GB/s against the memory-bandwidth limit (STREAM triad)
  ingest.png       HTTP ingest MB/s per server against raw loopback TCP (if --ingest is given)

usage: plot.py [--round bench/round/results.csv] [--fold FOLD_OUTPUT.txt]
               [--ingest INGEST.csv] [--out docs/img]
--fold takes the text build/bench/fold/bench_fold prints; without it, plot.py runs
build/bench/fold/bench_fold --mb 64 itself.
"""

import argparse
import csv
import os
import subprocess

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STYLE = {
    "shm+bpf": dict(label="Tributary shm+bpf", color="#1f77b4", marker="o"),
    "tcp": dict(label="Tributary tcp", color="#2ca02c", marker="s"),
    "python": dict(label="Python aiohttp+numpy (Flower-style)", color="#d62728", marker="^"),
}


def params_label(p):
    return "%gM params" % (p / 1e6) if p >= 1e6 else "%gk params" % (p / 1e3)


def read_round(path):
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            if r["rounds"] in ("", "0"):
                r["skipped"] = True
            else:
                r["skipped"] = False
                for k in ("round_s", "cpu_s", "peak_mb", "arena_mb"):
                    r[k] = float(r[k])
                r["used_mb"] = float(r.get("used_mb") or r["peak_mb"])
            r["clients"], r["params"] = int(r["clients"]), int(r["params"])
            rows.append(r)
    return rows


def by_params(rows, series, ylabel, title, out):
    """One panel per model size; series: (system, column, label, extra plot kwargs)."""
    params = sorted({r["params"] for r in rows})
    fig, axes = plt.subplots(1, len(params), figsize=(4.4 * len(params), 4.2), squeeze=False)
    for ax, p in zip(axes[0], params):
        for s, key, label, kw in series:
            st = STYLE[s]
            pts = sorted((r["clients"], r[key], r) for r in rows
                         if r["params"] == p and r["system"] == s and not r["skipped"])
            if not pts:
                continue
            xs, ys = [x[0] for x in pts], [x[1] for x in pts]
            ax.plot(xs, ys, color=st["color"], marker=st["marker"], label=label, **kw)
            if kw:
                continue
            for x, y, r in pts:
                if r["note"]:
                    ax.annotate("R=%s" % r["rounds"], (x, y), textcoords="offset points",
                                xytext=(4, -11), fontsize=7, color=st["color"])
        skipped = sorted({STYLE[r["system"]]["label"].split(" (")[0] for r in rows
                          if r["params"] == p and r["skipped"]})
        if skipped:
            ax.annotate("not run at every N:\n" + "\n".join(skipped) + "\n(see table)",
                        (0.97, 0.03), xycoords="axes fraction", ha="right", va="bottom",
                        fontsize=7, color="#555555")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sorted({r["clients"] for r in rows}))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "%d" % v))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "%g" % v))
        ax.set_xlabel("clients per round")
        ax.set_title(params_label(p))
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), frameon=False,
               fontsize=9)
    fig.suptitle(title)
    nrow = (len(labels) + 2) // 3
    fig.tight_layout(rect=(0, 0.05 + 0.04 * nrow, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def parse_fold(text):
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("kernel",) or cells[0].startswith("-"):
            continue
        try:
            med = float(cells[4])
        except ValueError:
            continue
        upd = float(cells[5]) if cells[5] not in ("-", "") else None
        rows.append(dict(kernel=cells[0], layout=cells[1], median=med, upd=upd))
    return rows


def plot_fold(text, out):
    rows = [r for r in parse_fold(text) if r["layout"] == "offset"]
    pick = ["triad a=b+s*c", "a+=s*b (compiler, in place)", "fold k=1", "multi-fold k=2",
            "multi-fold k=4", "multi-fold k=8 (2 passes)"]
    rows = [next(r for r in rows if r["kernel"] == k) for k in pick
            if any(r["kernel"] == k for r in rows)]
    triad = next(r["median"] for r in rows if r["kernel"].startswith("triad"))
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    xs = range(len(rows))
    w = 0.38
    ax.bar([x - w / 2 for x in xs], [r["median"] for r in rows], w, color="#1f77b4",
           label="memory traffic GB/s (median)")
    ax.bar([x + w / 2 for x in xs], [r["upd"] or 0 for r in rows], w, color="#ff7f0e",
           label="update bytes folded GB/s")
    ax.axhline(triad, color="k", ls="--", lw=1,
               label="memory-bandwidth limit: STREAM triad, %.1f GB/s" % triad)
    for x, r in zip(xs, rows):
        ax.annotate("%.1f" % r["median"], (x - w / 2, r["median"]), ha="center",
                    va="bottom", fontsize=7)
        if r["upd"]:
            ax.annotate("%.1f" % r["upd"], (x + w / 2, r["upd"]), ha="center", va="bottom",
                        fontsize=7)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["kernel"].replace(" (compiler, in place)", "\n(compiler)")
                        .replace(" (2 passes)", "\n(2 passes)") for r in rows], fontsize=8)
    ax.set_ylabel("GB/s (1e9 bytes/s), one core")
    ax.set_title("Fold kernel vs memory bandwidth (bench/fold, 64 MiB buffers)")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_ylim(0, max(r["median"] for r in rows) * 1.25)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_ingest(path, out):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    raws = sorted(float(r["raw_tcp_mb_per_s"]) for r in rows)
    raw = raws[len(raws) // 2]
    colors = {"Tributary shm+bpf": "#1f77b4", "Tributary tcp": "#2ca02c"}
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    names = [r["server"] for r in rows]
    vals = [float(r["mb_per_s"]) for r in rows]
    ax.barh(names, vals, color=[colors.get(n, "#d62728" if n.startswith("Python") else "#7f7f7f")
                                for n in names])
    ax.axvline(raw, color="k", ls="--", lw=1,
               label="raw loopback TCP, same bytes: %.0f MB/s (median)" % raw)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    for i, v in enumerate(vals):
        ax.annotate(" %.0f" % v, (v, i), va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("MB/s of update bodies, one connection, sequential POSTs")
    ax.set_title("HTTP ingest, %s updates x %.0f MB" % (rows[0]["updates"],
                                                      int(rows[0]["params"]) * 4 / 1e6))
    ax.set_xlim(0, max(vals + [raw]) * 1.15)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--round", default=os.path.join(ROOT, "bench/round/results.csv"))
    ap.add_argument("--fold")
    ap.add_argument("--ingest")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/img"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    written = []
    if os.path.exists(a.round):
        rows = read_round(a.round)
        p = os.path.join(a.out, "round_time.png")
        by_params(rows, [(s, "round_s", STYLE[s]["label"], {}) for s in STYLE],
                  "round time, s (median of R rounds)",
                  "Round time vs clients (one load generator, the same for every system)", p)
        written.append(p)
        p = os.path.join(a.out, "peak_memory.png")
        series = [("shm+bpf", "used_mb", "Tributary shm+bpf: RSS + arena used", {}),
                  ("tcp", "used_mb", "Tributary tcp: RSS + arena used", {}),
                  ("python", "peak_mb", STYLE["python"]["label"], {}),
                  ("shm+bpf", "peak_mb", "Tributary shm+bpf: RSS + arena reserved",
                   dict(ls=":", lw=1, markersize=3)),
                  ("tcp", "peak_mb", "Tributary tcp: RSS + arena reserved",
                   dict(ls=":", lw=1, markersize=3))]
        by_params(rows, series, "server peak memory, MB (process tree)",
                  "Server peak memory vs clients", p)
        written.append(p)
    if a.fold:
        with open(a.fold) as f:
            text = f.read()
    else:
        text = subprocess.run([os.path.join(a.build, "bench/fold/bench_fold"), "--mb", "64"],
                              capture_output=True, text=True, check=True).stdout
    p = os.path.join(a.out, "fold.png")
    plot_fold(text, p)
    written.append(p)
    if a.ingest and os.path.exists(a.ingest):
        p = os.path.join(a.out, "ingest.png")
        plot_ingest(a.ingest, p)
        written.append(p)
    for p in written:
        print("plot: wrote " + os.path.relpath(p, ROOT))


if __name__ == "__main__":
    main()
