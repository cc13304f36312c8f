"""Images in, detector feeds out: decoding (OpenCV), validation and the resize policy.

Input policy (the same for ``Detector.detect`` and ``load_image``):

* **Limits** (``DecodeLimits``, see ``image_header.py``): a file over ``max_file_bytes`` is
  refused before it is read, an image whose header announces more than ``max_pixels`` before
  it is decoded.
* **Files** (``str`` / ``Path``) are decoded with OpenCV (``cv2.imdecode`` with
  ``IMREAD_ANYDEPTH | IMREAD_ANYCOLOR``: EXIF orientation applied, alpha dropped, 16-bit kept).
  8-bit images are scaled by 1/255, 16-bit ones by 1/65535, float ones (TIFF, EXR) are checked
  like float arrays. Other depths (signed or 32-bit integers), empty files, truncated JPEG (no
  end-of-image marker after the last scan) and PNG (no ``IEND`` chunk) files, and files OpenCV
  cannot decode raise InputError naming the file.
* **Integer arrays** are HWC (or HW for grayscale), ``uint8`` (/255) or ``uint16`` (/65535),
  with 1, 3 or 4 channels in ``channel_order`` (default ``"rgb"``; pass ``"bgr"`` for frames
  from OpenCV). Other integer dtypes and bool are rejected (their scale is ambiguous).
* **Float arrays** are CHW (or HW), RGB, any float dtype (cast to float32), values in [0, 1];
  NaN/Inf or values outside [0, 1] raise InputError with the observed range. A float array that
  looks HWC is rejected with the transpose that fixes it.
* **Channels**: grayscale is replicated to 3 channels, an alpha channel is dropped, and RGB is
  turned into luma (ITU-R BT.601, ``cv2.COLOR_RGB2GRAY``) for 1-channel classifiers.
* **Size** (``resize``): ``"shorter-crop"`` (default) scales the image, keeping its aspect
  ratio, until it covers the target, then crops the centre (the shorter side becomes the target
  side for square targets; no extra border as in ImageNet's 256 -> 224); ``"stretch"`` scales
  each axis to the target; ``"none"`` raises InputError unless the size already matches. Images
  already at the target size are never touched. OpenCV's INTER_AREA shrinks, INTER_LINEAR grows.
* Detectors whose graph takes uint8 (``input_format`` "uint8-nhwc-rgb"/"-bgr") receive 8-bit
  RGB/BGR bytes: 16-bit and float images are rounded to 8 bits first.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Literal, Sequence, Union

import cv2
import numpy as np

from ..errors import InputError
from .image_header import DecodeLimits, check_limits

__all__ = [
    "CHANNEL_ORDERS",
    "DecodeLimits",
    "decode_image",
    "IMAGE_SUFFIXES",
    "RESIZE_POLICIES",
    "ChannelOrder",
    "find_images",
    "ImageLike",
    "ResizePolicy",
    "load_image",
    "prepare_image",
    "read_image",
]

ChannelOrder = Literal["rgb", "bgr"]
ResizePolicy = Literal["shorter-crop", "stretch", "none"]
CHANNEL_ORDERS: tuple[str, ...] = ("rgb", "bgr")
RESIZE_POLICIES: tuple[str, ...] = ("shorter-crop", "stretch", "none")
ImageLike = Union[str, Path, np.ndarray]

# What a directory expands to (lower-case suffixes OpenCV decodes).
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".bmp", ".dib", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".webp", ".avif", ".pbm", ".pgm",
    ".ppm", ".pnm", ".pxm", ".sr", ".ras", ".tiff", ".tif", ".exr", ".hdr", ".pic",
)


def find_images(directory: str | Path, *, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The files below ``directory`` whose suffix is in ``suffixes`` (case-insensitive, with or
    without the dot), hidden files and folders skipped, sorted by their path relative to
    ``directory`` (the same order on every machine)."""
    root = Path(directory)
    wanted = {s.lower() if s.startswith(".") else "." + s.lower() for s in suffixes}
    found = [p for p in root.rglob("*")
             if p.suffix.lower() in wanted and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


_DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
_JPEG_SOI = b"\xff\xd8\xff"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_complete(data: bytes, source: str) -> None:
    """Catch truncated JPEG/PNG files, which OpenCV may decode partly (grey lower half)."""
    if data.startswith(_JPEG_SOI):
        # Entropy-coded data stuffs 0xFF with 0x00, so after the last start-of-scan the only
        # FF D9 is the end-of-image marker.
        last_scan = data.rfind(b"\xff\xda")
        if last_scan < 0 or data.rfind(b"\xff\xd9") < last_scan:
            raise InputError(
                f"{source}: truncated JPEG (no end-of-image marker after the last scan); "
                f"the file is incomplete, re-copy or re-download it"
            )
    elif data.startswith(_PNG_SIGNATURE):
        iend = data.rfind(b"IEND")
        if iend < 0 or len(data) < iend + 8:  # 4-byte type + 4-byte CRC
            raise InputError(
                f"{source}: truncated PNG (no IEND chunk at the end); the file is incomplete, "
                f"re-copy or re-download it"
            )


def read_image(path: str | Path, *, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """Decode an image file with OpenCV: HW (grayscale) or HWC RGB, dtype as stored (uint8,
    uint16, float; other depths as stored too), alpha dropped, EXIF orientation applied.
    Files over ``limits`` (file size, then the pixel count in the header) are refused before
    they are read whole or decoded. InputError naming the file."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise InputError(f"{source}: no such file")
    if not path.is_file():
        raise InputError(f"{source}: not a file (directories are expanded by the CLI only)")
    try:
        with path.open("rb") as fh:
            check_limits(fh, os.fstat(fh.fileno()).st_size, source, limits)
            fh.seek(0)
            data = fh.read()
    except OSError as exc:
        raise InputError(f"{source}: cannot read ({exc.strerror or exc})") from exc
    return _decode(data, source)


def decode_image(data: bytes, *, source: str = "image",
                 limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """The bytes of an image file (PNG, JPEG, ... as sent over a network) decoded under the
    same policy and ``limits`` as a file (``read_image``), then made the array this module's
    array policy takes: uint8/uint16 HW or HWC RGB (gray+alpha -> gray), float CHW. InputError
    naming ``source``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"{source}: expected the bytes of an image file, got "
                         f"{type(data).__name__}")
    data = bytes(data)
    check_limits(io.BytesIO(data), len(data), source, limits)
    return _as_array_image(_decode(data, source), source)


def _decode(data: bytes, source: str) -> np.ndarray:
    if not data:
        raise InputError(f"{source}: empty file (0 bytes)")
    _check_complete(data, source)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _DECODE_FLAGS)
    except cv2.error:  # some codecs raise on corrupt data instead of returning None
        image = None
    if image is None or image.size == 0:
        raise InputError(
            f"{source}: not an image OpenCV can decode ({len(data)} bytes, starts with "
            f"{data[:8]!r}); expected PNG, JPEG, BMP, TIFF, WebP, ..."
        )
    if image.ndim == 3 and image.shape[2] >= 3:
        # BGR -> RGB by indexing: cv2.cvtColor refuses depths other than 8U/16U/32F.
        image = np.ascontiguousarray(image[:, :, [2, 1, 0, *range(3, image.shape[2])]])
    return image


