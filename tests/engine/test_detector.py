"""``Detector`` against the float64 numpy reference of the paper's equations.

Tolerances (float32 graph vs float64 reference): relative 1e-5 on logits and score2, 1e-4 on
score1 (a std of logit differences, where float32 cancellation costs an extra digit), each with
an absolute floor: 1e-5 on logits, 5e-6 on score1 and score2. The floor is float32's, not the
engine's: ORT's float32 MatMul over 3072 features leaves a few 1e-6 on logits of size ~5, which
moves the softmax probabilities alike, while score2 at kappa=0.01 can be as small as ~1e-4.
Measured over 200 random images with this linear classifier: max abs error 3.7e-6 (logits),
2.2e-6 (score1), 2.1e-6 (score2); median relative error 4e-7, 2e-6, 6e-6."""

from __future__ import annotations

import concurrent.futures
import math

import cv2
import numpy as np
import onnx
import pytest

from rpdetect import DetectionResult, Detector
from rpdetect.engine import BatchReport
from rpdetect.engine.noise import NoiseSource
from rpdetect.errors import InputError, ModelError
from rpdetect.reference import reference_detect

TOL = {"logits": (1e-5, 1e-5), "score2": (1e-5, 5e-6), "score1": (1e-4, 5e-6)}


def check_against_reference(results, classifier_fn, images, noise, kappas,
                            threshold1=np.inf, threshold2=np.inf):
    """``results`` (DetectionResults) vs reference_detect on float64 images [B, C, H, W]."""
    ref = reference_detect(classifier_fn, images, noise, np.asarray(kappas),
                           threshold1=threshold1, threshold2=threshold2)
    assert len(results) == len(images)
    for i, r in enumerate(results):
        for name in ("logits", "score1", "score2"):
            rtol, atol = TOL[name]
            np.testing.assert_allclose(getattr(r, name), getattr(ref, name)[i], rtol=rtol,
                                       atol=atol, err_msg=f"{name} of image {i}")
        for name in ("score1_max", "score2_max"):
            rtol, atol = TOL[name[:6]]
            np.testing.assert_allclose(getattr(r, name), getattr(ref, name)[i], rtol=rtol,
                                       atol=atol, err_msg=f"{name} of image {i}")
        assert r.label == ref.label[i]
        assert r.is_adversarial == ref.is_adversarial[i]
    return ref


def test_array_input_matches_the_reference(det_input, linear, tools):
    det = Detector(det_input, providers="cpu")
    rgb = tools.rgb_image(0)
    noise = tools.noise_for(0)
    result = det.detect(rgb, noise=noise)
    assert isinstance(result, DetectionResult) and result.source == "array"
    x = rgb.transpose(2, 0, 1)[None] / 255.0
    ref = check_against_reference([result], linear.fn, x, noise[None], tools.KAPPAS)
    assert ref.score1_max[0] > 0.01 and ref.score2_max[0] > 1e-3  # scores well above float noise
    # float CHW input of the same image, and the [1, n, C, H, W] noise form
    again = det.detect(x[0], noise=noise[None])
    np.testing.assert_array_equal(again.score1, result.score1)


def test_file_input_matches_the_reference(det_input, linear, tools, tmp_path):
    det = Detector(det_input)
    rgb = tools.rgb_image(1)
    path = tools.write_png(tmp_path / "one.png", rgb)
    noise = tools.noise_for(1)
    result = det.detect(path, noise=noise)
    assert result.source == str(path)
    check_against_reference([result], linear.fn, rgb.transpose(2, 0, 1)[None] / 255.0,
                            noise[None], tools.KAPPAS)
    assert det.detect(str(path), noise=noise).to_dict() == result.to_dict()


