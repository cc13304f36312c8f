"""``decode_image``: encoded image bytes (as a server receives them) under the file policy."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rpdetect.engine.images import DecodeLimits, decode_image, prepare_image
from rpdetect.errors import InputError


def _write(path: Path, image: np.ndarray) -> bytes:
    assert cv2.imwrite(str(path), image)
    return path.read_bytes()


@pytest.mark.parametrize("kind", ["rgb8", "rgb16", "gray", "bgra"])
def test_bytes_give_what_the_file_gives(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    images = {
        "rgb8": rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
        "rgb16": rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16),
        "gray": rng.integers(0, 256, (20, 30), dtype=np.uint8),
        "bgra": rng.integers(0, 256, (20, 30, 4), dtype=np.uint8),
    }
    path = tmp_path / f"{kind}.png"
    data = _write(path, images[kind])
    for layout in ("float-chw", "uint8-hwc"):
        from_file = prepare_image(path, (16, 16), layout=layout)
        from_bytes = prepare_image(decode_image(data, source="x"), (16, 16), layout=layout)
        np.testing.assert_array_equal(from_bytes, from_file)


def test_limits_apply_before_decoding(tmp_path: Path) -> None:
    data = _write(tmp_path / "a.png", np.zeros((100, 200, 3), np.uint8))
    with pytest.raises(InputError, match=r"^req\[3\]: the header says 200x100"):
        decode_image(data, source="req[3]", limits=DecodeLimits(max_pixels=10_000))
    with pytest.raises(InputError, match=r"^req\[3\]: file of .* over the limit"):
        decode_image(data, source="req[3]", limits=DecodeLimits(max_file_bytes=len(data) - 1))


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"hello, world", "not an image OpenCV can decode"),
    ("a string", "expected the bytes of an image file, got str"),
])
def test_bad_bytes_name_the_source(data: object, message: str) -> None:
    with pytest.raises(InputError, match=f"^img: .*{message}"):
        decode_image(data, source="img")  # type: ignore[arg-type]


def test_truncated_png(tmp_path: Path) -> None:
    data = _write(tmp_path / "t.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="truncated PNG"):
        decode_image(data[:-10], source="img")
