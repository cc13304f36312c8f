"""clients/cpp (CMake, OpenCV 4.x DNN from libopencv-dev): builds, decodes a PNG, and gives the
Python engine's outputs on the detector rewritten by lower_for_opencv4.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from rpdetect.export.graph import load_onnx, save_onnx, with_thresholds

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CPP_DIR = ROOT / "clients" / "cpp"
OPENCV_HEADERS = ("/usr/include/opencv4/opencv2/dnn.hpp",
                  "/usr/local/include/opencv4/opencv2/dnn.hpp")
# OpenCV 4.6.0 (Debian 12) vs the Python engine on ONNX Runtime 1.32, this CNN, 3 input formats
# x 5 random PNGs (32x32 and 45x61): worst relative error (max |a - b| / max |b|) logits 1.1e-7,
# score1 3.8e-6, score2 5.1e-5 (float32 cancellation in the softmax differences), score1_max
# 3.8e-6, score2_max 5.1e-5.
RTOL_CPP = {"logits": 1e-6, "score1": 5e-5, "score2": 2e-4, "score1_max": 5e-5,
            "score2_max": 2e-4}


def _source_hash() -> str:
    h = hashlib.sha256()
    for path in sorted([CPP_DIR / "CMakeLists.txt", *(CPP_DIR / "src").iterdir()]):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def client() -> Path:
    """The built rpdetect-cpp, cached in build/deploy-cpp-<hash of the sources> (git-ignored)."""
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if "OpenCV_DIR" not in os.environ and not any(Path(p).is_file() for p in OPENCV_HEADERS):
        pytest.skip("OpenCV C++ headers are absent (libopencv-dev): run "
                    "scripts/setup_deploy_deps.sh")
    cached = ROOT / "build" / f"deploy-cpp-{_source_hash()}"
    exe = cached / "rpdetect-cpp"
    if exe.is_file():
        return exe
    cached.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="deploy-cpp-", dir=cached.parent))
    for cmd in (["cmake", "-S", str(CPP_DIR), "-B", str(work), "-DCMAKE_BUILD_TYPE=Debug",
                 "-DRPDETECT_ONNXRUNTIME=OFF"],
                ["cmake", "--build", str(work), "-j2"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    try:
        work.rename(cached)
    except OSError:  # another run cached the same sources first
        shutil.rmtree(work, ignore_errors=True)
    return exe


@pytest.fixture(scope="module")
def lowered(make_detector, lowering, deploy_dir):
    """lowered(fmt, thresholds=None) -> (exported noise-input detector, its OpenCV 4.x rewrite)."""
    def make(fmt: str, *, thresholds: tuple[object, object] | None = None) -> tuple[Path, Path]:
        path = make_detector(f"input-{fmt}", noise="input", input_format=fmt)
        model = load_onnx(path)
        suffix = ""
        if thresholds is not None:
            model = with_thresholds(model, *thresholds)
            suffix = "-t" + hashlib.sha256(repr(thresholds).encode()).hexdigest()[:8]
            path = save_onnx(model, deploy_dir / f"input-{fmt}{suffix}.onnx")
        return path, save_onnx(lowering.lower_for_opencv4(model),
                               deploy_dir / f"opencv4-{fmt}{suffix}.onnx")
    return make


def run_client(exe: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def client_json(exe: Path, *args: object) -> dict:
    proc = run_client(exe, *args)
    assert proc.returncode == 0, proc.stderr
    return {k: np.asarray(v) if not isinstance(v, str) else v
            for k, v in json.loads(proc.stdout).items()}


@pytest.mark.parametrize("fmt", ["float-nchw", "uint8-nhwc-rgb", "uint8-nhwc-bgr"])
def test_cpp_matches_engine_on_a_png(fmt, client, lowered, png_path, noise, noise_npy,
                                     engine_result, assert_same):
    original, path = lowered(fmt)
    got = client_json(client, "--model", path, "--image", png_path, "--noise", noise_npy)
    assert got["runtime"].startswith("opencv-dnn 4.")
    assert got["score1"].shape == (10,) and got["logits"].shape == (10,)
    want = engine_result(original, png_path, noise=noise)
    assert_same(got, want, rtol=RTOL_CPP, where=f"rpdetect-cpp {fmt}")


def test_cpp_resizes_like_the_engine(client, lowered, deploy_dir, noise, noise_npy,
                                     engine_result, assert_same):
    """A 45x61 picture: shorter side to 32, centre crop (the engine's default policy)."""
    import cv2

    big = np.random.default_rng(3).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    picture = deploy_dir / "big.png"
    assert cv2.imwrite(str(picture), big)
    original, path = lowered("float-nchw")
    got = client_json(client, "--model", path, "--image", picture, "--noise", noise_npy)
    assert_same(got, engine_result(original, picture, noise=noise), rtol=RTOL_CPP,
                where="rpdetect-cpp resize")


def test_cpp_verdict_uses_file_thresholds_and_overrides(client, lowered, png_path, noise,
                                                        noise_npy, engine_result):
    original, path = lowered("float-nchw", thresholds=(0.0, 0.0))
    got = client_json(client, "--model", path, "--image", png_path, "--noise", noise_npy)
    assert got["is_adversarial"] and engine_result(original, png_path, noise=noise)[
        "is_adversarial"]
    s1 = float(got["score1_max"])
    for t1, flagged in ((s1 * 2, False), (s1 / 2, True)):
        over = client_json(client, "--model", path, "--image", png_path, "--noise", noise_npy,
                           "--threshold1", t1, "--threshold2", 1e30)
        want = engine_result(original, png_path, noise=noise, threshold1=t1, threshold2=1e30)
        assert bool(over["is_adversarial"]) is flagged is bool(want["is_adversarial"])


def test_cpp_draws_noise_when_none_is_given(client, lowered, png_path, engine_result):
    original, path = lowered("float-nchw")
    a = client_json(client, "--model", path, "--image", png_path, "--seed", 5)
    b = client_json(client, "--model", path, "--image", png_path, "--seed", 5)
    c = client_json(client, "--model", path, "--image", png_path, "--seed", 6)
    np.testing.assert_array_equal(a["score1"], b["score1"])
    assert not np.array_equal(a["score1"], c["score1"])
    np.testing.assert_allclose(a["logits"], engine_result(original, png_path, noise=None)[
        "logits"], rtol=1e-5, atol=1e-7)


def test_cpp_errors_name_the_problem(client, make_detector, lowered, png_path, deploy_dir):
    exported = make_detector("input-float-nchw", noise="input")
    proc = run_client(client, "--model", exported, "--image", png_path)
    assert proc.returncode == 1 and "lower_for_opencv4.py" in proc.stderr
    _, path = lowered("float-nchw")
    proc = run_client(client, "--model", path, "--image", deploy_dir / "missing.png")
    assert proc.returncode == 1 and "missing.png" in proc.stderr
    wrong = deploy_dir / "wrong-noise.npy"
    np.save(wrong, np.zeros((1, 3, 3, 32, 32), dtype=np.float32))
    proc = run_client(client, "--model", path, "--image", png_path, "--noise", wrong)
    assert proc.returncode == 1 and "[1, 10, 3, 32, 32]" in proc.stderr
    proc = run_client(client, "--model", path, "--image", png_path, "--seed", "-3")
    assert proc.returncode == 2 and "--seed" in proc.stderr
    proc = run_client(client, "--model", path, "--image", png_path, "--threshold1", "x")
    assert proc.returncode == 2 and "--threshold1: not a number" in proc.stderr


def test_cpp_runs_a_detector_with_folded_normalisation(client, classifier_path, lowering,
                                                       deploy_dir, png_path, noise, noise_npy,
                                                       engine_result, assert_same):
    """mean/std folded into the graph: OpenCV 4.6 needs it as a 1x1 Conv (see the lowering)."""
    from rpdetect.export.graph import DetectorConfig, build_detector

    model = build_detector(classifier_path, DetectorConfig(
        noise="input", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)))
    original = save_onnx(model, deploy_dir / "normalised.onnx")
    path = save_onnx(lowering.lower_for_opencv4(model), deploy_dir / "normalised-opencv4.onnx")
    got = client_json(client, "--model", path, "--image", png_path, "--noise", noise_npy)
    assert_same(got, engine_result(original, png_path, noise=noise), rtol=RTOL_CPP,
                where="rpdetect-cpp normalised")