@pytest.mark.slow  # the dynamo export of the tiny CNN takes ~20 s on 2 busy cores
def test_torch_cnn_detector_matches_torch_in_float64(torch_detector, tools):
    path, fn = torch_detector
    det = Detector(path)
    images = [tools.rgb_image(10 + i) for i in range(2)]
    noise = np.stack([tools.noise_for(10 + i) for i in range(2)])
    report = det.detect_many(images, noise=noise, progress=False)
    x = np.stack([im.transpose(2, 0, 1) for im in images]) / 255.0
    check_against_reference(report.results, fn, x, noise, tools.KAPPAS)


def test_batched_graph_pads_the_last_chunk(det_input_b3, linear, tools):
    det = Detector(det_input_b3)
    assert det.batch == 3
    images = [tools.rgb_image(20 + i) for i in range(4)]  # 3 + 1 padded
    noise = np.stack([tools.noise_for(20 + i) for i in range(4)])
    report = det.detect_many(images, noise=noise, progress=False)
    assert report.ok and [r.source for r in report.results] == [f"array[{i}]" for i in range(4)]
    x = np.stack([im.transpose(2, 0, 1) for im in images]) / 255.0
    check_against_reference(report.results, linear.fn, x, noise, tools.KAPPAS)
    single = det.detect(images[3], noise=noise[3])
    np.testing.assert_array_equal(single.score2, report.results[3].score2)


def test_uint8_bgr_graph_takes_the_same_images(det_bgr, linear, tools, tmp_path):
    det = Detector(det_bgr)
    rgb = [tools.rgb_image(30), tools.rgb_image(31)]
    path = tools.write_png(tmp_path / "b.png", rgb[1])
    bgr_frame = rgb[0][:, :, ::-1].copy()
    noise = np.stack([tools.noise_for(30), tools.noise_for(31)])
    report = Detector(det_bgr, channel_order="bgr").detect_many([bgr_frame, path], noise=noise,
                                                               progress=False)
    x = np.stack([im.transpose(2, 0, 1) for im in rgb]) / 255.0
    check_against_reference(report.results, linear.fn, x, noise, tools.KAPPAS)
    # an RGB float image reaches the uint8 graph as the same bytes
    same = det.detect(x[0], noise=noise[0])
    np.testing.assert_array_equal(same.score1, report.results[0].score1)


def test_gray_detector_takes_color_and_gray(det_gray, gray_classifier, tools):
    det = Detector(det_gray)
    assert det.input_shape == (1, 32, 32)
    gray = tools.rgb_image(40)[:, :, 0]
    noise = tools.noise_for(40, channels=1)
    result = det.detect(gray, noise=noise)
    check_against_reference([result], gray_classifier.fn, gray[None, None] / 255.0, noise[None],
                            tools.KAPPAS)
    color = det.detect(np.repeat(gray[:, :, None], 3, axis=2), noise=noise)  # luma of gray = gray
    np.testing.assert_array_equal(color.score1, result.score1)


def test_graph_noise_detector(det_graph, linear, tools):
    det = Detector(det_graph)
    rgb = tools.rgb_image(50)
    first, second = det.detect(rgb), det.detect(rgb)
    x = rgb.transpose(2, 0, 1)[None] / 255.0
    np.testing.assert_allclose(first.logits, linear.fn(x)[0], rtol=1e-5, atol=1e-6)
    assert first.label == int(linear.fn(x)[0].argmax())
    assert np.all(first.score1 > 0) and not np.array_equal(first.score1, second.score1)
    with pytest.raises(InputError, match="draws its noise inside the graph"):
        det.detect(rgb, noise=tools.noise_for(50))


def test_unseeded_graph_noise_differs_between_detectors_in_one_process(det_graph, tools):
    # ONNX Runtime seeds unseeded random ops from one process-wide default: without the
    # engine's per-session reseed, two Detectors would draw the same first noise.
    rgb = tools.rgb_image(51)
    a, b = (Detector(det_graph).detect(rgb).score1 for _ in range(2))
    assert not np.array_equal(a, b)


