"""Calibrator life cycle with a stand-in detector that runs the fused graph on ONNX Runtime with
fixed noise, so each image's scores are reproducible across runs and sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from rpdetect.calibration import ArrayReader, CalibrationMode, Calibrator
from rpdetect.errors import InputError, ModelError
from rpdetect.export.graph import load_onnx, save_onnx, with_thresholds
from rpdetect.contract import read_spec
from rpdetect.reference import reference_detect


def test_collected_scores_match_the_reference(
    input_noise_detector: Path, fixed_noise: np.ndarray, clean_images: np.ndarray, stand_in: type,
    tiny_classifier: onnx.ModelProto, kappas: tuple[float, ...],
) -> None:
    calibrator = Calibrator(stand_in(input_noise_detector, fixed_noise))
    assert calibrator.collect(ArrayReader(clean_images[:6])) == 6
    s1, s2 = calibrator.scores
    sess = ort.InferenceSession(tiny_classifier.SerializeToString(), providers=["CPUExecutionProvider"])

    def classifier(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {"pixels": x.astype(np.float32)})[0]

    noise = np.repeat(fixed_noise, 6, axis=0)
    ref = reference_detect(classifier, clean_images[:6], noise, np.array(kappas))
    # float32 graph vs float64 reference on logits of size ~1-10
    np.testing.assert_allclose(s1, ref.score1_max, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s2, ref.score2_max, rtol=1e-4, atol=1e-6)
    assert len(set(s1.tolist())) == 6  # distinct scores: the counts below are exact


@pytest.mark.parametrize("mode", list(CalibrationMode))
def test_thresholds_land_in_the_graph_and_flag_what_was_promised(
    mode: CalibrationMode, input_noise_detector: Path, fixed_noise: np.ndarray,
    clean_images: np.ndarray, tmp_path: Path, stand_in: type,
) -> None:
    calibrator = Calibrator(stand_in(input_noise_detector, fixed_noise))
    calibrator.collect(ArrayReader(clean_images[:30], source="first"))
    calibrator.collect(clean_images[30:])  # collect is repeatable: 60 images in all
    result = calibrator.compute(fpr=0.05, mode=mode)
    s1, s2 = calibrator.scores
    assert (result.n_images, result.n_failed, result.mode) == (60, 0, mode)
    assert result.source == "first, array"
    n_flagged = 3  # floor(0.05 * 60)
    if mode is CalibrationMode.PER_SCORE:
        assert np.count_nonzero(s1 > result.threshold1) == n_flagged
        assert np.count_nonzero(s2 > result.threshold2) == n_flagged
        assert result.rates.score1 == result.rates.score2 == 0.05
        assert 0.05 <= result.rates.combined <= 0.10
    else:
        flags = result.thresholds.flags(*calibrator.statistics)
        # per-kappa: 2n + 1 statistics at one shared level on 60 images reach at most k
        assert (np.count_nonzero(flags) <= n_flagged if mode is CalibrationMode.PER_KAPPA
                else np.count_nonzero(flags) == n_flagged)
        assert result.rates.combined == np.count_nonzero(flags) / 60
    assert result.score1.max == s1.max() and result.score2.min == s2.min()

    t = result.thresholds
    path = save_onnx(
        with_thresholds(load_onnx(input_noise_detector), t.threshold1, t.threshold2,
                        result.provenance(), threshold3=t.threshold3),
        tmp_path / "calibrated.onnx",
    )
    reloaded = onnx.load(str(path))
    onnx.checker.check_model(reloaded, full_check=True)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in reloaded.graph.initializer}
    np.testing.assert_array_equal(inits["threshold1"], np.float32(t.threshold1))
    np.testing.assert_array_equal(inits["threshold2"], np.float32(t.threshold2))
    assert inits["threshold3"] == np.float32(t.threshold3)
    info = read_spec(reloaded)
    assert info.calibrated
    assert info.thresholds == t
    prov = info.thresholds_provenance
    assert (prov["fpr"], prov["mode"], prov["n_images"]) == (0.05, mode.value, 60)
    assert prov["source"] == "first, array" and prov["date"] == result.date

    # A new session on the calibrated file, with the thresholds from the file (no override):
    # the same images with the same noise give the same verdicts as the collected scores say.
    fresh = stand_in(path, fixed_noise)
    verdicts = np.array([fresh.detect(im).is_adversarial for im in clean_images])
    np.testing.assert_array_equal(verdicts, t.flags(*calibrator.statistics))
    assert verdicts.mean() == result.rates.combined


def test_bad_items_are_counted_and_the_rest_calibrates(
    input_noise_detector: Path, fixed_noise: np.ndarray, clean_images: np.ndarray,
    stand_in: type,
) -> None:
    items = [("good0", clean_images[0]), ("wrong-shape", np.zeros((3, 4, 4))),
             ("good1", clean_images[1]), ("not-an-image", "no/such/file.png"),
             ("good2", clean_images[2])]

    class Picky(stand_in):  # type: ignore[misc,valid-type]
        def detect(self, image):  # type: ignore[no-untyped-def]
            if isinstance(image, str):
                raise FileNotFoundError(image)
            return super().detect(image)

    calibrator = Calibrator(Picky(input_noise_detector, fixed_noise))
    assert calibrator.collect(items) == 3
    result = calibrator.compute(fpr=0.0, mode="paper")
    assert (result.n_images, result.n_failed) == (3, 2)
    assert [f.source for f in result.failures] == ["wrong-shape", "not-an-image"]
    assert "expected shape" in result.failures[0].error
    assert "FileNotFoundError" in result.failures[1].error
    assert result.threshold1 == calibrator.scores[0].max()


def test_no_readable_image_is_a_clear_error(input_noise_detector: Path,
                                            fixed_noise: np.ndarray, stand_in: type) -> None:
    calibrator = Calibrator(stand_in(input_noise_detector, fixed_noise))
    calibrator.collect(ArrayReader([np.zeros((1, 2, 2))] * 2, source="broken_dir"))
    with pytest.raises(InputError, match=r"broken_dir.*no readable.*all 2 images failed"):
        calibrator.compute()
    with pytest.raises(InputError, match="never called"):
        Calibrator(stand_in(input_noise_detector, fixed_noise)).compute()


def test_detector_errors_are_not_swallowed(clean_images: np.ndarray) -> None:
    class Broken:
        def detect(self, image):  # type: ignore[no-untyped-def]
            raise ModelError("model.onnx: output score1_max missing")

    with pytest.raises(ModelError, match="score1_max missing"):
        Calibrator(Broken()).collect(clean_images[:2])


def test_non_finite_scores_count_as_failures(clean_images: np.ndarray) -> None:
    class Nan:
        def detect(self, image):  # type: ignore[no-untyped-def]
            return type("R", (), {"score1_max": np.float32("nan"), "score2_max": 0.1})()

    calibrator = Calibrator(Nan())
    assert calibrator.collect(clean_images[:2]) == 0
    assert len(calibrator.failures) == 2 and "non-finite" in calibrator.failures[0].error


def test_limit_stops_early(input_noise_detector: Path, fixed_noise: np.ndarray,
                           clean_images: np.ndarray, stand_in: type) -> None:
    calibrator = Calibrator(stand_in(input_noise_detector, fixed_noise))
    assert calibrator.collect(clean_images, limit=4) == 4
    with pytest.raises(ValueError, match="limit"):
        calibrator.collect(clean_images, limit=0)
