"""``cellseg-monai`` is safe by default: nothing is lost, every bad input is one clear line, a batch survives a bad
image, writes are atomic.

Each command case runs the real entry point (:func:`cellseg_monai.cli.main`, in process, catching ``SystemExit``;
one case as a subprocess) on tiny hand-made data and checks the exit code, that the message names the file or
option, and that the MD5 of every input file is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from cellseg_monai.cli import main
from cellseg_monai.data.io import write_labels
from cellseg_monai.guards import UsageError
from tests.bundles.conftest import make_disc_dataset

REPO = Path(__file__).resolve().parents[1]
NARROW = ["--network_def#features", "[4, 8, 8, 16, 16, 4]"]


def tree_md5(root: Path) -> dict[str, str]:
    """MD5 of the bytes of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run_cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, list[str]]:
    """Run ``cellseg-monai ARGS`` in process: (exit code, stdout, stderr lines)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def error_lines(err: list[str]) -> list[str]:
    return [line for line in err if line.startswith("error: ")]


def _loggers() -> dict[str, logging.Logger]:
    named = logging.Logger.manager.loggerDict.items()
    return {"": logging.getLogger(), **{n: lg for n, lg in named if isinstance(lg, logging.Logger)}}


@pytest.fixture(autouse=True)
def _restore_logging():
    """A bundle run configures the root logger (its logging.conf), and MONAI's loggers get handlers that write to
    this test's captured stdout, closed after the test: restore the root logger, point those at the real stdout."""
    before = {name: lg.handlers[:] for name, lg in _loggers().items()}
    level = logging.getLogger().level
    yield
    logging.getLogger().handlers[:] = before[""]
    logging.getLogger().setLevel(level)
    for name, lg in _loggers().items():
        for handler in lg.handlers:
            if type(handler) is logging.StreamHandler and handler not in before.get(name, []):
                handler.stream = sys.__stdout__  # not setStream: it flushes the closed capture


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    return make_disc_dataset(tmp_path / "ds", n_train=2, n_val=1, size=(64, 64))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded random weights of the supervised U-Net bundle's (narrow) network: inference runs, results are noise."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "supervised_unet" / "configs" / "inference.json"))
    parser["network_def#features"] = [4, 8, 8, 16, 16, 4]
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "model.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def segment_args(weights: Path, *args: object) -> list[object]:
    return ["segment", *args, "--bundle", "supervised_unet", "--ckpt_path", weights, *NARROW]


# --- nothing is lost ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "input_rel, output_rel, folder",
    [
        ("images", "images", "images"),  # output = the input folder: would replace every image
        ("", "labels", "labels"),  # output = the ground truth
        ("", "labels/sub", "labels"),  # inside the ground truth
        ("images", "weak/scribbles", "weak"),  # inside the dataset's weak labels
        ("images", ".", "ds"),  # the dataset folder itself, which holds the inputs
    ],
)
def test_segment_refuses_output_in_or_around_its_inputs(capsys, dataset, weights, input_rel, output_rel, folder):
    before = tree_md5(dataset)
    code, _, err = run_cli(capsys, *segment_args(weights, dataset / input_rel, "--output_dir", dataset / output_rel))
    assert code == 2
    assert err == error_lines(err) and len(err) == 1, err
    assert "--output_dir" in err[0] and str(dataset / output_rel) in err[0] and folder in err[0]
    assert tree_md5(dataset) == before  # no file changed, none added


