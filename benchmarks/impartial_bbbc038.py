"""ImPartial on BBBC038: scribble budgets vs the classic baseline, trained and scored through the bundle.

    python benchmarks/impartial_bbbc038.py --data ../shared/data/bbbc038 --budgets 0.1 0.3 --minutes 15

For each scribble budget (fraction of each image's nuclei that get a scribble; background scribbles come with
every 32×32 field of view, as in the paper's protocol) the bundle's ``train.json`` runs on the ``train`` split for
a wall-clock budget (``max_train_minutes``; no validation during training, so ``val`` stays unseen), then
``train.json + evaluate.json`` scores the last checkpoint on the ``val`` split. The classic baseline
(Otsu threshold + distance-transform watershed, no training) is scored on the same images with the same metric
functions. Writes ``benchmarks/results/impartial-<dataset>-<machine>.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "impartial" / "configs"
METRICS = ["f1@0.5", "ap_dsb@0.5", "mdice", "miou", "pixel_f1", "pixel_auc"]


def machine() -> dict[str, object]:
    """CPU model, cores and torch threads of this machine (and the GPU, if one is visible)."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu}


def bundle(configs: list[str], *args: str, log: Path) -> float:
    files = [str(CONFIGS / c) for c in configs]
    config = files[0] if len(files) == 1 else str(files)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, *args]
    start = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    return time.monotonic() - start


def run_budget(data: Path, budget: float, minutes: float, work: Path, features: int) -> dict[str, object]:
    from cellseg_monai.handlers import latest_checkpoint

    out = work / f"budget_{budget:g}"
    out.mkdir(parents=True, exist_ok=True)
    train_s = bundle(
        ["train.json"],
        "--dataset_dir",
        str(data),
        "--output_dir",
        str(out / "train"),
        "--ckpt_dir",
        str(out / "models"),
        "--annotation_budget",
        str(budget),
        "--max_train_minutes",
        str(minutes),
        "--train#trainer#max_epochs",
        "100000",
        "--train#trainer#epoch_length",
        "25",
        "--val_interval",
        "100000000",
        "--network_def#features",
        str(features),
        "--num_workers",
        "0",
        log=out / "train.log",
    )
    ckpt = latest_checkpoint(out / "train")
    epochs = int(Path(ckpt).stem.split("=")[-1])
    eval_s = bundle(
        ["train.json", "evaluate.json"],
        "--dataset_dir",
        str(data),
        "--output_dir",
        str(out / "eval"),
        "--ckpt_path",
        ckpt,
        "--eval_split",
        "val",
        "--network_def#features",
        str(features),
        log=out / "eval.log",
    )
    rows = dict(line.rsplit(",", 1) for line in (out / "eval" / "metrics.csv").read_text().splitlines())
    scores = {m: float(rows[f"val_{m}"]) for m in METRICS}
    return {
        "budget": budget,
        "train_s": round(train_s, 1),
        "eval_s": round(eval_s, 1),
        "iterations": epochs * 25,
        "checkpoint": ckpt,
        **scores,
    }


def run_baseline(data: Path) -> dict[str, object]:
    from cellseg_monai.data import load_datalist, read_image, read_labels
    from cellseg_monai.metrics import evaluate_pairs
    from cellseg_monai.metrics.pixel import pixel_f1, roc_auc
    from cellseg_monai.postprocessing import otsu_watershed

    pairs, pix_f1, pix_auc = [], [], []
    start = time.monotonic()
    for item in load_datalist(data, "val"):
        image = read_image(item["image"]).astype(np.float32)
        image = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
        gt = read_labels(item["label"])
        pred = otsu_watershed(image)
        pairs.append((gt, pred))
        fg = (pred > 0).astype(np.float32)
        pix_f1.append(pixel_f1(fg, gt))
        pix_auc.append(roc_auc(fg, gt))
    seconds = time.monotonic() - start
    result = evaluate_pairs(pairs, names=METRICS[:4])["per_image_mean"]
    return {
        "budget": "none (no training)",
        "train_s": 0.0,
        "eval_s": round(seconds, 1),
        "iterations": 0,
        **result,
        "pixel_f1": float(np.mean(pix_f1)),
        "pixel_auc": float(np.mean(pix_auc)),
    }


def write_report(results: list[dict], info: dict, args: argparse.Namespace, out: Path) -> None:
    name = f"impartial-{Path(args.data).name}-{args.machine}"
    (out / f"{name}.json").write_text(json.dumps({"machine": info, "args": vars(args), "results": results}, indent=2))
    lines = [
        f"# ImPartial on {Path(args.data).name} val ({args.machine})",
        "",
        f"Command: `python benchmarks/impartial_bbbc038.py --data {args.data} --budgets {' '.join(map(str, args.budgets))} "
        f"--minutes {args.minutes} --features {args.features} --machine {args.machine}`",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']}, GPU {info['gpu']}.",
        f"Training: `train` split, simulated scribbles, {args.minutes} min wall clock per budget, U-Net features "
        f"{args.features}; scored on the `val` split (mean over images).",
        "",
        "| method | scribble budget | train s | iterations | F1@0.5 | AP_dsb@0.5 | mDice | mIoU | pixel F1 | pixel AUC |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        method = "classic Otsu + watershed" if r["iterations"] == 0 else "ImPartial"
        budget = r["budget"] if isinstance(r["budget"], str) else f"{100 * r['budget']:g} % of nuclei"
        lines.append(
            f"| {method} | {budget} | {r['train_s']:.0f} | {r['iterations']} | "
            + " | ".join(f"{r[m]:.3f}" for m in METRICS)
            + " |"
        )
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "bbbc038"))
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--machine", default="cpu2")
    parser.add_argument("--work", default=str(REPO / "runs" / "benchmarks" / "impartial"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    data = Path(args.data)
    if not (data / "images").is_dir():
        raise SystemExit(f"{data} is not a dataset in the standard layout (no images/)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [run_baseline(data)]
    for budget in args.budgets:
        results.append(run_budget(data, budget, args.minutes, Path(args.work), args.features))
    write_report(results, machine(), args, out)


if __name__ == "__main__":
    main()
