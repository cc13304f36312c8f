"""Attack targets, the attack table, and the resumable cache (tiny torch model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
fb = pytest.importorskip("foolbox")

from rpdetect.evaluation.attacks import ATTACKS, AttackSpec, draw_targets, generate  # noqa: E402
from rpdetect.evaluation.protocol import ArrayPool  # noqa: E402


def test_targets_differ_from_labels_and_do_not_depend_on_chunking() -> None:
    labels = np.array([0, 1, 2, 2, 0, 1] * 20)
    pos = np.arange(len(labels))
    t = draw_targets(labels, pos, (0, 1, 2), seed=0)
    assert np.all(t != labels) and set(t) == {0, 1, 2}
    np.testing.assert_array_equal(t[10:20], draw_targets(labels[10:20], pos[10:20], (0, 1, 2), 0))


def test_attack_table_names_unique_and_hashes_distinct() -> None:
    for dataset, specs in ATTACKS.items():
        names = [s.name for s in specs]
        assert len(names) == len(set(names)), dataset
        assert len({s.params_hash() for s in specs}) == len(specs), dataset
        for s in specs:
            assert (s.epsilon is None) == (s.kind in ("ddn", "cw-l2")), s.name


class _Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(3 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _pool(model: torch.nn.Module, n: int = 24) -> ArrayPool:
    x = np.random.default_rng(0).random((n, 3, 4, 4), dtype=np.float32)
    with torch.no_grad():
        y = model(torch.as_tensor(x)).argmax(1).numpy()
    y[::5] = (y[::5] + 1) % 3  # some wrongly "labelled" images: must be skipped
    return ArrayPool(x, y)


def test_generate_masks_failures_measures_l2_and_resumes(tmp_path: Path) -> None:
    model = _Linear().eval()
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    pool = _pool(model)
    spec = AttackSpec("bim", "bim-l2", False, epsilon=0.5, steps=5)
    cache = tmp_path / "bim.npz"
    adv = generate(fmodel, pool, spec, n=6, classes=(0, 1, 2), seed=0, cache_file=cache,
                   chunk=4, progress=False)
    assert adv.success.sum() >= 6 and cache.is_file()
    assert adv.skipped > 0 and not np.isin(adv.positions, np.arange(0, 24, 5)).any()
    assert len(adv.adversarial) == adv.success.sum()
    delta = adv.adversarial - pool.images(adv.successful_positions)
    l2 = np.sqrt((delta.astype(np.float64) ** 2).reshape(len(delta), -1).sum(1))
    np.testing.assert_allclose(l2, adv.l2[adv.success], rtol=1e-5)
    assert np.all(l2 <= 0.5 + 1e-4) and np.all(np.isnan(adv.l2[~adv.success]))
    with torch.no_grad():
        pred = model(torch.as_tensor(adv.adversarial)).argmax(1).numpy()
    assert np.all(pred != pool.labels[adv.successful_positions])

    class Refuse:
        def __call__(self, x: object) -> object:
            raise AssertionError("the cached set must be reused, not recomputed")

    again = generate(Refuse(), pool, spec, n=6, classes=(0, 1, 2), seed=0, cache_file=cache,
                     chunk=4, progress=False)
    np.testing.assert_array_equal(again.adversarial, adv.adversarial)
    # asking for more resumes after the last attacked position
    more = generate(fmodel, pool, spec, n=10, classes=(0, 1, 2), seed=0, cache_file=cache,
                    chunk=4, progress=False)
    assert more.success.sum() >= min(10, adv.success.sum() + 1)
    np.testing.assert_array_equal(more.positions[: len(adv.positions)], adv.positions)
    np.testing.assert_array_equal(more.adversarial[: len(adv.adversarial)], adv.adversarial)
