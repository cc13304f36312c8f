"""A preset's evaluation inputs as ``rpdetect evaluate --dataset D --cache C`` opens them, shared
by the INT8 study scripts (``int8_fidelity.py``, ``int8_paired.py``), which read that run's
caches: the classifier, the split's calibration and evaluation pools, the cache folder and the
keyword arguments ``prepare_detector`` is called with."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from rpdetect.evaluation.datasets import TarImages, TarPool
from rpdetect.evaluation.pipeline import _preset_classifier, default_cache_dir, preset_split
from rpdetect.evaluation.presets import PRESETS, Preset


class PresetRun(NamedTuple):
    preset: Preset
    classifier: Any
    calibration: TarPool
    pool: TarPool
    work: Path  # the cache folder of the full (not --quick) run
    common: dict[str, Any]  # prepare_detector's arguments besides precision and quantize


@contextmanager
def open_preset(dataset: str, data: Path, cache: Path | None, *, seed: int = 0
                ) -> Iterator[PresetRun]:
    preset = PRESETS[dataset]
    work = (cache or default_cache_dir()) / preset.name / "full"
    split = preset_split(preset, data / preset.tar, seed)
    classifier = _preset_classifier(preset)
    with TarImages(data / preset.tar, classifier.input_shape) as tar:
        calibration = TarPool(tar, split.calibration)
        common = dict(calibration=calibration, work_dir=work, kappas=preset.kappas, seed=seed,
                      progress=False, classifier_onnx=classifier.onnx(work))
        yield PresetRun(preset, classifier, calibration, TarPool(tar, split.evaluation), work,
                        common)
