"""Draw the speed benchmarks' results (``bench/results/*.json``) as PNGs into ``docs/img/``.

    .venv/bin/python bench/plots.py                  # from the full runs' results
    .venv/bin/python bench/plots.py --smoke --out /tmp/img   # from the smoke runs' results
    .venv/bin/python bench/plots.py --only soak              # one figure

One figure per benchmark whose results exist (the others are skipped and named):
``freshness.png`` (distribution and CDF, with the baselines), ``freshness_timeline.png``
(input, learning and freshness over time), ``serving.png`` and ``ingest_throughput.png``
(throughput and p99 latency per second, ours against the baseline, in every mode),
``memory.png`` (RSS of each process over time, and the stream learned),
``learning_throughput.png`` (each model's ratios to river's loop, beside the targets),
``soak.png`` (every store and process over a compressed-time run, each normalised to its first
sample after the warm-up, and the versions advancing).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import typer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
COLORS = {"ours": "tab:blue", "base": "tab:gray"}


def load(name: str, smoke: bool) -> dict[str, Any] | None:
    path = RESULTS / f"{name}{'-smoke' if smoke else ''}.json"
    return json.loads(path.read_text()) if path.exists() else None


def stamp(fig: Any, data: dict[str, Any], what: str) -> None:
    host = data["host"]
    fig.suptitle(f"{what} — {host['date']}, {host['cpus']} CPUs, Python {host['python']}", fontsize=11)


def finite(points: list[list[float]]) -> tuple[list[float], list[float]]:
    """Percentiles and values of a CDF, without the values a log axis cannot show."""
    keep = [(p, v) for p, v in points if v is not None and math.isfinite(v) and v > 0]
    return [p for p, _ in keep], [v for _, v in keep]


def log_bins(histogram: list[list[float]], width: float, per_decade: int = 12) -> tuple[list[float], list[int]]:
    """Re-bin a fixed-width histogram ([left edge, count]) into log-spaced bins from ``width`` up."""
    top = max(e for e, _ in histogram) + width
    edges = [width]
    while edges[-1] < top:
        edges.append(edges[-1] * 10 ** (1 / per_decade))
    counts = [0] * (len(edges) - 1)
    for left, n in histogram:
        k = max(0, min(len(counts) - 1, math.floor(math.log10(max(left + width / 2, width) / width) * per_decade)))
        counts[k] += int(n)
    return edges, counts


def freshness(data: dict[str, Any], out: Path) -> list[Path]:
    runs = data["runs"]
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in runs:
        label = f"{r['rate_target_eps']:,.0f} ev/s"
        edges, counts = log_bins(r["histogram_10ms"], 10.0)
        hist.stairs(counts, edges, fill=True, alpha=0.5, label=f"202 → served, {label}")
        for key, style, name in (("cdf", "-", "202 → served"), ("floor_cdf", "--", "202 → next publication (baseline)")):
            qs, vs = finite(r[key])
            cdf.plot(vs, qs, style, label=f"{name}, {label}")
        qs, vs = finite(r["kafka_hop"]["cdf"])
        cdf.plot(vs, qs, ":", color="gray", label=f"raw Kafka produce → consume, {label}")
    target = data["target"]["p99_ms"]
    for ax in (hist, cdf):
        ax.axvline(target, color="red", lw=0.8, ls="--")
    cdf.axhline(99, color="red", lw=0.8, ls="--")
    cdf.text(target, 3, f" target p99 ≤ {target:.0f} ms", color="red", fontsize=8)
    hist.set(xlabel="freshness, ms (202 → a version that learned the event is served)", ylabel="events per bin",
             title="distribution (log-spaced bins)", xscale="log")
    cdf.set(xlabel="ms", ylabel="percentile", title="CDF", ylim=(0, 100.5), xscale="log")
    hist.legend(fontsize=8)
    cdf.legend(fontsize=7, loc="lower right")
    stamp(fig, data, "Freshness")
    fig.tight_layout()
    paths = [out / "freshness.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(len(runs), 2, figsize=(12, 3.6 * len(runs)), squeeze=False)
    for (rate, lat), r in zip(axes, runs, strict=True):
        sent = r["sent_per_s"]
        rate.plot([p["t"] for p in sent], [p["rate"] for p in sent], drawstyle="steps-post", label="events acknowledged by ingest /s")
        trainer = r["trainer_samples"]
        learned = [(b["t"], (b["examples_seen"] - a["examples_seen"]) / (b["t"] - a["t"]))
                   for a, b in zip(trainer, trainer[1:], strict=False) if b["t"] > a["t"]]
        rate.plot([t for t, _ in learned], [v for _, v in learned], label="events learned by the trainer /s")
        rate.set(xlabel="s since the first event", ylabel="events/s", title=f"input {r['rate_target_eps']:,.0f} ev/s: throughput")
        rate.legend(fontsize=8)
        tl = r["timeline"]
        for key, name in (("p50_ms", "p50"), ("p99_ms", "p99")):
            lat.plot([p["t"] for p in tl], [p[key] for p in tl], marker=".", label=f"freshness {name} (events acknowledged in that second)")
        lat.axhline(data["target"]["p99_ms"], color="red", lw=0.8, ls="--", label="target p99")
        lat.set(xlabel="s since the first event (by 202 time)", ylabel="ms", title="freshness over time", yscale="log")
        lat.legend(fontsize=8)
    stamp(fig, data, "Freshness over time")
    fig.tight_layout()
    paths.append(out / "freshness_timeline.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def ab(data: dict[str, Any], out: Path, name: str, ours: str, base: str, unit: str, title: str) -> list[Path]:
    """Throughput and p99 latency per second of an interleaved A/B run, one column per mode."""
    rows = data["rows"]
    modes = list(dict.fromkeys(r["mode"] for r in rows.values()))
    fig, axes = plt.subplots(2, len(modes), figsize=(4.6 * len(modes), 6.5), squeeze=False)
    for k, mode in enumerate(modes):
        for target, color in ((ours, COLORS["ours"]), (base, COLORS["base"])):
            row = rows[f"{mode}/{target}"]
            tl = row["timeline"]
            per = row["per_request"]
            axes[0][k].plot([p["t"] for p in tl], [p["rate"] * per for p in tl], ".", color=color, label=f"{target}: {row['items_per_s']:,.0f} {unit}")
            axes[1][k].plot([p["t"] for p in tl], [p["p99_ms"] for p in tl], ".", color=color, label=f"{target}: p99 {row['latency_ms']['p99']:.1f} ms")
        axes[0][k].set(title=f"{mode} ({rows[f'{mode}/{ours}']['per_request']} per request)", ylabel=unit, ylim=(0, None))
        axes[1][k].set(xlabel="s since the start (blocks of each target interleaved)", ylabel="p99 latency per second, ms", ylim=(0, None))
        axes[0][k].legend(fontsize=8)
        axes[1][k].legend(fontsize=8)
    stamp(fig, data, title)
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def memory(data: dict[str, Any], out: Path) -> list[Path]:
    samples = data["rss_timeline"]
    fig, (rss, seen) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    names = [k for k in samples[0] if k not in ("t", "examples_seen")]
    for n in names:
        rss.plot([s["t"] for s in samples], [s[n] for s in samples], label=n)
    seen.plot([s["t"] for s in samples], [s["examples_seen"] for s in samples], color="black", label="events learned by the trainer")
    for stage in data["stages"]:
        for ax in (rss, seen):
            ax.axvline(stage["t"][2], color="red", lw=0.8, ls="--")
        rss.text(stage["t"][2], rss.get_ylim()[1] * 0.95, f"{stage['events_total']:,} learned and served ", color="red", fontsize=8, va="top", ha="right")
    rss.set(ylabel="RSS, MB", title="resident set size of each process (with its children)")
    seen.set(xlabel="s since the first event", ylabel="events")
    rss.legend(fontsize=8, ncol=3)
    seen.legend(fontsize=8)
    stamp(fig, data, "Memory as the stream grows")
    fig.tight_layout()
    path = out / "memory.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def soak(data: dict[str, Any], out: Path) -> list[Path]:
    """Stores and RSS normalised to their first sample after the warm-up, and each model's versions."""
    series, verdict, target = data["series"], data["verdict"], data["settings"]["target"]
    t, k = series["t"], verdict["first_index"]
    fig, (stores, rss, versions) = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    memory = [n for n in verdict["curves"] if n.endswith(("RSS MB", "PSS MB"))]
    for ax, names in ((stores, [n for n in verdict["curves"] if n not in memory]), (rss, memory)):
        top = 1.5
        for name in names:
            base = series[name][k]
            ys = [v / base if base else math.nan for v in series[name]]
            top = max(top, *(y for y in ys[k:] if math.isfinite(y)))
            # PSS dashed, in the colour of the same process's RSS
            process = name.removesuffix(" PSS MB")
            color = next((line.get_color() for line in ax.get_lines() if line.get_label().startswith(f"{process} RSS")), None)
            ax.plot(t, ys, ls="--" if name.endswith("PSS MB") else "-", color=color,
                    label=f"{name} ({verdict['curves'][name]['ratio']:.2f})")
        ax.axvspan(0, t[k], color="grey", alpha=0.15, label="warm-up")
        ax.axhline(target, color="red", lw=0.8, ls="--", label=f"target ≤ {target:g}")
        ax.axhline(1.0, color="grey", lw=0.6)
        ax.set(ylabel="/ first sample after warm-up", ylim=(0, top * 1.05))
        ax.legend(fontsize=7, ncol=3, loc="lower right")
    stores.set_title("stores (last / first after warm-up in brackets)")
    rss.set_title("RSS of each process with its children (solid), and PSS (dashed: a forked child's shared pages once)")
    for name in (n for n in series if n.startswith("version ")):
        versions.plot(t, series[name], label=name.removeprefix("version "))
    versions.set(xlabel="s since the first event", ylabel="version published", title="versions of each model")
    learned = versions.twinx()
    learned.plot(t, series["events in the topic"], color="black", ls=":", label="events in the topic")
    learned.plot(t, series["events learned"], color="black", label="events learned (most of any model)")
    learned.set_ylabel("events")
    versions.legend(fontsize=7, loc="upper left")
    learned.legend(fontsize=7, loc="lower right")
    s = data["settings"]
    stamp(fig, data, f"Soak: {s['seconds'] / 60:.0f} min at {s['rate']:,.0f} ev/s, a version every {s['publish_every_ms']} ms")
    fig.tight_layout()
    path = out / "soak.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


