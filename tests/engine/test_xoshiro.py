"""The default noise generator: rpdetect's C extension ``rpdetect.engine._normal`` (16
xoshiro128+ lanes, Box-Muller with Cephes' float32 polynomials), against N(0, 1)'s moments, CDF
and tails, and the graph's Mul-then-Add rounding."""

from __future__ import annotations

import concurrent.futures
import math
import platform
import shutil
import threading

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


@pytest.mark.parametrize("generator", ["xoshiro", "numpy"])
def test_the_first_part_draws_on_the_callers_thread_with_the_same_values(monkeypatch, generator):
    """A threaded source runs its first part on the caller's thread (one thread fewer to wake
    per draw): where a part runs never changes what it draws."""
    from rpdetect.engine import noise

    ran: list[tuple[int, int]] = []  # (part, thread) of every part's call
    fill_scaled, fill = noise._Part.fill_scaled, noise._Part.fill

    def tracked(method):
        def call(self, *args):
            ran.append((id(self), threading.get_ident()))
            return method(self, *args)
        return call

    monkeypatch.setattr(noise._Part, "fill_scaled", tracked(fill_scaled))
    monkeypatch.setattr(noise._Part, "fill", tracked(fill))
    shape = (4, 3, 16, 16)
    base = np.random.default_rng(2).random(shape[1:], dtype=np.float32)
    scales = [0.01, 0.02, 0.05, 0.1]
    here = NoiseSource(shape, seed=9, generator=generator, threads=2)
    threaded = NoiseSource(shape, seed=9, generator=generator, threads=2)
    for part in threaded._parts:
        part.own_thread = True  # every part on a thread of its own, as before
    got, expected = np.empty(shape, np.float32), np.empty(shape, np.float32)
    here.fill_scaled(got, base, scales)
    first, second = (id(p) for p in here._parts)
    assert (first, threading.get_ident()) in ran
    assert not any(part == second and thread == threading.get_ident() for part, thread in ran)
    threaded.fill_scaled(expected, base, scales)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(here.draw(), threaded.draw())
    here.close(), threaded.close()


def test_a_source_shared_by_threads_never_repeats_a_value():
    """Draws and fills from several threads at once, a prefetching thread among them: the
    first part, run on whichever thread calls, is used by one caller at a time."""
    shape = (4, 50_000)
    with NoiseSource(shape, seed=3, prefetch=1, threads=2) as source:
        def work(i: int) -> np.ndarray:
            if i % 2:
                return source.draw()
            out = np.empty(shape, np.float32)
            source.fill(out)
            return out

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            draws = list(pool.map(work, range(24)))
    # each row's first values as its key: a part drawn twice from one state repeats a row
    rows = {row[:4].tobytes() for d in draws for row in d}
    assert len(rows) == 24 * shape[0]
    for d in draws:
        assert abs(float(d.std()) - 1.0) < 0.02


def test_xoshiro_without_its_extension_is_a_clear_error(monkeypatch):
    from rpdetect.engine import noise

    monkeypatch.setattr(noise, "_fast_module", lambda: None)
    assert noise.default_generator() == "opencv"
    with pytest.raises(ValueError, match="C extension"):
        NoiseSource(SHAPE, generator="xoshiro")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or shutil.which("gcc") is None,
                    reason="builds the extension per x86-64 ISA with gcc")
def test_every_isa_build_draws_the_installed_values(tmp_path):
    """The installed module runs the clone for this CPU (AVX-512 or AVX2 or baseline); every
    clone this CPU can run, built alone, must give the very same values: the selects are bit
    operations and ISO C has no FMA contraction, so no ISA rounds differently."""
    from rpdetect.bench.machine import cpu_flags
    from rpdetect.testing import NORMAL_ISAS, build_normal

    flags = cpu_flags()
    runnable = [isa for isa, (_, need) in NORMAL_ISAS.items() if need in flags]
    if "sse2" not in runnable:
        pytest.skip("no x86 flags in /proc/cpuinfo")
    # the installed module says which clone this CPU runs: the best it has, as GCC resolves it
    assert xoshiro.isa() == runnable[-1]
    assert NoiseSource(SHAPE).generator == "xoshiro"
    from rpdetect.engine.noise import generator_description
    assert generator_description() == f"xoshiro ({runnable[-1]})"
    assert generator_description("opencv") == "opencv"
    state = np.random.default_rng(9).integers(1, 2**32, 64, dtype=np.uint64).astype(np.uint32)
    size = 3 * 1024 + 517  # whole blocks and a tail shorter than one
    base = np.random.default_rng(3).random(size, dtype=np.float32)
    expected, expected_scaled = np.empty(size, np.float32), np.empty(size, np.float32)
    xoshiro.fill(state.copy(), expected)
    xoshiro.fill(state.copy(), expected_scaled, base, 0.05)
    for isa in runnable:
        try:
            module = build_normal(isa, tmp_path)
        except RuntimeError as exc:
            pytest.skip(f"cannot build: {exc}")
        got, got_scaled = np.empty(size, np.float32), np.empty(size, np.float32)
        module.fill(state.copy(), got)  # type: ignore[attr-defined]
        module.fill(state.copy(), got_scaled, base, 0.05)  # type: ignore[attr-defined]
        assert module.isa() == isa  # type: ignore[attr-defined]
        np.testing.assert_array_equal(got, expected, err_msg=isa)
        np.testing.assert_array_equal(got_scaled, expected_scaled, err_msg=isa)


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64")
                    is None, reason="needs apt's gcc-aarch64-linux-gnu and qemu-user")
def test_the_aarch64_build_draws_the_same_values(tmp_path):
    """ARM edge CPUs build the plain-C path, vectorised for NEON: it must give the values the
    installed module gives (run under qemu; the Python entry points are left unlinked)."""
    import subprocess
    import sysconfig
    from pathlib import Path

    engine = Path(__file__).resolve().parents[2] / "src" / "rpdetect" / "engine"
    if not (engine / "_normal.c").is_file():
        pytest.skip("no source checkout")
    harness = Path(__file__).with_name("normal_harness.c")
    binary = tmp_path / "normal"
    from rpdetect.testing import NORMAL_CFLAGS

    subprocess.run(["aarch64-linux-gnu-gcc", *NORMAL_CFLAGS, "-static",
                    f"-I{engine}", f"-I{sysconfig.get_paths()['include']}", str(harness), "-o",
                    str(binary), "-Wl,--unresolved-symbols=ignore-all"],
                   check=True, capture_output=True, timeout=120)
    n = 3 * 1024 + 517
    got = np.frombuffer(subprocess.run(["qemu-aarch64", str(binary), str(n)], check=True,
                                       capture_output=True, timeout=120).stdout, np.float32)
    state = ((np.arange(64, dtype=np.uint64) + 1) * 2654435761 % 2**32).astype(np.uint32)
    plain, scaled = np.empty(n, np.float32), np.empty(n, np.float32)
    xoshiro.fill(state, plain)
    xoshiro.fill(state, scaled, (np.arange(n) % 977).astype(np.float32) / np.float32(977), 0.05)
    np.testing.assert_array_equal(got, np.concatenate([plain, scaled]))
