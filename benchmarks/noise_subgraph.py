"""Graph-noise generators in isolation: ONNX Runtime's RandomNormalLike against Box-Muller
from one RandomUniformLike, on the noise of one 224x224 detector run ([1, 10, 3, 224, 224]).

    python benchmarks/noise_subgraph.py [--rounds 40] [--threads 2]

Prints min and median ms per run of each subgraph (interleaved runs) and the Box-Muller
sample's mean and std. Used to decide whether the detector graph should switch generators
(benchmarks/results/latency/noise-experiment/README.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

N, SHAPE = 10, [1, 3, 224, 224]


def noise_model(kind: str) -> bytes:
    init = [numpy_helper.from_array(np.array([1], np.int64), "ax")]
    nodes = [helper.make_node("Unsqueeze", ["x", "ax"], ["xu"]),
             helper.make_node("Expand", ["xu", "reps"], ["like"])]
    if kind == "random-normal":
        init.append(numpy_helper.from_array(np.array([1, N, 1, 1, 1], np.int64), "reps"))
        nodes.append(helper.make_node("RandomNormalLike", ["like"], ["eps"], dtype=1))
    else:
        m = (N + 1) // 2
        init += [numpy_helper.from_array(np.array([1, 2 * m, 1, 1, 1], np.int64), "reps"),
                 numpy_helper.from_array(np.array([m, m], np.int64), "halves"),
                 numpy_helper.from_array(np.array(-2.0, np.float32), "m2"),
                 numpy_helper.from_array(np.array(2 * np.pi, np.float32), "tp")]
        nodes += [
            helper.make_node("RandomUniformLike", ["like"], ["u"], dtype=1, low=2.0**-31, high=1.0),
            helper.make_node("Split", ["u", "halves"], ["u1", "u2"], axis=1),
            helper.make_node("Log", ["u1"], ["l"]), helper.make_node("Mul", ["l", "m2"], ["r2"]),
            helper.make_node("Sqrt", ["r2"], ["r"]), helper.make_node("Mul", ["u2", "tp"], ["a"]),
            helper.make_node("Cos", ["a"], ["c"]), helper.make_node("Sin", ["a"], ["s"]),
            helper.make_node("Mul", ["r", "c"], ["e1"]), helper.make_node("Mul", ["r", "s"], ["e2"]),
            helper.make_node("Concat", ["e1", "e2"], ["eps"], axis=1)]
    graph = helper.make_graph(
        nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("eps", TensorProto.FLOAT, [1, N, *SHAPE[1:]])],
        initializer=init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    sessions = {k: ort.InferenceSession(noise_model(k), so, providers=["CPUExecutionProvider"])
                for k in ("random-normal", "box-muller")}
    x = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(args.rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {"x": x})
            times[k].append(time.perf_counter() - t0)
    for k, t in times.items():
        print(f"{k:<14} min {1e3 * min(t):6.1f} ms   median {1e3 * float(np.median(t)):6.1f} ms")
    eps = sessions["box-muller"].run(None, {"x": x})[0]
    print(f"box-muller sample: mean {eps.mean():+.4f}, std {eps.std():.4f}")


if __name__ == "__main__":
    main()
