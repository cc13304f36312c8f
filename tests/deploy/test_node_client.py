"""clients/node/detect.js (onnxruntime-node, CPU) gives the Python engine's outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rpdetect.contract import read_spec
from rpdetect.export.graph import load_onnx

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"
# onnxruntime-node 1.30.0 vs the Python engine on ONNX Runtime 1.32 (CPU): measured 0 (the same
# kernels give the same float32 bits); the issue allows 1e-5.
RTOL_NODE = 1e-5


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        pytest.skip("node is not installed")
    if not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip("clients/node/node_modules is absent: run scripts/setup_deploy_deps.sh")
    return exe


def run_node(node: str, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([node, str(NODE_DIR / "detect.js"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def node_json(node: str, *args: object) -> dict:
    proc = run_node(node, *args)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize("fmt", ["float-nchw", "uint8-nhwc-rgb", "uint8-nhwc-bgr"])
def test_node_matches_engine(fmt, node, make_detector, png_path, image_hwc, image_float,
                             noise, noise_npy, deploy_dir, engine_result, assert_same):
    path = make_detector(f"input-{fmt}", noise="input", input_format=fmt)
    image = {"float-nchw": image_float, "uint8-nhwc-rgb": image_hwc[None],
             "uint8-nhwc-bgr": np.ascontiguousarray(image_hwc[None, :, :, ::-1])}[fmt]
    image_npy = deploy_dir / f"image-{fmt}.npy"
    np.save(image_npy, image)
    got = node_json(node, "--model", path, "--image", image_npy, "--noise", noise_npy)
    assert set(got) == {"logits", "label", "score1", "score2", "score1_max", "score2_max",
                        "flipped", "flips", "is_adversarial"}
    assert got["score1"].shape == (1, 10) and got["label"].shape == (1,)
    assert_same(got, engine_result(path, png_path, noise=noise), rtol=RTOL_NODE,
                where=f"node {fmt}")


def test_node_threshold_override_is_strict(node, make_detector, png_path, image_float, noise,
                                           noise_npy, deploy_dir, engine_result):
    """A threshold equal to the score maximum does not flag, one just below does, as in the
    engine (which feeds the threshold inputs; onnxruntime-node cannot, detect.js applies them)."""
    path = make_detector("input-float-nchw", noise="input")
    image_npy = deploy_dir / "image-float-nchw.npy"
    np.save(image_npy, image_float)
    s1 = float(engine_result(path, png_path, noise=noise)["score1_max"])
    for t1, flagged in ((s1, False), (float(np.nextafter(np.float32(s1), np.float32(0))), True)):
        got = node_json(node, "--model", path, "--image", image_npy, "--noise", noise_npy,
                        "--threshold1", repr(t1), "--threshold2", "1e30", "--threshold3", "inf")
        want = engine_result(path, png_path, noise=noise, threshold1=t1, threshold2=1e30)
        assert bool(want["is_adversarial"]) is flagged
        assert bool(got["is_adversarial"][0]) is flagged


def test_node_runs_the_graph_noise_detector(node, make_detector, png_path, image_float,
                                            deploy_dir, engine_result):
    path = make_detector("graph-float-nchw", noise="graph")
    image_npy = deploy_dir / "image-float-nchw.npy"
    np.save(image_npy, image_float)
    got = node_json(node, "--model", path, "--image", image_npy)
    want = engine_result(path, png_path)
    n = read_spec(load_onnx(path)).n
    assert got["score1"].shape == got["score2"].shape == (1, n)
    assert np.isfinite(got["score1"]).all() and (got["score1"] > 0).all()
    np.testing.assert_allclose(got["logits"][0], want["logits"], rtol=RTOL_NODE, atol=1e-7)
    assert int(got["label"][0]) == int(want["label"])


def test_node_errors_name_the_problem(node, make_detector, image_float, deploy_dir):
    path = make_detector("input-float-nchw", noise="input")
    image_npy = deploy_dir / "image-float-nchw.npy"
    np.save(image_npy, image_float)
    proc = run_node(node, "--model", path, "--image", image_npy)
    assert proc.returncode == 2 and 'noise="input"' in proc.stderr and "--noise" in proc.stderr
    wrong = deploy_dir / "image-uint8.npy"
    np.save(wrong, np.zeros((1, 3, 32, 32), dtype=np.uint8))
    proc = run_node(node, "--model", path, "--image", wrong, "--noise", image_npy)
    assert proc.returncode == 2 and "needs float32" in proc.stderr and str(wrong) in proc.stderr


def test_node_override_applies_the_flip_count(node, make_detector, png_path, image_float, noise,
                                              noise_npy, deploy_dir, engine_result):
    """threshold3 below the flip count flags, as in the engine; a file with flips needs it."""
    path = make_detector("input-float-nchw", noise="input")
    image_npy = deploy_dir / "image-float-nchw.npy"
    np.save(image_npy, image_float)
    flips = int(engine_result(path, png_path, noise=noise)["flips"])
    for t3 in (flips - 0.5, flips + 0.5):
        got = node_json(node, "--model", path, "--image", image_npy, "--noise", noise_npy,
                        "--threshold1", "1e30", "--threshold2", "1e30", "--threshold3", repr(t3))
        want = engine_result(path, png_path, noise=noise, threshold1=1e30, threshold2=1e30,
                             threshold3=t3)
        assert bool(got["is_adversarial"][0]) is bool(want["is_adversarial"]) is (t3 < flips)
        assert got["flips"] == [flips]
    proc = run_node(node, "--model", path, "--image", image_npy, "--noise", noise_npy,
                    "--threshold1", "0", "--threshold2", "0")
    assert proc.returncode != 0 and "--threshold3" in proc.stderr
