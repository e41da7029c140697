"""``cellseg-monai`` command line: simulate weak labels, segment images with a bundle, score predictions.

cellseg-monai simulate DATASET_DIR --kind scribbles --budget 0.3
cellseg-monai simulate DATASET_DIR --kind points --budget 0.1
cellseg-monai segment IMAGE_OR_FOLDER --bundle impartial --output_dir OUT [--ckpt_path model.pt]
cellseg-monai evaluate --pred PRED_DIR --gt GT_DIR [--json OUT.json]
cellseg-monai export-bundle NAME --out DIR

Safe by default: no command writes into its inputs or replaces a file it did not write unless asked to
(``--overwrite True``); a bad option is refused before anything runs; every problem is printed as one line
``error: <file or option>: <problem>`` on stderr, with exit code 1 for bad input data and 2 for bad usage
(:mod:`cellseg_monai.guards`). ``--debug`` (or ``CELLSEG_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import fire

from cellseg_monai.bundle.paths import find_bundle

__all__ = ["simulate", "segment", "evaluate", "export_bundle", "main"]

SEGMENT_OPTIONS: tuple[str, ...] = ("input", "bundle", "output_dir", "ckpt_path", "device", "overwrite")
"""``segment``'s own options; every other ``--id value`` must be an id of the bundle's ``inference.json``."""
SET_BY_SEGMENT: tuple[str, ...] = ("bundle_root", "dataset_dir", "datalist", "output_dir", "ckpt_path", "device")
"""Config ids that ``segment`` sets from its arguments (not accepted as overrides)."""


def simulate(
    dataset_dir: str,
    kind: str = "scribbles",
    budget: float | None = None,
    seed: int = 0,
    out_dir: str | None = None,
    overwrite: bool = False,
    **unknown: object,
):
    """Write simulated weak labels for every image of a dataset to ``<dataset_dir>/weak/<kind>/`` (or ``out_dir``):
    ``--kind`` scribbles, masks, counts, points or partial (see :mod:`cellseg_monai.annotations.simulate`).

    ``--budget``: scribbles, objects per image (an int) or a fraction of them (default 0.3); partial and points,
    the fraction of each image's objects outlined or clicked (defaults 0.3 and 1.0). The annotation of an image
    is a deterministic function of (image id, seed, budget). Weak labels that
    ``simulate`` did not write itself (yours) are never replaced: the run is refused. ``--overwrite True`` lets it
    replace its own earlier files made with other settings.
    """
    from cellseg_monai.annotations import SIMULATED_KINDS, simulate_dataset
    from cellseg_monai.guards import UsageError, check_flag, check_setting, refuse_unknown

    refuse_unknown(unknown, ["dataset_dir", "kind", "budget", "seed", "out_dir", "overwrite"])
    if kind not in SIMULATED_KINDS:
        raise UsageError("--kind", f"expected one of {', '.join(SIMULATED_KINDS)}, got {kind!r}")
    check_flag("overwrite", overwrite)
    if budget is not None:
        check_setting("budget", budget)
    written = simulate_dataset(
        str(dataset_dir), kind=kind, budget=budget, seed=seed, out_dir=out_dir, overwrite=overwrite
    )
    print(f"wrote {len(written)} {kind} files" + (f" to {os.path.dirname(written[0])}" if written else ""))


def _screened_datalist(entries: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Datalist entries as a config override: absolute paths (never read as ``$``/``@``/``%`` config syntax), and
    the id only where it differs from the file stem (the loader derives that one itself)."""
    out = []
    for entry in entries:
        path = Path(entry["image"]).resolve()
        out.append({"image": str(path)} | ({"id": entry["id"]} if entry["id"] != path.stem else {}))
    return out


