"""Black-box attacks through ONNX Runtime on a tiny trained classifier: query counting, Square
Attack L-inf and HopSkipJump L2 (untargeted and targeted), budgets, reproducibility, the cache."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")
fb = pytest.importorskip("foolbox")

from rpdetect import testing  # noqa: E402
from rpdetect.evaluation.attacks import (  # noqa: E402
    ATTACKS,
    BLACKBOX_ATTACKS,
    AttackSpec,
    blackbox_attacks,
    generate,
    run_attack,
)
from rpdetect.evaluation.blackbox import OnnxClassifier  # noqa: E402
from rpdetect.evaluation.protocol import ArrayPool  # noqa: E402
from rpdetect.export.torch_export import torch_to_onnx  # noqa: E402

C, S, K = 3, 16, 4
EPS = 8 / 255


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """K classes, each a fixed random pattern of amplitude 0.05 under N(0, 0.1) noise: separable
    (test accuracy 1.0), yet a white-box PGD at 8/255 fools ~70% of the images."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    patterns = np.random.default_rng(123).normal(0, 1, (K, C, S, S)).astype(np.float32)
    x = 0.5 + 0.1 * rng.normal(0, 1, (n, C, S, S)).astype(np.float32) + 0.05 * patterns[y]
    return np.clip(x, 0, 1).astype(np.float32), y