def test_default_noise_is_drawn_from_the_seeded_generator(det_input, linear, tools):
    rgb = tools.rgb_image(60)
    a = Detector(det_input, seed=123, noise_generator="numpy", noise_threads=1).detect(rgb)
    b = Detector(det_input, seed=123, noise_generator="numpy", noise_threads=1).detect(rgb)
    np.testing.assert_array_equal(a.score1, b.score1)
    # numpy with one thread is exactly numpy.random.default_rng(seed)'s sequence
    noise = np.random.default_rng(123).standard_normal((len(tools.KAPPAS), 3, 32, 32),
                                                       dtype=np.float32)
    check_against_reference([a], linear.fn, rgb.transpose(2, 0, 1)[None] / 255.0, noise[None],
                            tools.KAPPAS)


@pytest.mark.parametrize("threads", [1, 2])
def test_opencv_noise_is_the_seeded_sources_draw(det_input, linear, tools, threads):
    rgb = tools.rgb_image(61)
    with Detector(det_input, seed=9, noise_threads=threads) as det:  # opencv is the default
        a = det.detect(rgb)
    with NoiseSource((len(tools.KAPPAS), 3, 32, 32), seed=9, threads=threads) as source:
        noise = source.draw()
    check_against_reference([a], linear.fn, rgb.transpose(2, 0, 1)[None] / 255.0, noise[None],
                            tools.KAPPAS)
    with Detector(det_input, seed=10, noise_threads=threads) as det:
        assert not np.array_equal(det.detect(rgb).score1, a.score1)


def test_threshold_override_is_strictly_greater(det_input, tools):
    det = Detector(det_input)
    rgb, noise = tools.rgb_image(70), tools.noise_for(70)
    r = det.detect(rgb, noise=noise)
    assert not r.is_adversarial  # uncalibrated file: +inf thresholds never flag
    s1, s2 = np.float32(r.score1_max), np.float32(r.score2_max)
    below = lambda v: float(np.nextafter(v, np.float32(-np.inf)))  # noqa: E731
    assert not det.detect(rgb, noise=noise, threshold1=float(s1)).is_adversarial
    assert det.detect(rgb, noise=noise, threshold1=below(s1)).is_adversarial
    assert not det.detect(rgb, noise=noise, threshold2=float(s2)).is_adversarial
    assert det.detect(rgb, noise=noise, threshold2=below(s2)).is_adversarial
    with pytest.raises(InputError, match="threshold1: nan is not a usable threshold"):
        det.detect(rgb, noise=noise, threshold1=math.nan)


def test_thresholds_stored_in_the_file_apply_and_can_be_overridden(det_calibrated, tools):
    det = Detector(det_calibrated)
    # read back from the graph's initializers: float32, as the graph compares
    assert (det.info.threshold1, det.info.threshold2) == (float(np.float32(0.05)),
                                                          float(np.float32(0.01)))
    rgb, noise = tools.rgb_image(71), tools.noise_for(71)
    r = det.detect(rgb, noise=noise)
    assert r.is_adversarial == (r.score1_max > np.float32(0.05) or r.score2_max > np.float32(0.01))
    assert not det.detect(rgb, noise=noise, threshold1=1e9, threshold2=1e9).is_adversarial
    assert det.detect(rgb, noise=noise, threshold1=0.0).is_adversarial


def test_model_that_is_not_onnx(tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("this is not a protobuf\n" * 10)
    with pytest.raises(ModelError, match="not a readable ONNX model") as err:
        Detector(bogus)
    assert str(bogus) in str(err.value)
    with pytest.raises(ModelError, match="no such model file"):
        Detector(tmp_path / "missing.onnx")


def test_plain_classifier_is_not_a_detector(plain_classifier_file):
    with pytest.raises(ModelError) as err:
        Detector(plain_classifier_file)
    text = str(err.value)
    assert str(plain_classifier_file) in text and "rpdetect export" in text
    assert "missing inputs ['image', 'threshold1', 'threshold2']" in text
    assert "'score1_max'" in text


def test_bad_noise(det_input, tools):
    det = Detector(det_input)
    rgb = tools.rgb_image(80)
    with pytest.raises(InputError,
                       match=r"noise has shape \(4, 3, 16, 16\), expected \(4, 3, 32, 32\)"):
        det.detect(rgb, noise=np.zeros((4, 3, 16, 16), np.float32))
    bad = tools.noise_for(80)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="noise contains NaN"):
        det.detect(rgb, noise=bad)


