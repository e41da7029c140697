"""Choose a bundle's decoding thresholds (the post-processing of its network output) on ``train`` images only.

    OMP_NUM_THREADS=1 python benchmarks/tune_decoding.py supervised_unet \\
        --grid interior_threshold=0.5,0.7,0.9 foreground_threshold=0.5,0.6,0.7            # measure, print, record
    OMP_NUM_THREADS=1 python benchmarks/tune_decoding.py supervised_unet --grid ... --install   # ... and set them

A semantic network's output becomes instances through thresholds that training never sees: the supervised U-Net's
P(interior) seed threshold and P(foreground) mask threshold, ImPartial's foreground probability threshold, the
sparse decoder's mask threshold. Their defaults (0.5, the arg-max decision) are a guess: a network that blurs the
boundary between touching nuclei merges them at 0.5 and splits them at 0.9. This command runs the bundle's network
(``inference.json``: ``preprocessing``, ``inferer``, the shipped ``models/model.pt`` or ``--weights``) once on every
``--every``-th image of the ``train`` split (never ``val``, which the shipped scores are measured on), keeps the raw
outputs in memory, then applies the bundle's own ``postprocessing_transforms`` with each combination of ``--grid``
values (top-level config ids, so the bundle's configs stay the single definition of the decoding) and scores the
instances against the ``train`` labels: the combination with the best mean F1@0.5 over images wins (ties: the one
listed first, i.e. the lower values; a list of words, e.g.
``test_time_augmentation=none,flips``, is tried in the order given). An id that a component other than the post-processing reads (canonical_shape's
``prob_threshold`` lives in its inferer's predictor) gets one network pass per value instead. ``--install`` writes
the chosen values to the bundle's ``train.json`` and ``inference.json``; ``python benchmarks/ship.py <bundle>
--reuse`` then scores ``val`` with them and records the result. Results:
``benchmarks/results/thresholds/<bundle>-decoding.json`` and ``.md``.

Per-object score thresholds of detectors are tuned from written predictions by ``benchmarks/tune_threshold.py``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import re
import shlex
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.measure import machine_info  # noqa: E402
from benchmarks.run import discover_bundles  # noqa: E402
from benchmarks.tune_threshold import RESULTS, record_header, set_default  # noqa: E402

__all__ = ["parse_grid", "best_setting", "split_keys", "score_grid", "predict", "main"]


def parse_grid(items: Iterable[str]) -> dict[str, list[float | str]]:
    """``["a=0.5,0.7", "b=0.4"]`` → ``{"a": [0.5, 0.7], "b": [0.4]}``: numbers sorted, duplicates dropped. A list
    with a value that is no number is a list of choices (``"tta=none,flips"``), kept in the order given."""
    grid: dict[str, list[float | str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values or "" in values.split(","):
            raise ValueError(f"--grid item {item!r} is not KEY=V1,V2,...")
        if key in grid:
            raise ValueError(f"--grid names {key!r} twice")
        words = list(dict.fromkeys(values.split(",")))
        try:
            grid[key] = sorted({float(v) for v in words})
        except ValueError:
            grid[key] = list(words)
    if not grid:
        raise ValueError("--grid needs at least one KEY=V1,V2,...")
    return grid


def _fmt(value: float | str) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def best_setting(scores: list[tuple[dict[str, float], float]]) -> dict[str, float]:
    """The setting with the highest score; the first such setting (in grid order: lower values) on a tie."""
    top = max(s for _, s in scores)
    return next(setting for setting, s in scores if s == top)


def split_keys(config: dict[str, Any], keys: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(network_keys, post_keys)``: the ids read only by ``postprocessing_transforms`` can be varied on one cached
    network output; an id that any other component reads (the inferer's predictor, the network's own decoding)
    needs a network pass per value. Raises ValueError for an id that no component reads."""
    post_text = json.dumps(config.get("postprocessing_transforms", []))
    rest_text = json.dumps({k: v for k, v in config.items() if k != "postprocessing_transforms"})
    network_keys, post_keys = [], []
    for key in keys:
        ref = re.compile(rf"@{re.escape(key)}\b")
        in_rest, in_post = bool(ref.search(rest_text)), bool(ref.search(post_text))
        if not (in_rest or in_post):
            raise ValueError(f"no component of inference.json reads {key!r} (no '@{key}')")
        (network_keys if in_rest else post_keys).append(key)
    return network_keys, post_keys


def score_grid(
    outputs: list[dict[str, Any]],
    truths: list[np.ndarray],
    grid: dict[str, list[float]],
    make_postprocessing: Callable[[dict[str, float]], Callable[[dict[str, Any]], dict[str, Any]]],
    iou: float = 0.5,
) -> list[tuple[dict[str, float], float]]:
    """Mean F1@``iou`` over images for every combination of ``grid`` values.

    Args:
        outputs: per image, the dict the post-processing receives (``pred`` = the network output, (C, H, W)).
        truths: per image, the (H, W) instance labels.
        grid: candidate values per config id.
        make_postprocessing: setting → the bundle's post-processing callable with those values; its output's
            ``pred`` is the (1, H, W) or (H, W) instance label image.
    """
    from cellseg_monai.metrics.instance import f1

    scores = []
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        setting = dict(zip(keys, values, strict=True))
        post = make_postprocessing(setting)
        per_image = []
        for out, truth in zip(outputs, truths, strict=True):
            labels = post(dict(out))["pred"]
            labels = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
            per_image.append(f1(truth, labels.reshape(truth.shape), t=iou))
        scores.append((setting, float(np.mean(per_image))))
    return scores


def _parser(bundle_dir: Path, data: Path, overrides: dict[str, Any]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle_dir), "dataset_dir": str(data), "device": "$torch.device('cpu')"})
    parser.update(overrides)
    return parser


