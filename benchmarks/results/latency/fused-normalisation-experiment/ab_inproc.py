import time, numpy as np, rpdetect
import rpdetect.engine.detector as dm
# the detector and classifier benchmarks/bench_latency.py caches (run it first); run with fusion.patch applied
from pathlib import Path
C=str(Path(__file__).resolve().parents[4] / "cache" / "bench-latency" / "efficientnet_lite0-224-005bdebd35-")
fused = rpdetect.Detector(C+"detector.onnx")
orig = dm.fuse_normalisation
dm.fuse_normalisation = lambda cut, c: (cut, None)
plain = rpdetect.Detector(C+"detector.onnx")
dm.fuse_normalisation = orig
assert fused._buffer.normalisation is not None and plain._buffer.normalisation is None
img = np.random.default_rng(0).random((3,224,224), dtype=np.float32)
for d in (fused, plain):
    for _ in range(3): d.detect(img)
tf, tp = [], []
for i in range(150):
    pair = [(fused, tf), (plain, tp)] if i % 2 == 0 else [(plain, tp), (fused, tf)]
    for d, t in pair:
        s = time.perf_counter(); d.detect(img); t.append(time.perf_counter() - s)
tf, tp = np.array(tf)*1e3, np.array(tp)*1e3
r = tf / tp
boot = np.median(np.random.default_rng(1).choice(r, (4000, len(r))), axis=1)
print(f"fused {np.median(tf):.2f} ms, unfused {np.median(tp):.2f} ms; paired ratio median {np.median(r):.4f} [90% {np.percentile(boot,5):.4f}, {np.percentile(boot,95):.4f}]; median difference {np.median(tp - tf):.3f} ms")