@pytest.mark.parametrize(
    "item, message",
    [
        (np.zeros((32, 32, 3), np.int64), "unsupported dtype int64"),
        (np.zeros((2, 3, 32, 32), np.float32), "rank 4"),
        (np.zeros((32, 32, 5), np.uint8), "5 channels"),
        (np.full((3, 32, 32), np.inf, np.float32), "NaN/Inf"),
        (np.full((3, 32, 32), 1.25, np.float32), r"observed range \[1.25, 1.25\]"),
    ],
)
def test_bad_arrays_through_detect(det_input, item, message):
    with pytest.raises(InputError, match=message):
        Detector(det_input).detect(item)


def test_wrong_size_with_resize_none(det_input, tools):
    with pytest.raises(InputError, match="size 40x48"):
        Detector(det_input, resize="none").detect(tools.rgb_image(0, (40, 48)))
    assert Detector(det_input).detect(tools.rgb_image(0, (40, 48))).label >= 0


def test_detect_many_keeps_good_results_around_bad_ones(det_input_b3, tools, tmp_path):
    det = Detector(det_input_b3, seed=0)
    good = [tools.write_png(tmp_path / f"{i}.png", tools.rgb_image(90 + i)) for i in range(4)]
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    cut = tmp_path / "cut.png"
    cut.write_bytes(good[0].read_bytes()[:-12])
    items = [good[0], tmp_path / "empty.png", good[1], np.zeros((32, 32, 3), np.int16), good[2],
             tmp_path / "text.png", cut, tmp_path / "missing.png", good[3],
             np.full((3, 32, 32), 0.5, np.float32)]
    report = det.detect_many(items, progress=False)
    assert isinstance(report, BatchReport) and not report.ok
    assert [r.source for r in report.results] == [str(p) for p in good] + ["array[9]"]
    assert [(f.index, f.source) for f in report.failures] == [
        (1, str(tmp_path / "empty.png")), (3, "array[3]"), (5, str(tmp_path / "text.png")),
        (6, str(cut)), (7, str(tmp_path / "missing.png"))]
    assert "array[3]: unsupported dtype int16" in report.failures[1].error
    assert "truncated PNG" in report.failures[3].error
    doc = report.to_dict(logits=False)
    assert len(doc["results"]) == 5 and "logits" not in doc["results"][0]
    # the same images one by one give the same labels (generator input, padded chunks)
    labels = [det.detect(p).label for p in good]
    assert [r.label for r in det.detect_many(iter(good), progress=False).results] == labels


def test_detect_many_takes_a_4d_batch_and_rejects_a_single_image(det_input, tools):
    det = Detector(det_input, seed=1)
    batch = np.stack([tools.rgb_image(i) for i in range(3)])
    assert len(det.detect_many(batch, progress=False).results) == 3
    with pytest.raises(InputError, match="use detect"):
        det.detect_many(tools.rgb_image(0))
    with pytest.raises(InputError, match="noise holds 1 draws for 3 images"):
        det.detect_many(batch, noise=tools.noise_for(0)[None], progress=False)


def test_progress_bar_stays_off_without_a_terminal(det_input, tools, capsys):
    Detector(det_input, seed=2).detect_many([tools.rgb_image(0)] * 2, progress=True)
    assert capsys.readouterr().err == ""


