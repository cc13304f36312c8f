"""Where evaluation images come from: the shared image tars (ImageFolder inside) read member by
member, a user's ImageFolder tree or folder of images, and the fixed splits.

Every image is prepared exactly as ``rpdetect detect`` prepares it: decoded and resized by
``rpdetect.engine.images`` (OpenCV, the ``shorter-crop`` policy: INTER_AREA shrinks,
INTER_LINEAR grows), so evaluation measures what deployment runs. Nothing is unpacked:
:class:`TarImages` decodes members straight from the tar. Every split is a pair of disjoint
tuples, *calibration* (thresholds) and *evaluation* (attacks and the clean half of each table),
and is a pure function of the tar listing and a seed.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from ..engine.images import IMAGE_SUFFIXES, decode_image, find_images, prepare_image
from ..errors import InputError

__all__ = [
    "IMAGENETTE_WNID_TO_INDEX",
    "FolderPool",
    "LabeledImage",
    "Split",
    "TarImages",
    "TarPool",
    "default_data_dir",
    "heldaside_split",
    "image_folder",
    "imagenette_split",
    "unlabelled_folder",
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


class LabeledImage(NamedTuple):
    member: str  # path inside the tar, e.g. "imagenette-train/n01440764/x.JPEG"
    label: int  # the class index the classifier should predict


class Split(NamedTuple):
    calibration: tuple[LabeledImage, ...]
    evaluation: tuple[LabeledImage, ...]


def default_data_dir() -> Path:
    """The folder of the dataset tars: ``$RPDETECT_DATA``, else ``../shared/data`` from the
    working directory (this project's machines keep them there beside the repository)."""
    return Path(os.environ.get("RPDETECT_DATA") or Path.cwd().parent / "shared" / "data")


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
    return _split(_labelled(list_images(tar_path), IMAGENETTE_WNID_TO_INDEX, tar_path),
                  n_calibration, seed)


def heldaside_split(
    split_json: Path, classes: Sequence[str], *, n_calibration: int, seed: int = 0
) -> Split:
    """The images a zoo model never trained on (``held_aside`` in its split JSON), divided into
    calibration and evaluation parts. Labels are positions in ``classes``."""
    if not split_json.is_file():
        raise FileNotFoundError(f"{split_json}: split file not found (it comes with the zoo model)")
    held = json.loads(split_json.read_text())["held_aside"]
    index = {name: i for i, name in enumerate(classes)}
    return _split(_labelled(sorted(held), index, split_json), n_calibration, seed)


def _labelled(members: Sequence[str], index: Mapping[str, int], where: Path
              ) -> list[LabeledImage]:
    """Tar members labelled by their class folder through ``index`` (InputError naming a
    member in a folder ``index`` does not know)."""
    items = []
    for member in members:
        folder = _class_folder(member)
        if folder not in index:
            raise InputError(f"{where}: {member!r} is in class folder {folder!r}, not one of "
                             f"{sorted(index)}")
        items.append(LabeledImage(member, index[folder]))
    return items


class TarImages:
    """Random access to the images of one tar, prepared as the engine prepares files:
    ``read(members) -> [N, C, H, W]`` float32 RGB in [0, 1] of ``input_shape`` (C, H, W)."""

    def __init__(self, tar_path: Path, input_shape: Sequence[int]) -> None:
        self.path = Path(tar_path)
        self.input_shape = tuple(int(v) for v in input_shape)
        self._tar = tarfile.open(self.path)
        self._members = {m.name: m for m in self._tar.getmembers()}

    def __enter__(self) -> "TarImages":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._tar.close()

    def read_one(self, member: str) -> np.ndarray:
        info = self._members.get(member)
        if info is None:
            raise InputError(f"{self.path}: no member {member!r}")
        handle = self._tar.extractfile(info)
        if handle is None:
            raise InputError(f"{self.path}: {member!r} is not a regular file")
        source = f"{self.path}:{member}"
        c, h, w = self.input_shape
        return prepare_image(decode_image(handle.read(), source=source), (h, w), channels=c,
                             source=source)

    def read(self, members: Sequence[str]) -> np.ndarray:
        return np.stack([self.read_one(m) for m in members])


class TarPool:
    """An :class:`~.attacks.ImagePool` over labelled tar members."""

    def __init__(self, tar: TarImages, items: Sequence[LabeledImage]) -> None:
        self.tar = tar
        self.items = tuple(items)
        self.labels = np.array([it.label for it in self.items], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def images(self, positions: Sequence[int]) -> np.ndarray:
        return self.tar.read([self.items[int(p)].member for p in positions])


def image_folder(root: str | Path, class_map: Mapping[str, int] | None = None
                 ) -> tuple[LabeledImage, ...]:
    """The images of an ImageFolder tree ``root/<class>/<...>/<image>``, sorted, labelled by
    their class folder: its name as a class index, or ``class_map[name]``. InputError for a
    missing or empty folder, images outside class folders, and a folder that maps to no index
    (listing the folders and what the map knows)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder (expected an ImageFolder tree "
                         f"<folder>/<class>/<image>)")
    stray = sorted(p.name for p in find_images(root) if p.parent == root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if stray:
        raise InputError(
            f"{root}: {len(stray)} images lie directly in the folder ({', '.join(stray[:3])}"
            f"{', ...' if len(stray) > 3 else ''}): they have no class; put each class's "
            f"images in a subfolder named by its class index (or a name mapped by --class-map)")
    items: list[LabeledImage] = []
    unmapped: list[str] = []
    for folder in folders:
        images = find_images(folder)
        if not images:
            continue
        label = _folder_label(folder.name, class_map)
        if label is None:
            unmapped.append(folder.name)
            continue
        items.extend(LabeledImage(str(p), label) for p in images)
    if unmapped:
        known = (f"--class-map knows {sorted(class_map)[:10]}" if class_map is not None
                 else "without --class-map, class folders must be named by class index (0, 1, "
                      "...)")
        raise InputError(f"{root}: class folder(s) {unmapped[:10]} map to no class index; "
                         f"{known}")
    if not items:
        raise InputError(f"{root}: no images in class folders (found folders "
                         f"{[f.name for f in folders][:10]}); expected <folder>/<class>/<image>")
    return tuple(items)


def _folder_label(name: str, class_map: Mapping[str, int] | None) -> int | None:
    if class_map is not None:
        return class_map.get(name)
    return int(name) if name.isdigit() else None


def unlabelled_folder(root: str | Path) -> tuple[LabeledImage, ...]:
    """The images below ``root`` in any layout (calibration needs clean images, no labels);
    label -1. InputError for a missing or empty folder."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder of calibration images")
    items = tuple(LabeledImage(str(p), -1) for p in find_images(root))
    if not items:
        raise InputError(f"{root}: no images found (PNG, JPEG, BMP, TIFF, WebP, ... below it)")
    return items


class FolderPool:
    """An :class:`~.attacks.ImagePool` over image files, prepared as ``rpdetect detect``
    prepares them (``rpdetect.engine.images.prepare_image``, resize ``shorter-crop``)."""

    def __init__(self, items: Sequence[LabeledImage], input_shape: Sequence[int]) -> None:
        self.items = tuple(items)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.labels = np.array([it.label for it in self.items], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def images(self, positions: Sequence[int]) -> np.ndarray:
        c, h, w = self.input_shape
        return np.stack([prepare_image(self.items[int(p)].member, (h, w), channels=c)
                         for p in positions])
