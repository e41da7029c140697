"""Every bundle under bundles/ honours the bundle contract of docs/architecture.md (files, ids, metadata, network
I/O) and the output contract of :mod:`cellseg_monai.contract`; the blocks every bundle shares stay identical across
bundles."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from cellseg_monai.contract import FG_PROB_KEY, LABELS_KEY, OUTPUT_KEYS, REQUIRED_KEYS, SCORED_KEY

REPO = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs").is_dir() and not p.is_symlink())
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"
SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"
FILES = [
    "configs/metadata.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "LICENSE",
    "large_files.yml",
]
TRAIN_IDS = [
    "bundle_root",
    "device",
    "dataset_dir",
    "output_dir",
    "ckpt_path",
    "network_def",
    "network",
    "inferer",
    "val_interval",
    "train#dataset",
    "train#preprocessing",
    "train#trainer",
    "train#trainer#max_epochs",
    "train#handlers",
    "validate#evaluator",
    "validate#postprocessing",
    "validate#key_metric",
]
DOC_SECTIONS = [
    "Overview",
    "Data",
    "Annotations",
    "Training",
    "Input/Output",
    "Performance",
    "Commands",
    "References",
    "License",
]


def _config(bundle: Path, name: str):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / name))
    return parser


def test_there_is_a_bundle():
    assert BUNDLES, "no bundle found under bundles/"


def test_alias_imppartial_points_at_impartial():
    assert (REPO / "bundles" / "imppartial").resolve() == (REPO / "bundles" / "impartial").resolve()


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_files_and_config_ids(bundle):
    missing = [f for f in FILES if not (bundle / f).is_file()]
    assert not missing, f"{bundle.name} lacks {missing}"
    train = _config(bundle, "train.json")
    absent = [i for i in TRAIN_IDS if i not in train]
    assert not absent, f"{bundle.name}/configs/train.json lacks ids {absent}"
    inference = _config(bundle, "inference.json")
    for i in ("bundle_root", "device", "dataset_dir", "output_dir", "ckpt_path", "network_def", "inferer"):
        assert i in inference, f"{bundle.name}/configs/inference.json lacks '{i}'"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_network_def_is_the_same_in_train_and_inference(bundle):
    # inference.json must run alone (the model zoo runs each file by itself), so it repeats train.json's
    # network_def; this test keeps the two from drifting apart.
    train, inference = _config(bundle, "train.json"), _config(bundle, "inference.json")
    assert train["network_def"] == inference["network_def"]
    for ref in ("in_channels", "classes"):
        if ref in train and ref in inference:
            assert train[ref] == inference[ref], ref


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_docs_have_the_fixed_sections_in_order(bundle):
    text = (bundle / "docs" / "README.md").read_text()
    heads = [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]
    assert heads == DOC_SECTIONS, f"{bundle.name}/docs/README.md sections {heads}"


@pytest.mark.skipif(not SCHEMA.is_file(), reason=f"MONAI's metadata schema is not at {SCHEMA} (../shared is absent)")
@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_verify_metadata(bundle):
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "verify_metadata",
        "--meta_file",
        str(bundle / "configs" / "metadata.json"),
        "--filepath",
        str(SCHEMA),
        "--hash_val",
        SCHEMA_MD5,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "verified with no error" in proc.stdout + proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_verify_net_in_out(bundle):
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "verify_net_in_out",
        "network_def",
        "--meta_file",
        str(bundle / "configs" / "metadata.json"),
        "--config_file",
        str(bundle / "configs" / "inference.json"),
        "--n",
        "32",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0 and "verified with no error" in proc.stdout + proc.stderr, proc.stderr[-3000:]


# ---------------------------------------------------------------------------------------------------------------------
# Blocks written once per config file and identical in every bundle (a bundle file stays self-contained for the model
# zoo, so train.json and inference.json each hold their copy; these tests keep the copies from drifting apart).
NAMES = [b.name for b in BUNDLES]
SHARED_TRAIN = ["imports", "load_image", "require_finite", "load_label", "scale_intensity"]
SHARED_INFERENCE = [
    "imports",
    "load_image",
    "require_finite",
    "scale_intensity",
    "datalist",
    "dataset",
    "dataloader",
    "save_instances",
    "postprocessing",
    "handlers",
    "evaluator",
    "initialize",
    "run",
]
SHARED_VALIDATE = ["dataset", "dataloader", "postprocessing", "best_model_saver", "inferer", "evaluator"]


def _raw(bundle: Path, name: str) -> dict:
    return json.loads((bundle / "configs" / name).read_text())


def test_evaluate_json_is_one_file_for_every_bundle():
    texts = {b.name: (b / "configs" / "evaluate.json").read_text() for b in BUNDLES}
    assert len(set(texts.values())) == 1, f"evaluate.json differs between bundles: {sorted(texts)}"


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_shared_blocks_are_identical_across_bundles_and_files(config):
    ids = SHARED_TRAIN if config == "train.json" else SHARED_INFERENCE
    raw = {b.name: _raw(b, config) for b in BUNDLES}
    for cid in ids:
        values = {name: json.dumps(cfg[cid], sort_keys=True) for name, cfg in raw.items()}
        assert len(set(values.values())) == 1, f"{config}#{cid} differs between bundles: {values}"
    with_polarity = [cfg["normalize_polarity"] for cfg in raw.values() if "polarity" in cfg]
    assert all(v == with_polarity[0] for v in with_polarity)
    if config == "train.json":
        for cid in SHARED_VALIDATE:
            values = {name: json.dumps(cfg["validate"][cid], sort_keys=True) for name, cfg in raw.items()}
            assert len(set(values.values())) == 1, f"train.json#validate#{cid} differs between bundles: {values}"
    for bundle in BUNDLES:  # the blocks of inference.json are those of train.json
        train, inference = _raw(bundle, "train.json"), raw[bundle.name] if config == "inference.json" else None
        if inference is not None:
            for cid in ("imports", "load_image", "require_finite", "scale_intensity", "normalize_polarity"):
                assert train.get(cid) == inference.get(cid), f"{bundle.name}: {cid} differs in train/inference.json"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_shared_blocks_are_used_not_repeated(bundle):
    for config in ("train.json", "inference.json"):
        text = (bundle / "configs" / config).read_text()
        assert text.count("ScaleIntensityRangePercentilesd") == 1, f"{bundle.name}/configs/{config}"
        assert text.count('"cellseg_monai.transforms.LoadMicroscopyd",\n        "keys": "image"') <= 1


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_post_processing_ends_in_the_output_contract_in_every_file(bundle):
    train, inference = _raw(bundle, "train.json"), _raw(bundle, "inference.json")
    steps = train["validate"]["postprocessing_transforms"]
    assert steps == inference["postprocessing_transforms"], "evaluation and inference post-process alike"
    assert steps[-1]["_target_"] == "cellseg_monai.transforms.InstanceOutputsd"
    assert inference["postprocessing"]["transforms"] == "$@postprocessing_transforms + [@save_instances]"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_metrics_read_only_contract_keys(bundle):
    validate = _raw(bundle, "train.json")["validate"]
    for name, metric in {**validate["key_metric"], **validate["additional_metrics"]}.items():
        keys = re.fullmatch(r"\$monai\.handlers\.from_engine\(\[(.*)\]\)", metric["output_transform"]).group(1)
        pred, *label = (k.strip().strip("'") for k in keys.split(","))
        assert pred in OUTPUT_KEYS, f"{bundle.name} {name} reads {pred!r}"
        if not label:  # a weak-label metric: the weak label comes from the batch (its handler's weak_key)
            continue
        assert label == ["label"], f"{bundle.name} {name} reads {label}"
        scored = re.match(r"val_(ap@|mAP|coco_ap)", name) is not None
        pixel = metric["_target_"].endswith("PixelMetricHandler")
        assert pred == (SCORED_KEY if scored else FG_PROB_KEY if pixel else LABELS_KEY), f"{bundle.name} {name}"


def _targets(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "_target_" and isinstance(v, str):
                yield v
            yield from _targets(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _targets(v)


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_targets_name_the_subpackage_export(bundle):
    """One depth: ``cellseg_monai.<subpackage>.<Name>``, the name that subpackage exports (``__all__``)."""
    for config in sorted((bundle / "configs").glob("*.json")):
        for target in _targets(_raw(bundle, config.name)):
            if not target.startswith("cellseg_monai."):
                continue
            parts = target.split(".")
            assert len(parts) == 3, f"{bundle.name}/configs/{config.name}: {target}"
            module = importlib.import_module(".".join(parts[:2]))
            assert parts[2] in module.__all__, f"{target} is not exported by {module.__name__}"


def _crop_of_a_sample_image(tmp_path: Path) -> Path:
    from cellseg_monai.data import sample_data_dir

    source = sorted((Path(sample_data_dir()) / "images").glob("*.tif"))[0]
    path = tmp_path / "crop.tif"
    tifffile.imwrite(path, tifffile.imread(source)[:96, :112])
    return path


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_inference_outputs_carry_the_contract_keys(bundle, tmp_path):
    """The shipped network, inferer and post-processing of inference.json on a crop of a sample image, in process:
    the data dict that reaches the saver holds the keys of the contract with their shapes and ranges."""
    from monai.bundle import ConfigParser
    from monai.data import decollate_batch, list_data_collate

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["device"] = "$torch.device('cpu')"
    image = _crop_of_a_sample_image(tmp_path)
    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True, map_location="cpu"))
    network.eval()
    item = parser.get_parsed_content("preprocessing")({"image": str(image)})
    batch = list_data_collate([item])
    with torch.no_grad():
        pred = parser.get_parsed_content("inferer")(batch["image"], network)
    data = {**item, "pred": decollate_batch(pred)[0]}
    from monai.transforms import Compose

    out = Compose(parser.get_parsed_content("postprocessing_transforms"))(data)
    assert set(REQUIRED_KEYS) <= set(out)
    h, w = 96, 112
    labels, score, scored = out[LABELS_KEY], out["score"], out[SCORED_KEY]
    assert labels.shape == (1, h, w) and labels.dtype == torch.int32 and labels.min() >= 0
    assert score.shape == (1, h, w) and 0.0 <= score.min() and score.max() <= 1.0
    np.testing.assert_array_equal(scored.numpy(), np.concatenate([labels.numpy(), score.numpy()]))
    has_fg = bundle.name in ("canonical_shape", "impartial", "sparse_seunet", "supervised_unet")
    assert (FG_PROB_KEY in out) == has_fg
    if has_fg:
        assert out[FG_PROB_KEY].shape == (1, h, w) and 0.0 <= out[FG_PROB_KEY].min() <= out[FG_PROB_KEY].max() <= 1
    attributes = parser.get_parsed_content("attribute_names")
    assert ("attributes" in out) == bool(attributes)
    if attributes:
        assert out["attributes"].shape == (len(attributes), h, w)


#: bundles whose DDP wrapper must look for parameters a training step may leave unused (set in their
#: multi_gpu_train.json; the only difference the copies may have)
FIND_UNUSED = {"lacss", "partial_maskrcnn"}


def test_logging_and_multi_gpu_configs_are_the_same_in_every_bundle():
    """Each bundle keeps its own copy (the zoo needs self-contained bundles); the copies may not drift apart."""
    logging_confs = {b.name: (b / "configs" / "logging.conf").read_text() for b in BUNDLES}
    assert len(set(logging_confs.values())) == 1, sorted(logging_confs)
    multi = {}
    for b in BUNDLES:
        config = json.loads((b / "configs" / "multi_gpu_train.json").read_text())
        assert config["network"].pop("find_unused_parameters", False) is (b.name in FIND_UNUSED), b.name
        multi[b.name] = config
    first = next(iter(multi.values()))
    assert all(config == first for config in multi.values()), [n for n, c in multi.items() if c != first]


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_inference_and_evaluation_run_the_same_inferer(bundle):
    # evaluate.json scores val with train.json's `inferer`: the figures in the docs are those of inference.json only
    # when both files hold the same inferer and the same values for the ids it refers to
    train, inference = _raw(bundle, "train.json"), _raw(bundle, "inference.json")
    assert train["inferer"] == inference["inferer"], f"{bundle.name}: inferer differs in train/inference.json"
    for ref in re.findall(r"@(\w+)", json.dumps(inference["inferer"])):
        assert train.get(ref) == inference.get(ref), f"{bundle.name}: {ref} differs in train/inference.json"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_trainer_runs_in_the_precision_train_precision_names(bundle):
    # every bundle trains through the same precision wrapper, so `--train_precision float32|bfloat16|auto` means the
    # same thing everywhere and the trainer's forward pass (not only inference) is under it
    from cellseg_monai.inferers import FastInferer
    from cellseg_monai.inferers.precision import PRECISIONS

    train = _config(bundle, "train.json")
    assert train["train_precision"] in PRECISIONS
    wrapper = train.get_parsed_content("train#inferer")
    assert isinstance(wrapper, FastInferer) and wrapper.training, bundle.name
    assert wrapper.precision == train["train_precision"] and not wrapper.cast
    assert train.get("train#trainer#inferer").replace("::", "#") == "@train#inferer"