def test_segment_single_image_output_may_sit_beside_but_not_hold_it(capsys, tmp_path, weights):
    (tmp_path / "in").mkdir()
    image = tmp_path / "in" / "a.tif"
    tifffile.imwrite(image, np.full((64, 64, 3), 80, np.uint8))
    before = tree_md5(tmp_path)
    for holder in (tmp_path / "in", tmp_path):  # <id>.tif would replace the input in the first
        code, _, err = run_cli(capsys, *segment_args(weights, image, "--output_dir", holder))
        assert code == 2 and len(err) == 1 and err[0].startswith(f"error: --output_dir: {holder} holds the input file")
        assert tree_md5(tmp_path) == before
    code, _, err = run_cli(capsys, *segment_args(weights, image, "--output_dir", tmp_path / "in" / "pred"))
    assert code == 0, err
    assert (tmp_path / "in" / "pred" / "a.tif").is_file()
    assert tree_md5(tmp_path / "in")["a.tif"] == before["in/a.tif"]


def test_segment_existing_outputs_need_overwrite(capsys, dataset, weights, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "img1.csv").write_text("an earlier result\n")
    before, earlier = tree_md5(dataset), tree_md5(out)
    code, _, err = run_cli(capsys, *segment_args(weights, dataset, "--output_dir", out))
    assert code == 2 and len(err) == 1
    assert str(out / "img1.csv") in err[0] and "--overwrite" in err[0]
    assert tree_md5(out) == earlier  # nothing written, nothing replaced
    code, _, err = run_cli(capsys, *segment_args(weights, dataset, "--output_dir", out, "--overwrite", "True"))
    assert code == 0, err
    assert (out / "img1.csv").read_text().startswith("id,area")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"img{i}{e}" for i in range(3) for e in (".tif", "_overlay.png", ".csv")
    )
    assert tree_md5(dataset) == before


def _user_scribbles(dataset: Path) -> None:
    scribbles = np.zeros((64, 64), np.uint8)
    scribbles[10:12, 5:30] = 1
    (dataset / "weak" / "scribbles").mkdir(parents=True)
    tifffile.imwrite(dataset / "weak" / "scribbles" / "img0.tif", scribbles)


def _user_counts(dataset: Path) -> None:
    (dataset / "weak").mkdir()
    (dataset / "weak" / "counts.json").write_text('{"img0": 4, "img1": 6, "img2": 5}\n')


@pytest.mark.parametrize(
    "make_user_labels, args, named",
    [
        (_user_scribbles, ["--budget", "2"], "weak/scribbles/img0.tif"),
        (_user_counts, ["--kind", "counts"], "weak/counts.json"),
        (lambda ds: None, ["--out_dir", "{ds}/labels"], "labels/img0.tif"),  # ground truth as the output folder
        (lambda ds: None, ["--out_dir", "{ds}/images", "--kind", "masks"], "images/img0.tif"),
    ],
)
def test_simulate_never_replaces_user_files(capsys, dataset, make_user_labels, args, named):
    make_user_labels(dataset)
    before = tree_md5(dataset)
    code, _, err = run_cli(capsys, "simulate", dataset, *[a.format(ds=dataset) for a in args])
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"error: {dataset / named}: ") and "not written by" in err[0], err
    assert tree_md5(dataset) == before  # the user's files are intact and nothing was added


def test_simulate_replaces_only_its_own_unchanged_files(capsys, dataset):
    scribbles = dataset / "weak" / "scribbles"
    assert run_cli(capsys, "simulate", dataset, "--budget", "2")[0] == 0
    first = tree_md5(scribbles)
    assert run_cli(capsys, "simulate", dataset, "--budget", "2")[0] == 0  # same settings: its own files, replaced
    assert tree_md5(scribbles) == first  # ... by the same annotation (deterministic)

    code, _, err = run_cli(capsys, "simulate", dataset, "--budget", "3")  # other settings: asks for --overwrite
    assert code == 2 and "--overwrite" in err[0] and str(scribbles / "img0.tif") in err[0]
    assert run_cli(capsys, "simulate", dataset, "--budget", "3", "--overwrite", "True")[0] == 0

    edited = tifffile.imread(scribbles / "img1.tif")
    edited[0, :5] = 1  # the user corrects a simulated file by hand: from now on it is theirs
    tifffile.imwrite(scribbles / "img1.tif", edited)
    before = tree_md5(dataset)
    code, _, err = run_cli(capsys, "simulate", dataset, "--budget", "3", "--overwrite", "True")
    assert code == 2 and err[0].startswith(f"error: {scribbles / 'img1.tif'}: ")
    assert tree_md5(dataset) == before


