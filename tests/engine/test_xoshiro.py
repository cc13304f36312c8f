"""The default noise generator: rpdetect's C extension ``rpdetect.engine._normal`` (16
xoshiro128+ lanes, Box-Muller with Cephes' float32 polynomials), against N(0, 1)'s moments, CDF
and tails, and the graph's Mul-then-Add rounding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rpdetect.engine.noise import NoiseSource
from rpdetect.testing import assert_standard_normal

SHAPE = (4, 3, 8, 8)


_standard_normal = assert_standard_normal
xoshiro = pytest.importorskip("rpdetect.engine._normal", reason="C extension not built")


def test_xoshiro_is_the_default_where_it_is_built():
    from rpdetect.engine.noise import default_generator

    assert default_generator() == "xoshiro"
    assert NoiseSource(SHAPE).generator == "xoshiro"


@pytest.mark.parametrize("threads", [1, 2])
def test_xoshiro_draws_are_standard_normal_and_independent(threads):
    with NoiseSource((4, 500_000), seed=1, threads=threads) as source:
        x = source.draw()
        y = source.draw()
    flat = x.ravel().astype(np.float64)
    _standard_normal(flat)
    kurtosis = float(np.mean((flat - flat.mean()) ** 4) / flat.var() ** 2)
    assert abs(kurtosis - 3.0) < 0.03  # 5 standard errors at 2 M values
    tail = float(np.mean(np.abs(flat) > 3.0))  # 0.0027 for N(0, 1)
    assert abs(tail - 0.0026998) < 5 * math.sqrt(0.0027 / flat.size)
    assert np.abs(flat).max() <= math.sqrt(48 * math.log(2)) + 1e-5  # u1 >= 2**-24
    # the two values of a Box-Muller pair (z1 = block[j], z2 = block[512 + j]), consecutive
    # values, rows, and successive draws are uncorrelated
    blocks = x[0, :499_712].reshape(-1, 2, 512)
    pairs = [(blocks[:, 0], blocks[:, 1]), (x[0, :-1], x[0, 1:]), (x[0], x[1]), (x, y),
             (x[0] ** 2, x[1] ** 2), (blocks[:, 0] ** 2, blocks[:, 1] ** 2)]
    for u, v in pairs:
        assert abs(np.corrcoef(u.ravel(), v.ravel())[0, 1]) < 5 / math.sqrt(u.size)


def test_xoshiro_fill_with_a_base_is_the_graphs_mul_then_add():
    state = np.arange(1, 65, dtype=np.uint32)
    z = np.empty(10_000, np.float32)
    xoshiro.fill(state.copy(), z)
    base = np.random.default_rng(0).random(10_000, dtype=np.float32)
    out = np.empty_like(z)
    xoshiro.fill(state.copy(), out, base, 0.03)
    np.testing.assert_array_equal(out, base + np.float32(0.03) * z)


def test_xoshiro_refuses_bad_buffers():
    state = np.ones(64, np.uint32)
    with pytest.raises(ValueError, match="state"):
        xoshiro.fill(np.ones(63, np.uint32), np.empty(8, np.float32))
    with pytest.raises(ValueError, match="out"):
        xoshiro.fill(state, np.empty(8, np.float64))
    with pytest.raises(ValueError, match="base"):
        xoshiro.fill(state, np.empty(8, np.float32), np.empty(4, np.float32), 1.0)


def test_fill_scaled_is_the_drawn_noise_scaled(monkeypatch):
    shape = (5, 3, 16, 16)
    base = np.random.default_rng(2).random(shape[1:], dtype=np.float32)
    scales = [0.01, 0.02, 0.05, 0.1, 0.3]
    for generator in ("xoshiro", "opencv", "numpy"):
        a = NoiseSource(shape, seed=4, generator=generator, threads=2)
        b = NoiseSource(shape, seed=4, generator=generator, threads=2)
        out = np.empty(shape, np.float32)
        a.fill_scaled(out, base, scales)
        eps = b.draw()
        expected = base + np.asarray(scales, np.float32)[:, None, None, None] * eps
        np.testing.assert_array_equal(out, expected, err_msg=generator)
        a.close(), b.close()


def test_xoshiro_without_its_extension_is_a_clear_error(monkeypatch):
    from rpdetect.engine import noise

    monkeypatch.setattr(noise, "_fast_module", lambda: None)
    assert noise.default_generator() == "opencv"
    with pytest.raises(ValueError, match="C extension"):
        NoiseSource(SHAPE, generator="xoshiro")
