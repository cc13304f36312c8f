import time, numpy as np, rpdetect
import rpdetect.engine.detector as dm
# the detector and classifier benchmarks/bench_latency.py caches (run it first); run with fusion.patch applied
from pathlib import Path
C=str(Path(__file__).resolve().parents[4] / "cache" / "bench-latency" / "efficientnet_lite0-224-005bdebd35-")
fused = rpdetect.Detector(C+"detector.onnx")
orig = dm.fuse_normalisation
dm.fuse_normalisation = lambda cut, c: (cut, None)
plain = rpdetect.Detector(C+"detector.onnx")
img = np.random.default_rng(0).random((3,224,224), dtype=np.float32)
res = {"fused": ([], []), "plain": ([], [])}
for i in range(120):
    for name, d in (("fused", fused), ("plain", plain)) if i % 2 == 0 else (("plain", plain), ("fused", fused)):
        s = time.perf_counter(); b = d._buffer.fill([img], [None]); m = time.perf_counter()
        io = d._binding(b); d.session.run_with_iobinding(io); io.copy_outputs_to_cpu(); e = time.perf_counter()
        res[name][0].append((m - s) * 1e3); res[name][1].append((e - m) * 1e3)
for k, (f, r) in res.items():
    print(k, "fill %.3f  run %.3f" % (np.median(f[10:]), np.median(r[10:])))
print("run paired diff plain - fused: %.3f ms" % np.median(np.array(res["plain"][1][10:]) - np.array(res["fused"][1][10:])))
