"""OpenCV's DNN module (opencv-python-headless >= 5) as a second runtime for the same detector
file: same outputs as ONNX Runtime in noise-input mode, and the graph-noise file runs too."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rpdetect.export.graph import with_thresholds, load_onnx, save_onnx

pytestmark = pytest.mark.slow

OUTPUTS = ("logits", "label", "score1", "score2", "score1_max", "score2_max", "flipped", "flips",
           "is_adversarial")
# OpenCV 5.0.0 vs ONNX Runtime 1.32 (CPU), this CNN, 8 random images: worst relative error
# (max |a - b| / max |b|) logits 1.2e-7, score1 5.4e-6, score2 6.5e-5 (score2 sums differences
# of nearly equal softmax values: float32 cancellation), score1_max 1.9e-6, score2_max 2.7e-5.
RTOL_OPENCV = {"logits": 1e-6, "score1": 5e-5, "score2": 2e-4, "score1_max": 5e-5,
               "score2_max": 2e-4}


def _opencv_major() -> int:
    return int(cv2.__version__.split(".")[0])


@pytest.fixture(autouse=True)
def _needs_opencv5() -> None:
    if _opencv_major() < 5:
        pytest.skip(f"OpenCV {cv2.__version__}: the fused graph needs OpenCV >= 5 "
                    f"(4.x: clients/cpp/lower_for_opencv4.py)")


def opencv_run(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    net = cv2.dnn.readNetFromONNX(str(path))
    for name, value in feeds.items():
        net.setInput(value, name)
    return dict(zip(OUTPUTS, (np.asarray(o) for o in net.forward(list(OUTPUTS)))))


@pytest.mark.parametrize("fmt", ["float-nchw", "uint8-nhwc-rgb", "uint8-nhwc-bgr"])
def test_opencv_matches_onnxruntime_with_input_noise(
        fmt, make_detector, image_hwc, image_float, noise, engine_result, assert_same):
    path = make_detector(f"input-{fmt}", noise="input", input_format=fmt)
    image = {"float-nchw": image_float, "uint8-nhwc-rgb": image_hwc[None],
             "uint8-nhwc-bgr": np.ascontiguousarray(image_hwc[None, :, :, ::-1])}[fmt]
    got = opencv_run(path, {"image": image, "noise": noise})
    assert got["label"].shape == (1,) and got["is_adversarial"].shape == (1,)
    assert got["score1"].shape == got["score2"].shape == (1, noise.shape[1])
    want = engine_result(path, image_hwc, noise=noise)
    assert_same(got, want, rtol=RTOL_OPENCV, where=f"OpenCV {cv2.__version__} {fmt}")


def test_opencv_uses_the_thresholds_stored_in_the_file(
        make_detector, image_float, noise, deploy_dir, engine_result):
    """OpenCV treats initializer-backed inputs as constants: it cannot feed threshold1/2, but
    it applies the file's defaults (here 0, so every image is flagged)."""
    plain = make_detector("input-float-nchw", noise="input")
    flagged = save_onnx(with_thresholds(load_onnx(plain), 0.0, 0.0), deploy_dir / "zero.onnx")
    got = opencv_run(flagged, {"image": image_float, "noise": noise})
    want = engine_result(flagged, image_float[0], noise=noise)
    assert bool(want["is_adversarial"]) and bool(got["is_adversarial"][0])
    assert not bool(opencv_run(plain, {"image": image_float, "noise": noise})["is_adversarial"][0])


def test_opencv_runs_the_graph_noise_detector(make_detector, image_float):
    path = make_detector("graph-float-nchw", noise="graph")
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(image_float, "image")
    first = [np.asarray(o) for o in net.forward(list(OUTPUTS))]
    second = [np.asarray(o) for o in net.forward(list(OUTPUTS))]
    shapes = {name: o.shape for name, o in zip(OUTPUTS, first)}
    assert shapes == {"logits": (1, 10), "label": (1,), "score1": (1, 10), "score2": (1, 10),
                      "score1_max": (1,), "score2_max": (1,), "flipped": (1, 10), "flips": (1,),
                      "is_adversarial": (1,)}
    for name, o in zip(OUTPUTS, first):
        assert np.isfinite(o.astype(np.float64)).all(), name
    # the clean image's logits do not depend on the noise; the scores do (fresh noise per run)
    np.testing.assert_allclose(first[0], second[0], rtol=1e-6, atol=1e-7)
    assert first[0].argmax() == first[1][0]
    assert first[2][0].max() > 0 and not np.array_equal(first[2], second[2])