class Tiny(NamedTuple):
    path: Path
    pool: ArrayPool


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """A conv + linear classifier trained for 150 Adam steps (~2 s), exported by the dynamo
    exporter with a symbolic batch axis."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only contend on a shared machine
    try:
        return _train_and_export(tmp_path_factory.mktemp("tiny") / "clf.onnx")
    finally:
        torch.set_num_threads(threads)


def _train_and_export(path: Path) -> Tiny:
    x, y = _images(512, 0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(C, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, K))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for step in range(150):
        i = np.random.default_rng(step).integers(0, len(x), 64)
        loss = torch.nn.functional.cross_entropy(model(torch.as_tensor(x[i])),
                                                 torch.as_tensor(y[i]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = torch_to_onnx(model.eval(), path, input_shape=(C, S, S))
    xt, yt = _images(32, 1)
    return Tiny(path, ArrayPool(xt, yt))


def _verify(tiny: Tiny, adv_images: np.ndarray) -> np.ndarray:
    """Predictions from a fresh ONNX Runtime session, independent of OnnxClassifier."""
    return testing.classifier_fn(tiny.path)(adv_images).argmax(axis=1)


def _run(tiny: Tiny, spec: AttackSpec, n: int, **kw: object):  # noqa: ANN202
    kw = {"classes": range(K), "seed": 0, "cache_file": None, "progress": False, **kw}
    return generate(OnnxClassifier(tiny.path, threads=1), tiny.pool, spec, n=n, **kw)  # type: ignore[arg-type]


def _check_common(tiny: Tiny, spec: AttackSpec, adv) -> np.ndarray:  # noqa: ANN001
    """Re-verify through ONNX Runtime; images in [0, 1]; queries in (0, budget]."""
    assert spec.queries is not None
    pos = adv.successful_positions
    assert len(adv.adversarial) == len(pos) > 0
    assert adv.adversarial.min() >= 0.0 and adv.adversarial.max() <= 1.0
    pred = _verify(tiny, adv.adversarial)
    if spec.targeted:
        assert np.all(pred == adv.targets[adv.success])
    else:
        assert np.all(pred != tiny.pool.labels[pos])
    assert np.all(adv.queries > 0) and np.all(adv.queries <= spec.queries)
    assert 0 < adv.mean_queries <= spec.queries
    delta = adv.adversarial.astype(np.float64) - tiny.pool.images(pos)
    l2 = np.sqrt((delta ** 2).reshape(len(delta), -1).sum(axis=1))
    np.testing.assert_allclose(adv.l2[adv.success], l2, rtol=1e-5)
    return delta


def test_onnx_classifier_counts_queries_symbolic_and_fixed_batch(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((5, 3, 8, 8), dtype=np.float32)
    ref = testing.classifier_fn(testing.plain_classifier(size=8, classes=6))(x)
    sym = OnnxClassifier(testing.session(testing.plain_classifier(size=8, classes=6)),
                         batch_size=2)
    np.testing.assert_allclose(sym.logits(x), ref, rtol=1e-5, atol=1e-6)
    assert (sym.queries, sym.nb_classes, sym.input_shape) == (5, 6, (3, 8, 8))
    path = tmp_path / "fixed.onnx"
    path.write_bytes(testing.plain_classifier(size=8, classes=6, batch=4).SerializeToString())
    fixed = OnnxClassifier(path)
    assert fixed.fixed_batch == 4
    np.testing.assert_allclose(fixed.logits(x), ref, rtol=1e-5, atol=1e-6)  # 4 + 1 padded
    assert fixed.queries == 5  # the 3 padding rows are not queries
    np.testing.assert_array_equal(fixed.predict(x[:1]), ref[:1].argmax(1))
    assert fixed.queries == 6


def test_onnx_classifier_errors_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        OnnxClassifier(tmp_path / "nope.onnx")
    with pytest.raises(ValueError, match=r"expected a float32 \[B, C, H, W\]"):
        OnnxClassifier(testing.session(_rank2_input_model()))
    with pytest.raises(ValueError, match="symbolic; pass input_shape"):
        OnnxClassifier(testing.session(_symbolic_hw_model()))
    clf = OnnxClassifier(testing.session(_symbolic_hw_model()), input_shape=(3, 8, 8))
    assert clf.logits(np.zeros((2, 3, 8, 8), np.float32)).shape == (2, 6)
    with pytest.raises(ValueError, match=r"expected shape \[N, 3, 8, 8\], got \[2, 3, 9, 9\]"):
        clf.logits(np.zeros((2, 3, 9, 9), np.float32))


def _rank2_input_model():  # noqa: ANN202
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _symbolic_hw_model():  # noqa: ANN202
    m = testing.plain_classifier(size=8, classes=6)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    return m


def test_square_linf_untargeted_succeeds_within_eps_and_budget(tiny: Tiny) -> None:
    spec = dataclasses.replace(BLACKBOX_ATTACKS["square-linf-u"], queries=2000)
    adv = _run(tiny, spec, n=32)
    assert adv.success.mean() >= 0.4, adv.success.mean()
    delta = _check_common(tiny, spec, adv)
    assert np.abs(delta).max() <= EPS + 1e-6
    assert np.all(adv.queries[~adv.success] == spec.queries)  # a failure spent the budget
    assert np.mean(adv.queries[adv.success] < spec.queries) > 0.8  # successes stop early


def test_square_linf_targeted_reaches_the_target(tiny: Tiny) -> None:
    spec = dataclasses.replace(BLACKBOX_ATTACKS["square-linf-t"], queries=2000)
    adv = _run(tiny, spec, n=8)
    assert adv.success.mean() >= 0.4, adv.success.mean()
    assert np.all(adv.targets >= 0) and np.all(adv.targets != tiny.pool.labels[adv.positions])
    delta = _check_common(tiny, spec, adv)
    assert np.abs(delta).max() <= EPS + 1e-6


@pytest.mark.parametrize("name", ["hsj-l2-u", "hsj-l2-t"])
def test_hop_skip_jump_l2_finds_small_adversarials(tiny: Tiny, name: str) -> None:
    spec = BLACKBOX_ATTACKS[name]
    adv = _run(tiny, spec, n=3, chunk=3)
    assert adv.success.sum() == 3
    delta = _check_common(tiny, spec, adv)
    l2 = np.sqrt((delta ** 2).reshape(len(delta), -1).sum(axis=1))
    # Square's eps-ball corners are at L2 ~0.87 here; a minimal L2 attack ends well inside
    assert l2.mean() < 0.8, l2.mean()
    if spec.targeted:  # starting images: the pool's first image of each target class
        assert np.all(adv.targets[adv.success] >= 0)


def test_hop_skip_jump_stops_at_the_budget_with_the_best_so_far(tiny: Tiny) -> None:
    full = dataclasses.replace(BLACKBOX_ATTACKS["hsj-l2-u"], steps=5)
    cut = dataclasses.replace(full, queries=400)
    a = _run(tiny, cut, n=2, chunk=2)
    b = _run(tiny, full, n=2, chunk=2)
    _check_common(tiny, cut, a)
    assert np.all(a.queries == 400)  # 5 steps need ~1,000 queries: every image was cut
    assert np.all(b.queries < full.queries)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert np.nanmean(a.l2) > np.nanmean(b.l2)  # fewer queries, a larger perturbation


def test_reproducible_for_a_seed_and_independent_of_chunking(tiny: Tiny) -> None:
    spec = dataclasses.replace(BLACKBOX_ATTACKS["square-linf-u"], queries=1000)
    a = _run(tiny, spec, n=4, chunk=8)
    b = _run(tiny, spec, n=4, chunk=3)
    c = _run(tiny, spec, n=4, chunk=8, seed=1)
    n = min(len(a.positions), len(b.positions))
    assert a.success.sum() >= 4 and n >= 4
    for f in ("positions", "success", "l2", "queries"):
        np.testing.assert_array_equal(getattr(a, f)[:n], getattr(b, f)[:n], err_msg=f)
    np.testing.assert_array_equal(a.adversarial[:4], b.adversarial[:4])
    assert not np.array_equal(a.queries[:n], c.queries[:n])
    hsj = dataclasses.replace(BLACKBOX_ATTACKS["hsj-l2-u"], steps=2, queries=600)
    h1, h2 = _run(tiny, hsj, n=2, chunk=2), _run(tiny, hsj, n=2, chunk=2)
    np.testing.assert_array_equal(h1.adversarial, h2.adversarial)
    np.testing.assert_array_equal(h1.queries, h2.queries)
    state = np.random.get_state()[1].copy()
    _run(tiny, hsj, n=1, chunk=1)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global RNG left alone


def test_cache_keeps_queries_and_old_caches_load(tiny: Tiny, tmp_path: Path) -> None:
    spec = dataclasses.replace(BLACKBOX_ATTACKS["square-linf-u"], queries=1000)
    cache = tmp_path / "sq.npz"
    adv = _run(tiny, spec, n=4, cache_file=cache, chunk=8)
    again = _run(tiny, spec, n=4, cache_file=cache, chunk=8)
    np.testing.assert_array_equal(again.queries, adv.queries)
    # a cache written before queries were counted: same arrays, no "queries"
    with np.load(cache) as z:
        old = {k: z[k] for k in z.files if k != "queries"}
    np.savez(cache, **old)
    loaded = _run(tiny, spec, n=4, cache_file=cache, chunk=8)
    assert np.all(np.isnan(loaded.queries)) and len(loaded.queries) == len(adv.positions)
    assert np.isnan(loaded.mean_queries)
    np.testing.assert_array_equal(loaded.adversarial, adv.adversarial)
    more = _run(tiny, spec, n=adv.success.sum() + 2, cache_file=cache, chunk=8)
    assert len(more.queries) == len(more.positions) > len(adv.positions)
    assert np.all(np.isfinite(more.queries[len(adv.positions):]))


def test_white_box_cache_and_hashes_unchanged(tmp_path: Path) -> None:
    # the new fields stay out of params() at their defaults: existing caches keep their names
    spec = ATTACKS["imagenette"][0]
    assert spec.params_hash() == "43ae8f6b589d"
    assert "queries" not in spec.params()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3)).eval()
    x = np.random.default_rng(0).random((8, 3, 4, 4), dtype=np.float32)
    with torch.no_grad():
        y = model(torch.as_tensor(x)).argmax(1).numpy()
    adv = generate(fb.PyTorchModel(model, bounds=(0, 1)), ArrayPool(x, y),
                   AttackSpec("bim", "bim-l2", False, epsilon=2.0, steps=5), n=8,
                   classes=(0, 1, 2), seed=0, cache_file=tmp_path / "w.npz", progress=False)
    assert adv.success.any() and np.all(np.isnan(adv.queries))


def test_model_and_attack_kinds_must_match(tiny: Tiny) -> None:
    clf = OnnxClassifier(tiny.path)
    x, y = tiny.pool.images([0, 1]), tiny.pool.labels[:2]
    with pytest.raises(TypeError, match="needs gradients"):
        run_attack(clf, x, y, ATTACKS["cifar10"][1])
    fmodel = fb.PyTorchModel(torch.nn.Sequential(torch.nn.Flatten(),
                                                 torch.nn.Linear(C * S * S, K)).eval(), (0, 1))
    with pytest.raises(TypeError, match="black-box attack"):
        run_attack(fmodel, x, y, BLACKBOX_ATTACKS["square-linf-u"])
    with pytest.raises(ValueError, match="set queries"):
        run_attack(clf, x, y, AttackSpec("sq", "square-linf", False, epsilon=EPS))
    with pytest.raises(ValueError, match="targeted: pass targets"):
        run_attack(clf, x, y, BLACKBOX_ATTACKS["square-linf-t"])


def test_blackbox_table_scales_with_the_image_size() -> None:
    names = list(BLACKBOX_ATTACKS)
    assert names == ["square-linf-u", "square-linf-t", "hsj-l2-u", "hsj-l2-t"]
    assert len({s.params_hash() for s in BLACKBOX_ATTACKS.values()}) == len(names)
    small, large = blackbox_attacks((3, 32, 32)), blackbox_attacks((3, 224, 224))
    assert small["square-linf-u"].epsilon == pytest.approx(8 / 255)
    assert large["square-linf-u"].epsilon == pytest.approx(4 / 255)
    assert large["hsj-l2-u"] == BLACKBOX_ATTACKS["hsj-l2-u"]
    for spec in BLACKBOX_ATTACKS.values():
        assert spec.blackbox and spec.queries is not None and 1000 <= spec.queries <= 5000
        q = spec.quick()
        assert q.queries is not None and q.queries <= spec.queries and q.steps <= spec.steps
        assert f"{spec.queries} queries" in spec.describe()
        json.dumps(spec.params())
    with pytest.raises(ValueError, match="input_shape"):
        blackbox_attacks((3,))


def test_p_schedule_halves_at_the_reference_iterations() -> None:
    from rpdetect.evaluation.blackbox import p_selection

    got = [p_selection(0.8, it, 10000) for it in (0, 10, 11, 50, 51, 500, 501, 8000, 8001, 9999)]
    assert got == pytest.approx([0.8, 0.8, 0.4, 0.4, 0.2, 0.1, 0.05, 0.8 / 256, 0.8 / 512,
                                 0.8 / 512])
    assert p_selection(0.8, 100, 1000) == pytest.approx(0.8 / 16)  # rescaled to the budget


def test_mean_queries_reach_the_table() -> None:
    from rpdetect.rule import Thresholds
    from rpdetect.evaluation.metrics import attack_metrics
    from rpdetect.evaluation.report import markdown_table
    from rpdetect.evaluation.scoring import ScoreSet

    s = ScoreSet(np.ones((2, 2)), np.ones((2, 2)), np.zeros(2), np.zeros(2, np.int64))
    rules = {"paper": Thresholds.of(1.0, 0.2, n=2)}
    bb = attack_metrics("square-linf-u", clean=s, adversarial=s, rules=rules, attempted=3,
                        failed=1, l2=np.ones(2), queries=np.array([100.0, 300.0]))
    wb = attack_metrics("bim", clean=s, adversarial=s, rules=rules, attempted=2, failed=0,
                        l2=np.ones(2), queries=np.full(2, np.nan))
    assert bb.mean_queries == 200.0 and np.isnan(wb.mean_queries)
    table = markdown_table([bb, wb], dict(BLACKBOX_ATTACKS))
    assert "| 2 / 3 (1) | 200 |" in table and "| 2 / 2 (0) | white-box |" in table
