"""Which precision runs the classifier fastest on this CPU through ONNX Runtime (issue 14)?

EfficientNet-Lite0 at the detector's inner batch (11 x 3 x 224 x 224), 2 threads, ONNX Runtime's
CPU provider: the FP32 export, its FP16 conversion (``onnxruntime.transformers.float16``,
float32 inputs and outputs kept), and the INT8 QDQ classifier of ``rpdetect export --quantize
int8`` in its variants (u8 or s8 activations, QDQ or QOperator, 7-bit weights). The models
alternate in rounds in one process. Then an ONNX Runtime profile of the FP32 classifier and of
rpdetect's INT8 one puts their kernel time into depthwise convolutions, the other convolutions
and the rest: where INT8 gains on this CPU and where it cannot. Writes
``benchmarks/results/latency/precision_cpu.md``.

    python benchmarks/precision_cpu.py [--rounds 7] [--profile-runs 10] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
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
from rpdetect.bench.profile import node_times  # noqa: E402
from rpdetect.contract import read_spec  # noqa: E402
from rpdetect.export.graph import extract_classifier, load_onnx  # noqa: E402
from rpdetect.export.quantize import InnerBatchReader, QuantizeOptions, quantize_classifier  # noqa: E402


KERNEL_KINDS = ("depthwise convolutions", "other convolutions", "everything else")
RPDETECT_INT8 = "int8 QDQ u8s8 (rpdetect's: head float32)"


def kernel_kind(node: onnx.NodeProto) -> str:
    """Which of ``KERNEL_KINDS`` a node of an optimised model is: a convolution of any kind
    (Conv, ONNX Runtime's NCHWc Conv, QLinearConv, FusedConv) with ``group`` > 1 is depthwise."""
    if "Conv" not in node.op_type:
        return KERNEL_KINDS[2]
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return KERNEL_KINDS[0] if group > 1 else KERNEL_KINDS[1]


def kernel_ms_by_kind(model: onnx.ModelProto, x: np.ndarray, runs: int,
                      directory: Path) -> dict[str, float]:
    """Median kernel milliseconds per run of ``model`` on ``x`` (2 threads, ONNX Runtime's
    profile), summed by ``kernel_kind`` of the optimised graph's nodes."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = str(directory / "profile")
    so.optimized_model_filepath = str(directory / "profiled.optimized.onnx")
    session = ort.InferenceSession(model.SerializeToString(), so,
                                   providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    for _ in range(runs + 1):  # node_times drops the first (allocating) run
        session.run(None, feed)
    nodes, _ = node_times(json.loads(Path(session.end_profiling()).read_text()))
    kinds = {n.name: kernel_kind(n) for n in onnx.load(
        so.optimized_model_filepath, load_external_data=False).graph.node}
    out = dict.fromkeys(KERNEL_KINDS, 0.0)
    for name, entry in nodes.items():
        out[kinds.get(name, KERNEL_KINDS[2])] += entry["us"] / 1e3
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--runs", type=int, default=8, help="timed runs per model per round")
    p.add_argument("--profile-runs", type=int, default=10,
                   help="profiled runs of FP32 and rpdetect's INT8 classifier (0: no profile)")
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
            RPDETECT_INT8: QuantizeOptions(),
            "int8 QDQ u8s8, head int8 too": QuantizeOptions(float_head=False),
            "int8 QOperator u8s8": QuantizeOptions(quant_format="qoperator"),
            "int8 QDQ s8s8": QuantizeOptions(activation_type="int8"),
            # --quantize-stem float: the layer that reads the image kept float32 too
            "int8 QDQ u8s8, head and stem float32": QuantizeOptions(float_stem=True),
            # --reduce-range: 7-bit weights, which u8s8 kernels without VNNI do not saturate
            "int8 QDQ u8s8, reduce_range": QuantizeOptions(reduce_range=True),
            # the depthwise convolutions, which gain least from INT8 without VNNI, kept float32
            "int8 QDQ u8s8, depthwise convolutions float32": QuantizeOptions(
                nodes_to_exclude=tuple(n.name for n in fp32.graph.node
                                       if kernel_kind(n) == KERNEL_KINDS[0])),
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
    kernels: dict[str, dict[str, float]] = {}
    if args.profile_runs > 0:
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("fp32", RPDETECT_INT8):
                kernels[name] = kernel_ms_by_kind(variants[name], x, args.profile_runs,
                                                  Path(tmp))
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
    if kernels:
        fp, q = kernels["fp32"], kernels[RPDETECT_INT8]
        lines += ["", f"Where the kernel time goes (ONNX Runtime's profile, median of "
                  f"{args.profile_runs} runs per node, summed; ms per run of the batch of "
                  f"{spec.n + 1}):", "",
                  f"| kernels | fp32 ms | {RPDETECT_INT8} ms | int8 / fp32 |", "|---|---|---|---|"]
        for kind in (*KERNEL_KINDS, "total"):
            a = sum(fp.values()) if kind == "total" else fp[kind]
            b = sum(q.values()) if kind == "total" else q[kind]
            lines.append(f"| {kind} | {a:.2f} | {b:.2f} | {b / a:.3f} |" if a else
                         f"| {kind} | {a:.2f} | {b:.2f} | - |")
        # INT8 <= 0.5 x FP32 needs the INT8 kernels within half the FP32 ones; what that leaves
        # the other convolutions with the rest as they are
        room = 0.5 * sum(fp.values()) - q[KERNEL_KINDS[0]] - q[KERNEL_KINDS[2]]
        lines += ["", f"For INT8 kernels within 0.5 of FP32's ({0.5 * sum(fp.values()):.2f} ms) "
                  f"with the depthwise convolutions and the rest as they are, the other "
                  f"convolutions would have to take {room:.2f} ms: "
                  + (f"{fp[KERNEL_KINDS[1]] / room:.2f} x faster than in FP32"
                     if room > 0 else "less than nothing") + "."]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "precision_cpu.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
