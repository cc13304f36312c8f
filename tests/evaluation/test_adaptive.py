"""Attacks that know the detector (rpdetect.evaluation.adaptive): the measure, the pieces, and a
real run on the committed CIFAR-10 model where the adaptive attack must beat the plain one."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("foolbox")

from rpdetect import reference  # noqa: E402
from rpdetect.evaluation import adaptive as A  # noqa: E402
from rpdetect.evaluation.protocol import ArrayPool, Classifier  # noqa: E402
from rpdetect.evaluation.report import budget_needed, write_adaptive_report  # noqa: E402
from rpdetect.rule import Thresholds  # noqa: E402

KAPPAS = tuple(float(k) for k in np.linspace(0.01, 0.1, 10))


def test_torch_verdict_is_the_rule_on_the_numpy_scores() -> None:
    """The attack's stopping check (torch) and the rule (rpdetect.rule on the numpy statement
    of Eq. 5/6) agree on random logits, per draw."""
    rng = np.random.default_rng(0)
    n, k, draws, b = 4, 5, 3, 40
    z_clean = rng.normal(size=(b, k)).astype(np.float32)
    z_noisy = (z_clean[:, None] + rng.normal(scale=0.6, size=(b, draws * n, k))
               ).astype(np.float32)
    ref1 = np.stack([reference.score1(c, z) for c, z in zip(z_clean, z_noisy)])
    ref2 = np.stack([reference.score2(c, z) for c, z in zip(z_clean, z_noisy)])
    t = Thresholds.of(np.quantile(ref1, 0.8) * np.ones(n),
                      np.linspace(0.5, 0.9, n), 1.0, n=n)
    det = A._TorchDetector(torch.nn.Identity(), (0.0,), (1.0,), [0.1] * n, t)
    got = det.flagged(torch.tensor(z_clean), torch.tensor(z_noisy), draws).numpy()
    for d in range(draws):
        part = slice(d * n, (d + 1) * n)
        s1, s2 = ref1[:, part], ref2[:, part]
        flips = (z_noisy[:, part].argmax(-1) != z_clean.argmax(-1)[:, None]).sum(1)
        np.testing.assert_array_equal(got[:, d], t.flags(s1, s2, flips))
    assert 0 < got.mean() < 1  # both verdicts occur


def test_projection_keeps_every_iterate_in_its_ball() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((3, 3, 8, 8), generator=gen)
    far = x + torch.randn(x.shape, generator=gen)
    for norm, eps in (("linf", 4 / 255), ("l2", 0.5)):
        p = A._project(far, x, eps, norm)
        d = (p - x).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert (size <= eps + 1e-6).all() and p.min() >= 0 and p.max() <= 1


def test_strictest_takes_the_lowest_threshold_of_each_statistic() -> None:
    a = Thresholds.of([1.0, 2.0], [0.5, 0.5], math.inf, n=2)
    b = Thresholds.of([1.5, 1.0], [0.7, 0.2], 3.0, n=2)
    s = A.strictest([a, b])
    assert s.threshold1 == (1.0, 1.0) and s.threshold2 == (0.5, 0.2) and s.threshold3 == 3.0


def test_budgets_follow_the_image_size_and_specs_are_checked() -> None:
    small = A.adaptive_attacks((3, 32, 32))
    big = A.adaptive_attacks((3, 224, 224))
    assert set(small) == set(big) >= {"adaptive-pgd-linf", "adaptive-pgd-l2", "logit-match-linf",
                                       "logit-match-l2", "adaptive-pgd-linf-t"}
    assert 8 / 255 in small["adaptive-pgd-linf"].epsilons
    assert {0.75, 1.0} <= set(small["adaptive-pgd-l2"].epsilons)  # the paper's CIFAR-10 L2
    assert {1.0, 2.0, 3.0} <= set(big["logit-match-l2"].epsilons)  # its 224x224 ones
    assert all(len(s.epsilons) >= 4 for s in (*small.values(), *big.values()))
    assert small["adaptive-pgd-linf"].eot == 16
    with pytest.raises(ValueError, match="epsilons"):
        A.AdaptiveSpec("x", "adaptive-pgd", "linf", (0.0,))
    with pytest.raises(ValueError, match="norm"):
        A.AdaptiveSpec("x", "adaptive-pgd", "l1", (0.1,))  # type: ignore[arg-type]


def test_budgets_eot_and_steps_can_be_chosen() -> None:
    from rpdetect._cli_util import budget_list
    from rpdetect.evaluation.pipeline import select_adaptive

    default = A.adaptive_attacks((3, 32, 32))["adaptive-pgd-linf"]
    (same,) = select_adaptive((3, 32, 32), ["adaptive-pgd-linf"], quick=False)
    assert same.params_hash() == default.params_hash()  # the cache of a default run is reused
    (spec,) = select_adaptive((3, 32, 32), ["adaptive-pgd-linf"], quick=False,
                              eot=4, steps=50, epsilons=budget_list("4/255, 0.0314"))
    assert spec.epsilons == (4 / 255, 0.0314) and (spec.eot, spec.steps) == (4, 50)
    assert spec.params_hash() != default.params_hash()


def test_budget_needed_is_the_first_budget_reaching_the_level() -> None:
    row = A.AdaptiveRow("a", 0.0, "paper", 10, 0, 0, 0, 0, *(math.nan,) * 6, 0.0)
    rows = [row._replace(epsilon=e, adaptive_success=s)
            for e, s in ((0.3, 9), (0.1, 2), (0.2, 5))]
    assert budget_needed(rows, "adaptive_success") == 0.2
    assert budget_needed(rows, "baseline_success") == math.inf


@pytest.fixture(scope="module")
def zoo_cifar(cifar_samples):
    """The committed CIFAR-10 ResNet-9 (rpdetect.zoo.cifar10_cnn, 32x32: small enough for a
    test) and Foolbox's 20 CIFAR-10 test images."""
    from rpdetect.zoo import cifar10_cnn

    if not cifar10_cnn.WEIGHTS.is_file():
        pytest.skip(f"{cifar10_cnn.WEIGHTS} not found")
    images, labels = cifar_samples
    return images, labels, Classifier(cifar10_cnn.build().eval(), tuple(cifar10_cnn.MEAN),
                                      tuple(cifar10_cnn.STD), (3, 32, 32), tuple(range(10)))


