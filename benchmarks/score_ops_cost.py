"""What the score and verdict ops cost on their own: the detector's post-classifier subgraph
(logits [B*(n+1), K] -> scores, flips, verdict) timed with ONNX Runtime (CPU, 1 thread), for
the K and n of our detectors. Run with rpdetect's source on PYTHONPATH; to compare versions,
run it under each (this is how the flip-count ops were costed).

    python benchmarks/score_ops_cost.py [--k 1000] [--n 10] [--runs 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from rpdetect.export import graph


def subgraph(k: int, n: int) -> onnx.ModelProto:
    bld = graph._Builder(20, set(graph.PUBLIC_NAMES) | {"y"})
    graph._add_scores(bld, 1, n, "y")
    outs = [o for o in graph._outputs(1, n, k)]
    thresholds = [helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
                  for t in ("threshold1", "threshold2", "threshold3")]
    needed = {i for nd in bld.nodes for i in nd.input}
    inputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n + 1, k])]
    inputs += [t for t in thresholds if t.name in needed]
    g = helper.make_graph(bld.nodes, "scores", inputs, outs, initializer=bld.inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--runs", type=int, default=2000)
    a = ap.parse_args()
    model = subgraph(a.k, a.n)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"y": np.random.default_rng(0).standard_normal((a.n + 1, a.k), dtype=np.float32)}
    names = {i.name for i in s.get_inputs()}
    for t in ("threshold1", "threshold2"):
        if t in names:
            feed[t] = np.full((a.n,) if "threshold3" in names else (), np.inf, np.float32)
    if "threshold3" in names:
        feed["threshold3"] = np.array(np.inf, np.float32)
    for _ in range(200):
        s.run(None, feed)
    times = []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        s.run(None, feed)
        times.append(time.perf_counter() - t0)
    print(f"K={a.k} n={a.n}: {len(model.graph.node)} nodes, median {np.median(times) * 1e6:.1f} us, "
          f"p90 {np.percentile(times, 90) * 1e6:.1f} us")


if __name__ == "__main__":
    main()
