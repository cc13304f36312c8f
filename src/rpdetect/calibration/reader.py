"""Where clean calibration images come from, kept outside the calibration itself.

In the spirit of ONNX Runtime's ``CalibrationDataReader``: a reader hands out one item at a time
with ``get_next()``, which returns ``None`` at the end; iterating a reader does the same. An item
is ``(source_name, image)`` where ``image`` is anything ``rpdetect.Detector.detect`` accepts (a
path, or an array). Any object with that protocol, or any iterable, can feed a ``Calibrator``
(see ``as_reader``).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..engine.images import IMAGE_SUFFIXES, find_images
from ..errors import InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ArrayReader",
    "FolderReader",
    "ImageReader",
    "IterableReader",
    "as_reader",
]

# What OpenCV decodes, the same list `rpdetect detect DIR` expands; matched case-insensitively.
IMAGE_EXTENSIONS: tuple[str, ...] = IMAGE_SUFFIXES

Item = tuple[str, Any]


class ImageReader(abc.ABC):
    """A source of clean images: ``get_next()`` gives ``(source_name, image)`` or ``None``."""

    #: Short name of the source (a folder name), recorded in the calibration provenance.
    source: str = "images"
    #: Where it is, for error messages (a folder path); defaults to ``source``.
    location: str = ""

    @abc.abstractmethod
    def get_next(self) -> Item | None:
        """The next ``(source_name, image)``, or ``None`` when there is no more."""

    def __iter__(self) -> Iterator[Item]:
        while (item := self.get_next()) is not None:
            yield item


class FolderReader(ImageReader):
    """Image files under ``directory``: an ImageFolder tree (``class/xxx.png``) or a flat folder.

    Files are found recursively, hidden files and folders skipped, matched by ``extensions``
    (case-insensitive), and sorted by their path relative to ``directory``, so the order is the
    same on every machine. ``shuffle_seed`` shuffles that order deterministically (before
    ``limit`` takes the first images, so a limited run is a random sample, not the first class).
    Items are ``(relative path, absolute path)``: the engine decodes the file, and a file it cannot
    decode is counted by the calibrator as a failure.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        limit: int | None = None,
        shuffle_seed: int | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise InputError(f"{self.directory}: no such folder of calibration images")
        if limit is not None and limit < 1:
            raise ValueError(f"limit: expected a positive number of images, got {limit}")
        files = find_images(self.directory, suffixes=extensions)
        if not files:
            raise InputError(
                f"{self.directory}: no image files found (looked recursively for "
                f"{', '.join(sorted(extensions))}); point --images at a folder of clean images"
            )
        if shuffle_seed is not None:
            order = np.random.default_rng(shuffle_seed).permutation(len(files))
            files = [files[i] for i in order]
        self.files: list[Path] = files[:limit] if limit is not None else files
        self.source = self.directory.resolve().name or str(self.directory)
        self.location = str(self.directory)
        self._next = 0

    def __len__(self) -> int:
        return len(self.files)

    def get_next(self) -> Item | None:
        if self._next >= len(self.files):
            return None
        path = self.files[self._next]
        self._next += 1
        return path.relative_to(self.directory).as_posix(), path

    def rewind(self) -> None:
        self._next = 0


class ArrayReader(ImageReader):
    """Images already in memory: one array ``[N, ...]`` (one image per row) or a list of images.
    Names are ``"<source>[i]"``."""

    def __init__(self, images: np.ndarray | Sequence[Any], *, source: str = "array") -> None:
        if isinstance(images, np.ndarray) and images.ndim < 1:
            raise InputError("ArrayReader: expected an array of images [N, ...], got a scalar")
        self.images = images
        self.source = source
        self._next = 0

    def __len__(self) -> int:
        return len(self.images)

    def get_next(self) -> Item | None:
        if self._next >= len(self.images):
            return None
        i = self._next
        self._next += 1
        return f"{self.source}[{i}]", self.images[i]

    def rewind(self) -> None:
        self._next = 0


class IterableReader(ImageReader):
    """Wrap any iterable of images or of ``(source_name, image)`` pairs (read once, lazily)."""

    def __init__(self, items: Iterable[Any], *, source: str = "iterable") -> None:
        self._it = iter(items)
        self._count = 0
        self.source = source

    def get_next(self) -> Item | None:
        try:
            item = next(self._it)
        except StopIteration:
            return None
        i = self._count
        self._count += 1
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            return item
        return f"{self.source}[{i}]", item


def as_reader(source: ImageReader | str | Path | np.ndarray | Iterable[Any]) -> ImageReader:
    """A reader for ``source``: a reader itself, a folder path, an array of images, or any
    iterable (of images or of ``(name, image)`` pairs)."""
    if isinstance(source, ImageReader):
        return source
    if isinstance(source, (str, Path)):
        return FolderReader(source)
    if isinstance(source, np.ndarray):
        return ArrayReader(source)
    if hasattr(source, "get_next"):  # an ORT-style reader that does not subclass ours
        return IterableReader(_drain(source), source=type(source).__name__)
    return IterableReader(source)


def _drain(reader: Any) -> Iterator[Any]:
    while (item := reader.get_next()) is not None:  # `is`, not ==: items may be arrays
        yield item
