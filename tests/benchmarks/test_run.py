"""``python benchmarks/run.py --tiny`` end to end on the embedded sample: every field of the JSON, the md and png.

Independent references: the sample's ``split.json`` and image sizes (images, megapixels), the tiny settings
(1 epoch × 2 iterations), a network built directly from its class (parameters), the tile geometry (a 192×192 image
in one 256×256 inferer tile executes 256²/192² times the tile's FLOPs per image megapixel), the bundle's own Ignite
metric (``metrics.csv``) and a hand-written IoU matching on the classic baseline's predictions (F1@0.5).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from cellseg_monai.metrics import DEFAULT_NAMES, SCORED_NAMES

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

TOP = {
    "command",
    "dataset",
    "data_dir",
    "split",
    "val_images",
    "machine_name",
    "machine",
    "matmul",
    "peaks_gflops",
    "settings",
    "results",
}
MACHINE = {"cpu", "cores", "torch_threads", "gpu", "cuda", "python", "torch", "monai", "platform"}
RESULT = {"method", "kind", "budget", "train", "eval_seconds", "per_image_mean", "pooled", "missing", "bundle_metrics",
          "inference"}  # fmt: skip
TRAIN = {"seconds", "iterations", "epochs", "peak_rss_mb", "checkpoint", "log"}
INFERENCE = {"images", "warmup_images", "megapixels", "net_s_per_mp", "post_s_per_mp", "s_per_mp", "params", "tile",
             "gflop_per_mp", "inferer_gflop_per_mp", "device", "precision", "overrides_applied", "torch_threads", "peak_rss_mb",
             "peak_gflops", "achieved_gflops", "peak_fraction"}  # fmt: skip


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def f1_at_half(gt: np.ndarray, pred: np.ndarray) -> float:
    """F1 at IoU > 0.5 by brute force: matches above 0.5 IoU are one-to-one, so counting them is exact."""
    gt_ids, pred_ids = [i for i in np.unique(gt) if i], [j for j in np.unique(pred) if j]
    tp = 0
    for i in gt_ids:
        g = gt == i
        for j in np.unique(pred[g]):
            if j and (g & (pred == j)).sum() / (g | (pred == j)).sum() > 0.5:
                tp += 1
    denom = len(gt_ids) + len(pred_ids)
    return 1.0 if denom == 0 else 2 * tp / denom


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = [
        sys.executable,
        "benchmarks/run.py",
        "--tiny",
        "--out",
        str(out),
        "--bundles",
        "impartial",
        "supervised_unet",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    from cellseg_monai.data import sample_data_dir

    (json_path,) = out.glob("sample-*.json")
    return out, json.loads(json_path.read_text()), Path(sample_data_dir())


def test_files_and_top_level(tiny):
    out, doc, sample = tiny
    stem = f"sample-{doc['machine_name']}"
    assert (out / f"{stem}.md").is_file() and (out / f"{stem}.json").is_file()
    assert (out / f"{stem}-budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(doc) == TOP and set(doc["machine"]) == MACHINE
    split = json.loads((sample / "split.json").read_text())
    assert doc["val_images"] == len(split["val"]) and doc["split"] == "val"
    assert doc["settings"]["tiny"] and doc["settings"]["budgets"] == [0.5] and doc["settings"]["max_epochs"] == 1
    assert finite(doc["matmul"]["gflops"]["cpu"]) and doc["matmul"]["gflops"]["cpu"] > 0
    assert finite(doc["matmul"]["cpu_1_thread_gflops"]) and doc["matmul"]["cpu_1_thread_gflops"] > 0
    md = (out / f"{stem}.md").read_text()
    assert doc["command"] in md and md.index(doc["command"]) < md.index("Machine:")
    for header in ("| method | F1@0.5 | AP_dsb@0.5 | AP_dsb mean | AJI | PQ | mDice | mIoU |", "| budget | impartial |",
                   "| train s | iterations | train peak RSS MB | infer s/MP |", f"]({stem}-budget.png)"):  # fmt: skip
        assert header in md


def test_every_method_ran_and_every_field_is_there(tiny):
    _, doc, _ = tiny
    results = {(r["method"], r["budget"]): r for r in doc["results"]}
    expected = {("classic", None), ("impartial", 0.5)}
    if (REPO / "bundles" / "supervised_unet" / "configs" / "train.json").is_file():
        expected.add(("supervised_unet", None))
    assert set(results) == expected
    for r in doc["results"]:
        assert "error" not in r and set(r) == RESULT and r["missing"] == []
        # bundles write per-object scores (<id>.csv) beside their predictions, so they also get the ranked APs
        expected_names = set(DEFAULT_NAMES) | (set() if r["kind"] == "classic" else set(SCORED_NAMES))
        for key in ("per_image_mean", "pooled"):
            assert set(r[key]) == expected_names
            assert all(finite(v) and 0 <= v <= 1 for v in r[key].values()), r[key]
        # the classic baseline runs no network: no precision
        assert set(r["inference"]) == INFERENCE - ({"precision"} if r["kind"] == "classic" else set())
    assert results[("impartial", 0.5)]["kind"] == "weak"
    if ("supervised_unet", None) in results:
        assert results[("supervised_unet", None)]["kind"] == "full"


def test_training_fields(tiny):
    _, doc, _ = tiny
    for r in doc["results"]:
        if r["kind"] == "classic":
            assert r["train"] is None and r["eval_seconds"] is None
            continue
        t = r["train"]
        assert set(t) == TRAIN
        assert t["epochs"] == 1 and t["iterations"] == 2  # --tiny: one epoch of 2 iterations
        assert Path(t["checkpoint"]).name == "checkpoint_epoch=1.pt"
        assert finite(t["seconds"]) and t["seconds"] > 0 and finite(r["eval_seconds"])
        assert 100 < t["peak_rss_mb"] < 8000
        # the bundle's own Ignite metric agrees with the folder scoring of the files it wrote
        assert r["bundle_metrics"]["val_f1@0.5"] == pytest.approx(r["per_image_mean"]["f1@0.5"], abs=1e-6)
        for name in ("val_pixel_f1", "val_pixel_auc"):
            assert 0 <= r["bundle_metrics"][name] <= 1


def test_inference_fields(tiny):
    _, doc, sample = tiny
    split = json.loads((sample / "split.json").read_text())
    pixels = sum(np.prod(tifffile.imread(sample / "images" / f"{i}.tif").shape[:2]) for i in split["val"])
    for r in doc["results"]:
        inf = r["inference"]
        assert inf["images"] == len(split["val"]) and inf["warmup_images"] == 1
        assert inf["megapixels"] == pytest.approx(pixels / 1e6)
        assert all(finite(inf[k]) and inf[k] >= 0 for k in ("net_s_per_mp", "post_s_per_mp"))
        assert finite(inf["s_per_mp"]) and inf["s_per_mp"] > 0
        assert 20 < inf["peak_rss_mb"] < 8000
        if r["kind"] == "classic":
            assert inf["params"] == 0 and inf["net_s_per_mp"] == 0
            assert inf["achieved_gflops"] is None and inf["peak_fraction"] is None
            continue
        # the efficiency peak is the larger of the two measured in the precision the network computes in
        assert inf["precision"] in ("float32", "bfloat16")
        own = [v for k, v in doc["peaks_gflops"]["cpu"].items() if (k.endswith("_" + inf["precision"]) or (
            inf["precision"] == "float32" and "_" not in k))]  # fmt: skip
        assert len(own) == 2 and inf["peak_gflops"] == max(own)
        assert inf["params"] > 0 and inf["tile"] == [192, 192] and inf["net_s_per_mp"] > 0
        assert inf["gflop_per_mp"] > 0
        # 192×192 sample images: the fitted inferer runs one 192×192 tile per image (MONAI's fixed 256² tile would
        # have cost 256²/192² = 1.78× the image's FLOPs)
        assert inf["inferer_gflop_per_mp"] == pytest.approx(inf["gflop_per_mp"])
        assert inf["achieved_gflops"] == pytest.approx(inf["inferer_gflop_per_mp"] / inf["net_s_per_mp"])
        assert inf["peak_fraction"] == pytest.approx(inf["achieved_gflops"] / inf["peak_gflops"])


def test_impartial_parameters_match_the_network_built_directly(tiny):
    from cellseg_monai.networks import ImPartialUNet

    _, doc, _ = tiny
    (r,) = [r for r in doc["results"] if r["method"] == "impartial"]
    depth = json.loads((REPO / "bundles/impartial/configs/inference.json").read_text())["network_def"]["depth"]
    net = ImPartialUNet(in_channels=3, classes=(2, 2), features=8, depth=depth)  # --tiny: network_def#features=8
    assert r["inference"]["params"] == sum(p.numel() for p in net.parameters())


def test_classic_f1_against_brute_force_matching(tiny):
    out, doc, sample = tiny
    (r,) = [r for r in doc["results"] if r["kind"] == "classic"]
    split = json.loads((sample / "split.json").read_text())
    scores = [
        f1_at_half(
            tifffile.imread(sample / "labels" / f"{i}.tif"),
            tifffile.imread(out / "work" / "classic" / "predictions" / f"{i}.tif"),
        )
        for i in split["val"]
    ]
    assert r["per_image_mean"]["f1@0.5"] == pytest.approx(np.mean(scores), abs=1e-9)


def test_roofline_takes_the_peaks_of_the_networks_precision():
    from benchmarks.run import _add_roofline

    peaks = {"cpu": {"matmul": 100.0, "conv3x3": 80.0, "matmul_bfloat16": 400.0, "conv3x3_bfloat16": 500.0}}
    results = [
        {"inference": {"device": "cpu", "precision": "bfloat16", "net_s_per_mp": 0.5, "inferer_gflop_per_mp": 150.0}},
        {"inference": {"device": "cpu", "precision": "float32", "net_s_per_mp": 2.0, "inferer_gflop_per_mp": 100.0}},
        {"inference": {"device": "cpu", "net_s_per_mp": 0.5, "inferer_gflop_per_mp": 150.0}},  # older JSON
        {"inference": {"device": "cpu", "precision": "float32", "net_s_per_mp": 0.0, "inferer_gflop_per_mp": 0.0}},
        {"error": "failed"},
    ]
    _add_roofline(results, peaks)
    bf16, fp32, old, classic = (r["inference"] for r in results[:4])
    # 150 GFLOP / 0.5 s = 300 GFLOP/s: 60 % of the bfloat16 conv peak (500), not 300 % of the float32 matmul (100)
    assert bf16["achieved_gflops"] == pytest.approx(300.0) and bf16["peak_gflops"] == 500.0
    assert bf16["peak_fraction"] == pytest.approx(0.6)
    assert fp32["achieved_gflops"] == pytest.approx(50.0) and fp32["peak_fraction"] == pytest.approx(0.5)
    assert old["achieved_gflops"] == pytest.approx(300.0) and old["peak_fraction"] is None
    assert classic["achieved_gflops"] is None and classic["peak_fraction"] is None
