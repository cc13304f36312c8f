"""The graph noise the latency work made cheaper must still be what the paper says: i.i.d.
N(0, 1) per copy and element, new each run, reproducible from a seed. The detector is built
around a 'classifier' that returns the pixels, and the classifier's input (the stacked clean
image and noisy copies) is added as a graph output, so eps_i = (x~_i - x) / kappa_i is read
back exactly. Seeded, so the statistics below are deterministic (no flaky thresholds)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rpdetect.export.graph import CLASSIFIER_INPUT_KEY, DetectorConfig, build_detector
from rpdetect.testing import flatten_classifier, session

C, S = 3, 64
PER_COPY = C * S * S


def noise_of(n: int, *, seed: float | None, batch: int = 1, runs: int = 1) -> np.ndarray:
    """eps [runs, B, n, C*S*S] from one session."""
    kappas = tuple(0.5 + 0.1 * i for i in range(n))
    det = build_detector(flatten_classifier(C, S),
                         DetectorConfig(kappas=kappas, seed=seed, batch=batch))
    inner = {p.key: p.value for p in det.metadata_props}[CLASSIFIER_INPUT_KEY]
    det.graph.output.append(
        helper.make_tensor_value_info(inner, TensorProto.FLOAT, [batch * (n + 1), C, S, S]))
    onnx.checker.check_model(det, full_check=True)
    s = session(det)
    x = np.full((batch, C, S, S), 0.5, np.float32)
    out = []
    for _ in range(runs):
        stacked = s.run([inner], {"image": x})[0].reshape(batch, n + 1, -1).astype(np.float64)
        assert np.array_equal(stacked[:, 0], x.reshape(batch, -1))  # the clean image, untouched
        out.append((stacked[:, 1:] - 0.5) / np.asarray(kappas)[None, :, None])
    return np.stack(out)


def normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


@pytest.mark.parametrize("n", [10, 3])
def test_graph_noise_is_standard_normal_per_copy(n):
    eps = noise_of(n, seed=1234.0)[0, 0]  # [n, PER_COPY]
    assert np.isfinite(eps).all()
    m = PER_COPY
    for i, e in enumerate(eps):  # 5-sigma bands of each sample moment
        z = (e - e.mean()) / e.std()
        assert abs(e.mean()) < 5 / math.sqrt(m), (i, e.mean())
        assert abs(e.var() - 1) < 5 * math.sqrt(2 / m), (i, e.var())
        assert abs((z ** 3).mean()) < 5 * math.sqrt(6 / m), (i, "skewness")
        assert abs((z ** 4).mean() - 3) < 5 * math.sqrt(24 / m), (i, "kurtosis")
    pooled = np.sort(eps.ravel())
    ks = np.max(np.abs(normal_cdf(pooled) - np.arange(1, pooled.size + 1) / pooled.size))
    assert ks < 1.95 / math.sqrt(pooled.size), ks  # Kolmogorov-Smirnov, alpha = 0.1%
    # tails: the share beyond 2 and 3 sigma
    for k, p in ((2, 0.0455), (3, 0.0027)):
        share = np.mean(np.abs(pooled) > k)
        assert abs(share - p) < 5 * math.sqrt(p / pooled.size), (k, share)


def test_graph_noise_copies_and_elements_are_independent():
    eps = noise_of(10, seed=99.0, batch=2)[0]  # [2, 10, PER_COPY]
    flat = eps.reshape(20, -1)
    band = 5 / math.sqrt(PER_COPY)
    corr = np.corrcoef(flat)
    assert np.abs(corr[~np.eye(20, dtype=bool)]).max() < band
    corr_sq = np.corrcoef(flat ** 2)  # dependence a linear correlation would miss
    assert np.abs(corr_sq[~np.eye(20, dtype=bool)]).max() < band
    for e in flat:  # neighbouring elements
        assert abs(np.corrcoef(e[:-1], e[1:])[0, 1]) < band


def test_graph_noise_is_new_each_run_and_seeded_streams_restart():
    a = noise_of(4, seed=7.0, runs=2)
    b = noise_of(4, seed=7.0, runs=1)
    assert not np.array_equal(a[0], a[1])
    np.testing.assert_array_equal(a[0], b[0])
    c = noise_of(4, seed=None, runs=2)
    assert not np.array_equal(c[0], c[1])
