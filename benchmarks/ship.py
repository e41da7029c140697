"""Train the weights a bundle ships (``bundles/<name>/models/model.pt``) and record how they score.

    OMP_NUM_THREADS=1 python benchmarks/ship.py impartial --minutes 20            # train, evaluate, install
    python benchmarks/ship.py impartial --reuse                                   # re-evaluate the same training
    python benchmarks/ship.py impartial --minutes 1 --no-install --set network_def#features=32   # try a change
    python benchmarks/ship.py impartial --weights bundles/impartial/models/model.pt --no-install \
        --set test_time_augmentation=flips                                       # score given weights, no training
    python benchmarks/ship.py impartial --weights A.pt B.pt --ensemble mixture --no-install   # two trainings as one

Several ``--weights`` files are scored as one ensemble of trainings of the bundle's network
(:class:`cellseg_monai.networks.AverageEnsemble`, or with ``--ensemble mixture``
:class:`~cellseg_monai.networks.MixtureAverageEnsemble`, which averages ImPartial's class probabilities): the command
writes their :func:`~cellseg_monai.networks.ensemble_state_dict` and overrides the config's ``network`` with the
ensemble.

``--set KEY=VALUE`` (repeatable, ``benchmarks/run.py`` override syntax) trains and scores a variant without touching
the bundle; it needs ``--no-install``, since shipped weights are always the bundle's defaults. To ship a variant
that was tried that way, make it the default in the configs and run the same command with ``--reuse`` (same
``--work``): the training is reused, scored again with the configs as they are, and installed.

One command per bundle, the bundle's own ``configs/train.json`` with its defaults (annotation budget, network,
optimiser, seed 0): it trains on the ``train`` split of ``--data`` (BBBC038, CC0) for ``--minutes`` of wall clock with
validation switched off, so ``val`` stays unseen; the network weights of the last epoch are written as a plain
``state_dict``; ``train.json + evaluate.json`` predicts ``val`` with them and
:func:`cellseg_monai.metrics.folder.evaluate_folders` scores it (mean over images). Then, unless ``--no-install``:

- ``bundles/<name>/models/model.pt`` is replaced by the new weights (they are this command's own output);
- ``configs/metadata.json`` gets the ``val`` scores in ``eval_metrics`` and the command in ``eval_metrics_source``;
- ``large_files.yml`` lists the file with its md5 (the weights travel in the bundle itself: no URL);
- ``docs/README.md`` gets the scores and this command at the top of its Performance section;
- ``benchmarks/results/shipped/<name>.json`` / ``.md`` record the command, machine, seed, training length (seconds,
  iterations, epochs), the scores and the hash; ``<name>-train.log`` keeps the training log's last lines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.measure import machine_info  # noqa: E402
from benchmarks.run import evaluate_bundle, one_bundle, train_bundle, write_val_labels  # noqa: E402

__all__ = [
    "check_reused_minutes",
    "SHIPPED_METRICS",
    "network_state_dict",
    "md5",
    "install",
    "docs_section",
    "update_docs",
    "main",
]

RESULTS = REPO / "benchmarks" / "results" / "shipped"
#: per-image-mean ``val`` metrics written to ``metadata.json`` ``eval_metrics`` (those a method can compute)
SHIPPED_METRICS = ["f1@0.5", "f1_mean", "ap_dsb@0.5", "ap_dsb", "aji", "pq", "coco_ap", "coco_ap50", "map", "ap@0.5"]
LOG_LINES = 200
#: ``--ensemble`` kinds: the network expression each makes of ``network_def`` (``classes``: ImPartial's config id)
ENSEMBLES = {
    "average": "AverageEnsemble(@network_def, {size})",
    "mixture": "MixtureAverageEnsemble(@network_def, {size}, @classes)",
}


def network_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The network weights of a training checkpoint (``{"model": ..., "optimizer": ..., "trainer": ...}``) or of a
    plain ``state_dict``, as float32 CPU tensors."""
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{checkpoint}: not a network state_dict nor a training checkpoint with a 'model' entry")
    return {k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu() for k, v in state.items()}


def ensemble_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    """The network weights of one file, or of several as one :func:`~cellseg_monai.networks.ensemble_state_dict`."""
    from cellseg_monai.networks import ensemble_state_dict

    states = [network_state_dict(f) for f in files]
    return states[0] if len(states) == 1 else ensemble_state_dict(states)


def ensemble_override(kind: str, size: int) -> str:
    """The ``--set`` override that makes the config's ``network`` an ensemble of ``size`` copies of ``network_def``."""
    return f"network=$cellseg_monai.networks.{ENSEMBLES[kind].format(size=size)}.to(@device)"


def check_reused_minutes(seconds: float, minutes: float, slack_s: float = 300.0) -> None:
    """Refuse to record a reused training under a ``--minutes`` budget it clearly did not have (it ran more than
    ``slack_s`` past it; a time-limited run stops at the first epoch end after its budget): the record, the docs and
    ``metadata.json`` would state the wrong budget."""
    if seconds > 60.0 * minutes + slack_s:
        raise SystemExit(
            f"error: the reused training ran {seconds / 60:.1f} min, not --minutes {minutes:g}: pass the --minutes it "
            "was trained with"
        )


