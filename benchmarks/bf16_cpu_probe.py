"""Can ONNX Runtime's CPU provider run a bfloat16 classifier at all (issue 14: "if bf16 runs
faster than fp32 on this CPU, offer it")? For each operator an image classifier is made of
(EfficientNet-Lite0's, and a plain CNN's), a one-node model with bfloat16 inputs and output at
the operator's newest opset, and whether an ``InferenceSession`` on the CPU provider opens.
Writes ``benchmarks/results/latency/bf16_cpu_probe.md``.

    python benchmarks/bf16_cpu_probe.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from rpdetect._atomic import atomic_write_text
from rpdetect.bench.machine import cpu_description, machine_info

ROOT = Path(__file__).resolve().parents[1]
OPSET = 22  # Conv and the pools take bfloat16 from opset 22 on

# operator -> input shapes
OPERATORS: dict[str, list[list[int]]] = {
    "Conv": [[1, 3, 8, 8], [4, 3, 3, 3]],
    "MatMul": [[2, 4], [4, 3]],
    "Gemm": [[2, 4], [4, 3]],
    "Add": [[2, 4], [2, 4]],
    "Mul": [[2, 4], [2, 4]],
    "Relu": [[2, 4]],
    "Sigmoid": [[2, 4]],
    "Clip": [[2, 4]],
    "GlobalAveragePool": [[1, 3, 4, 4]],
    "MaxPool": [[1, 3, 4, 4]],
    "Softmax": [[2, 4]],
}
ATTRIBUTES = {"MaxPool": {"kernel_shape": [2, 2]}}


def probe(op: str, shapes: list[list[int]]) -> str:
    """"runs", or ONNX Runtime's first line of refusal."""
    inputs = [helper.make_tensor_value_info(f"x{k}", TensorProto.BFLOAT16, s)
              for k, s in enumerate(shapes)]
    node = helper.make_node(op, [i.name for i in inputs], ["y"], **ATTRIBUTES.get(op, {}))
    graph = helper.make_graph([node], op, inputs,
                              [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    # bfloat16 is a type the operator takes at this opset (ONNX's type check, strict): a refusal
    # below is ONNX Runtime's
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - the refusal is the result
        return str(exc).splitlines()[0].replace("|", "/")
    return "runs"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latency")
    args = p.parse_args(argv)
    m = machine_info()
    rows = [(op, probe(op, shapes)) for op, shapes in OPERATORS.items()]
    text = "\n".join([
        "# bfloat16 on ONNX Runtime's CPU provider", "",
        f"{cpu_description(m)}; onnxruntime {ort.__version__}; "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}; opset {OPSET}; "
        "`python benchmarks/bf16_cpu_probe.py`", "",
        "| operator (bfloat16 in and out) | CPU provider |", "|---|---|",
        *[f"| {op} | {result} |" for op, result in rows], "",
        f"{sum(r == 'runs' for _, r in rows)} of {len(rows)} operators run.", ""])
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "bf16_cpu_probe.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