def _as_array_image(image: np.ndarray, source: str) -> np.ndarray:
    """A decoded file as the array policy takes it: gray+alpha -> gray, float HWC -> CHW,
    integer depths other than 8/16-bit unsigned refused."""
    if image.ndim == 3 and image.shape[2] == 2:
        image = image[:, :, :1]
    if np.issubdtype(image.dtype, np.floating):  # float TIFF/EXR: checked like float arrays
        return np.ascontiguousarray((image if image.ndim == 3 else image[:, :, None])
                                    .transpose(2, 0, 1))
    if image.dtype not in (np.uint8, np.uint16):
        raise InputError(
            f"{source}: decoded as {image.dtype}; rpdetect reads 8/16-bit unsigned or float "
            f"images (the scale of signed/32-bit integer pixels is ambiguous): convert it"
        )
    return image


def _exact(value: np.floating) -> str:
    """The shortest text that reads back as ``value`` in its own dtype (1 + 1e-7 in float32 is
    "1.0000001", never "1")."""
    if value == 0 or 1e-4 <= abs(value) < 1e6:
        return np.format_float_positional(value, trim="-")
    return np.format_float_scientific(value, trim="-")


def _hwc_from_array(array: np.ndarray, channel_order: str, source: str) -> np.ndarray:
    """Validate a user array and return it as HWC, RGB, alpha dropped, dtype unchanged."""
    dtype = array.dtype
    if dtype in (np.uint8, np.uint16):
        if array.ndim == 2:
            return array[:, :, None]
        if array.ndim != 3:
            raise InputError(
                f"{source}: {dtype} array of rank {array.ndim} {array.shape}; expected one image, "
                f"HWC or HW (use detect_many for a batch)"
            )
        if array.shape[2] not in (1, 3, 4):
            hint = (" (it looks CHW: integer arrays are HWC, pass array.transpose(1, 2, 0))"
                    if array.shape[0] in (1, 3, 4) else "")
            raise InputError(
                f"{source}: {dtype} array of shape {array.shape} has {array.shape[2]} channels on "
                f"its last axis; expected HWC with 1, 3 or 4 channels{hint}"
            )
        hwc = array[:, :, :3]
        if hwc.shape[2] == 3 and channel_order == "bgr":
            hwc = hwc[:, :, ::-1]
        return hwc
    if np.issubdtype(dtype, np.floating):
        if array.ndim == 2:
            chw = array[None]
        elif array.ndim == 3:
            if array.shape[0] not in (1, 3, 4):
                hint = (" (it looks HWC: float arrays are CHW, pass array.transpose(2, 0, 1))"
                        if array.shape[2] in (1, 3, 4) else "")
                raise InputError(
                    f"{source}: float array of shape {array.shape} has {array.shape[0]} channels "
                    f"on its first axis; expected CHW with 1, 3 or 4 channels{hint}"
                )
            chw = array[:3]
        else:
            raise InputError(
                f"{source}: float array of rank {array.ndim} {array.shape}; expected one image, "
                f"CHW or HW (use detect_many for a batch)"
            )
        # min and max see any NaN or Inf (NaN propagates), so the finite check costs no pass
        # of its own on good images
        lo, hi = float(chw.min()), float(chw.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = ~np.isfinite(chw)
            raise InputError(
                f"{source}: {int(bad.sum())} NaN/Inf value(s) (first at index "
                f"{tuple(int(i) for i in np.argwhere(bad)[0])}); images must be finite"
            )
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"{source}: float values must lie in [0, 1], observed range "
                f"[{_exact(chw.min())}, {_exact(chw.max())}]"
                + ("; 0..255 data: pass it as uint8, or divide by 255" if hi > 1.0 and hi <= 255
                   else "")
            )
        # a view: the caller's final CHW copy is then one contiguous copy, not two strided ones
        return chw.astype(np.float32, copy=False).transpose(1, 2, 0)
    raise InputError(
        f"{source}: unsupported dtype {dtype}; pass uint8/uint16 (HWC) or float (CHW, in [0, 1])"
    )


