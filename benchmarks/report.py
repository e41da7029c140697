"""The benchmark's result files: JSON (everything), markdown (one table per concern) and the budget-curve PNG.

:func:`write_report` takes the document that ``benchmarks/run.py`` builds and writes, into ``out``:

- ``<dataset>-<machine>.json`` — the whole document (NaN written as ``null``);
- ``<dataset>-<machine>.md`` — the exact command, the machine, then tables: accuracy (per-image mean), accuracy
  (pooled over all objects), the annotation-budget curve, speed and size, and the bundles' own evaluator metrics;
- ``<dataset>-<machine>-budget.png`` — F1@0.5 (per-image mean) against the annotation budget for each weak bundle,
  with each full-supervision reference and the classic baseline as horizontal lines.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cellseg_monai.metrics.folder import json_safe

__all__ = ["ACCURACY", "SPEED", "budget_curves", "json_safe", "markdown", "plot_budget_curve", "write_report"]

# (column title, metric key) of the accuracy tables
ACCURACY: list[tuple[str, str]] = [
    ("F1@0.5", "f1@0.5"),
    ("AP_dsb@0.5", "ap_dsb@0.5"),
    ("AP_dsb mean", "ap_dsb_mean"),
    ("AJI", "aji"),
    ("PQ", "pq"),
    ("mDice", "mdice"),
    ("mIoU", "miou"),
]


def _num(fmt: str) -> Callable[[Any], str]:
    def f(v: Any) -> str:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "n/a"
        return format(v, fmt)

    return f


def _train(key: str, fmt: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: _num(fmt)(r["train"][key]) if r.get("train") else "–"


def _inf(key: str, fmt: str, scale: float = 1.0) -> Callable[[dict[str, Any]], str]:
    def f(r: dict[str, Any]) -> str:
        v = (r.get("inference") or {}).get(key)
        return _num(fmt)(v * scale if scale != 1.0 and isinstance(v, (int, float)) else v)

    return f


# (column title, cell function) of the speed / size table
SPEED: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("train s", _train("seconds", ".0f")),
    ("iterations", _train("iterations", "d")),
    ("train peak RSS MB", _train("peak_rss_mb", ".0f")),
    ("infer s/MP", _inf("s_per_mp", ".3f")),
    ("network s/MP", _inf("net_s_per_mp", ".3f")),
    ("post s/MP", _inf("post_s_per_mp", ".3f")),
    ("infer peak RSS MB", _inf("peak_rss_mb", ".0f")),
    ("params", _inf("params", ",d")),
    ("GFLOP/MP", _inf("gflop_per_mp", ".1f")),
    ("achieved GFLOP/s", _inf("achieved_gflops", ".1f")),
    ("precision", _inf("precision", "s")),
    (
        "% of peak",
        lambda r: _inf("peak_fraction", ".1f", 100.0)(r) if "precision" in (r.get("inference") or {}) else "–",
    ),
]


def _label(r: dict[str, Any]) -> str:
    if r["kind"] == "classic":
        return "classic Otsu + watershed"
    if r["kind"] == "full":
        return f"{r['method']} (full labels)"
    return f"{r['method']} @ {100 * r['budget']:g} %"


def _ok(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if "error" not in r]


def budget_curves(doc: dict[str, Any], metric: str = "f1@0.5") -> dict[str, Any]:
    """``{"weak": {bundle: [(budget, value), ...] sorted by budget}, "reference": {label: value}}`` of ``metric``
    (per-image mean); references are the full-supervision bundles and the classic baseline."""
    weak: dict[str, list[tuple[float, float]]] = {}
    reference: dict[str, float] = {}
    for r in _ok(doc["results"]):
        value = r["per_image_mean"].get(metric, math.nan)
        if r["kind"] == "weak":
            weak.setdefault(r["method"], []).append((r["budget"], value))
        else:
            reference[_label(r)] = value
    return {"weak": {k: sorted(v) for k, v in weak.items()}, "reference": reference}


def plot_budget_curve(doc: dict[str, Any], path: Path, metric: str = "f1@0.5") -> Path:
    """Plot :func:`budget_curves` to ``path`` (PNG, matplotlib Agg backend; x: budget in % on a log axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = budget_curves(doc, metric)
    budgets = sorted({b for pts in curves["weak"].values() for b, _ in pts}) or doc["settings"]["budgets"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, pts in curves["weak"].items():
        ax.plot([100 * b for b, _ in pts], [v for _, v in pts], marker="o", label=f"{name} (weak)")
    styles = ["--", ":", "-.", (0, (5, 1))]
    for i, (name, value) in enumerate(curves["reference"].items()):
        ax.axhline(value, color="k" if "classic" in name else f"C{i + 5}", linestyle=styles[i % 4], label=name)
    ax.set_xscale("log")
    ticks = [100 * b for b in budgets]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("annotation budget (% of objects annotated per image)")
    ax.set_ylabel(f"{metric.upper()} on val (mean over images)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"{doc['dataset']} ({doc['machine_name']})")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(doc: dict[str, Any], png_name: str | None = None) -> str:
    """The markdown report of ``doc`` (see the module docstring for its sections)."""
    m, s, f3 = doc["machine"], doc["settings"], _num(".3f")
    ok = _ok(doc["results"])
    peaks = ", ".join(f"{k.upper()} {v:.1f} GFLOP/s" for k, v in doc["matmul"]["gflops"].items())
    budget = f"{s['max_epochs']} epoch(s)" if not s["minutes"] else f"{s['minutes']:g} min wall clock"
    lines = [
        f"# Benchmark: {doc['dataset']} ({doc['machine_name']})",
        "",
        "```",
        doc["command"],
        "```",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}, GPU {m['gpu'] or 'none'}; "
        f"python {m['python']}, torch {m['torch']}, monai {m['monai']}.",
        f"Matmul peak ({doc['matmul']['n']}² float32 `torch.mm`, median, {m['torch_threads']} threads): {peaks} "
        f"(1 thread: {doc['matmul']['cpu_1_thread_gflops']:.1f} GFLOP/s)."
        + (
            " Efficiency peaks (matmul 2048², 3×3 convolution 64→64 ch, per precision): "
            + "; ".join(
                f"{dev.upper()} " + ", ".join(f"{k} {v:.1f}" for k, v in p.items())
                for dev, p in doc["peaks_gflops"].items()
            )
            + " GFLOP/s."
            if doc.get("peaks_gflops")
            else ""
        ),
        f"Training: `train` split, {budget} per run, {s['epoch_length']} iterations per epoch, no validation during "
        f"training; overrides: {', '.join(f'`{o}`' for o in s['overrides']) or 'none'}. Scored on the `val` split "
        f"({doc['val_images']} images) with `cellseg_monai.metrics.folder.evaluate_folders`.",
        "",
    ]
    failed = [r for r in doc["results"] if "error" in r]
    if failed:
        lines += ["**Failed:** " + "; ".join(f"{r['method']} (budget {r['budget']})" for r in failed), ""]
    for title, key in (("per-image mean", "per_image_mean"), ("pooled over all objects", "pooled")):
        lines += [f"## Accuracy ({title})", ""]
        lines += _table(
            ["method"] + [t for t, _ in ACCURACY], [[_label(r)] + [f3(r[key].get(k)) for _, k in ACCURACY] for r in ok]
        )
        lines.append("")
    curves = budget_curves(doc)
    if curves["weak"]:
        budgets = sorted({b for pts in curves["weak"].values() for b, _ in pts})
        lines += ["## Annotation budget: F1@0.5 (per-image mean)", ""]
        if png_name:
            lines += [f"![F1@0.5 vs annotation budget]({png_name})", ""]
        rows = [[f"{100 * b:g} %"] + [f3(dict(pts).get(b)) for pts in curves["weak"].values()] for b in budgets]
        rows += [[name] + [f3(v)] * len(curves["weak"]) for name, v in curves["reference"].items()]
        lines += _table(["budget"] + list(curves["weak"]), rows) + [""]
    lines += ["## Speed and size", ""]
    lines += _table(["method"] + [t for t, _ in SPEED], [[_label(r)] + [cell(r) for _, cell in SPEED] for r in ok])
    lines += [
        "",
        "infer s/MP = network + post-processing (incl. writing outputs), median over val images after warm-up. "
        "GFLOP/MP: one forward pass on one inferer tile, per tile megapixel. Achieved GFLOP/s: FLOPs the inferer "
        "executed per image megapixel (tile overlap included) ÷ network s/MP; % of peak compares it with the larger "
        "of the two efficiency peaks measured in the precision the network computes in (column *precision*; – where "
        "the run did not record it: a float32 peak does not bound a bfloat16 network). Peak RSS: the child "
        "process's own `ru_maxrss`.",
        "",
    ]
    own = [r for r in ok if r.get("bundle_metrics")]
    if own:
        names = list(dict.fromkeys(k for r in own for k in r["bundle_metrics"]))
        lines += ["## Bundle evaluators' own metrics (`metrics.csv`)", ""]
        lines += _table(
            ["method"] + names, [[_label(r)] + [f3(r["bundle_metrics"].get(n)) for n in names] for r in own]
        )
        lines.append("")
    return "\n".join(lines)


def write_report(doc: dict[str, Any], out: Path) -> list[Path]:
    """Write the JSON, markdown and PNG of ``doc`` into ``out``; returns their paths (md, json, png)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{doc['dataset']}-{doc['machine_name']}"
    png = plot_budget_curve(doc, out / f"{stem}-budget.png")
    md = out / f"{stem}.md"
    md.write_text(markdown(doc, png.name))
    js = out / f"{stem}.json"
    js.write_text(json.dumps(json_safe(doc), indent=2) + "\n")
    return [md, js, png]
