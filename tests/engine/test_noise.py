"""NoiseSource: the N(0, 1) draws of noise='input' detectors (OpenCV and numpy generators, one or
more drawing threads), with and without prefetch."""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest

from rpdetect import Detector
from rpdetect.engine.noise import NoiseSource
from rpdetect.testing import assert_standard_normal

SHAPE = (4, 3, 8, 8)


GENERATORS = [("opencv", 1), ("opencv", 2), ("numpy", 1), ("numpy", 3)]


_standard_normal = assert_standard_normal


@pytest.mark.parametrize("generator,threads", GENERATORS)
@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_draws_are_standard_normal_float32(prefetch, generator, threads):
    with NoiseSource((200_000,), seed=0, prefetch=prefetch, generator=generator,
                     threads=threads) as source:
        x = source.draw()
    assert x.dtype == np.float32 and x.shape == (200_000,)
    _standard_normal(x)
    # every part of a split draw is N(0, 1) on its own (no part left empty or repeated)
    for part in np.array_split(x, threads):
        assert abs(part.std() - 1.0) < 0.02


@pytest.mark.parametrize("generator,threads", GENERATORS)
def test_parts_draws_and_sources_are_independent(generator, threads):
    # OpenCV starts every new thread from the same state: unseeded sources or parts that
    # skipped their seeding would repeat each other's values exactly
    shape = (2, 100_000)
    with NoiseSource(shape, generator=generator, threads=threads) as a, \
            NoiseSource(shape, generator=generator, threads=threads) as b:
        a1, a2, b1 = a.draw(), a.draw(), b.draw()
    pairs = [(a1, a2), (a1, b1)] + ([(a1[0], a1[1])] if threads > 1 else [])
    for u, v in pairs:
        assert abs(np.corrcoef(u.ravel(), v.ravel())[0, 1]) < 5 / np.sqrt(u.size)
        assert np.mean(u == v) < 1e-3


@pytest.mark.parametrize("generator,threads", GENERATORS)
def test_prefetch_keeps_the_seeded_sequence(generator, threads):
    kw = dict(generator=generator, threads=threads)
    with NoiseSource(SHAPE, seed=7, **kw) as plain:
        expected = [plain.draw() for _ in range(5)]
    with NoiseSource(SHAPE, seed=7, prefetch=2, **kw) as ahead:
        got = [ahead.draw() for _ in range(5)]
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)
    with NoiseSource(SHAPE, seed=8, **kw) as other:
        assert not np.array_equal(other.draw(), expected[0])


def test_numpy_with_one_thread_is_default_rngs_sequence():
    with NoiseSource(SHAPE, seed=7, generator="numpy", threads=1) as source:
        got = [source.draw() for _ in range(3)]
    rng = np.random.default_rng(7)
    for a in got:
        np.testing.assert_array_equal(a, rng.standard_normal(SHAPE, dtype=np.float32))


@pytest.mark.parametrize("generator,threads", GENERATORS)
def test_a_draw_after_close_is_fresh(generator, threads):
    source = NoiseSource(SHAPE, seed=11, generator=generator, threads=threads)
    first = source.draw()
    source.close()
    again = source.draw()  # new drawing threads: a fresh child seed, never the first values
    source.close()
    assert np.mean(first == again) < 0.01


@pytest.mark.parametrize("kw,match", [
    (dict(generator="torch"), "generator: expected one of"),
    (dict(threads=0), "threads: expected an integer >= 1"),
    (dict(threads=1.5), "threads: expected an integer >= 1"),
])
def test_bad_generator_or_threads(kw, match):
    with pytest.raises(ValueError, match=match):
        NoiseSource(SHAPE, **kw)


def test_draws_are_fresh_and_never_handed_out_twice_across_threads():
    with NoiseSource(SHAPE, seed=1, prefetch=2) as source:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            draws = list(pool.map(lambda _: source.draw(), range(40)))
    firsts = {float(d.flat[0]) for d in draws}
    assert len(firsts) == 40
    assert len({id(d) for d in draws}) == 40


def test_draw_runs_in_the_background_thread_and_close_stops_it():
    source = NoiseSource(SHAPE, seed=0, prefetch=1, threads=2)
    names = {t.name for t in threading.enumerate()}
    assert any(n.startswith("rpdetect-noise") for n in names)
    source.draw()
    source.close()
    assert not any(t.name.startswith("rpdetect-noise") and t.is_alive()
                   for t in threading.enumerate())
    assert source.draw().shape == SHAPE  # still usable: new drawing threads
    source.close()  # idempotent


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_bad_prefetch(bad):
    with pytest.raises(ValueError, match="prefetch: expected an integer >= 0"):
        NoiseSource(SHAPE, prefetch=bad)


def test_prefetching_detector_gives_the_same_results(det_input, tools):
    images = [tools.rgb_image(i) for i in range(3)]
    det = Detector(det_input, seed=5)
    plain = [det.detect(im) for im in images]
    with Detector(det_input, seed=5, prefetch_noise=2) as fast:
        ahead = [fast.detect(im) for im in images]
    for a, b in zip(plain, ahead):
        np.testing.assert_array_equal(a.score1, b.score1)
        np.testing.assert_array_equal(a.score2, b.score2)
        assert a.is_adversarial == b.is_adversarial


def test_prefetch_noise_on_a_graph_noise_detector_warns(det_graph, caplog):
    with caplog.at_level("WARNING", logger="rpdetect.engine"):
        Detector(det_graph, prefetch_noise=1, engine_noise=False).close()
    assert "prefetch_noise=1 is ignored" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="rpdetect.engine"):
        Detector(det_graph, prefetch_noise=1).close()  # the engine's front draws it
    assert "ignored" not in caplog.text
    with pytest.raises(ValueError, match="prefetch_noise: expected an integer >= 0"):
        Detector(det_graph, prefetch_noise=-2)


def test_refill_not_draw_starts_the_next_prefetch():
    # the next draw must start once the caller's run is done (refill), not while it runs
    with NoiseSource(SHAPE, seed=3, prefetch=2, generator="numpy") as source:
        assert len(source._pending) == 2
        source.draw()
        source.draw()
        assert len(source._pending) == 0
        source.draw()  # nothing ready: drawn now, through the worker, in order
        source.refill()
        assert len(source._pending) == 2
        rest = [source.draw() for _ in range(2)]
    rng = np.random.default_rng(3)
    expected = [rng.standard_normal(SHAPE, dtype=np.float32) for _ in range(5)]
    np.testing.assert_array_equal(rest[-1], expected[-1])

