"""The paper's three datasets as presets of the one evaluation path (``pipeline.py``): data, not
code. A preset names its tar, its zoo classifier, its kappas, how it splits into calibration and
evaluation images, and the class indices targets are drawn from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..reference import default_kappas
from .datasets import IMAGENETTE_WNID_TO_INDEX

__all__ = ["CIFAR_KAPPAS", "IMAGENETTE_CLASSES", "PAPER_KAPPAS", "PRESETS", "Preset"]

PAPER_KAPPAS = tuple(float(k) for k in default_kappas())
# "30 kappas from 1e-4 to 1e-1": geometric spacing, so that every decade gets ten scales (with
# linspace, 29 of the 30 would lie above 3.4e-3 and the 1e-4 end would be a single point).
CIFAR_KAPPAS = tuple(float(k) for k in np.geomspace(1e-4, 1e-1, 30))
IMAGENETTE_CLASSES = tuple(sorted(IMAGENETTE_WNID_TO_INDEX.values()))


@dataclass(frozen=True)
class Preset:
    """One of the paper's datasets. ``split``: "imagenette" (all images of the tar, a seeded
    permutation; labels from ``IMAGENETTE_WNID_TO_INDEX``) or "heldaside" (the images the zoo
    model never trained on, from its split JSON; labels are positions in its ``CLASSES``).
    ``zoo``: the module in ``rpdetect.zoo`` with build(), MEAN, STD, INPUT_SHAPE (and WEIGHTS,
    SPLIT, CLASSES where it is trained here)."""

    name: str
    tar: str
    zoo: str
    kappas: tuple[float, ...]
    n_calibration: int  # images of the split that calibrate; the rest are evaluated
    split: Literal["imagenette", "heldaside"]
    classes: tuple[int, ...]
    note: str


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("imagenette", "imagenette-train.tar", "efficientnet_lite0", PAPER_KAPPAS, 1000,
           "imagenette", IMAGENETTE_CLASSES,
           "Classifier: ImageNet-pretrained EfficientNet-Lite0 (1000 classes; the paper: VGG-11). "
           "Targets are drawn from the other 9 ImageNette classes."),
    Preset("dogscats", "dogscats-train.tar", "dogscats", PAPER_KAPPAS, 200, "heldaside", (0, 1),
           "Classifier: EfficientNet-Lite0 features + trained linear head (rpdetect.zoo.dogscats)."),
    Preset("cifar10", "cifar10-train.tar", "cifar10_cnn", CIFAR_KAPPAS, 1000, "heldaside",
           tuple(range(10)),
           "Classifier: half-width ResNet-9 trained by benchmarks/train_cifar10.py (the paper: "
           "GoogLeNet). 30 kappas geomspace(1e-4, 1e-1)."),
)}