def md5(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def training_machine(previous: dict[str, Any] | None, weights_md5: str, reuse: bool) -> tuple[dict[str, Any], int]:
    """``(machine, torch threads)`` the weights were trained on: this process's, except when ``--reuse`` scores again
    the very weights an earlier record describes (same md5) — then that record's, since no training ran here."""
    if reuse and previous is not None and previous.get("md5") == weights_md5 and "threads" in previous:
        return previous["machine"], int(previous["threads"])
    return machine_info(), torch.get_num_threads()


def _pretty_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=4, ensure_ascii=True) + "\n")


def install(bundle_dir: Path, weights: Path, record: dict[str, Any]) -> None:
    """Copy ``weights`` to ``bundle_dir/models/model.pt``; write the scores to ``metadata.json`` and the hash to
    ``large_files.yml``."""
    target = bundle_dir / "models" / "model.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".pt.tmp")
    tmp.write_bytes(weights.read_bytes())
    tmp.replace(target)
    meta_path = bundle_dir / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["eval_metrics"] = {k: round(v, 3) for k, v in record["val"].items()}
    meta["eval_metrics_source"] = (
        f"BBBC038 val ({record['val_images']} images, mean over images), weights models/model.pt trained by "
        f"`{record['command']}` ({record['train']['minutes']:g} min, {record['train']['iterations']} iterations, "
        f"{record['machine_name']}); benchmarks/results/shipped/{bundle_dir.name}.md"
    )
    _pretty_json(meta_path, meta)
    update_docs(bundle_dir / "docs" / "README.md", record)
    (bundle_dir / "large_files.yml").write_text(
        "# The trained weights travel inside the bundle (and its zip from `cellseg-monai export-bundle`), so there is no\n"
        "# download URL: MONAI's download_url checks the hash of the file that is present and skips the download.\n"
        f"# Made by: {record['command']}\n"
        "large_files:\n"
        '  - path: "models/model.pt"\n'
        '    url: ""\n'
        f'    hash_val: "{record["md5"]}"\n'
        '    hash_type: "md5"\n'
    )


DOCS_START, DOCS_END = "<!-- shipped-weights:start -->", "<!-- shipped-weights:end -->"


def docs_section(record: dict[str, Any]) -> str:
    """The "Shipped weights" paragraph of a bundle's ``docs/README.md`` Performance section, from ``record``."""
    t = record["train"]
    names = list(record["val"])
    return "\n".join(
        [
            DOCS_START,
            textwrap.fill(
                "**Shipped weights** (`models/model.pt`): the bundle's defaults trained on the BBBC038 `train` images "
                f"for {t['minutes']:g} minutes of wall clock ({t['iterations']} iterations, {record['machine_name']}: "
                f"{record['machine'].get('cpu', '?')}, {record['threads']} torch thread(s), seed {record['seed']}), "
                f"scored on the {record['val_images']} `val` images (mean over images), by",
                width=118,
            ),
            "",
            f"    {record['command']}",
            "",
            "| " + " | ".join(names) + " |",
            "|" + "---|" * len(names),
            "| " + " | ".join(f"{record['val'][k]:.3f}" for k in names) + " |",
            "",
            f"Record: [`benchmarks/results/shipped/{record['bundle']}.md`]"
            f"(../../../benchmarks/results/shipped/{record['bundle']}.md).",
            DOCS_END,
        ]
    )


def update_docs(readme: Path, record: dict[str, Any]) -> None:
    """Replace the shipped-weights paragraph of ``readme`` (or insert it at the top of its Performance section)."""
    text = readme.read_text()
    section = docs_section(record)
    if DOCS_START in text and DOCS_END in text:
        head, rest = text.split(DOCS_START, 1)
        text = head + section + rest.split(DOCS_END, 1)[1]
    elif "## Performance\n" in text:
        text = text.replace("## Performance\n", "## Performance\n" + section + "\n\n", 1)
    else:
        raise ValueError(f"{readme}: no '## Performance' section for the shipped weights' scores")
    readme.write_text(text)


