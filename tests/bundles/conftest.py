"""Tiny synthetic datasets in the standard layout for the bundle tests (no download, no ../shared needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tifffile


def make_disc_dataset(root: Path, n_train: int = 3, n_val: int = 2, size: tuple[int, int] = (96, 80), seed: int = 0):
    """Bright discs on a dark noisy background, RGB uint8 images and uint16 instance labels."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    ids = [f"img{i}" for i in range(n_train + n_val)]
    yy, xx = np.mgrid[: size[0], : size[1]]
    for sample_id in ids:
        labels = np.zeros(size, np.uint16)
        for k in range(1, 7):
            cy, cx, r = rng.integers(10, size[0] - 10), rng.integers(10, size[1] - 10), rng.integers(5, 9)
            labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = k
        grey = 30 + 150 * (labels > 0) + rng.normal(0, 8, size)
        image = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
        tifffile.imwrite(root / "images" / f"{sample_id}.tif", image)
        tifffile.imwrite(root / "labels" / f"{sample_id}.tif", labels)
    (root / "split.json").write_text(json.dumps({"train": ids[:n_train], "val": ids[n_train:]}))
    return root


@pytest.fixture(scope="session")
def disc_dataset(tmp_path_factory) -> Path:
    return make_disc_dataset(tmp_path_factory.mktemp("discs") / "data")


REPO = Path(__file__).resolve().parents[2]


def bundle_run(bundle: Path, configs: list[str], *args: str, launcher: list[str] | None = None):
    """Run ``python -m monai.bundle run`` on ``bundle``'s ``configs`` (merged in order) from the repository root."""
    files = [str(bundle / "configs" / c) for c in configs]
    config_arg = files[0] if len(files) == 1 else str(files)
    cmd = [*(launcher or [sys.executable]), "-m", "monai.bundle", "run", "--config_file", config_arg, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )
    return proc


# ---------------------------------------------------------------------------------------------------------------------
# The shared train → evaluate → infer flow of every bundle (tests/bundles/test_bundles.py runs it; the per-bundle test
# files assert method-specific behaviour on the same runs). Each step runs once per session and bundle.

BUNDLE_NAMES = ("canonical_shape", "impartial", "lacss", "partial_maskrcnn", "sparse_seunet", "supervised_unet")


@dataclass(frozen=True)
class BundleSpec:
    """How the tests run one bundle small and fast; everything else is the shipped config.

    Attributes:
        small: overrides of every run (train, evaluate, infer): a narrow network, small tiles.
        train: overrides of the training run only (2 epochs, few samples, method-specific options).
        metrics: the metrics that evaluation must write (``metrics.csv``), each in [0, 1].
    """

    small: tuple[str, ...]
    train: tuple[str, ...]
    metrics: tuple[str, ...]


_FAST = ("--train#trainer#max_epochs", "2", "--num_samples", "2")
_PATCH = ("--patch_size", "[64, 64]")
SPECS: dict[str, BundleSpec] = {
    "canonical_shape": BundleSpec(
        small=("--features", "8", *_PATCH),
        train=(*_FAST, "--val_interval", "1"),
        metrics=("val_f1@0.5", "val_f1_mean", "val_pixel_iou", "val_pixel_dice"),
    ),
    "impartial": BundleSpec(
        small=("--network_def#features", "8"),
        train=(*_FAST, "--val_interval", "1"),
        metrics=("val_f1@0.5", "val_ap_dsb@0.5", "val_mdice", "val_miou", "val_pixel_f1", "val_pixel_auc"),
    ),
    "lacss": BundleSpec(
        small=("--network_def#features", "[8, 16, 32]", "--network_def#feature_channels", "8", "--crop_size", "32"),
        train=(*_FAST, "--val_interval", "1", *_PATCH),
        metrics=("val_ap@0.5", "val_ap@0.75", "val_mAP", "val_fnr@0.5", "val_fnr_mean", "val_f1@0.5"),
    ),
    "partial_maskrcnn": BundleSpec(
        small=(
            *("--backbone_channels", "[8, 8, 16, 16]", "--fpn_channels", "16", "--representation_size", "32"),
            *("--network_def#detections_per_image", "30"),
        ),
        train=(*_FAST, "--val_interval", "2", *_PATCH, "--warmup_epochs", "1"),
        metrics=("val_ap_dsb_mean", "val_ap_dsb@0.5", "val_recall@0.5", "val_ncs", "val_aji", "val_f1@0.5"),
    ),
    "sparse_seunet": BundleSpec(
        small=("--features", "[4, 8, 16]", "--num_instances", "8", "--se_reduction", "2", *_PATCH),
        train=(*_FAST, "--val_interval", "2", "--max_train_images", "2", "--copy_paste_prob", "1.0"),
        metrics=("val_f1@0.5", "val_coco_ap", "val_ap_dsb@0.5", "val_mdice", "val_pixel_f1"),
    ),
    "supervised_unet": BundleSpec(
        small=("--network_def#features", "[4, 8, 8, 16, 16, 4]", *_PATCH),
        train=(*_FAST, "--val_interval", "1"),
        metrics=("val_f1@0.5", "val_ap_dsb@0.5", "val_mdice", "val_miou", "val_pixel_f1", "val_pixel_auc"),
    ),
}
#: images of the inference folder that are not in the dataset: sizes that are no multiple of any stride or tile
ODD_SIZE, BIG_SIZE = (75, 101), (150, 170)