LEARNING_TARGETS = {"linear": 0.5, "hoeffding": 0.8}
"""The issue's targets per model (the forest has none)."""


def learning(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(8, 4))
    models = [r["model"] for r in rows]
    xs = range(len(rows))
    wall = ax.bar([x - 0.2 for x in xs], [r["ratio"] for r in rows], 0.4, color=COLORS["ours"], label="events/s ratio (wall clock)")
    cpu = ax.bar([x + 0.2 for x in xs], [r["cpu_ratio"] for r in rows], 0.4, color="tab:cyan", label="CPU ratio")
    ax.bar_label(wall, fmt="%.2f", fontsize=8)
    ax.bar_label(cpu, fmt="%.2f", fontsize=8)
    for x, model in enumerate(models):
        if model in LEARNING_TARGETS:
            ax.hlines(LEARNING_TARGETS[model], x - 0.45, x + 0.45, colors="tab:red", linestyles="dashed",
                      label="target" if x == 0 else None)
    ax.set_xticks(list(xs), [f"{r['model']}\n{r['trainer_eps']:,.0f} vs {r['river_eps']:,.0f} ev/s" for r in rows], fontsize=8)
    ax.set_ylabel("trainer service / river's in-process loop")
    top = max([1.0, *(r["ratio"] for r in rows), *(r["cpu_ratio"] for r in rows)])
    ax.set_ylim(0, top * 1.3)  # room for the labels and the legend above the bars
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="dotted")
    ax.legend(fontsize=8, loc="upper right", ncol=3)
    stamp(fig, rows[0], f"Learning throughput ({rows[0]['events']:,} labelled events per model)")
    fig.tight_layout()
    path = out / "learning_throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def main(
    smoke: Annotated[bool, typer.Option(help="Plot the smoke runs' results instead of the full ones")] = False,
    out: Annotated[Path, typer.Option(help="Where the PNGs go")] = ROOT / "docs" / "img",
    only: Annotated[list[str] | None, typer.Option(help="Draw only these benchmarks (e.g. --only soak)")] = None,
) -> None:
    """Draw every result that exists; name the ones missing."""
    out.mkdir(parents=True, exist_ok=True)
    drawers = {
        "freshness": freshness,
        "serving": lambda d, o: ab(d, o, "serving", "predictor", "bare", "predictions/s", "Serving: predictor vs bare endpoint"),
        "ingest_throughput": lambda d, o: ab(d, o, "ingest_throughput", "ingest", "raw", "events/s", "Ingest vs raw Kafka producer"),
        "memory": memory,
        "learning_throughput": learning,
        "soak": soak,
    }
    for name, draw in drawers.items():
        if only and name not in only:
            continue
        data = load(name, smoke)
        if data is None:
            print(f"{name}: no results, skipped")
            continue
        for path in draw(data, out):
            print(f"{name}: {path}")


if __name__ == "__main__":
    typer.run(main)