# --- one clear line per bad input, refused up front ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args, option, hint",
    [
        (["segment", "{ds}", "--ouput_dir", "{tmp}/out", "--bundle", "supervised_unet"], "--ouput_dir", "--output_dir"),
        (["segment", "{ds}", "--prob_treshold", "0.4"], "--prob_treshold", "--prob_threshold"),
        (["segment", "{ds}", "--dataset_dir", "{ds}"], "--dataset_dir", "set by the command"),
        (["simulate", "{ds}", "--bugdet", "2"], "--bugdet", "--budget"),
        (["evaluate", "--pred", "{tmp}", "--gt", "{ds}", "--jsn", "x.json"], "--jsn", "--json"),
        (["segment", "{ds}", "--prob_threshold", "1.5"], "--prob_threshold", "[0, 1]"),
        (["segment", "{ds}", "--prob_threshold", "-0.1"], "--prob_threshold", "[0, 1]"),
        (["segment", "{ds}", "--bundle", "lacss", "--score_threshold", "2"], "--score_threshold", "[0, 1]"),
        (["segment", "{ds}", "--min_size", "-5"], "--min_size", ">= 0"),
        (["segment", "{ds}", "--patch_size", "[0, 64]"], "--patch_size", "> 0"),
        (["segment", "{ds}", "--watershed", "maybe"], "--watershed", "True or False"),
        (["segment", "{ds}", "--overwrite", "yes"], "--overwrite", "True or False"),
        (["segment", "{ds}", "--device", "gpu0"], "--device", "not a torch device"),
        (["simulate", "{ds}", "--budget", "0"], "--budget", "> 0"),
        (["simulate", "{ds}", "--kind", "scribble"], "--kind", "scribbles"),
    ],
)
def test_bad_usage_is_one_line_naming_the_option(capsys, dataset, tmp_path, args, option, hint):
    before = tree_md5(dataset)
    code, _, err = run_cli(capsys, *[a.format(ds=dataset, tmp=tmp_path) for a in args])
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"error: {option}: ") and hint in err[0], err
    assert tree_md5(dataset) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_is_one_line(capsys, dataset, weights, tmp_path):
    code, _, err = run_cli(capsys, *segment_args(weights, dataset, "--output_dir", tmp_path / "o", "--device", "cuda"))
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --device: ") and "CUDA" in err[0]
    assert not (tmp_path / "o").exists()


def test_missing_input_and_missing_weights_are_one_line(capsys, tmp_path, weights):
    code, _, err = run_cli(capsys, *segment_args(weights, tmp_path / "nowhere", "--output_dir", tmp_path / "o"))
    assert code == 1 and err == [f"error: {tmp_path / 'nowhere'}: no such file or folder"]
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((64, 64), np.uint8))
    code, _, err = run_cli(capsys, "segment", image, "--bundle", "supervised_unet", "--ckpt_path", tmp_path / "no.pt")
    assert code == 1 and len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'no.pt'}: ")
    code, _, err = run_cli(capsys, "simulate", tmp_path / "nowhere")
    assert code == 1 and err == [f"error: {tmp_path / 'nowhere'}: dataset folder does not exist"]


def test_zero_byte_image_is_one_line(capsys, tmp_path, weights):
    image = tmp_path / "empty.tif"
    image.write_bytes(b"")
    code, _, err = run_cli(capsys, *segment_args(weights, image, "--output_dir", tmp_path / "out"))
    assert code == 1
    assert error_lines(err) == err and len(err) == 2, err
    assert err[0].startswith(f"error: {image}: cannot read image file")
    assert err[1] == "error: segmented 0 of 1 images; skipped 1"
    assert image.read_bytes() == b"" and not (tmp_path / "out").exists()


