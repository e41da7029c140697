"""The MONAI Label app (``monailabel/cellseg``) as a real server: started with the documented command
(``bash monailabel/start.sh <images>``) on 127.0.0.1, asked over HTTP, stopped by its process id.

For every bundle that ships ``models/model.pt``, ``POST /infer/<bundle>`` must return the bundle's own result
(``python -m monai.bundle run --config_file bundles/<bundle>/configs/inference.json`` on the same image, run in the
test environment): the same ``uint16`` instance ids, pixel for pixel, same orientation. The two images are sample
images: one as shipped (RGB 8-bit TIFF, 192 x 192), one made grey 16-bit PNG and not square (160 x 192), which
catches a transposed result. No request may write into a bundle folder.

Needs the MONAI Label venv (see ``conftest.py``); each HTTP call and subprocess has a timeout.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from cellseg_monai.data import sample_data_dir

from .conftest import REPO

pytestmark = pytest.mark.slow

BUNDLES_DIR = REPO / "bundles"
START = REPO / "monailabel" / "start.sh"
STARTUP_TIMEOUT_S = 240
INFER_TIMEOUT_S = 300
BUNDLE_RUN_TIMEOUT_S = 600


def served_bundles() -> list[str]:
    """Bundles the app serves: folders with configs/inference.json and models/model.pt (the alias link skipped)."""
    return sorted(
        p.name
        for p in BUNDLES_DIR.iterdir()
        if p.is_dir()
        and not p.is_symlink()
        and (p / "configs" / "inference.json").is_file()
        and (p / "models" / "model.pt").is_file()
    )


BUNDLES = served_bundles()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_label_image(data: bytes) -> np.ndarray:
    """The returned label file: TIFF (for TIFF inputs) or PNG."""
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return tifffile.imread(io.BytesIO(data))
    return iio.imread(data, extension=".png")


class Server:
    """``bash monailabel/start.sh`` in the background; the script execs the server, so its pid is the server's."""

    def __init__(self, venv: Path, studies: Path, log: Path):
        self.port = free_port()
        self.studies = studies
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "CELLSEG_MONAILABEL_VENV": str(venv), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        cmd = ["bash", str(START), str(studies), "--host", "127.0.0.1", "--port", str(self.port)]
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def log_tail(self, n: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def request(
        self, method: str, path: str, timeout: float, body: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, str, bytes]:
        data = body if body is not None else (b"" if method in ("POST", "PUT") else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers.get("content-type", ""), r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("content-type", ""), e.read()

    def wait_ready(self) -> dict:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode} before answering:\n{self.log_tail()}")
            try:
                status, _, body = self.request("GET", "/info/", timeout=10)
                if status == 200:
                    return json.loads(body)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(1)
        pytest.fail(f"no answer from {self.url}/info/ within {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """Two sample images under unique ids: RGB 8-bit TIFF as shipped, and a grey 16-bit 160 x 192 PNG."""
    folder = tmp_path_factory.mktemp("monailabel-images")
    token = f"ml{uuid.uuid4().hex[:8]}"
    first, second = sorted(Path(sample_data_dir(), "images").glob("*.tif"))[:2]
    rgb = tifffile.imread(first)
    tifffile.imwrite(folder / f"{token}-rgb8.tif", rgb)
    grey = tifffile.imread(second)
    grey = grey.mean(axis=-1) if grey.ndim == 3 else grey
    iio.imwrite(folder / f"{token}-grey16.png", np.round(grey[:160] * 257).astype(np.uint16))
    return {p.stem: p for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def server(monailabel_venv, images, tmp_path_factory):
    if not BUNDLES:
        pytest.skip("no bundle ships models/model.pt yet")
    studies = tmp_path_factory.mktemp("monailabel-studies")
    for path in images.values():
        (studies / path.name).write_bytes(path.read_bytes())
    srv = Server(monailabel_venv, studies, tmp_path_factory.mktemp("monailabel-log") / "server.log")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def bundle_outputs(server, images, tmp_path_factory) -> dict[str, Path]:
    """``python -m monai.bundle run`` of every served bundle on the images (while the server starts)."""
    folder = next(iter(images.values())).parent
    out = tmp_path_factory.mktemp("bundle-outputs")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for name in BUNDLES:
        config = BUNDLES_DIR / name / "configs" / "inference.json"
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config)]
        cmd += ["--dataset_dir", str(folder), "--output_dir", str(out / name)]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=BUNDLE_RUN_TIMEOUT_S)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-4000:]}"
    return {name: out / name for name in BUNDLES}


@pytest.fixture(scope="module")
def info(server, bundle_outputs) -> dict:
    return server.wait_ready()


def test_info_lists_every_bundle_with_weights(info):
    assert sorted(info["models"]) == BUNDLES
    for name, model in info["models"].items():
        assert model["type"] == "segmentation", name
        assert model["dimension"] == 2, name
        assert model["labels"] == {"nucleus": 1}, name
    assert sorted(info["trainers"]) == BUNDLES
    assert info["trainers"]["impartial"]["config"]["annotation"] == "scribbles"
    assert info["trainers"]["supervised_unet"]["config"]["annotation"] == "instances"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_infer_returns_the_bundles_instance_labels(bundle, server, info, images, bundle_outputs):
    for image_id in images:
        status, ctype, body = server.request("POST", f"/infer/{bundle}?image={image_id}&output=image", INFER_TIMEOUT_S)
        assert status == 200, f"{bundle} {image_id}: HTTP {status} {body[:2000]!r}\n{server.log_tail()}"
        got = read_label_image(body)
        want = tifffile.imread(bundle_outputs[bundle] / f"{image_id}.tif")
        assert want.dtype == np.uint16
        assert got.dtype == np.uint16, f"{bundle} {image_id}: {got.dtype} ({ctype})"
        assert got.shape == want.shape, f"{bundle} {image_id}: {got.shape} returned, bundle wrote {want.shape}"
        assert np.array_equal(got, want), f"{bundle} {image_id}: {int((got != want).sum())} pixels differ" + (
            " (the result is the transpose)" if got.shape == want.T.shape and np.array_equal(got, want.T) else ""
        )

    image_id = next(iter(images))
    status, _, body = server.request("POST", f"/infer/{bundle}?image={image_id}&output=json", INFER_TIMEOUT_S)
    assert status == 200, body[:2000]
    params = json.loads(body)
    want = tifffile.imread(bundle_outputs[bundle] / f"{image_id}.tif")
    assert params["label_names"] == {"nucleus": 1}
    assert params["instances"] == int(np.count_nonzero(np.unique(want)))


def test_requests_write_nothing_into_the_bundles(server, info, images):
    """After the inference tests (module order): no file named after a test image anywhere under bundles/."""
    tokens = {image_id.split("-")[0] for image_id in images}
    written = [p for p in BUNDLES_DIR.rglob("*") if any(t in p.name for t in tokens)]
    assert written == []


def test_uncertainty_proposes_the_image_the_model_is_least_sure_about(server, info, images):
    """Before any label is saved both images are candidates; the proposal is the one whose foreground probability
    has the highest mean entropy, as /infer reports it for each image."""
    if "impartial" not in BUNDLES:
        pytest.skip("impartial ships no weights")
    assert "uncertainty" in info["strategies"]
    scores = {}
    for image_id in images:
        status, _, body = server.request("POST", f"/infer/impartial?image={image_id}&output=json", INFER_TIMEOUT_S)
        assert status == 200, body[:2000]
        scores[image_id] = json.loads(body)["uncertainty"]
        assert 0.0 < scores[image_id] < 1.0
    request = json.dumps({"model": "impartial"}).encode()
    status, _, body = server.request(
        "POST", "/activelearning/uncertainty", INFER_TIMEOUT_S, request, "application/json"
    )
    assert status == 200, f"HTTP {status} {body[:2000]!r}\n{server.log_tail()}"
    proposal = json.loads(body)
    assert proposal["id"] == max(scores, key=scores.get), (proposal, scores)
    assert proposal["weight"] == pytest.approx(scores[proposal["id"]])


# --- training from the viewer (after the inference tests: it may change the served model) --------------------------

TRAIN_TIMEOUT_S = 900


def multipart(field: str, filename: str, payload: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def test_scribbles_saved_from_the_viewer_train_impartial(server, info, images, tmp_path):
    """The paper's loop over REST: save scribbles for both images, train one epoch, infer again. The candidate is
    served only if it beats the served model on the held-out image; /infer then returns exactly what
    ``monai.bundle run inference.json`` gives with the served weights. Nothing is written into the bundle."""
    from cellseg_monai.annotations import simulate_scribbles

    if "impartial" not in BUNDLES:
        pytest.skip("impartial ships no weights")
    shipped = BUNDLES_DIR / "impartial" / "models" / "model.pt"
    shipped_md5 = md5(shipped)
    sample_labels = Path(sample_data_dir(), "labels")
    first, second = sorted(sample_labels.glob("*.tif"))[:2]  # the labels of the two test images (see `images`)
    for image_id in images:
        labels = tifffile.imread(second)[:160] if image_id.endswith("grey16") else tifffile.imread(first)
        scribbles = simulate_scribbles(labels, image_id, seed=0, budget=0.5).astype(np.uint8)
        payload = iio.imwrite("<bytes>", scribbles, extension=".png")
        body, ctype = multipart("label", f"{image_id}.png", payload)
        status, _, reply = server.request("PUT", f"/datastore/label?image={image_id}&tag=final", 60, body, ctype)
        assert status == 200, f"{image_id}: HTTP {status} {reply[:1000]!r}\n{server.log_tail()}"

    request = json.dumps({"max_epochs": 1, "overrides": {"num_samples": 2}}).encode()
    status, _, reply = server.request(
        "POST", "/train/impartial?run_sync=true", TRAIN_TIMEOUT_S, request, "application/json"
    )
    assert status == 200, f"HTTP {status} {reply[:2000]!r}\n{server.log_tail()}"
    text = reply.decode()
    result = json.loads(text)
    result = result.get("result", result) if isinstance(result, dict) else result
    assert isinstance(result, dict) and result.get("bundle") == "impartial", text[:2000]
    assert result["annotation"] == "scribbles" and result["images"] == 2
    assert len(result["split"]["train"]) == 1 and len(result["split"]["val"]) == 1
    new, old = result["candidate"]["val_scribble_f1"], result["served_before"]["val_scribble_f1"]
    assert 0.0 <= new <= 1.0 and 0.0 <= old <= 1.0
    assert result["replaced"] == (new > old)
    assert Path(result["served_before"]["path"]) == shipped  # nothing trained before: the shipped weights
    served = Path(result["served"])
    assert served == (Path(result["candidate"]["path"]).parents[3] / "model.pt" if new > old else shipped)
    assert md5(shipped) == shipped_md5  # the bundle's weights are never written

    image_id = next(iter(images))
    out = tmp_path / "served"
    config = BUNDLES_DIR / "impartial" / "configs" / "inference.json"
    folder = next(iter(images.values())).parent
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), "--dataset_dir", str(folder)]
    cmd += ["--output_dir", str(out), "--ckpt_path", str(served)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=BUNDLE_RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status, _, body = server.request("POST", f"/infer/impartial?image={image_id}&output=image", INFER_TIMEOUT_S)
    assert status == 200, body[:2000]
    np.testing.assert_array_equal(read_label_image(body), tifffile.imread(out / f"{image_id}.tif"))


def test_the_same_scribbles_train_lacss_as_one_dot_per_stroke(server, info, images):
    """LACSS reads a saved label as dots (each blob of values >= 2 one cell; 1 ignored): the scribbles saved by the
    test above serve it too. The result reports the point F1 of both models; the bundle's weights are untouched."""
    if "lacss" not in BUNDLES:
        pytest.skip("lacss ships no weights")
    shipped = BUNDLES_DIR / "lacss" / "models" / "model.pt"
    shipped_md5 = md5(shipped)
    request = json.dumps({"max_epochs": 1, "overrides": {"num_samples": 2}}).encode()
    status, _, reply = server.request(
        "POST", "/train/lacss?run_sync=true", TRAIN_TIMEOUT_S, request, "application/json"
    )
    assert status == 200, f"HTTP {status} {reply[:2000]!r}\n{server.log_tail()}"
    result = json.loads(reply)
    result = result.get("result", result)
    assert result["annotation"] == "points" and result["images"] == 2, result
    run = Path(result["run"])
    assert sorted(p.name for p in (run / "dataset" / "weak" / "points").glob("*.csv")) == sorted(
        f"{i}.csv" for i in images
    )
    new, old = result["candidate"]["val_point_f1"], result["served_before"]["val_point_f1"]
    assert 0.0 <= new <= 1.0 and 0.0 <= old <= 1.0 and result["replaced"] == (new > old)
    assert md5(shipped) == shipped_md5


def test_infer_serves_the_model_a_training_made_better(server, info, images, bundle_outputs, tmp_path):
    """Whatever the trainings above decided: once ``<images>/.cellseg/models/impartial/model.pt`` exists (here a
    perturbed copy of the shipped weights, so that its labels differ), /infer uses it, not the shipped file."""
    import torch

    if "impartial" not in BUNDLES:
        pytest.skip("impartial ships no weights")
    served = Path(server.studies) / ".cellseg" / "models" / "impartial" / "model.pt"
    state = torch.load(BUNDLES_DIR / "impartial" / "models" / "model.pt", map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for value in state.values():
        if value.is_floating_point() and value.numel() > 1:
            value.add_(0.3 * value.std() * torch.randn(value.shape, generator=generator))
    served.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, served.with_suffix(".tmp"))
    os.replace(served.with_suffix(".tmp"), served)

    folder = next(iter(images.values())).parent
    config = BUNDLES_DIR / "impartial" / "configs" / "inference.json"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), "--dataset_dir", str(folder)]
    cmd += ["--output_dir", str(tmp_path / "served"), "--ckpt_path", str(served)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=BUNDLE_RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    image_id = next(iter(images))
    want = tifffile.imread(tmp_path / "served" / f"{image_id}.tif")
    assert not np.array_equal(want, tifffile.imread(bundle_outputs["impartial"] / f"{image_id}.tif"))
    status, _, body = server.request("POST", f"/infer/impartial?image={image_id}&output=image", INFER_TIMEOUT_S)
    assert status == 200, body[:2000]
    np.testing.assert_array_equal(read_label_image(body), want)
