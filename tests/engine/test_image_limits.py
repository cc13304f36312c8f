"""Issue 11, item 5: image sizes read from the header and refused before decoding; a file-size
cap before reading; and item 9's small ones that belong to the engine."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from rpdetect import Detector
from rpdetect.cli import main
from rpdetect.engine.image_header import DecodeLimits, image_dimensions
from rpdetect.engine.images import read_image
from rpdetect.errors import InputError

SRC = Path(__file__).resolve().parents[2] / "src"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def solid_png(width: int, height: int, *, block: int = 1 << 20) -> bytes:
    """A valid 8-bit RGB PNG of black pixels, made without holding or compressing the whole
    image: after a sync flush a deflate block of zeros only refers back to zeros, so one block
    is repeated; the Adler-32 of n zero bytes is ((n mod 65521) << 16) | 1."""
    total = height * (1 + 3 * width)  # a filter byte (0) and the pixels of each row
    if total <= 2 * block:
        idat = zlib.compress(bytes(total), 9)
    else:
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        first = comp.compress(bytes(block)) + comp.flush(zlib.Z_SYNC_FLUSH)
        mid = comp.compress(bytes(block)) + comp.flush(zlib.Z_SYNC_FLUSH)
        repeats, rest = divmod(total - 2 * block, block)
        last = comp.compress(bytes(rest)) + comp.flush()
        adler = ((total % 65521) << 16) | 1
        idat = b"\x78\xda" + first + mid * (repeats + 1) + last + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def test_solid_png_is_a_real_png():
    image = cv2.imdecode(np.frombuffer(solid_png(1500, 1000), np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.shape == (1000, 1500, 3) and image.max() == 0


@pytest.mark.parametrize("ext, params", [
    (".png", []), (".jpg", []), (".bmp", []), (".tiff", []), (".ppm", []), (".pgm", []),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
])
def test_header_sizes_of_the_common_formats(ext, params):
    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    image = rgb[:, :, 0] if ext == ".pgm" else rgb
    ok, data = cv2.imencode(ext, image, params)
    assert ok
    assert image_dimensions(io.BytesIO(data.tobytes())) == (53, 37)


def test_header_sizes_of_jpeg_with_exif_gif_and_others():
    ok, jpg = cv2.imencode(".jpg", np.zeros((20, 30, 3), np.uint8))
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 5000) + b"Exif\x00" + bytes(4995)
    with_exif = jpg.tobytes()[:2] + app1 + jpg.tobytes()[2:]
    assert image_dimensions(io.BytesIO(with_exif)) == (30, 20)
    gif = b"GIF89a" + struct.pack("<HH", 40000, 30000) + bytes(20)
    assert image_dimensions(io.BytesIO(gif)) == (40000, 30000)
    assert image_dimensions(io.BytesIO(b"hello, not an image")) is None
    assert image_dimensions(io.BytesIO(b"\x89PNG\r\n\x1a\n")) is None  # cut header: OpenCV decides


_MEASURE = textwrap.dedent("""
    import sys, time
    from rpdetect.engine.images import read_image
    from rpdetect.errors import InputError

    def peak_kib():  # VmHWM: this process image's peak RSS (ru_maxrss would count the forker)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    start = time.perf_counter()
    try:
        read_image(sys.argv[1])
        print("decoded")
    except InputError as exc:
        print("refused", time.perf_counter() - start, peak_kib(), exc)
""")


def test_png_bomb_refused_fast_and_small(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(solid_png(32000, 32000))
    assert bomb.stat().st_size < 4_000_000  # a 3 MB file announcing 1,024 megapixels
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(bomb)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120)
    verdict, seconds, max_rss_kib, message = done.stdout.split(" ", 3)
    assert verdict == "refused", done.stdout + done.stderr
    assert float(seconds) < 1.0 and int(max_rss_kib) < 500 * 1024
    assert "32000x32000 = 1024 megapixels, over the limit of 100" in message


def test_pixel_limit_through_the_api_and_the_cli(det_input, tmp_path, capsys):
    big = tmp_path / "big.png"
    big.write_bytes(solid_png(3000, 2000))
    with pytest.raises(InputError, match=r"3000x2000 = 6 megapixels, over the limit of 1"):
        Detector(det_input, max_pixels=1_000_000).detect(str(big))
    assert Detector(det_input, seed=0).detect(str(big)).label >= 0  # default limit: fine
    assert main(["detect", str(det_input), str(big), "--max-megapixels", "1"]) == 1
    assert "--max-megapixels" in capsys.readouterr().err
    assert main(["detect", str(det_input), str(big), "--no-progress"]) == 0
    with pytest.raises(ValueError, match="max_pixels"):
        Detector(det_input, max_pixels=0)


def test_file_size_cap_before_reading(det_input, tmp_path, capsys):
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as fh:
        fh.truncate(3 * 2**30)  # sparse: 3 GB that take no disk
    with pytest.raises(InputError, match=r"3072.0 MiB is over the limit of 256.0 MiB; it was "
                                         r"not read"):
        read_image(huge)
    with pytest.raises(InputError, match="over the limit of 0.5 MiB"):
        read_image(huge, limits=DecodeLimits(max_file_bytes=2**19))
    assert main(["detect", str(det_input), str(huge)]) == 1
    assert "--max-file-mb" in capsys.readouterr().err


def test_seed_must_be_a_non_negative_integer(det_input, det_graph, capsys):
    for path in (det_input, det_graph):  # the same answer whatever the noise mode
        with pytest.raises(ValueError, match=r"seed: expected an integer >= 0 or None, got -5"):
            Detector(path, seed=-5)
    with pytest.raises(SystemExit) as exc:
        main(["detect", str(det_graph), "x.png", "--seed", "-5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--seed: expected an integer >= 0, got '-5'" in err and "ignored" not in err


def test_out_of_range_floats_are_reported_exactly(det_input):
    image = np.full((3, 32, 32), 0.5, np.float32)
    image[0, 0, 0] = np.float32(1 + 1e-7)
    with pytest.raises(InputError, match=r"observed range \[0.5, 1.0000001\]"):
        Detector(det_input).detect(image)
