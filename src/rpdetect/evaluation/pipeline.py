"""The three datasets of the paper's Table 1 wired to :func:`.protocol.evaluate`: which zoo model,
which tar, which split, which kappas, which attacks."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..reference import default_kappas
from .attacks import ATTACKS, AttackSpec
from .datasets import (
    LabeledImage,
    Split,
    TarImages,
    default_data_dir,
    heldaside_split,
    imagenette_split,
    resize_exact,
)
from .figures import roc_figure, write_figures
from .protocol import Classifier, EvaluationResult, evaluate
from .report import write_report

__all__ = ["DATASETS", "DatasetSetup", "EvaluationConfig", "TarPool", "repo_root", "run_dataset"]


def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class DatasetSetup:
    name: str
    tar: str
    zoo: str  # module in rpdetect.zoo with build(), MEAN, STD, INPUT_SHAPE
    kappas: tuple[float, ...]
    n_calibration: int  # images of the split that calibrate; the rest are evaluated
    split: Callable[[Path, int, int], Split]  # (tar path, n_calibration, seed) -> Split
    prepare: Callable[[np.ndarray], np.ndarray]  # uint8 RGB HxWx3 -> float32 HxWx3 in [0, 1]
    classes: tuple[int, ...]
    note: str


def _zoo(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"rpdetect.zoo.{name}")


def _heldaside(zoo: str) -> Callable[[Path, int, int], Split]:
    def split(tar: Path, n_calibration: int, seed: int) -> Split:
        module = _zoo(zoo)
        return heldaside_split(module.SPLIT, module.CLASSES, n_calibration=n_calibration,
                               seed=seed)
    return split


def _dogscats_prepare(rgb: np.ndarray) -> np.ndarray:
    return _zoo("dogscats").prepare(rgb)


PAPER_KAPPAS = tuple(float(k) for k in default_kappas())
# "30 kappas from 1e-4 to 1e-1": geometric spacing, so that every decade gets ten scales (with
# linspace, 29 of the 30 would lie above 3.4e-3 and the 1e-4 end would be a single point).
CIFAR_KAPPAS = tuple(float(k) for k in np.geomspace(1e-4, 1e-1, 30))
IMAGENETTE_CLASSES = (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)

DATASETS: dict[str, DatasetSetup] = {
    "imagenette": DatasetSetup(
        "imagenette", "imagenette-train.tar", "efficientnet_lite0", PAPER_KAPPAS, 1000,
        lambda tar, n_cal, seed: imagenette_split(tar, n_calibration=n_cal, seed=seed),
        lambda rgb: resize_exact(rgb, (224, 224)), IMAGENETTE_CLASSES,
        "Classifier: ImageNet-pretrained EfficientNet-Lite0 (1000 classes; the paper: VGG-11). "
        "Targets are drawn from the other 9 ImageNette classes.",
    ),
    "dogscats": DatasetSetup(
        "dogscats", "dogscats-train.tar", "dogscats", PAPER_KAPPAS, 200,
        _heldaside("dogscats"), _dogscats_prepare, (0, 1),
        "Classifier: EfficientNet-Lite0 features + trained linear head (rpdetect.zoo.dogscats).",
    ),
    "cifar10": DatasetSetup(
        "cifar10", "cifar10-train.tar", "cifar10_cnn", CIFAR_KAPPAS, 1000,
        _heldaside("cifar10_cnn"), lambda rgb: resize_exact(rgb, (32, 32)), tuple(range(10)),
        "Classifier: half-width ResNet-9 trained by benchmarks/train_cifar10.py (the paper: "
        "GoogLeNet). 30 kappas geomspace(1e-4, 1e-1).",
    ),
}


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


@dataclass(frozen=True)
class EvaluationConfig:
    dataset: str
    n: int = 100
    attacks: tuple[str, ...] | None = None  # names from attacks.ATTACKS[dataset]; None: all
    cache_dir: Path | None = None  # default <repo>/cache/eval
    out_dir: Path | None = None  # default <repo>/benchmarks/results/<dataset>
    data_dir: Path | None = None  # default <repo>/../shared/data
    calib_limit: int | None = None  # use only the first N calibration images
    quick: bool = False  # a smoke run: n=5, 40 calibration images, few attack steps
    seed: int = 0
    fpr: float = 0.05
    figures: bool = True
    progress: bool = True
    command: str = ""


def select_attacks(dataset: str, names: Sequence[str] | None, *, quick: bool) -> list[AttackSpec]:
    table = ATTACKS[dataset]
    if names:
        known = {s.name: s for s in table}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"--attacks: unknown for {dataset}: {unknown}; known: {list(known)}")
        table = tuple(known[n] for n in names)
    return [s.quick() if quick else s for s in table]


def run_dataset(config: EvaluationConfig) -> tuple[EvaluationResult, list[Path]]:
    """Export, calibrate, attack, detect, and write table.{md,csv,json} and the figures."""
    if config.dataset not in DATASETS:
        raise ValueError(f"--dataset: expected one of {list(DATASETS)}, got {config.dataset!r}")
    setup = DATASETS[config.dataset]
    if config.quick:
        config = dataclasses.replace(config, n=min(config.n, 5),
                                     calib_limit=min(config.calib_limit or 40, 40))
    specs = select_attacks(config.dataset, config.attacks, quick=config.quick)
    cache = (config.cache_dir or repo_root() / "cache" / "eval") / config.dataset
    work = cache / "quick" if config.quick else cache
    out = config.out_dir or (work / "results" if config.quick
                             else repo_root() / "benchmarks" / "results" / config.dataset)
    tar_path = (config.data_dir or default_data_dir()) / setup.tar
    if not tar_path.is_file():
        raise FileNotFoundError(f"{tar_path}: dataset tar not found (pass --data DIR, the folder "
                                f"holding {setup.tar})")
    split = setup.split(tar_path, setup.n_calibration, config.seed)
    zoo = _zoo(setup.zoo)
    weights = getattr(zoo, "WEIGHTS", None)
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: trained weights of rpdetect.zoo.{setup.zoo} not "
                                f"found; evaluating an untrained classifier is meaningless")
    classifier = Classifier(zoo.build(), tuple(zoo.MEAN), tuple(zoo.STD), tuple(zoo.INPUT_SHAPE),
                            setup.classes)
    calibration = split.calibration[: config.calib_limit or None]
    notes = [setup.note, "Adversarial examples are kept as float32 (not re-quantised to 8 bits)."]
    written: list[Path] = []

    def on_row(result: EvaluationResult) -> None:
        written[:] = write_report(result, out, dataset=config.dataset, command=config.command,
                                  specs=specs, notes=notes)
        if config.figures and result.figures is not None:
            written.extend(write_figures(result.figures, out, dataset=config.dataset))
        if config.figures and any(result.roc.values()):
            written.append(roc_figure(result.roc, out / "roc.png",
                                      title=f"{config.dataset}: ROC of each rule family"))

    with TarImages(tar_path, setup.prepare) as tar:
        result = evaluate(
            classifier, calibration=TarPool(tar, calibration), pool=TarPool(tar, split.evaluation),
            attacks=specs, work_dir=work, kappas=setup.kappas, n=config.n, fpr=config.fpr,
            seed=config.seed, figure_images=16 if config.figures else 0,
            progress=config.progress, on_row=on_row)
    return result, written
