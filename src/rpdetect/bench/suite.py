"""One benchmark: a detector file -> its configurations -> timed -> a Report.

The detector variants (graph noise at each B, input noise at B=1) are rebuilt from the
classifier inside the given detector with its own kappas, clip, mean/std, seed and input
format, so every configuration runs the same classifier. Intermediate models live in a
temporary directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnxruntime as ort

from ..contract import read_spec
from ..engine.noise import default_noise_threads, generator_description
from ..export.graph import build_detector, extract_classifier, load_onnx, save_onnx
from .cases import Case, DetectorFiles, SessionSettings, TorchModel, plan_cases
from .machine import machine_info
from .profile import ProfileBreakdown, breakdown
from .providers import DEFAULT_VARIANTS, ProviderVariant, SkippedVariant, plan_variants
from .report import Report, Targets
from .runner import CaseOutcome, InProcessWorker, Timing, WorkerProcess, run_cases

__all__ = ["DEFAULT_BATCHES", "run_benchmark"]

DEFAULT_BATCHES: tuple[int, ...] = (1, 4, 16)


def _profile_pair(detector: Case, floor: Case, *, runs: int, rounds: int, directory: Path,
                  isolate: bool) -> tuple[ProfileBreakdown | None, ProfileBreakdown | None,
                                          str | None]:
    """Profile the detector and the floor in alternating chunks (as the timed rounds do), then
    take per node the median over the chunks' medians."""
    make = WorkerProcess if isolate else InProcessWorker
    channels = [make(detector.name), make(floor.name)]
    chunks: list[list[dict]] = [[], []]
    try:
        for channel, case in zip(channels, (detector, floor)):
            reply = channel.request({"op": "setup", "workload": case.workload.to_dict()})
            if not reply.get("ok"):
                return None, None, f"profile setup of {case.name} failed: {reply.get('error')}"
        per_chunk = max(1, -(-runs // rounds))
        for r in range(rounds):
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                reply = channels[i].request({"op": "profile", "runs": per_chunk,
                                             "dir": str(directory / f"{i}_{r}")})
                if not reply.get("ok"):
                    return None, None, f"profile failed: {reply.get('error')}"
                chunks[i].append(reply)
    finally:
        for channel in channels:
            channel.close()

    def merged(replies: list[dict]) -> ProfileBreakdown:
        nodes: dict[str, dict] = {}
        for reply in replies:
            for name, entry in reply["nodes"].items():
                nodes.setdefault(name, {"op": entry["op"], "us": []})["us"].append(entry["us"])
        medians = {k: {"op": v["op"], "us": float(np.median(v["us"]))} for k, v in nodes.items()}
        run_us = float(np.median([reply["run_us"] for reply in replies]))
        return breakdown(medians, run_us=run_us, runs=per_chunk * len(replies))

    return merged(chunks[0]), merged(chunks[1]), None


def _variants(classifier: Any, info: Any, classifier_path: str, batches: Sequence[int],
              directory: Path, log: Callable[[str], None]) -> DetectorFiles:
    """The graph- and input-noise detectors of ``classifier`` at every B, with ``info``'s
    kappas, clip, mean/std, seed and input format."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, dict[int, str]] = {"graph": {}, "input": {}}
    for b in batches:
        for noise in ("graph", "input"):
            log(f"build {directory.name} detector {noise} noise B={b}")
            det = build_detector(classifier, info.config(noise=noise, batch=b),
                                 input_shape=info.input_shape)
            paths[noise][b] = str(save_onnx(det, directory / f"detector_{noise}_b{b}.onnx"))
    return DetectorFiles(classifier_path, paths["graph"], paths["input"])


def run_benchmark(
    detector: str | Path,
    *,
    classifier: str | Path | None = None,
    torch_model: TorchModel | None = None,
    providers: Sequence[str] = DEFAULT_VARIANTS,
    batches: Sequence[int] = DEFAULT_BATCHES,
    settings: SessionSettings = SessionSettings(),
    timing: Timing = Timing(),
    isolate: bool = True,
    profile_runs: int = 10,
    targets: Targets = Targets(),
    title: str | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    int8_detector: str | Path | None = None,
    floor_twin: bool = False,
) -> Report:
    """Time ``detector`` against its floor (and the naive torch way when ``torch_model`` is
    given) on every provider variant; ``profile_runs=0`` skips the ONNX Runtime profile.
    ``int8_detector``: an INT8 detector of the same classifier (``rpdetect export --quantize
    int8``), timed the same way and compared with the FP32 floor. ``floor_twin``: the floor
    measured twice, in two workers, an A/A check of the measurement's noise."""
    detector = Path(detector)
    if any(not isinstance(b, int) or b < 1 for b in batches):
        raise ValueError(f"batches: expected integers >= 1, got {list(batches)}")
    if settings.threads < 1:
        raise ValueError(f"threads: expected >= 1, got {settings.threads}")
    model = load_onnx(detector)
    info = read_spec(model)
    n = info.n
    inner_classifier = extract_classifier(model)
    variants = plan_variants(providers, available=ort.get_available_providers())
    runnable = [v for v in variants if isinstance(v, ProviderVariant)]
    skipped = [v for v in variants if isinstance(v, SkippedVariant)]
    machine = machine_info()

    with tempfile.TemporaryDirectory(prefix="rpdetect-bench-") as tmp:
        root = Path(tmp)
        if classifier is None:
            classifier_path = str(save_onnx(inner_classifier, root / "classifier.onnx"))
        else:
            classifier_path = str(Path(classifier))
            load_onnx(classifier_path)  # a readable model, or ModelError naming the file
        fp32 = _variants(inner_classifier, info, classifier_path, sorted({1, *batches}),
                         root / "fp32", log)
        int8 = None
        if int8_detector is not None:
            int8_model = load_onnx(int8_detector)
            int8_info = read_spec(int8_model)
            if int8_info.precision != "int8" or int8_info.n != n:
                raise ValueError(f"int8_detector: {int8_detector} is a {int8_info.precision} "
                                 f"detector with {int8_info.n} kappas; expected an int8 one "
                                 f"with {n} (rpdetect export --quantize int8)")
            int8_classifier = extract_classifier(int8_model)
            (root / "int8").mkdir()
            int8 = _variants(int8_classifier, info, str(save_onnx(
                int8_classifier, root / "int8" / "classifier.onnx")), sorted({1, *batches}),
                root / "int8", log)

        plan = dict(fp32=fp32, int8=int8, n=n, kappas=info.kappas, settings=settings,
                    torch_model=torch_model, floor_twin=floor_twin)
        cases = plan_cases(variants=runnable, **plan)
        outcomes = run_cases(cases, timing=timing, isolate=isolate, log=log)
        for v in skipped:  # listed configuration by configuration, with the reason
            placeholder = ProviderVariant(v.name, ("",), ({},))
            outcomes += [CaseOutcome(c, status="skipped", reason=v.reason)
                         for c in plan_cases(variants=[placeholder], **plan)]

        prof, prof_floor, prof_note = None, None, None
        first = next((c for c in cases if c.role == "detector-graph" and c.batch == 1), None)
        floor = next((c for c in cases if c.role == "floor" and first is not None
                      and c.variant == first.variant), None)
        if profile_runs > 0 and first is not None and floor is not None:
            log(f"profile {first.name} and {floor.name}, alternating")
            prof, prof_floor, failure = _profile_pair(
                first, floor, runs=profile_runs, rounds=min(profile_runs, 4),
                directory=root / "profile", isolate=isolate)
            prof_note = failure or f"{first.name}, threads {settings.threads}"

    try:
        machine["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        machine["load_average_at_end"] = None
    torch_info = None if torch_model is None else {
        "spec": torch_model.spec, "weights": torch_model.weights,
        "mean": torch_model.mean, "std": torch_model.std,
        "input_shape": list(torch_model.input_shape)}
    return Report(
        title=title or detector.name,
        machine=machine,
        settings={"session": settings.to_dict(), "timing": timing.to_dict(), "isolate": isolate,
                  "batches": sorted({1, *batches}), "providers_requested": list(providers)},
        model={"detector": str(detector), "classifier": classifier_path if classifier else
               "extracted from the detector",
               "int8_detector": None if int8_detector is None else str(int8_detector), "input_shape": list(info.input_shape), "n": n,
               "kappas": list(info.kappas), "num_classes": info.num_classes,
               "mean": info.mean, "std": info.std, "clip": info.clip,
               "input_format": info.input_format, "classifier_sha256": info.classifier_sha256,
               "torch": torch_info},
        providers=[{"name": v.name, "status": "ok", **v.to_dict()} for v in runnable]
        + [{"name": v.name, "status": "skipped", "reason": v.reason} for v in skipped],
        outcomes=outcomes,
        targets=targets,
        profile=prof,
        profile_floor=prof_floor,
        profile_note=prof_note,
        notes=[
            "detector variants are rebuilt from the classifier inside the detector file with its "
            "kappas, clip, mean/std, seed and input format",
            f"input-noise runs draw the noise as rpdetect.Detector does (NoiseSource, generator "
            f"{generator_description(settings.noise_generator)}, "
            f"{settings.noise_threads or default_noise_threads(n * int(np.prod(info.input_shape)))}"
            f" drawing thread(s)) inside the timed run; the prefetched configuration draws the "
            f"next run's noise on a background thread once a run is done",
            "images/s = B / median; the floor and the torch configurations judge one image per run",
        ],
    )