def test_one_detector_shared_by_four_threads_equals_serial(det_input_b3, tools):
    det = Detector(det_input_b3)
    jobs = [(tools.rgb_image(100 + i), tools.noise_for(100 + i)) for i in range(24)]
    serial = [det.detect(img, noise=nz).to_dict() for img, nz in jobs]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda job: det.detect(job[0], noise=job[1]).to_dict(), jobs))
    assert threaded == serial
    # default noise from the shared Generator: every thread gets its own draws, none crash
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        drawn = list(pool.map(lambda job: det.detect(job[0]).score1_max, jobs))
    assert len(set(drawn)) == len(jobs)


def test_result_is_frozen_and_json_ready(det_input, tools):
    r = Detector(det_input, seed=3).detect(tools.rgb_image(0))
    with pytest.raises(AttributeError):
        r.label = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        r.score1[0] = 0.0
    d = r.to_dict()
    assert set(d) == {"source", "label", "is_adversarial", "score1_max", "score2_max", "score1",
                      "score2", "logits", "flips", "flipped"}
    assert d["flips"] == sum(d["flipped"]) and len(d["flipped"]) == len(tools.KAPPAS)
    assert isinstance(d["label"], int) and isinstance(d["is_adversarial"], bool)
    assert len(d["score1"]) == len(tools.KAPPAS) and len(d["logits"]) == tools.CLASSES


def test_detector_describes_itself(det_input_b3):
    det = Detector(det_input_b3)
    names = [t.name for t in det.inputs]
    assert names == ["image", "noise", "threshold1", "threshold2", "threshold3"]
    assert det.inputs[0].shape == (3, 3, 32, 32) and det.inputs[4].shape == ()
    assert det.inputs[2].shape == ("threshold1_values",)  # [1] or [n] at run time
    assert [t.name for t in det.outputs][-1] == "is_adversarial"
    assert "batch=3" in repr(det) and "CPUExecutionProvider" in repr(det)


def test_gray_and_rgba_images_give_the_rgb_result(det_input, tools, tmp_path):
    det = Detector(det_input)
    rgb, noise = tools.rgb_image(30), tools.noise_for(30)
    gray = rgb[:, :, 1]
    rgba = np.dstack([rgb, np.full(gray.shape, 99, np.uint8)])
    want = det.detect(rgb, noise=noise)
    for item in (rgba, tools.write_png(tmp_path / "rgba.png", rgba)):
        np.testing.assert_array_equal(det.detect(item, noise=noise).score1, want.score1)
    want_gray = det.detect(np.dstack([gray] * 3), noise=noise)
    for item in (gray, tools.write_png(tmp_path / "gray.png", gray)):
        np.testing.assert_array_equal(det.detect(item, noise=noise).score1, want_gray.score1)


def test_undecodable_depths_become_failures_of_detect_many(det_input, tools, tmp_path):
    good = tools.write_png(tmp_path / "good.png", tools.rgb_image(31))
    signed = tmp_path / "signed.tiff"
    assert cv2.imwrite(str(signed), np.ones((32, 32, 3), np.int16))
    report = Detector(det_input, seed=0).detect_many([signed, good], progress=False)
    assert [r.source for r in report.results] == [str(good)]
    (failure,) = report.failures
    assert failure.index == 0 and f"{signed}: decoded as int16" in failure.error


def _with_metadata(path, out, **values):
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key[len("rpdetect."):] in values:
            prop.value = values[prop.key[len("rpdetect."):]]
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize(
    "values, message",
    [
        ({"input_shape": "[3, 16, 16]"}, r"input 'image' has shape \(1, 3, 32, 32\), but the "
                                         r"rpdetect metadata says \(1, 3, 16, 16\)"),
        ({"input_shape": "[3, 32]"}, r"input_shape \[3, 32\] \(expected \[C, H, W\]\)"),
        ({"batch": "two"}, "metadata is malformed"),
    ],
)
def test_detector_whose_metadata_does_not_fit_its_graph(det_input, tmp_path, values, message):
    bad = _with_metadata(det_input, tmp_path / "bad.onnx", **values)
    with pytest.raises(ModelError, match=message) as err:
        Detector(bad)
    assert str(bad) in str(err.value)


