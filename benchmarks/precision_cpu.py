"""Which precision runs the classifier fastest on this CPU through ONNX Runtime (issue 14)?

EfficientNet-Lite0 at the detector's inner batch (11 x 3 x 224 x 224), 2 threads, ONNX Runtime's
CPU provider: the FP32 export, its FP16 conversion (``onnxruntime.transformers.float16``,
float32 inputs and outputs kept), and the INT8 QDQ classifier of ``rpdetect export --quantize
int8`` in its variants (u8 or s8 activations, QDQ or QOperator, 7-bit weights). The models
alternate in rounds in one process. Writes ``benchmarks/results/latency/precision_cpu.md``.

    python benchmarks/precision_cpu.py [--rounds 7] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_latency import calibration_images, detector_for, standard_models  # noqa: E402

from rpdetect._atomic import atomic_write_text  # noqa: E402
from rpdetect.bench.machine import cpu_description, machine_info  # noqa: E402
from rpdetect.contract import read_spec  # noqa: E402
from rpdetect.export.graph import extract_classifier, load_onnx  # noqa: E402
from rpdetect.export.quantize import InnerBatchReader, QuantizeOptions, quantize_classifier  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--runs", type=int, default=8, help="timed runs per model per round")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=ROOT / "cache" / "bench-latency")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latency")
    args = p.parse_args(argv)
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = standard_models()["effnet"]
    args.cache.mkdir(parents=True, exist_ok=True)
    detector = load_onnx(detector_for(model, args.cache))
    spec = read_spec(detector)
    fp32 = extract_classifier(detector)
    images, source = calibration_images(model, args.data)
    variants = {"fp32": fp32, "fp16": convert_float_to_float16(fp32, keep_io_types=True)}
    for name, options in {
            "int8 QDQ u8s8 (rpdetect's: head float32)": QuantizeOptions(),
            "int8 QDQ u8s8, head int8 too": QuantizeOptions(float_head=False),
            "int8 QOperator u8s8": QuantizeOptions(quant_format="qoperator"),
            "int8 QDQ s8s8": QuantizeOptions(activation_type="int8"),
            # --quantize-stem float: the layer that reads the image kept float32 too
            "int8 QDQ u8s8, head and stem float32": QuantizeOptions(float_stem=True),
            # --reduce-range: 7-bit weights, which u8s8 kernels without VNNI do not saturate
            "int8 QDQ u8s8, reduce_range": QuantizeOptions(reduce_range=True),
    }.items():
        reader = InnerBatchReader(images, spec, fp32.graph.input[0].name, max_images=32)
        variants[name] = quantize_classifier(fp32, reader, options)
    x = np.random.default_rng(0).random((spec.n + 1, *spec.input_shape), dtype=np.float32)
    sessions, runs_as = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in variants.items():
            path = Path(tmp) / f"{len(sessions)}.onnx"
            onnx.save(m, str(path))
            so = ort.SessionOptions()
            so.intra_op_num_threads = 2
            so.log_severity_level = 3
            so.optimized_model_filepath = str(path.with_suffix(".optimized.onnx"))
            sessions[name] = ort.InferenceSession(str(path), so,
                                                  providers=["CPUExecutionProvider"])
            # what ONNX Runtime runs after its graph optimisation: its operators, counted
            runs_as[name] = Counter(n.op_type for n in onnx.load(
                so.optimized_model_filepath, load_external_data=False).graph.node)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for s in sessions.values():
        s.run(None, {s.get_inputs()[0].name: x})
    for _ in range(args.rounds):
        for name, s in sessions.items():
            feed = {s.get_inputs()[0].name: x}
            for _ in range(args.runs):
                t = time.perf_counter()
                s.run(None, feed)
                times[name].append(time.perf_counter() - t)
    fp32_ms = 1e3 * float(np.median(times["fp32"]))
    command = shlex.join(["python", "benchmarks/precision_cpu.py",
                          *(argv if argv is not None else sys.argv[1:])])
    lines = ["# Classifier precision on the CPU (EfficientNet-Lite0, batch 11, 224x224)", "",
             f"`{command}`, "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}, "
             f"{cpu_description(machine_info())}, 2 threads, onnxruntime "
             f"{ort.__version__}; INT8 ranges from {source} (32 images, with their noisy "
             f"copies). Medians of {args.rounds} x {args.runs} runs, models alternating.", "",
             "| precision | median ms | / fp32 |", "|---|---|---|"]
    for name, ts in times.items():
        ms = 1e3 * float(np.median(ts))
        lines.append(f"| {name} | {ms:.2f} | {ms / fp32_ms:.3f} |")
    lines += ["", "What ONNX Runtime runs for each INT8 variant after its graph optimisation "
              "(operators of the optimised model, counted):", "",
              "| precision | operators |", "|---|---|"]
    for name, ops in runs_as.items():
        if name.startswith("int8"):
            lines.append(f"| {name} | " + ", ".join(f"{op} {k}" for op, k in
                                                     sorted(ops.items())) + " |")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "precision_cpu.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