def segment(
    input: str,
    bundle: str = "impartial",
    output_dir: str = "predictions",
    ckpt_path: str | None = None,
    device: str | None = None,
    overwrite: bool = False,
    **config_overrides: object,
):
    """Segment an image file, a folder of images, or a dataset folder (with ``images/``) with a bundle's inference.

    ``--bundle`` is a bundle name or folder (:func:`cellseg_monai.bundle.paths.find_bundle`); the bundle, options,
    weights and device are checked as the Python API checks them (:func:`cellseg_monai.api.inference_config`).

    Writes ``<output_dir>/<id>.tif`` (instance labels), ``<id>_overlay.png`` and ``<id>.csv`` (per-object measurements).
    ``ckpt_path`` defaults to ``<bundle>/models/model.pt``. Any other ``--id value`` overrides that config id of the
    bundle's ``inference.json`` (e.g. ``--prob_threshold 0.4``); ids the config does not have are refused.

    Safety: ``output_dir`` may not be, lie inside or hold the input folder or a dataset's images/labels/weak
    folders; existing outputs are replaced only with ``--overwrite True``. Images that cannot be read are skipped:
    the others are segmented, the skipped ones listed at the end, and the exit code is 1.
    """
    from monai.bundle import run

    from cellseg_monai.api import inference_config
    from cellseg_monai.data.layouts import list_images
    from cellseg_monai.guards import (
        SkippedInputs,
        check_existing_outputs,
        check_flag,
        check_output_dir,
        hold_folder,
        protected_folders,
        screen_images,
    )
    from cellseg_monai.transforms.save_instances import output_names

    check_flag("overwrite", overwrite)
    setup = inference_config(bundle, ckpt_path, device, config_overrides, SEGMENT_OPTIONS, SET_BY_SEGMENT)
    datalist = list_images(str(input))
    images = [entry["image"] for entry in datalist]
    check_output_dir(str(output_dir), protected_folders(str(input), datalist), images)
    with hold_folder(str(output_dir), "segment"):  # one run at a time into a folder (cellseg_monai.guards.lock)
        check_existing_outputs(str(output_dir), [n for e in datalist for n in output_names(e["id"])], overwrite)
        good, skipped = screen_images(datalist, setup.in_channels)
        if good:
            overrides = {**setup.overrides, "dataset_dir": str(input), "output_dir": str(output_dir)}
            run(
                config_file=str(setup.config_file),
                meta_file=str(setup.meta_file),
                logging_file=str(setup.logging_file),
                **overrides,
                datalist=_screened_datalist(good),
            )
            print(f"predictions written to {os.path.abspath(output_dir)}")
        if skipped:
            raise SkippedInputs(skipped, f"segmented {len(good)} of {len(datalist)} images; skipped {len(skipped)}")


def evaluate(pred: str, gt: str, json_path: str | None = None, overwrite: bool = False, **kwargs: object):
    """Score predicted instance label images ``PRED/<id>.tif`` against ``GT/<id>.tif`` and print a table.

    ``gt`` may be a labels folder or a dataset folder with ``labels/``. ``--json OUT`` writes
    ``{"per_image_mean": ..., "pooled": ..., "per_image": [...]}``; an existing file is replaced only with
    ``--overwrite True``.
    """
    from cellseg_monai.guards import check_existing_outputs, check_flag, refuse_unknown
    from cellseg_monai.metrics import evaluate_folders, format_table

    json_path = json_path or kwargs.pop("json", None)  # `--json` reads naturally on the command line
    refuse_unknown(kwargs, ["pred", "gt", "json", "json_path", "overwrite"])
    check_flag("overwrite", overwrite)
    if json_path:
        check_existing_outputs(os.path.dirname(str(json_path)), [os.path.basename(str(json_path))], overwrite, "--json")
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


COMMANDS = {"simulate": simulate, "segment": segment, "evaluate": evaluate, "export-bundle": export_bundle}
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _pop_debug(args: list[str]) -> bool:
    """Remove ``--debug`` (optionally ``--debug True|False`` or ``--debug=...``) from ``args``; whether it was on."""
    debug = False
    for i, arg in enumerate(list(args)):
        if arg == "--debug":
            value = args[i + 1].lower() if i + 1 < len(args) else ""
            debug = value not in _FALSE
            del args[i : i + 1 + (value in _TRUE + _FALSE)]
            break
        if arg.startswith("--debug="):
            debug = arg.split("=", 1)[1].lower() not in _FALSE
            del args[i]
            break
    return debug


def main(argv: Sequence[str] | None = None) -> None:
    """Run a ``cellseg-monai`` command (``argv`` default: ``sys.argv[1:]``).

    Errors end the program with one line ``error: <file or option>: <problem>`` per problem on stderr and exit code
    1 (bad input data) or 2 (bad usage) — see :func:`cellseg_monai.guards.describe_error`; with ``--debug`` or
    ``CELLSEG_DEBUG=1`` the exception propagates with its traceback.
    """
    from cellseg_monai.guards import describe_error, hidden_tracebacks

    args = list(sys.argv[1:] if argv is None else argv)
    debug = _pop_debug(args) or os.environ.get("CELLSEG_DEBUG", "").lower() in _TRUE
    try:
        with contextlib.nullcontext() if debug else hidden_tracebacks():
            fire.Fire(COMMANDS, command=args, name="cellseg-monai")
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted (files written so far are complete; none is half-written)", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as exc:
        if debug:
            raise
        lines, code = describe_error(exc)
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()