@dataclass
class BundleFlow:
    """Lazily run (once) and remember one bundle's training, evaluation and inference on the disc dataset."""

    name: str
    dataset: Path
    root: Path
    log: str = ""
    _done: set = field(default_factory=set)

    @property
    def bundle(self) -> Path:
        return REPO / "bundles" / self.name

    @property
    def spec(self) -> BundleSpec:
        return SPECS[self.name]

    @property
    def model(self) -> Path:
        return self.root / "models" / "model.pt"

    def run(self, configs: list[str], *args: str) -> subprocess.CompletedProcess:
        return bundle_run(self.bundle, configs, *args, *self.spec.small)

    def trained(self) -> BundleFlow:
        if "train" not in self._done:
            args = ["--dataset_dir", str(self.dataset), "--output_dir", str(self.root / "train")]
            proc = self.run(["train.json"], *args, "--ckpt_dir", str(self.root / "models"), *self.spec.train)
            self.log = proc.stdout + proc.stderr
            self._done.add("train")
        return self

    def evaluated(self) -> Path:
        """The evaluation folder (``metrics.csv``, ``predictions/``)."""
        if "eval" not in self._done:
            self.trained()
            args = ["--dataset_dir", str(self.dataset), "--eval_dir", str(self.root / "eval")]
            self.run(["train.json", "evaluate.json"], *args, "--ckpt_path", str(self.model))
            self._done.add("eval")
        return self.root / "eval"

    def inputs(self) -> Path:
        """The inference folder: the dataset's images plus an odd-size and a several-tiles-big image."""
        folder = self.root / "infer_images"
        if not folder.is_dir():
            folder.mkdir(parents=True)
            for p in sorted((self.dataset / "images").glob("*.tif")):
                (folder / p.name).write_bytes(p.read_bytes())
            rng = np.random.default_rng(1)
            for name, size in (("odd_size", ODD_SIZE), ("big", BIG_SIZE)):
                image = (rng.random((*size, 3)) * 30).astype(np.uint8)
                for y, x in [(20, 20), (50, 70), (size[0] - 25, size[1] - 30), (size[0] - 25, 25)]:
                    image[y - 8 : y + 8, x - 8 : x + 8] = 220
                tifffile.imwrite(folder / f"{name}.tif", image)
        return folder

    def inferred(self) -> Path:
        """The inference output folder (``<id>.tif``, ``<id>_overlay.png``, ``<id>.csv``)."""
        if "infer" not in self._done:
            self.trained()
            out = self.root / "infer"
            self.run(["inference.json"], "--dataset_dir", str(self.inputs()), "--output_dir", str(out), "--ckpt_path",
                     str(self.model))  # fmt: skip
            self._done.add("infer")
        return self.root / "infer"


@pytest.fixture(scope="session")
def flows(disc_dataset, tmp_path_factory) -> dict[str, BundleFlow]:
    """``flows[name]``: the shared, lazily run flow of bundle ``name`` (one training per session)."""
    return {name: BundleFlow(name, disc_dataset, tmp_path_factory.mktemp(name)) for name in BUNDLE_NAMES}