@pytest.mark.slow
def test_keeping_the_best_iterate_fools_the_classifier_more_often(zoo_cifar) -> None:
    """Where the detector term pushes iterates back over the decision boundary, keep="best"
    answers with a misclassifying iterate it saw; the trajectories are the same, so every image
    the last iterate fools, the best one fools too."""
    from rpdetect import reference_torch as rt

    images, labels, classifier = zoo_cifar
    module = classifier.module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    x, y = torch.as_tensor(images[:8]), torch.as_tensor(labels[:8]).long()
    kappas = list(np.geomspace(1e-3, 1e-1, 10))
    free = A._TorchDetector(module, classifier.mean, classifier.std, kappas,
                            Thresholds.of([math.inf] * 10, [math.inf] * 10, math.inf, n=10))
    with torch.no_grad():  # thresholds at the clean images' median: a strict detector
        zc, zn, _ = free.with_copies(x, 1, torch.Generator().manual_seed(0))
        t = Thresholds.of([float(rt.score1(zc, zn).amax(-1).median())] * 10,
                          [float(rt.score2(zc, zn).amax(-1).median())] * 10, math.inf, n=10)
    det = A._TorchDetector(module, classifier.mean, classifier.std, kappas, t)
    spec = dataclasses.replace(A.adaptive_attacks((3, 32, 32))["adaptive-pgd-linf"], steps=5,
                               eot=1)
    fooled = {}
    for keep in ("last", "best"):
        adv, _ = A.attack_batch(det, x, y, dataclasses.replace(spec, keep=keep), 2 / 255,
                                adaptive=True, gen=torch.Generator().manual_seed(1))
        assert (adv - x).abs().max() <= 2 / 255 + 1e-6
        with torch.no_grad():
            fooled[keep] = (det.logits(adv).argmax(1) != y).numpy()
    assert not (fooled["last"] & ~fooled["best"]).any(), fooled
    assert fooled["best"].sum() > fooled["last"].sum(), fooled


@pytest.mark.slow
def test_adaptive_attack_beats_the_plain_one(tmp_path: Path, zoo_cifar) -> None:
    """The whole measure on a real (small) model: detectors calibrated on 10 clean images with
    every rule, the plain PGD and the adaptive one at the same 8/255 budget on the other 10,
    verdicts of the shipped detector with fresh noise. Both fool the classifier; the adaptive
    examples pass the detector far more often."""
    images, labels, classifier = zoo_cifar
    spec = dataclasses.replace(A.adaptive_attacks((3, 32, 32))["adaptive-pgd-linf"],
                               epsilons=(8 / 255,), steps=12, eot=1)

    def run() -> A.AdaptiveEvaluation:
        return A.evaluate_adaptive(
            classifier, calibration=ArrayPool(images[:10], labels[:10]),
            pool=ArrayPool(images[10:], labels[10:]), specs=[spec], work_dir=tmp_path / "work",
            kappas=KAPPAS, n=10, progress=False)

    ev = run()
    assert set(ev.rules) == {"paper", "joint", "combined", "per-kappa"}
    (res,) = ev.results
    rows = {r.rule: r for r in res.rows}
    assert set(rows) == set(ev.rules)
    attacked = rows["paper"].attacked
    assert attacked >= 8  # the correctly classified ones of the 10
    for r in rows.values():
        assert r.attacked == attacked
        assert r.classifier_success >= attacked - 2, r  # plain PGD fools the classifier...
        assert r.adaptive_fooled >= attacked - 2, r
        assert r.adaptive_success <= r.adaptive_fooled
        assert r.baseline_success <= r.classifier_success
        if r.adaptive_success:
            assert r.adaptive_linf <= 8 / 255 + 1e-6
    total_adaptive = sum(r.adaptive_success for r in rows.values())
    total_plain = sum(r.baseline_success for r in rows.values())
    assert total_adaptive >= total_plain + 6, rows  # ...the adaptive one evades the detector
    written = write_adaptive_report(ev, tmp_path / "out", dataset="tiny", command="test")
    doc = json.loads((tmp_path / "out" / "adaptive.json").read_text())
    assert len(doc["rows"]) == 4 and doc["rows"][0]["attacked"] == attacked
    assert f"| adaptive-pgd-linf | 8/255 | {attacked} |" in written[0].read_text()
    # cached: a second run reads the attacks and the verdicts back; without the verdicts'
    # cache the shipped detector gives the same ones again (seeded noise streams)
    assert run().results[0].rows == res.rows
    (verdicts,) = (tmp_path / "work" / "adaptive").glob("*-verdicts.npz")
    verdicts.unlink()
    assert run().results[0].rows == res.rows and verdicts.is_file()
