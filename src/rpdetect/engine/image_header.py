"""Image size from the file header, read before anything is decoded (issue 11: memory bombs).

A 3 MB PNG can say 32000 x 32000 pixels: decoding it would take 3 GB. ``image_dimensions`` reads
the width and height from the first bytes of PNG, JPEG, BMP, GIF, WebP, TIFF and PNM (PBM, PGM,
PPM) files without decoding, and ``check_limits`` refuses files over ``DecodeLimits`` before
OpenCV sees them. Formats whose header is not parsed here (EXR, HDR, JPEG 2000, AVIF, Sun
raster) are bounded by the file-size cap and OpenCV's own pixel limit only.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import InputError

__all__ = ["DEFAULT_MAX_FILE_BYTES", "DEFAULT_MAX_PIXELS", "DecodeLimits", "check_limits",
           "image_dimensions"]

DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels: 300 MB as 8-bit RGB, 1.2 GB as float32
DEFAULT_MAX_FILE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class DecodeLimits:
    """The largest image file (bytes) and image (width x height pixels) that is decoded."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_file_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")


def _png(fh: BinaryIO) -> tuple[int, int] | None:
    head = fh.read(24)
    if len(head) < 24 or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(fh: BinaryIO) -> tuple[int, int] | None:
    fh.seek(2)
    for _ in range(10_000):  # segments before the frame header (APPn with EXIF, ICC, ...)
        byte = fh.read(1)
        if not byte:
            return None
        if byte != b"\xff":
            continue
        marker = fh.read(1)
        while marker == b"\xff":  # fill bytes
            marker = fh.read(1)
        if not marker:
            return None
        code = marker[0]
        if code in (0x01, 0xD8) or 0xD0 <= code <= 0xD7:  # no length field
            continue
        length_bytes = fh.read(2)
        if len(length_bytes) < 2:
            return None
        (length,) = struct.unpack(">H", length_bytes)
        if code in _SOF:
            body = fh.read(5)
            if len(body) < 5:
                return None
            height, width = struct.unpack(">HH", body[1:5])
            return width, height
        if code == 0xDA or length < 2:  # scan data before any frame header: give up
            return None
        fh.seek(length - 2, 1)
    return None


def _bmp(fh: BinaryIO) -> tuple[int, int] | None:
    head = fh.read(26)
    if len(head) < 22:
        return None
    (size,) = struct.unpack("<I", head[14:18])
    if size == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", head[18:22])
    if len(head) < 26:
        return None
    width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height)


def _gif(fh: BinaryIO) -> tuple[int, int] | None:
    head = fh.read(10)
    return struct.unpack("<HH", head[6:10]) if len(head) == 10 else None


def _webp(fh: BinaryIO) -> tuple[int, int] | None:
    head = fh.read(30)
    if len(head) < 30:
        return None
    kind = head[12:16]
    if kind == b"VP8X":
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _tiff(fh: BinaryIO) -> tuple[int, int] | None:
    head = fh.read(8)
    order = "<" if head[:2] == b"II" else ">"
    if struct.unpack(order + "H", head[2:4])[0] != 42:  # 43: BigTIFF, not parsed
        return None
    (offset,) = struct.unpack(order + "I", head[4:8])
    fh.seek(offset)
    count_bytes = fh.read(2)
    if len(count_bytes) < 2:
        return None
    (count,) = struct.unpack(order + "H", count_bytes)
    found: dict[int, int] = {}
    for _ in range(min(count, 4096)):
        entry = fh.read(12)
        if len(entry) < 12:
            break
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            fmt = "H" if kind == 3 else "I"
            found[tag] = struct.unpack(order + fmt, entry[8:8 + struct.calcsize(fmt)])[0]
    return (found[256], found[257]) if len(found) == 2 else None


def _pnm(fh: BinaryIO) -> tuple[int, int] | None:
    text = fh.read(4096)
    tokens: list[bytes] = []
    for line in text[2:].splitlines():
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 2:
            try:
                return int(tokens[0]), int(tokens[1])
            except ValueError:
                return None
    return None


def image_dimensions(fh: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the header of an open image file, or None when the format is not
    one parsed here or its header cannot be read (OpenCV then decides)."""
    fh.seek(0)
    magic = fh.read(16)
    fh.seek(0)
    if magic.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(fh)
    if magic.startswith(b"\xff\xd8"):
        return _jpeg(fh)
    if magic.startswith(b"BM"):
        return _bmp(fh)
    if magic[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(fh)
    if magic[:4] == b"RIFF" and magic[8:12] == b"WEBP":
        return _webp(fh)
    if magic[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(fh)
    if magic[:1] == b"P" and magic[1:2] in b"123456" and magic[2:3].isspace():
        return _pnm(fh)
    return None


def check_limits(fh: BinaryIO, size: int, source: str, limits: DecodeLimits) -> None:
    """InputError if the file of ``size`` bytes, or the image its header announces, is over
    ``limits``; the message says which option raises the limit."""
    if size > limits.max_file_bytes:
        raise InputError(
            f"{source}: file of {size / 2**20:.1f} MiB is over the limit of "
            f"{limits.max_file_bytes / 2**20:.1f} MiB; it was not read. Raise it with "
            f"max_file_bytes= (CLI: --max-file-mb) if the file is a real image")
    try:
        dims = image_dimensions(fh)
    except (OSError, struct.error, IndexError):
        dims = None  # unreadable header: OpenCV decides and reports
    if dims is None:
        return
    width, height = dims
    if width * height > limits.max_pixels:
        raise InputError(
            f"{source}: the header says {width}x{height} = {width * height / 1e6:.4g} "
            f"megapixels, over the limit of {limits.max_pixels / 1e6:.4g}; it was not decoded "
            f"(it would take {math.ceil(width * height * 3 / 2**20):,} MiB as 8-bit RGB). Raise "
            f"it with max_pixels= (CLI: --max-megapixels) if the image is real")