def _fit_channels(hwc: np.ndarray, channels: int, source: str) -> np.ndarray:
    have = hwc.shape[2]
    if have == channels:
        return hwc
    if have == 1 and channels == 3:
        return np.repeat(hwc, 3, axis=2)
    if have == 3 and channels == 1:
        return cv2.cvtColor(np.ascontiguousarray(hwc), cv2.COLOR_RGB2GRAY)[:, :, None]
    raise InputError(f"{source}: {have} channel(s), the detector needs {channels}")


def _resize(hwc: np.ndarray, size: tuple[int, int], policy: str, source: str) -> np.ndarray:
    h, w = hwc.shape[:2]
    th, tw = size
    if (h, w) == (th, tw):
        return hwc
    if policy == "none":
        raise InputError(
            f"{source}: size {h}x{w} (HxW), the detector needs {th}x{tw}; resize it, or use "
            f"resize='shorter-crop' / 'stretch'"
        )
    if policy == "stretch":
        new_h, new_w = th, tw
    else:  # shorter-crop: cover the target keeping the aspect ratio, then crop the centre
        scale = max(th / h, tw / w)
        new_h, new_w = max(th, round(h * scale)), max(tw, round(w * scale))
    interp = cv2.INTER_AREA if new_h * new_w < h * w else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(hwc), (new_w, new_h), interpolation=interp)
    if out.ndim == 2:
        out = out[:, :, None]
    top, left = (new_h - th) // 2, (new_w - tw) // 2
    out = out[top:top + th, left:left + tw]
    if out.dtype == np.float32:  # interpolation is convex, up to float rounding
        out = np.clip(out, 0.0, 1.0)
    return out


