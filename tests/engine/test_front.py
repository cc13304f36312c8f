"""The engine-built front (``rpdetect.engine.front``): on the CPU provider the engine draws the
noise and builds the n + 1 batch itself; results must be the graph's, its noise N(0, 1) per
kappa and fresh per run, the file on disk untouched, and ``engine_noise=False`` must run the
graph's own random op."""

from __future__ import annotations

import concurrent.futures
import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rpdetect import Detector
from rpdetect.contract import load
from rpdetect.engine.front import BatchBuffer, images_per_run, split_front
from rpdetect.engine.noise import NoiseSource

SIZE = 32
KAPPAS = (0.01, 0.03, 0.1, 0.3)


def _mean_std_classifier() -> onnx.ModelProto:
    """Logits [mean(x), std(x)] over all pixels: for a flat image the score1 of copy i is
    |std(x~_i) - (mean(x~_i) - mean(x))| / 2, i.e. about kappa_i / 2 when the engine's noise is
    N(0, 1) * kappa_i."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Sub", ["x", "m"], ["xc"]),
            helper.make_node("Mul", ["xc", "xc"], ["sq"]),
            helper.make_node("ReduceMean", ["sq"], ["var"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Sqrt", ["var"], ["s"]),
            helper.make_node("Concat", ["m", "s"], ["ms"], axis=1),
            helper.make_node("Flatten", ["ms"], ["y"], axis=1),
        ],
        "mean_std",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def det_mean_std(tmp_path_factory, tools):
    d = tmp_path_factory.mktemp("front")
    clf = type("C", (), {"model": _mean_std_classifier()})()
    return tools.write_detector(clf, d / "mean_std_graph.onnx", noise="graph", kappas=KAPPAS)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cpu_default_is_the_engine_front_and_the_file_stays_as_it_was(det_graph):
    before = _sha(det_graph)
    det = Detector(det_graph)
    assert det.front == "engine"
    assert [i.name for i in det.session.get_inputs()][0] != "image"  # the cut graph runs
    assert "image" in [t.name for t in det.inputs]  # the file's interface is what is listed
    det.detect(np.full((3, SIZE, SIZE), 0.5, np.float32))
    assert _sha(det_graph) == before
    graph = Detector(det_graph, engine_noise=False)
    assert graph.front == "graph"
    assert graph.session.get_inputs()[0].name == "image"
    assert graph.inputs == det.inputs and graph.outputs == det.outputs


def test_the_cut_model_has_no_random_op_and_the_file_keeps_it(det_graph):
    model, spec = load(det_graph)
    assert "RandomNormalLike" in {n.op_type for n in model.graph.node}
    cut = split_front(model, spec)
    assert cut is not None
    ops = {n.op_type for n in cut.model.graph.node}
    assert not ops & {"RandomNormalLike", "Expand", "Concat"}, ops
    onnx.checker.check_model(cut.model, full_check=True)


@pytest.mark.parametrize("engine_noise", [None, False])
def test_noise_is_n01_times_kappa_and_fresh_per_run(det_mean_std, engine_noise):
    # the engine's draws (default) and the graph's RandomNormalLike (engine_noise=False) alike
    det = Detector(det_mean_std, engine_noise=engine_noise)
    image = np.full((3, SIZE, SIZE), 0.5, np.float32)
    runs = np.stack([det.detect(image).score1 for _ in range(20)])  # [runs, n]
    ratio = 2 * runs / np.asarray(KAPPAS)
    # one copy: std of 3072 N(0,1) values (+-1.3 %) plus the mean shift (+-1.8 %)
    assert np.all(np.abs(ratio - 1) < 0.12), ratio
    np.testing.assert_allclose(ratio.mean(axis=0), 1.0, atol=0.02)
    assert len({tuple(r) for r in runs}) == len(runs)  # every run draws afresh


def test_batch_buffer_rows_are_the_image_plus_kappa_times_n01():
    n, shape = len(KAPPAS), (3, 64, 64)
    spec = type("S", (), {"n": n, "batch": 2, "clip": False, "kappas": KAPPAS,
                          "input_shape": shape})()
    source = NoiseSource((n, *shape), seed=1)
    buf = BatchBuffer(spec, source)  # type: ignore[arg-type]
    images = [np.random.default_rng(i).random(shape, dtype=np.float32) for i in range(2)]
    first = buf.fill(images, [None, None]).copy()
    second = buf.fill(images, [None, None]).copy()
    for b, image in enumerate(images):
        rows = first[b * (n + 1):(b + 1) * (n + 1)]
        np.testing.assert_array_equal(rows[0], image)
        for i, kappa in enumerate(KAPPAS):
            eps = (rows[1 + i] - image) / kappa
            assert abs(eps.mean()) < 0.03 and abs(eps.std() - 1) < 0.03, (b, i)
    assert not np.allclose(first[1:n + 1], second[1:n + 1])
    # two images of one run, and two copies of one image, never share noise
    e0 = (first[1] - images[0]) / KAPPAS[0]
    e1 = (first[n + 2] - images[1]) / KAPPAS[0]
    e2 = (first[2] - images[0]) / KAPPAS[1]
    assert abs(np.corrcoef(e0.ravel(), e1.ravel())[0, 1]) < 0.05
    assert abs(np.corrcoef(e0.ravel(), e2.ravel())[0, 1]) < 0.05


@pytest.mark.parametrize("fixture", ["det_input", "det_input_b3", "det_bgr", "torch_detector"])
def test_engine_front_gives_the_graphs_results_for_the_same_noise(request, fixture, tools):
    path = request.getfixturevalue(fixture)
    path = path[0] if isinstance(path, tuple) else path
    engine, graph = Detector(path), Detector(path, engine_noise=False)
    assert (engine.front, graph.front) == ("engine", "graph")
    images = [tools.rgb_image(i) for i in range(4)]  # B=3: one full run, one padded
    noise = np.stack([tools.noise_for(i) for i in range(4)])
    a = engine.detect_many(images, noise=noise, progress=False).results
    b = graph.detect_many(images, noise=noise, progress=False).results
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x.logits, y.logits, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(x.score1, y.score1, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(x.score2, y.score2, rtol=1e-4, atol=1e-6)
        assert (x.label, x.flips, x.is_adversarial) == (y.label, y.flips, y.is_adversarial)


def test_threads_sharing_one_detector_each_get_their_own_batch(det_input, tools):
    det = Detector(det_input)
    images = [tools.rgb_image(i) for i in range(8)]
    expected = [det.detect(im, noise=tools.noise_for(i)).score1 for i, im in enumerate(images)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: det.detect(images[i], noise=tools.noise_for(i)).score1,
                            range(8)))
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)


def test_seeds_with_the_engine_front(tmp_path, linear, tools):
    seeded = tools.write_detector(linear, tmp_path / "seeded.onnx", noise="graph", seed=7)
    image = tools.rgb_image(0)
    a, b = Detector(seeded).detect(image), Detector(seeded).detect(image)
    np.testing.assert_array_equal(a.score1, b.score1)  # the file's seed attribute holds
    c = Detector(seeded, seed=3).detect(image)
    assert not np.array_equal(a.score1, c.score1)
    np.testing.assert_array_equal(c.score1, Detector(seeded, seed=3).detect(image).score1)


def test_engine_noise_is_checked(det_graph):
    with pytest.raises(ValueError, match="engine_noise"):
        Detector(det_graph, engine_noise="yes")  # type: ignore[arg-type]


def test_threshold_overrides_reach_the_cut_graph(det_calibrated, tools):
    det = Detector(det_calibrated)
    assert det.front == "engine"
    image, noise = tools.rgb_image(0), tools.noise_for(0)
    assert det.detect(image, noise=noise, threshold1=0.0).is_adversarial
    plain = det.detect(image, noise=noise, threshold1=1e9, threshold2=1e9)
    assert not plain.is_adversarial
    graph = Detector(det_calibrated, engine_noise=False).detect(image, noise=noise)
    assert det.detect(image, noise=noise).is_adversarial == graph.is_adversarial


def test_a_batched_file_runs_b_images_per_run_and_never_computes_padding(det_input_b3, tools):
    # B = 3 in the file, small images: the cut graph's batch axis is free, the engine puts
    # the file's B images in a run and a last, part-filled run holds only its images (no
    # padding computed; one image for detect()); the file's interface is unchanged
    det = Detector(det_input_b3)
    n = det.info.n
    assert det._buffer.batch == 3
    assert list(det.session.get_inputs()[0].shape)[1:] == [3, tools.SIZE, tools.SIZE]
    assert isinstance(det.session.get_inputs()[0].shape[0], str)
    assert [t.shape for t in det.outputs if t.name == "label"] == [(3,)]
    graph = Detector(det_input_b3, engine_noise=False)
    images = [tools.rgb_image(i) for i in range(5)]
    noise = np.stack([tools.noise_for(i) for i in range(5)])
    fill, rows = det._buffer.fill, []
    det._buffer.fill = lambda *a: rows.append(len(out := fill(*a))) or out  # type: ignore
    single = det.detect(images[4], noise=noise[4])
    assert rows == [n + 1]
    for over in ({}, {"threshold1": 0.0}):
        rows.clear()
        a = det.detect_many(images, noise=noise, progress=False, **over).results
        assert rows == [3 * (n + 1), 2 * (n + 1)]
        b = graph.detect_many(images, noise=noise, progress=False, **over).results
        assert [r.label for r in a] == [r.label for r in b]
        assert [r.is_adversarial for r in a] == [r.is_adversarial for r in b]
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.score2, y.score2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(single.score1, a[4].score1, rtol=1e-4, atol=1e-6)


def test_large_images_of_a_batched_file_run_one_per_run(det_input_b3, tools, monkeypatch):
    # as for 224x224 images: the freed graph run one image at a time gives the graph's results
    import rpdetect.engine.front as front

    monkeypatch.setattr(front, "RUN_TOGETHER_BYTES", 0)
    det = Detector(det_input_b3)
    assert det._buffer.batch == 1
    n = det.info.n
    fill, rows = det._buffer.fill, []
    det._buffer.fill = lambda *a: rows.append(len(out := fill(*a))) or out  # type: ignore
    images = [tools.rgb_image(i) for i in range(4)]
    noise = np.stack([tools.noise_for(i) for i in range(4)])
    a = det.detect_many(images, noise=noise, progress=False).results
    assert rows == [n + 1] * 4
    b = Detector(det_input_b3, engine_noise=False).detect_many(images, noise=noise,
                                                             progress=False).results
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x.score1, y.score1, rtol=1e-4, atol=1e-6)
        assert (x.label, x.is_adversarial) == (y.label, y.is_adversarial)


def test_images_per_run_sets_the_engines_run_size_whatever_the_files_b(det_input_b3, det_input,
                                                                     tools, caplog):
    images = [tools.rgb_image(i) for i in range(5)]
    noise = np.stack([tools.noise_for(i) for i in range(5)])
    ref = Detector(det_input_b3, engine_noise=False).detect_many(images, noise=noise,
                                                                  progress=False).results
    for k, runs in ((1, [1] * 5), (2, [2, 2, 1]), (8, [5])):
        det = Detector(det_input_b3, images_per_run=k)
        n = det.info.n
        assert det._buffer.batch == k
        fill, rows = det._buffer.fill, []
        det._buffer.fill = lambda *a: rows.append(len(out := fill(*a))) or out  # type: ignore
        got = det.detect_many(images, noise=noise, progress=False).results
        assert rows == [r * (n + 1) for r in runs]
        for x, y in zip(got, ref, strict=True):
            np.testing.assert_allclose(x.score2, y.score2, rtol=1e-4, atol=1e-6)
            assert (x.label, x.is_adversarial) == (y.label, y.is_adversarial)
    # a B = 1 file keeps its graph's shapes by default, and is freed when asked for more
    assert Detector(det_input, images_per_run=None)._buffer.batch == 1
    assert isinstance(Detector(det_input).session.get_inputs()[0].shape[0], int)
    four = Detector(det_input, images_per_run=4)
    assert four._buffer.batch == 4
    assert isinstance(four.session.get_inputs()[0].shape[0], str)
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ValueError, match="images_per_run"):
            Detector(det_input_b3, images_per_run=bad)  # type: ignore[arg-type]
    with caplog.at_level("WARNING"):
        assert Detector(det_input_b3, engine_noise=False, images_per_run=2).front == "graph"
    assert "images_per_run=2 is ignored" in caplog.text


def test_images_per_run_other_than_b_is_refused_where_the_batch_axis_stays_fixed(
        det_input_b3, monkeypatch):
    import rpdetect.engine.detector as detector_module

    real = detector_module.split_front

    def fixed(model, spec, **kwargs):  # as for a graph whose batch axis cannot be freed
        cut = real(model, spec, **kwargs)
        return None if cut is None else type(cut)(cut.model, cut.batch_input, spec.batch)

    monkeypatch.setattr(detector_module, "split_front", fixed)
    assert Detector(det_input_b3, images_per_run=3)._buffer.batch == 3
    with pytest.raises(ValueError, match="could not free the batch axis.*runs 3 images"):
        Detector(det_input_b3, images_per_run=2)


def test_the_freed_cut_graph_leaves_the_files_model_intact(det_input_b3):
    model, spec = load(det_input_b3)
    before = model.SerializeToString()
    cut = split_front(model, spec)
    assert cut is not None and cut.images == 0
    assert model.SerializeToString() == before
    onnx.checker.check_model(cut.model, full_check=True)


@pytest.mark.parametrize("size, batch, expected", [(32, 16, 16), (64, 16, 16), (224, 16, 1),
                                                   (224, 1, 1)])
def test_images_per_run_puts_a_batch_of_small_images_in_one_run(size, batch, expected):
    # one image's inner batch (n + 1) x 3 x size x size float32: 135 KB at 32, 541 KB at 64,
    # 6.6 MB at 224 (then one image per run)
    spec = type("S", (), {"n": 10, "batch": batch, "input_shape": (3, size, size)})()
    assert images_per_run(spec) == expected  # type: ignore[arg-type]
