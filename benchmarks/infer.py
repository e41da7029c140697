"""Inference speed of one method on a dataset split, measured in a process of its own.

``benchmarks/run.py`` starts this script as a child (through :func:`benchmarks.measure.run_with_peak_rss`, so the
child's peak RSS is the inference's peak memory) and reads the JSON it writes:

    python benchmarks/infer.py bundle --bundle bundles/impartial --ckpt CKPT --data DATA --split val \\
        --out-dir WORK/infer --json WORK/infer.json [--override KEY=VALUE ...]
    python benchmarks/infer.py classic --data DATA --split val --out-dir WORK/predictions --json WORK/infer.json

``bundle``: the bundle's ``configs/inference.json`` is instantiated with ``monai.bundle.ConfigParser`` (``ckpt_path``,
``dataset_dir`` and ``output_dir`` overridden); each image goes through the config's ``preprocessing``, then
``inferer(image, network)`` (timed as *network*), then ``postprocessing`` (timed as *post*: probabilities →
instances → written files, as a user's inference run does). ``classic``: Otsu + distance-transform watershed
(:func:`cellseg_monai.postprocessing.otsu_watershed`), all of it *post*, labels written with
:func:`cellseg_monai.data.write_labels`.

Every image is run once untimed per warm-up (the first ``--warmup`` images), then every image is timed;
seconds per megapixel are the median over images of (seconds / (H·W / 1e6)).
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.measure import forward_flops, parameter_count  # noqa: E402

__all__ = ["parse_override", "select_overrides", "load_state_dict", "measure_bundle", "measure_classic", "main"]


def parse_override(text: str) -> tuple[str | None, str, Any]:
    """``"[BUNDLE:]KEY=VALUE"`` → ``(BUNDLE or None, KEY, value)``; the value is read as JSON, else as a Python
    literal, else kept a string (``network_def#features=8`` → ``(None, "network_def#features", 8)``).

    Raises:
        ValueError: no ``=`` or an empty key.
    """
    target, sep, raw = text.partition("=")
    bundle, colon, key = target.partition(":")
    bundle, key = (bundle.strip(), key.strip()) if colon else (None, bundle.strip())
    if not sep or not key or bundle == "":
        raise ValueError(f"override must be [BUNDLE:]KEY=VALUE (e.g. network_def#features=8), got {text!r}")
    for parse in (json.loads, ast.literal_eval):
        try:
            return bundle, key, parse(raw)
        except (ValueError, SyntaxError):
            continue
    return bundle, key, raw


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "str"


def _component_argument(parser: Any, key: str) -> bool:
    """Whether ``key`` names an argument of a component the config builds (``PARENT#NAME``, PARENT a ``_target_``
    dict) that the config does not set."""
    parent, sep, name = key.rpartition("#")
    if not sep or not name or parent not in parser:
        return False
    component = parser[parent]
    return isinstance(component, dict) and "_target_" in component


def select_overrides(overrides: Sequence[str], parser: Any, bundle: str) -> tuple[dict[str, Any], list[str]]:
    """The overrides that apply to ``bundle`` whose config is in ``parser`` (a ``monai.bundle.ConfigParser``).

    An override applies when it names no bundle or names ``bundle``, its KEY is an id of the config, and its value
    has the same kind (number, bool, list, dict, string) as the config's value there; ``"$..."`` expressions in
    the config accept any value. So ``network_def#features=8`` shrinks a network whose ``features`` is a number
    and leaves one whose ``features`` is a list alone; ``BUNDLE:KEY=VALUE`` targets one bundle. A KEY the config
    leaves to its default is an argument of a component (``train#handlers#5#n_saved=20``: the parent is a dict
    with a ``_target_``): it applies as given.

    Returns:
        ``({key: value} to apply, [notes on overrides skipped for a type mismatch]``).
    """
    chosen: dict[str, Any] = {}
    notes: list[tuple[str, str]] = []
    for text in overrides:
        target, key, value = parse_override(text)
        if target not in (None, bundle):
            continue
        if key not in parser:
            if _component_argument(parser, key):
                chosen[key] = value
            continue
        current = parser[key]
        if isinstance(current, str) and current.startswith(("$", "@")) or _kind(current) == _kind(value):
            chosen[key] = value
        else:
            notes.append((key, f"{bundle}: override {text!r} skipped ({key} is {current!r} in the config)"))
    return chosen, [note for key, note in notes if key not in chosen]


def load_state_dict(path: str | Path, device: torch.device) -> dict[str, torch.Tensor]:
    """The network weights in ``path``: a plain state dict (``model.pt``) or the ``"model"`` entry of a training
    checkpoint (``checkpoint_epoch=N.pt``, which also holds the optimizer and trainer state)."""
    state = torch.load(path, map_location=device, weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    return state


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _megapixels(item: dict[str, Any]) -> float:
    image = item["image"]
    return float(np.prod(image.shape[-2:])) / 1e6


def _timed_loop(
    items: Sequence[dict[str, Any]], warmup: int, step: Callable[[dict[str, Any]], tuple[float, float, float]]
) -> dict[str, Any]:
    """Run ``step`` (→ megapixels, network s, post s) on the first ``warmup`` items untimed, then on every item."""
    for item in items[:warmup]:
        step(item)
    mp, net, post = [], [], []
    for item in items:
        m, n, p = step(item)
        mp.append(m)
        net.append(n / m)
        post.append(p / m)
    total = [n + p for n, p in zip(net, post, strict=True)]
    return {
        "images": len(items),
        "warmup_images": min(warmup, len(items)),
        "megapixels": float(sum(mp)),
        "net_s_per_mp": statistics.median(net),
        "post_s_per_mp": statistics.median(post),
        "s_per_mp": statistics.median(total),
    }


def _precision(parser: Any, device: torch.device) -> str:
    """The dtype the bundle's network computes in ("float32", "bfloat16", ...): its ``inference_precision`` as
    :class:`cellseg_monai.inferers.FastInferer` resolves it on ``device`` (float32 without one)."""
    from cellseg_monai.inferers import autocast_dtype

    if "inference_precision" not in parser:
        return "float32"
    dtype = autocast_dtype(str(parser["inference_precision"]), device.type)
    return str(dtype or torch.float32).replace("torch.", "")


def measure_bundle(
    bundle_dir: Path, ckpt: Path, data: Path, split: str, out_dir: Path, overrides: Sequence[str], warmup: int
) -> dict[str, Any]:
    """Time ``bundle_dir/configs/inference.json`` on the ``split`` images of ``data`` (see module docstring).

    Returns:
        ``{"images", "warmup_images", "megapixels", "net_s_per_mp", "post_s_per_mp", "s_per_mp", "params",
        "tile", "gflop_per_mp", "inferer_gflop_per_mp", "device", "precision", "overrides_applied"}``: ``gflop_per_mp`` is one
        forward pass on one inferer tile (``roi_size``, or the whole first image) divided by the tile's megapixels;
        ``inferer_gflop_per_mp`` is what the inferer actually executed on the first image (tile overlap and padding
        included) per megapixel of that image.
    """
    from monai.bundle import ConfigParser

    from cellseg_monai.data import load_datalist

    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser["ckpt_path"] = str(ckpt)
    parser["dataset_dir"] = str(data)
    parser["output_dir"] = str(out_dir)
    applied, _ = select_overrides(overrides, parser, bundle_dir.name)
    for key, value in applied.items():
        parser[key] = value
    device = torch.device(parser.get_parsed_content("device"))
    network = parser.get_parsed_content("network")
    network.load_state_dict(load_state_dict(ckpt, device))
    network.eval()
    preprocessing = parser.get_parsed_content("preprocessing")
    inferer = parser.get_parsed_content("inferer")
    postprocessing = parser.get_parsed_content("postprocessing")
    items = [preprocessing(dict(entry)) for entry in load_datalist(data, split)]

    def step(item: dict[str, Any]) -> tuple[float, float, float]:
        image = item["image"][None].to(device)
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            pred = inferer(image, network)
        _sync(device)
        middle = time.perf_counter()
        postprocessing({**item, "pred": pred[0]})
        _sync(device)
        return _megapixels(item), middle - start, time.perf_counter() - middle

    result = _timed_loop(items, warmup, step)
    first = items[0]["image"][None].to(device)
    inner = inferer
    while not hasattr(inner, "tiles") and hasattr(inner, "inferer"):  # inside FlipAveragingInferer / FastInferer
        inner = inner.inferer
    if hasattr(inner, "tiles"):  # FittedSlidingWindowInferer: the tile it fits to the first image
        roi = inner.tiles(first.shape[2:])[0]
    else:
        roi = getattr(inner, "roi_size", None)
    tile = [int(s) for s in (roi if roi is not None else first.shape[-2:])]
    with torch.no_grad():
        tile_flops = forward_flops(network, torch.zeros(1, first.shape[1], *tile, device=device))
        inferer_flops = forward_flops(_InfererModule(inferer, network), first)
    result.update(
        params=parameter_count(network),
        tile=tile,
        gflop_per_mp=tile_flops / 1e9 / (tile[0] * tile[1] / 1e6),
        inferer_gflop_per_mp=inferer_flops / 1e9 / _megapixels(items[0]),
        device=str(device),
        precision=_precision(parser, device),
        overrides_applied=[f"{k}={json.dumps(v)}" for k, v in applied.items()],
    )
    if device.type == "cuda":
        result["gpu_peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


class _InfererModule(torch.nn.Module):
    """``inferer(x, network)`` as a module, so :func:`forward_flops` counts a whole tiled inference."""

    def __init__(self, inferer: Callable[..., Any], network: torch.nn.Module) -> None:
        super().__init__()
        self.inferer = inferer
        self.network = network

    def forward(self, x: torch.Tensor) -> Any:
        return self.inferer(x, self.network)


def measure_classic(data: Path, split: str, out_dir: Path, warmup: int) -> dict[str, Any]:
    """Time the classic Otsu + watershed baseline on the ``split`` images and write ``out_dir/<id>.tif``.

    Returns the timing keys of :func:`measure_bundle` with ``net_s_per_mp = 0``, ``params = 0`` and zero FLOPs.
    """
    from cellseg_monai.data import load_datalist, read_image, write_labels
    from cellseg_monai.postprocessing.classic import otsu_watershed

    items = []
    for entry in load_datalist(data, split):
        image = read_image(entry["image"])
        image = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)  # (C, H, W)
        items.append({"id": entry["id"], "image": image})

    def step(item: dict[str, Any]) -> tuple[float, float, float]:
        start = time.perf_counter()
        write_labels(out_dir / f"{item['id']}.tif", otsu_watershed(item["image"]))
        return _megapixels(item), 0.0, time.perf_counter() - start

    result = _timed_loop(items, warmup, step)
    result.update(params=0, tile=None, gflop_per_mp=0.0, inferer_gflop_per_mp=0.0, device="cpu", overrides_applied=[])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", choices=["bundle", "classic"])
    parser.add_argument("--bundle", type=Path, help="bundle folder (with configs/inference.json); for 'bundle'")
    parser.add_argument("--ckpt", type=Path, help="weights (state dict or training checkpoint); for 'bundle'")
    parser.add_argument("--data", type=Path, required=True, help="dataset in the standard layout")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out-dir", type=Path, required=True, help="where predictions are written")
    parser.add_argument("--json", type=Path, required=True, help="where the measurements are written")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--warmup", type=int, default=1, help="untimed images before timing")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.method == "bundle":
        if args.bundle is None or args.ckpt is None:
            parser.error("'bundle' needs --bundle and --ckpt")
        result = measure_bundle(args.bundle, args.ckpt, args.data, args.split, args.out_dir, args.override, args.warmup)
    else:
        result = measure_classic(args.data, args.split, args.out_dir, args.warmup)
    result["torch_threads"] = torch.get_num_threads()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