def predict(
    bundle_dir: Path, data: Path, items: list[dict[str, str]], weights: Path, overrides: dict[str, Any] | None = None
) -> tuple[list[dict], list[np.ndarray]]:
    """The bundle's preprocessing + inferer + ``weights`` on ``items`` (config ids set to ``overrides``): per image
    the dict its post-processing receives and the (H, W) label image read by the same loader (so both share one
    orientation)."""
    from benchmarks.ship import network_state_dict
    from cellseg_monai.transforms import LoadMicroscopyd

    parser = _parser(bundle_dir, data, dict(overrides or {}))
    network = parser.get_parsed_content("network")
    network.load_state_dict(network_state_dict(weights))
    network.eval()
    preprocessing, inferer = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("inferer")
    load_label = LoadMicroscopyd(keys="label", kind="label", ref_key="image")
    outputs, truths = [], []
    for item in items:
        sample = load_label(preprocessing({"image": item["image"], "label": item["label"]}))
        truth = np.asarray(sample.pop("label")).squeeze()
        with torch.inference_mode():
            sample["pred"] = inferer(sample["image"][None], network)[0].detach().cpu()
        outputs.append(sample)
        truths.append(truth.astype(np.int64))
    return outputs, truths


def _markdown(record: dict[str, Any]) -> str:
    keys = record["keys"]
    head = "| " + " | ".join(keys) + " | mean F1@0.5 |\n|" + "---|" * (len(keys) + 1)
    rows = "\n".join("| " + " | ".join(_fmt(s[k]) for k in keys) + f" | {f:.4f} |" for s, f in record["scores"])
    fmt = ", ".join(f"{k} = {_fmt(v)}" for k, v in record["chosen"].items())
    was = ", ".join(f"{k} = {_fmt(v)}" for k, v in record["previous"].items())
    return record_header("Decoding thresholds", record) + f"{head}\n{rows}\n\nChosen: **{fmt}** (was {was}).\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2", help="candidate values per config id")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "bbbc038", help="dataset folder")
    p.add_argument("--every", type=int, default=8, help="use every N-th train image (8: 67 of BBBC038's 536)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    p.add_argument("--weights", type=Path, help="network weights (default: the bundle's models/model.pt)")
    p.add_argument("--install", action="store_true", help="make the chosen values the bundle's defaults")
    args = p.parse_args(argv)
    from benchmarks.ship import md5
    from cellseg_monai.data import load_datalist

    try:
        grid = parse_grid(args.grid)
    except ValueError as e:
        p.error(str(e))
    bundles, missing = discover_bundles([args.bundle])
    if missing:
        p.error(f"no bundle {args.bundle!r}")
    bundle = bundles[0]
    config = json.loads(bundle.config("inference.json").read_text())
    for key, values in grid.items():
        value = config.get(key)
        if not isinstance(value, (int, float, str)) or isinstance(value, bool):
            p.error(f"{bundle.config('inference.json')}: no top-level numeric or string {key!r}")
        if isinstance(value, str) != isinstance(values[0], str):
            kind = "a string" if isinstance(value, str) else "a number"
            p.error(f"--grid {key}: {bundle.config('inference.json')} holds {kind}, got {values}")
    for key, values in grid.items():  # an integer setting (a distance in px) stays an integer in the configs
        if isinstance(config[key], int):
            if not all(float(v).is_integer() for v in values):
                p.error(f"--grid {key}: {bundle.config('inference.json')} holds an integer, got {values}")
            grid[key] = [int(v) for v in values]
    if "postprocessing_transforms" not in config:
        p.error(f"{bundle.config('inference.json')}: no 'postprocessing_transforms' list to apply")
    weights = args.weights or bundle.path / "models" / "model.pt"
    if not weights.is_file():
        p.error(f"{weights}: no weights to tune for")

    try:
        network_keys, post_keys = split_keys(config, grid)
    except ValueError as e:
        p.error(f"{bundle.config('inference.json')}: {e}")

    items = load_datalist(args.data, "train")[:: args.every]

    def make_postprocessing(setting: dict[str, float]):
        from monai.transforms import Compose

        parser = _parser(bundle.path, args.data, {k: copy.copy(v) for k, v in setting.items()})
        return Compose(parser.get_parsed_content("postprocessing_transforms"))

    scores = []
    for values in itertools.product(*(grid[k] for k in network_keys)):  # one network pass per network setting
        fixed = dict(zip(network_keys, values, strict=True))
        outputs, truths = predict(bundle.path, args.data, items, weights, fixed)
        post_grid = {k: grid[k] for k in post_keys}  # empty: one scoring of the network setting alone
        for setting, f1 in score_grid(outputs, truths, post_grid, lambda s, f=fixed: make_postprocessing({**f, **s})):
            scores.append(({k: {**fixed, **setting}[k] for k in grid}, f1))
    scores.sort(key=lambda sf: [grid[k].index(sf[0][k]) for k in grid])  # grid order: first listed wins a tie
    chosen = best_setting(scores)
    record = {
        "bundle": bundle.name,
        "command": "OMP_NUM_THREADS=1 python benchmarks/tune_decoding.py " + shlex.join(argv),
        "machine_name": f"cpu{machine_info()['cores']}",
        "weights_md5": md5(weights),
        "keys": list(grid),
        "every": args.every,
        "images": len(items),
        "scores": [[s, f] for s, f in scores],
        "previous": {k: config[k] for k in grid},
        "chosen": chosen,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{bundle.name}-decoding.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / f"{bundle.name}-decoding.md").write_text(_markdown(record))
    print(_markdown(record))
    if args.install:
        for key, value in chosen.items():
            for path in set_default(bundle.path, key, value):
                print(f"set {key} = {_fmt(value)} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