def test_error_during_the_run_is_one_line_without_traceback(capsys, dataset, weights, tmp_path):
    """Weights of another network width: the bundle fails while loading them; MONAI's handlers log a traceback."""
    args = ["segment", dataset, "--bundle", "supervised_unet", "--ckpt_path", weights, "--output_dir", tmp_path / "o"]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("error: RuntimeError: Error(s) in loading state_dict") and "--debug" in err[0]
    assert "Traceback" not in stdout


def test_debug_shows_the_traceback(capsys, dataset, monkeypatch):
    with pytest.raises(UsageError, match="--prob_threshold"):
        main(["segment", str(dataset), "--prob_threshold", "1.5", "--debug"])
    monkeypatch.setenv("CELLSEG_DEBUG", "1")
    with pytest.raises(UsageError, match="--prob_threshold"):
        main(["segment", str(dataset), "--prob_threshold", "1.5"])


def test_entry_point_subprocess_prints_one_line_without_traceback(dataset):
    before = tree_md5(dataset)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cellseg_monai.cli",
            "segment",
            str(dataset / "images"),
            "--output_dir",
            str(dataset / "images"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --output_dir: {dataset / 'images'} is the input folder {dataset.resolve() / 'images'}; outputs "
        "would replace or mix with the inputs, choose a folder outside the dataset"
    ]
    assert tree_md5(dataset) == before


# --- batch inference survives a bad image -------------------------------------------------------------------------


def test_corrupt_image_is_skipped_the_others_segmented(capsys, dataset, weights, tmp_path):
    good = tifffile.imread(dataset / "images" / "img1.tif")
    (dataset / "images" / "bad.tif").write_bytes(b"II*\x00" + b"\x07" * 60)  # a TIFF header, then garbage
    before = tree_md5(dataset)
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, *segment_args(weights, dataset, "--output_dir", out))
    assert code == 1
    problems = error_lines(err)
    assert len(problems) == 2, err
    assert problems[0].startswith(f"error: {dataset / 'images' / 'bad.tif'}: cannot read image file")
    assert problems[1] == "error: segmented 3 of 4 images; skipped 1"
    assert err[-2:] == problems  # reported at the end
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"img{i}{e}" for i in range(3) for e in (".tif", "_overlay.png", ".csv")
    )
    assert tifffile.imread(out / "img1.tif").shape == good.shape[:2]
    assert tree_md5(dataset) == before


# --- atomic writes ------------------------------------------------------------------------------------------------


def _half_write_then_fail(path: object, *args: object, **kwargs: object) -> None:
    Path(str(path)).write_bytes(b"half a file")
    raise OSError("disk full")


class _FailingWriter:
    imwrite = staticmethod(_half_write_then_fail)


@pytest.mark.parametrize(
    "attr, replacement, victim",
    [
        ("tifffile", _FailingWriter, "a.tif"),
        ("write_png_rgb", lambda path, rgb: _half_write_then_fail(path), "a_overlay.png"),
        ("_write_csv", lambda path, columns, rows: _half_write_then_fail(path), "a.csv"),
    ],
)
def test_save_instances_leaves_no_partial_file(tmp_path, monkeypatch, attr, replacement, victim):
    from monai.data import MetaTensor

    from cellseg_monai.transforms import save_instances

    labels = torch.zeros(1, 16, 16, dtype=torch.int32)
    labels[0, 2:6, 2:6] = 1
    data = {"pred": MetaTensor(labels, meta={"id": "a"}), "image": torch.rand(1, 16, 16)}
    save = save_instances.SaveInstancesd(keys="pred", output_dir=tmp_path)
    save(data)
    before = tree_md5(tmp_path)
    monkeypatch.setattr(save_instances, attr, replacement)
    with pytest.raises(OSError, match="disk full"):
        save(data)
    assert tree_md5(tmp_path) == before  # the complete earlier file is still there, no half-written one
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert (tmp_path / victim).exists()