def test_cpp_runs_relu6_and_mean_pooling(client, relu6_classifier, lowering, deploy_dir,
                                         png_path, noise, noise_npy, engine_result,
                                         assert_same):
    """EfficientNet-Lite's op forms (ReLU6 as Clip with input bounds, ReduceMean at opset 20)."""
    from rpdetect.export.graph import DetectorConfig, build_detector

    model = build_detector(relu6_classifier, DetectorConfig(noise="input"))
    original = save_onnx(model, deploy_dir / "relu6.onnx")
    path = save_onnx(lowering.lower_for_opencv4(model), deploy_dir / "relu6-opencv4.onnx")
    got = client_json(client, "--model", path, "--image", png_path, "--noise", noise_npy)
    assert_same(got, engine_result(original, png_path, noise=noise), rtol=RTOL_CPP,
                where="rpdetect-cpp relu6")


def test_cpp_applies_per_kappa_thresholds_and_the_flip_count(client, lowered, png_path, noise,
                                                            noise_npy, engine_result):
    """A file calibrated with per-kappa thresholds: the lowered graph's own verdict, and an
    override of threshold3 alone, equal the engine's."""
    plain, _ = lowered("float-nchw")
    base = engine_result(plain, png_path, noise=noise)
    n = len(base["score1"])
    t1 = [float(v) * (2.0 if i % 2 else 0.5) for i, v in enumerate(base["score1"])]  # some over
    original, path = lowered("float-nchw", thresholds=(t1, 1e30))
    got = client_json(client, "--model", path, "--image", png_path, "--noise", noise_npy)
    want = engine_result(original, png_path, noise=noise)
    assert bool(got["is_adversarial"]) is bool(want["is_adversarial"]) is True
    assert got["threshold1"] == pytest.approx(t1, rel=1e-6) and len(got["threshold1"]) == n
    assert got["flips"] == int(want["flips"])
    flips = int(want["flips"])
    for t3 in (flips - 0.5, flips + 0.5):
        over = client_json(client, "--model", path, "--image", png_path, "--noise", noise_npy,
                           "--threshold1", 1e30, "--threshold3", t3)
        want = engine_result(original, png_path, noise=noise, threshold1=1e30, threshold3=t3)
        assert bool(over["is_adversarial"]) is bool(want["is_adversarial"]) is (t3 < flips)