def test_seed_of_a_graph_noise_detector_is_not_silently_ignored(det_graph, det_input, caplog):
    with caplog.at_level("WARNING", logger="rpdetect.engine"):
        Detector(det_graph, seed=3, engine_noise=False)
    assert "seed=3 is ignored: this detector draws its noise inside the graph" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="rpdetect.engine"):
        Detector(det_graph)
        Detector(det_graph, seed=3)  # the engine draws the noise on the CPU: the seed holds
        Detector(det_input, seed=3)
    assert "ignored" not in caplog.text


def test_threshold3_and_per_kappa_overrides_at_run_time(det_input, tools):
    """threshold3 (the flip count) and per-kappa threshold1 can be overridden per call, with
    the graph's rule (rpdetect.rule) and strictly greater."""
    from rpdetect.rule import Thresholds

    det = Detector(det_input)
    rgb, noise = tools.rgb_image(5), tools.noise_for(5)
    # large noise makes copies flip: scale the N(0,1) draws so that kappa * noise is large
    r = det.detect(rgb, noise=noise * 200)
    assert r.flips == int(r.flipped.sum()) and r.flips > 0, "the test needs flipped copies"
    assert det.detect(rgb, noise=noise * 200, threshold3=r.flips - 0.5).is_adversarial
    assert not det.detect(rgb, noise=noise * 200, threshold3=float(r.flips)).is_adversarial
    n = len(det.kappas)
    t1 = [float(r.score1[i]) if i else float(np.nextafter(r.score1[0], np.float32(0)))
          for i in range(n)]  # only the first copy is over its threshold
    assert det.detect(rgb, noise=noise * 200, threshold1=t1).is_adversarial
    assert not det.detect(rgb, noise=noise * 200, threshold1=r.score1.tolist()).is_adversarial
    assert det.thresholds(threshold1=t1, threshold3=2) == Thresholds.of(t1, math.inf, 2, n=n)
    with pytest.raises(InputError, match="one per kappa"):
        det.detect(rgb, noise=noise, threshold1=[0.1, 0.2])
    with pytest.raises(InputError, match="threshold3: -inf is not a usable threshold"):
        det.detect(rgb, noise=noise, threshold3=-math.inf)


def _edited(path, tmp_path, name, edit):
    model = onnx.load(str(path))
    edit(model)
    out = tmp_path / name
    onnx.save(model, str(out))
    return out


def test_reported_thresholds_are_the_graphs_and_bad_ones_are_refused(det_calibrated, tmp_path,
                                                                     tools):
    """What info/detect report comes from the initializers the graph compares against, not the
    metadata; NaN/-inf initializers and a kappa count that disagrees with the graph are errors."""
    from onnx import numpy_helper

    def set_init(name, value):
        def edit(model):
            for i in model.graph.initializer:
                if i.name == name:
                    i.CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return edit

    n = len(tools.KAPPAS)
    # metadata says 0.05, the graph holds 0.5: the graph wins
    moved = _edited(det_calibrated, tmp_path, "moved.onnx", set_init("threshold1", [0.5] * n))
    det = Detector(moved)
    assert det.info.threshold1 == 0.5 and det.thresholds().threshold1 == (0.5,) * n
    for bad in (math.nan, -math.inf):
        path = _edited(det_calibrated, tmp_path, f"bad{bad}.onnx", set_init("threshold2",
                                                                              [bad] * n))
        with pytest.raises(ModelError, match="not a usable threshold"):
            Detector(path)
    short = _edited(det_calibrated, tmp_path, "short.onnx", set_init("threshold1", [0.1] * 3))
    with pytest.raises(ModelError, match="kappas and the graph disagree"):
        Detector(short)
    det = Detector(det_calibrated)
    for bad in (math.nan, -math.inf):
        with pytest.raises(InputError, match="not a usable threshold"):
            det.detect(tools.rgb_image(0), noise=tools.noise_for(0), threshold1=bad)