def test_write_labels_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "labels.tif"
    write_labels(target, np.ones((8, 8), np.uint16))
    before = target.read_bytes()
    monkeypatch.setattr(tifffile, "imwrite", _half_write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_labels(target, np.full((8, 8), 2, np.uint16))
    assert target.read_bytes() == before and list(tmp_path.iterdir()) == [target]


def test_interrupted_simulate_leaves_complete_files_it_may_replace(capsys, dataset, monkeypatch):
    from cellseg_monai.annotations import simulate

    write_tif = simulate._write_tif
    calls = []

    def second_write_fails(path: Path, array: np.ndarray) -> None:
        calls.append(path)
        (write_tif if len(calls) == 1 else _half_write_then_fail)(path, array)

    monkeypatch.setattr(simulate, "_write_tif", second_write_fails)
    code, _, err = run_cli(capsys, "simulate", dataset, "--kind", "masks")
    assert code == 1 and err == ["error: disk full"]
    masks = dataset / "weak" / "masks"
    assert sorted(p.name for p in masks.iterdir()) == [".cellseg-simulated.json", "img0.tif"]  # no partial img1
    assert tifffile.imread(masks / "img0.tif").shape == (64, 64)
    monkeypatch.undo()
    assert run_cli(capsys, "simulate", dataset, "--kind", "masks")[0] == 0  # its own files, replaced after all
    record = json.loads((masks / ".cellseg-simulated.json").read_text())["files"]
    assert sorted(record) == ["img0.tif", "img1.tif", "img2.tif"] and all(v["md5"] for v in record.values())


# --- bad-input suite: every dtype, odd shapes, unusable images, mixed batches, empty and duplicate inputs -----------

_RNG = np.random.default_rng(7)
_SHAPE = (40, 48)


def _noise(dtype: type, low: float = 0, high: float = 255, shape: tuple[int, ...] = _SHAPE) -> np.ndarray:
    return _RNG.uniform(low, high, shape).astype(dtype)


# (name, array): every dtype a microscope or an export tool writes; each is segmented, labels of the image's size
DTYPES = [
    ("uint8", _noise(np.uint8)),
    ("uint16", _noise(np.uint16, 0, 60000)),
    ("uint32", _noise(np.uint32, 0, 2**31)),
    ("int8", _noise(np.int8, -100, 100)),
    ("int16", _noise(np.int16, -3000, 3000)),
    ("int32", _noise(np.int32, -1000, 1000)),
    ("int64", _noise(np.int64, 0, 1000)),
    ("float16", _noise(np.float16, 0, 1)),
    ("float32", _noise(np.float32, 0, 1)),
    ("float64", _noise(np.float64, -5, 5)),
    ("bool", _noise(np.float32, 0, 1) > 0.5),
    ("constant", np.full(_SHAPE, 7, np.uint8)),  # no contrast at all: normalisation must not divide by zero
]

# (name, array, output height x width): shapes that are odd but valid
SHAPES = [
    ("1x1", np.array([[5]], np.uint8), (1, 1)),
    ("1x2000", _noise(np.uint8, shape=(1, 2000)), (1, 2000)),
    ("2000x1", _noise(np.uint8, shape=(2000, 1)), (2000, 1)),
    ("3x3", _noise(np.uint8, shape=(3, 3)), (3, 3)),
    ("rgb", _noise(np.uint8, shape=(*_SHAPE, 3)), _SHAPE),
    ("rgba", _noise(np.uint8, shape=(*_SHAPE, 4)), _SHAPE),
    ("channels_first_rgb", _noise(np.uint8, shape=(3, *_SHAPE)), _SHAPE),
]


def _one_image(tmp_path: Path, name: str, array: np.ndarray) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / f"{name}.tif"
    tifffile.imwrite(path, array)
    return path


@pytest.mark.parametrize("name, array", DTYPES, ids=[d[0] for d in DTYPES])
def test_segment_any_dtype(capsys, tmp_path, weights, name, array):
    image = _one_image(tmp_path, name, array)
    before = tree_md5(image.parent)
    code, _, err = run_cli(capsys, *segment_args(weights, image, "--output_dir", tmp_path / "out"))
    assert code == 0, err
    labels = tifffile.imread(tmp_path / "out" / f"{name}.tif")
    assert labels.shape == _SHAPE and np.issubdtype(labels.dtype, np.integer)
    assert tree_md5(image.parent) == before


@pytest.mark.parametrize("name, array, hw", SHAPES, ids=[s[0] for s in SHAPES])
def test_segment_odd_shapes(capsys, tmp_path, weights, name, array, hw):
    image = _one_image(tmp_path, name, array)
    before = tree_md5(image.parent)
    code, _, err = run_cli(capsys, *segment_args(weights, image, "--output_dir", tmp_path / "out"))
    assert code == 0, err
    assert tifffile.imread(tmp_path / "out" / f"{name}.tif").shape == hw
    assert tree_md5(image.parent) == before


def _write(array: np.ndarray) -> Callable[[Path], None]:
    return lambda path: tifffile.imwrite(path, array)


_NAN = np.full(_SHAPE, 0.5, np.float32)
_NAN[3, 4] = np.nan
# (name, how the file is made, the problem after "error: <file>: ")
UNUSABLE = [
    ("one_nan", _write(_NAN), "image has 1 NaN or infinite value(s) (of 1920); replace them"),
    ("all_inf", _write(np.full(_SHAPE, np.inf, np.float32)), "image has 1920 NaN or infinite value(s)"),
    ("minus_inf", _write(np.full(_SHAPE, -np.inf, np.float64)), "image has 1920 NaN or infinite value(s)"),
    ("two_channels", _write(_noise(np.uint8, shape=(*_SHAPE, 2))), "image has 2 channel(s), cannot convert to the 3"),
    ("five_channels", _write(_noise(np.uint8, shape=(*_SHAPE, 5))), "looks like a 3D stack or time series"),
    ("stack_7_planes", _write(_noise(np.uint8, shape=(7, *_SHAPE))), "looks like a 3D stack or time series"),
    ("stack_4d", _write(_noise(np.uint8, shape=(2, 3, *_SHAPE))), "looks like a 3D stack or time series"),
    ("zero_bytes", lambda path: path.write_bytes(b""), "cannot read image file"),
    ("text_as_tif", lambda path: path.write_text("not an image\n"), "cannot read image file"),
    ("truncated_tif", lambda path: path.write_bytes(_tif_bytes()[:200]), "cannot read image file"),
]


def _tif_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, _noise(np.uint16, shape=(64, 64)))
    return buffer.getvalue()


