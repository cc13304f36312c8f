"""The fused detector graph against the numpy reference of the paper's equations."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rpdetect.errors import ModelError
from rpdetect.contract import read_spec
from rpdetect.export import DetectorConfig, build_detector, extract_classifier, save_onnx
from rpdetect.export.graph import PUBLIC_NAMES, with_thresholds
from rpdetect.reference import default_kappas, reference_detect

from rpdetect.testing import classifier_fn, flatten_classifier, plain_classifier, run, session

# Error relative to each output's scale (max |reference|): float32 graph vs float64 reference.
# score1 is the std of a difference of nearby float32 logits, hence its looser bound.
TOL = {"logits": 1e-5, "score2": 1e-5, "score2_max": 1e-5, "score1": 1e-4, "score1_max": 1e-4}


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12))


def check_against_reference(detector: onnx.ModelProto, clf, batch: int, shape, kappas,
                            seed: int, *, mean=None, std=None, clip=False, tol=None) -> None:
    rng = np.random.default_rng(seed)
    c, h, w = shape
    images = rng.random((batch, c, h, w), dtype=np.float32)
    noise = rng.standard_normal((batch, len(kappas), c, h, w)).astype(np.float32)
    out = run(detector, {"image": images, "noise": noise})
    if mean is not None:
        m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        inner = clf
        clf = lambda x: inner((np.asarray(x, np.float32) - m) / s)  # noqa: E731
    ref = reference_detect(clf, images, noise, np.asarray(kappas), clip=clip)
    for name, bound in {**TOL, **(tol or {})}.items():
        err = rel_err(out[name], getattr(ref, name))
        assert err <= bound, f"{name}: relative error {err:.2e} > {bound:.0e}"
    np.testing.assert_array_equal(out["label"], ref.label)
    np.testing.assert_array_equal(out["flipped"], ref.flipped)
    np.testing.assert_array_equal(out["flips"], ref.flips)
    assert out["score1"].shape == (batch, len(kappas)) and out["score2"].shape == (batch, len(kappas))
    assert not out["is_adversarial"].any()  # uncalibrated: thresholds +inf


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("which", ["32", "224"])
def test_torch_classifier_matches_reference(which, batch, torch_classifier_32, torch_classifier_224):
    path, shape = {"32": (torch_classifier_32, (3, 32, 32)),
                   "224": (torch_classifier_224, (3, 224, 224))}[which]
    kappas = tuple(default_kappas())
    det = build_detector(path, DetectorConfig(noise="input", batch=batch, kappas=kappas))
    onnx.checker.check_model(det, full_check=True)
    check_against_reference(det, classifier_fn(path), batch, shape, kappas, seed=batch)


@pytest.mark.parametrize("batch", [1, 3])
def test_plain_onnx_classifier_with_folded_normalisation(batch):
    clf = plain_classifier(classes=10, size=32)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    kappas = tuple(np.geomspace(1e-4, 1e-1, 30))  # the paper's CIFAR-10 count
    det = build_detector(clf, DetectorConfig(noise="input", batch=batch, kappas=kappas,
                                             mean=mean, std=std))
    # This random classifier's score2 never exceeds ~0.01, so a float32 softmax's absolute
    # rounding (~1e-7 summed over classes) is ~2e-5 of that scale: the bound here is 1e-4.
    check_against_reference(det, classifier_fn(clf), batch, (3, 32, 32), kappas, seed=10 + batch,
                            mean=mean, std=std, tol={"score2": 1e-4, "score2_max": 1e-4})


def test_plain_onnx_classifier_224_1000_classes():
    clf = plain_classifier(classes=1000, size=224, seed=3)
    kappas = tuple(default_kappas())
    det = build_detector(clf, DetectorConfig(noise="input", batch=1))
    check_against_reference(det, classifier_fn(clf), 1, (3, 224, 224), kappas, seed=5)


def test_clip_option_matches_reference():
    clf = plain_classifier()
    kappas = (0.05, 0.5, 1.0)  # large enough that clipping changes pixels
    det = build_detector(clf, DetectorConfig(noise="input", kappas=kappas, clip=True))
    check_against_reference(det, classifier_fn(clf), 1, (3, 32, 32), kappas, seed=7, clip=True)


def test_graph_structure_and_metadata(torch_classifier_32):
    det = build_detector(torch_classifier_32, DetectorConfig(batch=2, seed=3.0))
    domains = [o.domain for o in det.opset_import]
    assert len(domains) == len(set(domains)), f"duplicated opset imports: {domains}"
    assert [i.name for i in det.graph.input] == ["image", "threshold1", "threshold2",
                                                 "threshold3"]
    assert [o.name for o in det.graph.output] == [
        "logits", "label", "score1", "score2", "score1_max", "score2_max", "flipped", "flips",
        "is_adversarial"]
    assert any(n.op_type == "RandomNormalLike" for n in det.graph.node)
    info = read_spec(det)
    assert info.kappas == pytest.approx(tuple(default_kappas()))
    assert (info.noise, info.batch, info.seed, info.input_shape) == ("graph", 2, 3.0, (3, 32, 32))
    assert info.threshold1 == math.inf and not info.calibrated
    assert "never flags" in info.thresholds_provenance["note"]
    assert len(info.classifier_sha256) == 64
    import hashlib
    assert info.classifier_sha256 == hashlib.sha256(torch_classifier_32.read_bytes()).hexdigest()


def test_public_names_used_by_classifier_are_renamed():
    # A classifier whose own tensors are called "image" and "logits".
    clf = plain_classifier(input_name="image", output_name="logits")
    det = build_detector(clf, DetectorConfig(noise="input"))
    onnx.checker.check_model(det, full_check=True)
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    out = run(det, {"image": x, "noise": np.zeros((1, 10, 3, 32, 32), np.float32)})
    np.testing.assert_allclose(out["logits"], classifier_fn(clf)(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["score1"], 0, atol=1e-7)  # zero noise -> zero scores
    assert set(PUBLIC_NAMES) >= {"image", "logits"}


def test_extract_classifier_runs_standalone(torch_classifier_32):
    det = build_detector(torch_classifier_32, DetectorConfig(noise="input"))
    clf = extract_classifier(det)
    onnx.checker.check_model(clf, full_check=True)
    x = np.random.default_rng(1).random((11, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(classifier_fn(clf)(x), classifier_fn(torch_classifier_32)(x),
                               rtol=1e-5, atol=1e-5)


# --- graph noise ---------------------------------------------------------------------------

def noise_detector(seed=None, kappas=(0.01, 0.05, 0.1, 0.5)):
    return build_detector(flatten_classifier(), DetectorConfig(noise="graph", seed=seed, kappas=kappas))


def test_graph_noise_std_matches_each_kappa():
    # With 'logits' = pixels, score1_i = std over the 3072 values of kappa_i * eps_i.
    kappas = (0.01, 0.05, 0.1, 0.5)
    s = session(noise_detector(kappas=kappas))
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    s1 = np.stack([s.run(["score1"], {"image": x})[0][0] for _ in range(5)])
    # sampling error of a std from 3072 N(0,1) values is about 1/sqrt(2*3072) = 1.3%
    np.testing.assert_allclose(s1 / np.asarray(kappas), 1.0, rtol=0.06)


def test_graph_noise_has_zero_mean_and_independent_copies():
    # 'classifier' = [mean of pixels, 0]: d_i = (-kappa_i * mean(eps_i), 0), score1_i = |.|/2
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
         helper.make_node("Unsqueeze", ["m", "ax"], ["mu"]),
         helper.make_node("Sub", ["mu", "mu"], ["zero"]),
         helper.make_node("Concat", ["mu", "zero"], ["y"], axis=1)],
        "mean", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        initializer=[onnx.numpy_helper.from_array(np.array([1], np.int64), "ax")])
    clf = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    kappas = (1.0,) * 8
    s = session(build_detector(clf, DetectorConfig(kappas=kappas)))
    x = np.full((1, 3, 32, 32), 0.5, np.float32)
    means = np.concatenate([2 * s.run(["score1"], {"image": x})[0][0] for _ in range(25)])
    # |mean of 3072 N(0,1)| ~ half-normal with sigma 1/sqrt(3072): its RMS is that sigma
    rms = float(np.sqrt(np.mean(means ** 2)) * math.sqrt(3072))
    assert 0.7 < rms < 1.3, rms
    assert len(np.unique(means)) == len(means)  # every copy draws its own noise


def test_graph_noise_differs_between_runs_and_seed_reproduces():
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    seeded = noise_detector(seed=42.0)
    s = session(seeded)
    first, second = (s.run(["score1"], {"image": x})[0] for _ in range(2))
    assert not np.array_equal(first, second), "noise must differ between runs"
    again = session(seeded).run(["score1"], {"image": x})[0]
    np.testing.assert_array_equal(first, again)  # a new session restarts the seeded stream
    unseeded = session(noise_detector())
    a, b = (unseeded.run(["score1"], {"image": x})[0] for _ in range(2))
    assert not np.array_equal(a, b)


# --- thresholds ----------------------------------------------------------------------------

def test_threshold_boundary_is_strictly_greater_and_overridable():
    clf = plain_classifier()
    det = build_detector(clf, DetectorConfig(noise="input"))
    rng = np.random.default_rng(3)
    feed = {"image": rng.random((1, 3, 32, 32), dtype=np.float32),
            "noise": rng.standard_normal((1, 10, 3, 32, 32)).astype(np.float32)}
    s = session(det)
    base = dict(zip([o.name for o in s.get_outputs()], s.run(None, feed)))
    s1, s2 = np.float32(base["score1_max"][0]), np.float32(base["score2_max"][0])
    big = np.float32(np.inf)

    def verdict(t1, t2) -> bool:  # one value for every kappa is fed as [1]
        f = dict(feed, threshold1=np.array([t1], np.float32), threshold2=np.array([t2], np.float32))
        return bool(s.run(["is_adversarial"], f)[0][0])

    assert not verdict(s1, big)  # equal is not greater
    assert verdict(np.nextafter(s1, -big), big)
    assert not verdict(big, s2)
    assert verdict(big, np.nextafter(s2, -big))
    assert verdict(np.nextafter(s1, -big), s2)  # OR of the two tests

    # defaults baked into the file
    cal = with_thresholds(det, float(np.nextafter(s1, -big)), math.inf, {"source": "test"})
    assert bool(run(cal, feed)["is_adversarial"][0])
    cal2 = build_detector(clf, DetectorConfig(noise="input", threshold1=float(s1), threshold2=float(s2)))
    assert not bool(run(cal2, feed)["is_adversarial"][0])
    info = read_spec(cal)
    assert info.calibrated and info.thresholds_provenance == {"source": "test"}


def test_thresholds_survive_save_and_reload(tmp_path):
    det = with_thresholds(build_detector(plain_classifier()), 0.25, 0.5, {"fpr": 0.05})
    path = save_onnx(det, tmp_path / "d.onnx")
    info = read_spec(onnx.load(str(path)))
    assert (info.threshold1, info.threshold2) == (0.25, 0.5)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    assert np.all(inits["threshold1"] == 0.25) and np.all(inits["threshold2"] == 0.5)
    assert inits["threshold1"].shape == (10,) and float(inits["threshold3"]) == math.inf
    assert json.loads(info.raw["thresholds_provenance"]) == {"fpr": 0.05}


# --- uint8 frames --------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["uint8-nhwc-rgb", "uint8-nhwc-bgr"])
def test_uint8_frames_equal_float_graph(fmt):
    clf = plain_classifier()
    rng = np.random.default_rng(11)
    frame = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    noise = rng.standard_normal((2, 10, 3, 32, 32)).astype(np.float32)
    rgb = frame[..., ::-1] if fmt.endswith("bgr") else frame
    x = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255)
    ref = run(build_detector(clf, DetectorConfig(noise="input", batch=2)), {"image": x, "noise": noise})
    got = run(build_detector(clf, DetectorConfig(noise="input", batch=2, input_format=fmt)),
              {"image": frame, "noise": noise})
    for name in ("logits", "score1", "score2"):
        np.testing.assert_array_equal(got[name], ref[name])


# --- what does not fit ---------------------------------------------------------------------

def test_fixed_batch_classifier_is_made_symbolic():
    # issue 11: batch 1 is what most exported classifiers have (tests/export/test_intake.py)
    clf = plain_classifier(batch=1)
    det = build_detector(clf, DetectorConfig(noise="input", batch=2))
    notes = {p.key: p.value for p in det.metadata_props}["rpdetect.classifier_intake"]
    assert "fixed batch 1 made symbolic" in notes
    fn = classifier_fn(clf)  # runs batch 1 only: one image at a time
    check_against_reference(det, lambda x: np.concatenate([fn(x[i:i + 1]) for i in range(len(x))]),
                            2, (3, 32, 32), tuple(default_kappas()), seed=4,
                            tol={"score2": 1e-4, "score2_max": 1e-4})  # small score2: see above


def test_fixed_batch_equal_to_inner_batch_is_accepted():
    build_detector(plain_classifier(batch=11))


def test_two_inputs_rejected():
    m = plain_classifier()
    m.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))
    with pytest.raises(ModelError, match="exactly one image input.*extra"):
        build_detector(m)


def test_rank_and_dtype_rejected():
    m = plain_classifier()
    m.graph.input[0].type.tensor_type.shape.dim.pop()
    with pytest.raises(ModelError, match="rank 3"):
        build_detector(m)
    m = plain_classifier()
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    with pytest.raises(ModelError, match="FLOAT16.*float32"):
        build_detector(m)


def test_dynamic_spatial_dims_need_input_shape():
    m = plain_classifier()
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    with pytest.raises(ModelError, match="input_shape"):
        build_detector(m)
    det = build_detector(m, input_shape=(3, 32, 32))
    assert read_spec(det).input_shape == (3, 32, 32)


def test_unknown_output_and_opset_limits():
    with pytest.raises(ModelError, match="no output named 'nope'.*output"):
        build_detector(plain_classifier(), classifier_output="nope")
    with pytest.raises(ModelError, match="RandomNormalLike-22.*noise='input'"):
        build_detector(plain_classifier(opset=22))
    build_detector(plain_classifier(opset=22), DetectorConfig(noise="input"))  # fine without it
    # issue 11: opset < 13 is converted by onnx.version_converter (tests/export/test_intake.py)
    det = build_detector(plain_classifier(opset=11))
    assert read_spec(det).kappas and max(o.version for o in det.opset_import if not o.domain) == 17


def test_not_onnx_file(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff")
    with pytest.raises(ModelError, match="model.onnx: not a readable ONNX model"):
        build_detector(bad)
    with pytest.raises(ModelError, match="no such model file"):
        build_detector(tmp_path / "missing.onnx")


@pytest.mark.parametrize("kw, match", [
    ({"kappas": ()}, "at least one"),
    ({"kappas": (0.1, float("nan"))}, "finite"),
    ({"batch": 0}, "batch"),
    ({"noise": "gpu"}, "noise"),
    ({"mean": (0.5,) * 2, "std": (0.5,) * 2}, "mean"),
    ({"mean": (0.5,) * 3}, "together"),
    ({"input_format": "nhwc"}, "input_format"),
])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        build_detector(plain_classifier(), DetectorConfig(**kw))


def test_flips_match_reference_where_copies_flip():
    clf = plain_classifier(classes=10, seed=4)
    kappas = (0.01, 0.3, 1.0, 3.0)  # large scales: some copies must change label
    det = build_detector(clf, DetectorConfig(noise="input", batch=3, kappas=kappas))
    rng = np.random.default_rng(9)
    images = rng.random((3, 3, 32, 32), dtype=np.float32)
    noise = rng.standard_normal((3, 4, 3, 32, 32)).astype(np.float32)
    out = run(det, {"image": images, "noise": noise})
    ref = reference_detect(classifier_fn(clf), images, noise, np.asarray(kappas))
    assert ref.flips.sum() > 0 and not ref.flipped.all(), "the test needs some flips, not all"
    np.testing.assert_array_equal(out["flipped"], ref.flipped)
    np.testing.assert_array_equal(out["flips"], ref.flips)
    assert out["flips"].dtype == np.int64 and out["flipped"].dtype == bool


def test_per_kappa_thresholds_and_threshold3_match_the_rule():
    """is_adversarial = any_i s1_i > t1_i OR any_i s2_i > t2_i OR flips > t3, per kappa."""
    clf = plain_classifier(classes=10, seed=4)
    kappas = (0.01, 0.3, 1.0, 3.0)
    det = build_detector(clf, DetectorConfig(noise="input", batch=3, kappas=kappas))
    rng = np.random.default_rng(9)
    feed = {"image": rng.random((3, 3, 32, 32), dtype=np.float32),
            "noise": rng.standard_normal((3, 4, 3, 32, 32)).astype(np.float32)}
    s = session(det)
    names = [o.name for o in s.get_outputs()]
    base = dict(zip(names, s.run(None, feed)))
    inf = np.float32(np.inf)
    from rpdetect.rule import Thresholds
    # per-kappa thresholds between the two lowest scores at each kappa (no score lies close to
    # them, so float32 graph and float64 reference agree), so that some images pass
    low = np.sort(base["score1"], axis=0)
    t1 = ((low[0] + low[1]) / 2).astype(np.float32)
    t2 = np.full(4, inf, np.float32)
    for t3 in (inf, np.float32(0.5), np.float32(float(base["flips"].min()))):
        f = dict(feed, threshold1=t1, threshold2=t2, threshold3=np.array(t3, np.float32))
        got = s.run(["is_adversarial"], f)[0]
        want = Thresholds.of(t1, t2, float(t3), n=4).flags(base["score1"], base["score2"],
                                                           base["flips"])
        np.testing.assert_array_equal(got, want)
        ref = reference_detect(classifier_fn(clf), feed["image"], feed["noise"],
                               np.asarray(kappas), threshold1=t1, threshold2=t2,
                               threshold3=float(t3))
        np.testing.assert_array_equal(got, ref.is_adversarial)
    # baked into the file by with_thresholds, then read back from the initializers
    cal = with_thresholds(det, t1, inf, {"source": "test"}, threshold3=2.0)
    info = read_spec(cal)
    assert info.threshold1 == tuple(float(v) for v in t1) and info.threshold3 == 2.0
    assert info.thresholds.per_kappa and info.thresholds.uses_flips
    want = Thresholds.of(t1, inf, 2.0, n=4).flags(base["score1"], base["score2"], base["flips"])
    np.testing.assert_array_equal(run(cal, feed)["is_adversarial"], want)


def test_thresholds_refuse_nan_and_minus_inf():
    det = build_detector(plain_classifier(), DetectorConfig(noise="input"))
    for bad in (math.nan, -math.inf):
        with pytest.raises(ValueError, match="not a usable threshold"):
            with_thresholds(det, bad, 0.5)
        with pytest.raises(ValueError, match="not a usable threshold"):
            build_detector(plain_classifier(), DetectorConfig(noise="input", threshold3=bad))
    with pytest.raises(ValueError, match="one per kappa"):
        with_thresholds(det, [0.1, 0.2], 0.5)
