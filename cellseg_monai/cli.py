"""``cellseg-monai`` command line: simulate weak labels, segment images with a bundle, score predictions.

cellseg-monai simulate DATASET_DIR --kind scribbles --budget 0.3
cellseg-monai segment IMAGE_OR_FOLDER --bundle impartial --output_dir OUT [--ckpt_path model.pt]
cellseg-monai evaluate --pred PRED_DIR --gt GT_DIR [--json OUT.json]
cellseg-monai export-bundle NAME --out DIR
"""

from __future__ import annotations

import os
from pathlib import Path

import fire

__all__ = ["simulate", "segment", "evaluate", "export_bundle", "find_bundle", "main"]

REPO_BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def find_bundle(bundle: str) -> Path:
    """Root folder of ``bundle``: a path to a bundle folder, or a name under the repository's ``bundles/``."""
    path = Path(bundle)
    if (path / "configs").is_dir():
        return path
    if (REPO_BUNDLES / bundle / "configs").is_dir():
        return REPO_BUNDLES / bundle
    known = sorted(p.name for p in REPO_BUNDLES.glob("*") if (p / "configs").is_dir()) if REPO_BUNDLES.is_dir() else []
    raise FileNotFoundError(f"no bundle '{bundle}': give a bundle folder (with configs/) or one of {known}")


def simulate(dataset_dir: str, kind: str = "scribbles", budget: float = 0.3, seed: int = 0, out_dir: str | None = None):
    """Write simulated weak labels for every image of a dataset to ``<dataset_dir>/weak/<kind>/`` (or ``out_dir``):
    ``--kind`` scribbles, masks, counts, points or partial (see :mod:`cellseg_monai.annotations.simulate`).

    The annotation of an image is a deterministic function of (image id, seed, budget).
    """
    from cellseg_monai.annotations import simulate_dataset

    written = simulate_dataset(dataset_dir, kind=kind, budget=budget, seed=seed, out_dir=out_dir)
    print(f"wrote {len(written)} {kind} files" + (f" to {os.path.dirname(written[0])}" if written else ""))


def segment(
    input: str,
    bundle: str = "impartial",
    output_dir: str = "predictions",
    ckpt_path: str | None = None,
    device: str | None = None,
    **config_overrides: object,
):
    """Segment an image file, a folder of images, or a dataset folder (with ``images/``) with a bundle's inference.

    Writes ``<output_dir>/<id>.tif`` (instance labels), ``<id>_overlay.png`` and ``<id>.csv`` (per-object measurements).
    ``ckpt_path`` defaults to ``<bundle>/models/model.pt``. Any other ``--id value`` overrides that config id of the
    bundle's ``inference.json`` (e.g. ``--prob_threshold 0.4``).
    """
    from monai.bundle import run

    root = find_bundle(bundle)
    overrides: dict[str, object] = dict(config_overrides)
    overrides.update(bundle_root=str(root), dataset_dir=str(input), output_dir=str(output_dir))
    if ckpt_path is not None:
        overrides["ckpt_path"] = str(ckpt_path)
    if device is not None:
        overrides["device"] = f"$torch.device('{device}')"
    run(
        config_file=str(root / "configs" / "inference.json"),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        **overrides,
    )
    print(f"predictions written to {os.path.abspath(output_dir)}")


def evaluate(pred: str, gt: str, json_path: str | None = None, **kwargs: object):
    """Score predicted instance label images ``PRED/<id>.tif`` against ``GT/<id>.tif`` and print a table.

    ``gt`` may be a labels folder or a dataset folder with ``labels/``. ``--json OUT`` writes
    ``{"per_image_mean": ..., "pooled": ..., "per_image": [...]}``.
    """
    from cellseg_monai.metrics import evaluate_folders, format_table

    json_path = json_path or kwargs.pop("json", None)  # `--json` reads naturally on the command line
    if kwargs:
        raise TypeError(f"unknown options {sorted(kwargs)}")
    gt_dir = Path(gt) / "labels" if (Path(gt) / "labels").is_dir() else Path(gt)
    result = evaluate_folders(pred, str(gt_dir), json_path=json_path)
    print(format_table(result))
    if json_path:
        print(f"wrote {json_path}")
    return None


def export_bundle(bundle: str, out: str = "dist"):
    """Write the model zoo's zip of a bundle, ``<out>/<name>_v<version>.zip``, that runs with nothing from this
    repository (see :mod:`cellseg_monai.bundle.export`)."""
    from cellseg_monai.bundle.export import ExportError
    from cellseg_monai.bundle.export import export_bundle as export

    try:
        path = export(find_bundle(bundle), out)
    except (ExportError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {path}")
    return None


def main() -> None:
    fire.Fire({"simulate": simulate, "segment": segment, "evaluate": evaluate, "export-bundle": export_bundle})


if __name__ == "__main__":
    main()