@pytest.mark.parametrize("name, make, problem", UNUSABLE, ids=[u[0] for u in UNUSABLE])
def test_segment_unusable_image_is_one_line_naming_it(capsys, tmp_path, weights, name, make, problem):
    folder = tmp_path / "in"
    folder.mkdir()
    image = folder / f"{name}.tif"
    make(image)
    before = tree_md5(folder)
    code, stdout, err = run_cli(capsys, *segment_args(weights, image, "--output_dir", tmp_path / "out"))
    assert code == 1
    assert err == error_lines(err) and len(err) == 2, err
    assert err[0].startswith(f"error: {image}: ") and problem in err[0], err[0]
    assert err[1] == "error: segmented 0 of 1 images; skipped 1"
    assert "Traceback" not in stdout
    assert tree_md5(folder) == before and not (tmp_path / "out").exists()


def test_mixed_batch_segments_every_good_image_and_names_every_bad_one(capsys, tmp_path, weights):
    folder = tmp_path / "in"
    folder.mkdir()
    for good in ("a", "c", "e"):
        tifffile.imwrite(folder / f"{good}.tif", _noise(np.uint8))
    tifffile.imwrite(folder / "b_nan.tif", _NAN)
    tifffile.imwrite(folder / "d_stack.tif", _noise(np.uint8, shape=(7, *_SHAPE)))
    (folder / "f_empty.tif").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image, not listed\n")
    before = tree_md5(folder)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, *segment_args(weights, folder, "--output_dir", out))
    assert code == 1
    assert [line.split(": ", 2)[1] for line in err[:-1]] == [
        str(folder / n) for n in ("b_nan.tif", "d_stack.tif", "f_empty.tif")
    ]
    assert err[-1] == "error: segmented 3 of 6 images; skipped 3"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{i}{e}" for i in "ace" for e in (".tif", "_overlay.png", ".csv")
    )
    assert tree_md5(folder) == before