def _markdown(record: dict[str, Any]) -> str:
    t = record["train"]
    lines = [
        f"# Shipped weights: {record['bundle']}",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine_name']} ({record['machine'].get('cpu', '?')}), torch threads {record['threads']}  ",
        f"Training: bundle defaults, seed {record['seed']}, {t['minutes']:g} min budget -> {t['seconds']:.0f} s, "
        f"{t['iterations']} iterations, {t['epochs']} epochs, peak RSS {t['peak_rss_mb']:.0f} MB  ",
        f"File: models/model.pt, {record['bytes'] / 1e6:.2f} MB, md5 {record['md5']}",
        "",
        f"BBBC038 val ({record['val_images']} images), mean over images:",
        "",
        "| " + " | ".join(record["val"]) + " |",
        "|" + "---|" * len(record["val"]),
        "| " + " | ".join(f"{v:.3f}" for v in record["val"].values()) + " |",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="bundle name under bundles/")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "bbbc038", help="dataset folder")
    p.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget")
    p.add_argument("--epoch-length", type=int, default=25, help="iterations per epoch (time-limit granularity)")
    p.add_argument("--work", type=Path, help="training run and predictions (default runs/ship/<bundle>)")
    p.add_argument("--reuse", action="store_true", help="reuse a finished training in --work (evaluate again)")
    p.add_argument("--no-install", action="store_true", help="score only; leave the bundle untouched")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (--no-install)")
    p.add_argument(
        "--weights", type=Path, nargs="+", help="score these weights (e.g. the shipped ones) instead of training"
    )
    p.add_argument(
        "--ensemble",
        choices=sorted(ENSEMBLES),
        help="how several --weights are combined (average, the default: raw outputs; mixture: ImPartial class "
        "probabilities)",
    )
    args = p.parse_args(argv)
    if args.set and not args.no_install:
        p.error("--set needs --no-install: shipped weights are trained with the bundle's defaults")
    if args.weights is not None and not args.no_install:
        p.error("--weights needs --no-install: it scores weights that this command did not train")
    for weights in args.weights or []:
        if not weights.is_file():
            p.error(f"{weights}: no such weights file")
    if args.ensemble is not None and len(args.weights or []) < 2:
        p.error("--ensemble combines several --weights files; give two or more")
    args.ensemble = args.ensemble or "average"
    if not args.data.is_dir():
        p.error(f"{args.data}: no such dataset folder")
    if args.minutes <= 0:
        p.error(f"--minutes must be > 0, got {args.minutes}")
    args.work = args.work or REPO / "runs" / "ship" / (args.bundle + ("-scored" if args.weights else ""))
    return args


def write_training_log(path: Path, log: Path, record: dict[str, Any], reused: dict[str, Any] | None) -> bool:
    """Keep the last ``LOG_LINES`` of the training log ``log`` in ``path``. A re-scored training of the weights
    already shipped (``reused``: the previous record, with the same md5) keeps the log recorded when it was trained:
    its work folder may no longer hold it. Returns whether ``path`` was written."""
    if reused is not None and reused.get("md5") == record["md5"] and path.is_file():
        return False
    lines = log.read_text(errors="replace").splitlines()
    path.write_text("\n".join(lines[-LOG_LINES:]) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    bundle = one_bundle(args.bundle)
    args.work.mkdir(parents=True, exist_ok=True)
    gt_dir = args.work / "gt_val"
    val_ids = write_val_labels(args.data, gt_dir)
    weights = args.work / "model.pt"
    if args.weights is not None:  # no training: the given weights, as a plain state_dict
        train = {"seconds": 0.0, "iterations": 0, "epochs": 0, "peak_rss_mb": 0.0}
        if len(args.weights) > 1:
            args.set = [*args.set, ensemble_override(args.ensemble, len(args.weights))]
        torch.save(ensemble_weights(args.weights), str(weights))
    else:
        train = train_bundle(
            bundle, args.data, args.work, None, args.minutes, 100000, args.epoch_length, args.set, args.reuse
        )
        if args.reuse:
            check_reused_minutes(train["seconds"], args.minutes)
        torch.save(network_state_dict(train["checkpoint"]), str(weights))
    # given weights land in the same work/model.pt whatever they are: never reuse predictions made from that path
    reuse_eval = args.reuse and args.weights is None
    scores = evaluate_bundle(bundle, args.data, args.work, str(weights), gt_dir, args.set, reuse_eval)
    if scores["missing"]:
        print(f"error: no prediction for {len(scores['missing'])} val images: {scores['missing'][:5]}", file=sys.stderr)
        return 1
    mean = scores["per_image_mean"]
    seed = json.loads(bundle.config("train.json").read_text()).get("seed", 0)
    previous_path = RESULTS / f"{bundle.name}.json"
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() else None
    machine, threads = training_machine(previous, md5(weights), args.reuse)
    record = {
        "bundle": bundle.name,
        "command": "OMP_NUM_THREADS=1 python benchmarks/ship.py " + shlex.join(a for a in argv if a != "--reuse"),
        "machine_name": f"cpu{machine['cores']}" if not torch.cuda.is_available() else "gpu",
        "machine": machine,
        "threads": threads,
        "seed": seed,
        "train": {**{k: train[k] for k in ("seconds", "iterations", "epochs", "peak_rss_mb")}, "minutes": args.minutes},
        "val_images": len(val_ids),
        "val": {k: float(mean[k]) for k in SHIPPED_METRICS if mean.get(k) is not None},
        "md5": md5(weights),
        "bytes": weights.stat().st_size,
    }
    print(json.dumps(record["val"], indent=2), flush=True)
    if args.no_install:
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    _pretty_json(RESULTS / f"{bundle.name}.json", record)
    (RESULTS / f"{bundle.name}.md").write_text(_markdown(record))
    write_training_log(
        RESULTS / f"{bundle.name}-train.log", Path(train["log"]), record, previous if args.reuse else None
    )
    install(bundle.path, weights, record)
    print(f"installed {bundle.path / 'models' / 'model.pt'} ({record['bytes'] / 1e6:.2f} MB, md5 {record['md5']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