def prepare_image(
    image: ImageLike,
    size: tuple[int, int],
    *,
    channels: int = 3,
    channel_order: ChannelOrder = "rgb",
    resize: ResizePolicy = "shorter-crop",
    layout: Literal["float-chw", "uint8-hwc"] = "float-chw",
    source: str | None = None,
    limits: DecodeLimits = DecodeLimits(),
) -> np.ndarray:
    """One image (path or array, see the module doc for the policy) as float32 CHW RGB in
    [0, 1] (``layout="float-chw"``) or uint8 HWC RGB (``layout="uint8-hwc"``) of ``size`` (H, W).
    ``source`` names the image in errors (default: the path, or "array"); ``limits`` bound
    what a file may hold (see ``image_header.py``)."""
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order: expected one of {CHANNEL_ORDERS}, got {channel_order!r}")
    if resize not in RESIZE_POLICIES:
        raise ValueError(f"resize: expected one of {RESIZE_POLICIES}, got {resize!r}")
    if isinstance(image, (str, Path)):
        source = source or str(image)
        hwc = _hwc_from_array(_as_array_image(read_image(image, limits=limits), source), "rgb",
                              source)
    elif isinstance(image, np.ndarray):
        source = source or "array"
        hwc = _hwc_from_array(image, channel_order, source)
    else:
        raise InputError(
            f"{source or 'image'}: expected a file path (str/Path) or a numpy array, got "
            f"{type(image).__name__}"
        )
    if hwc.shape[0] == 0 or hwc.shape[1] == 0:
        raise InputError(f"{source}: empty image of size {hwc.shape[0]}x{hwc.shape[1]}")
    hwc = _resize(_fit_channels(hwc, channels, source), size, resize, source)
    if layout == "uint8-hwc":
        if hwc.dtype == np.uint8:
            return np.ascontiguousarray(hwc)
        if hwc.dtype == np.uint16:
            return np.rint(hwc / 257.0).astype(np.uint8)
        return np.rint(hwc * 255.0).astype(np.uint8)
    if hwc.dtype == np.uint8:
        out = hwc.astype(np.float32) / np.float32(255.0)
    elif hwc.dtype == np.uint16:
        out = hwc.astype(np.float32) / np.float32(65535.0)
    else:
        out = hwc
    chw = np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)
    if isinstance(image, np.ndarray) and np.may_share_memory(chw, image):
        chw = chw.copy()  # never hand back the caller's own array
    return chw


def load_image(
    image: ImageLike,
    size: tuple[int, int],
    *,
    channels: int = 3,
    channel_order: ChannelOrder = "rgb",
    resize: ResizePolicy = "shorter-crop",
) -> np.ndarray:
    """A path or array as float32 CHW RGB in [0, 1] of ``size`` (H, W), under the policy of
    this module's doc (OpenCV decoding, grayscale replicated, alpha dropped, ``resize``)."""
    return prepare_image(image, size, channels=channels, channel_order=channel_order,
                         resize=resize)