def _empty_folder(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty", f"{tmp_path / 'empty'}: no images found (suffixes .tif, .tiff, .png"


def _only_text_files(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("x")
    return tmp_path / "docs", f"{tmp_path / 'docs'}: no images found"


def _duplicate_id_tif_png(tmp_path: Path) -> tuple[Path, str]:
    import imageio.v3 as iio

    (tmp_path / "dup").mkdir()
    tifffile.imwrite(tmp_path / "dup" / "a.tif", _noise(np.uint8))
    iio.imwrite(tmp_path / "dup" / "a.png", _noise(np.uint8))
    return tmp_path / "dup", f"{tmp_path / 'dup'}: two files share the id 'a' (a.png, a.tif)"


def _duplicate_id_tif_tiff(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "dup").mkdir()
    tifffile.imwrite(tmp_path / "dup" / "a.tif", _noise(np.uint8))
    tifffile.imwrite(tmp_path / "dup" / "a.tiff", _noise(np.uint8))
    return tmp_path / "dup", f"{tmp_path / 'dup'}: two files share the id 'a' (a.tif, a.tiff)"


def _dataset_with_empty_images(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "ds" / "images").mkdir(parents=True)
    return tmp_path / "ds", f"{tmp_path / 'ds'}: no images found"


@pytest.mark.parametrize(
    "make",
    [_empty_folder, _only_text_files, _duplicate_id_tif_png, _duplicate_id_tif_tiff, _dataset_with_empty_images],
    ids=lambda f: f.__name__.strip("_"),
)
def test_empty_or_ambiguous_input_is_one_line(capsys, tmp_path, weights, make):
    given, message = make(tmp_path)
    before = tree_md5(given)
    code, _, err = run_cli(capsys, *segment_args(weights, given, "--output_dir", tmp_path / "out"))
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"error: {message}"), err[0]
    assert tree_md5(given) == before and not (tmp_path / "out").exists()


# --- concurrent runs into one output folder -----------------------------------------------------------------------


def test_segment_into_a_folder_another_run_is_writing_is_refused(capsys, dataset, weights, tmp_path):
    """Another process holds the output folder (a segment or a training in progress): this one refuses at once."""
    import socket
    import textwrap

    out = tmp_path / "out"
    out.mkdir()
    (out / "img0.tif").write_bytes(b"being written by the other run")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from cellseg_monai.guards.lock import RunLock
                RunLock({str(out)!r}, "segment").acquire()
                print("held", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before, inputs = tree_md5(out), tree_md5(dataset)
        code, _, err = run_cli(capsys, *segment_args(weights, dataset, "--output_dir", out, "--overwrite", "True"))
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith(
            f"error: {out / '.cellseg-run.lock'}: {out} is in use by another run (pid {holder.pid} on "
            f"{socket.gethostname()} since "
        ), err[0]
        assert tree_md5(out) == before and tree_md5(dataset) == inputs
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
