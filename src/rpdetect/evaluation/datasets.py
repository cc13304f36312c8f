"""The shared image tars (ImageFolder inside) read member by member, and the fixed splits.

Nothing is unpacked: :class:`TarImages` decodes members straight from the tar with OpenCV.
Every split is a pair of disjoint tuples, *calibration* (thresholds) and *evaluation* (attacks
and the clean half of each table), and is a pure function of the tar listing and a seed.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ..errors import InputError

__all__ = [
    "IMAGENETTE_WNID_TO_INDEX",
    "LabeledImage",
    "Split",
    "TarImages",
    "default_data_dir",
    "heldaside_split",
    "imagenette_split",
    "resize_exact",
]

# ImageNette WordNet id -> ImageNet-1k class index (table in ../shared/data/README.md).
IMAGENETTE_WNID_TO_INDEX: dict[str, int] = {
    "n01440764": 0,
    "n02102040": 217,
    "n02979186": 482,
    "n03000684": 491,
    "n03028079": 497,
    "n03394916": 566,
    "n03417042": 569,
    "n03425413": 571,
    "n03445777": 574,
    "n03888257": 701,
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class LabeledImage(NamedTuple):
    member: str  # path inside the tar, e.g. "imagenette-train/n01440764/x.JPEG"
    label: int  # the class index the classifier should predict


class Split(NamedTuple):
    calibration: tuple[LabeledImage, ...]
    evaluation: tuple[LabeledImage, ...]


def default_data_dir() -> Path:
    """``<repo>/../shared/data`` (the repo root is three levels above this package folder)."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _class_folder(member: str) -> str:
    parts = member.split("/")
    if len(parts) < 3:
        raise InputError(f"tar member {member!r}: expected <set>/<class>/<file> (ImageFolder)")
    return parts[-2]


def list_images(tar_path: Path) -> list[str]:
    """Sorted image members of an ImageFolder tar."""
    if not tar_path.is_file():
        raise FileNotFoundError(
            f"{tar_path}: dataset tar not found (expected in ../shared/data; pass --data DIR)"
        )
    with tarfile.open(tar_path) as tar:
        return sorted(
            m.name for m in tar.getmembers()
            if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES)
        )


def _split(items: Sequence[LabeledImage], n_calibration: int, seed: int) -> Split:
    if not 0 < n_calibration < len(items):
        raise ValueError(
            f"n_calibration: expected 1..{len(items) - 1} (of {len(items)} images), "
            f"got {n_calibration}"
        )
    order = np.random.default_rng(seed).permutation(len(items))
    calibration = tuple(items[i] for i in sorted(order[:n_calibration]))
    evaluation = tuple(items[i] for i in order[n_calibration:])  # shuffled: attack order
    return Split(calibration, evaluation)


def imagenette_split(tar_path: Path, *, n_calibration: int = 1000, seed: int = 0) -> Split:
    """All 5,000 ImageNette images, seeded permutation: the first ``n_calibration`` calibrate,
    the rest (in permuted order) are evaluated. Labels are ImageNet-1k indices."""
    items = []
    for member in list_images(tar_path):
        wnid = _class_folder(member)
        if wnid not in IMAGENETTE_WNID_TO_INDEX:
            raise InputError(f"{tar_path}: {member!r} is in unknown class folder {wnid!r}")
        items.append(LabeledImage(member, IMAGENETTE_WNID_TO_INDEX[wnid]))
    return _split(items, n_calibration, seed)


def heldaside_split(
    split_json: Path, classes: Sequence[str], *, n_calibration: int, seed: int = 0
) -> Split:
    """The images a zoo model never trained on (``held_aside`` in its split JSON), divided into
    calibration and evaluation parts. Labels are positions in ``classes``."""
    if not split_json.is_file():
        raise FileNotFoundError(f"{split_json}: split file not found (it comes with the zoo model)")
    held = json.loads(split_json.read_text())["held_aside"]
    index = {name: i for i, name in enumerate(classes)}
    items = []
    for member in sorted(held):
        folder = _class_folder(member)
        if folder not in index:
            raise InputError(f"{split_json}: {member!r} is in class {folder!r}, not in {classes}")
        items.append(LabeledImage(member, index[folder]))
    return _split(items, n_calibration, seed)


def resize_exact(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB HxWx3 -> float32 HxWx3 in [0, 1], resized (INTER_AREA) only if not already
    ``size`` (H, W)."""
    import cv2

    h, w = size
    if rgb.shape[:2] != (h, w):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return rgb.astype(np.float32) / 255.0


Prepare = Callable[[np.ndarray], np.ndarray]  # uint8 RGB HxWx3 -> float32 HxWx3 in [0, 1]


class TarImages:
    """Random access to the images of one tar: ``read(members) -> [N, 3, H, W]`` float32 RGB."""

    def __init__(self, tar_path: Path, prepare: Prepare) -> None:
        self.path = Path(tar_path)
        self.prepare = prepare
        self._tar = tarfile.open(self.path)
        self._members = {m.name: m for m in self._tar.getmembers()}

    def __enter__(self) -> "TarImages":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._tar.close()

    def read_one(self, member: str) -> np.ndarray:
        import cv2

        info = self._members.get(member)
        if info is None:
            raise InputError(f"{self.path}: no member {member!r}")
        handle = self._tar.extractfile(info)
        if handle is None:
            raise InputError(f"{self.path}: {member!r} is not a regular file")
        bgr = cv2.imdecode(np.frombuffer(handle.read(), dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{self.path}: cannot decode {member!r}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return np.ascontiguousarray(self.prepare(rgb).transpose(2, 0, 1), dtype=np.float32)

    def read(self, members: Sequence[str]) -> np.ndarray:
        return np.stack([self.read_one(m) for m in members])
