import time, numpy as np
from itertools import permutations
import rpdetect
from rpdetect.engine.session import SessionBuilder
from rpdetect.bench.stats import median_interval
D='cache/bench-latency/efficientnet_lite0-224-005bdebd35-detector.onnx'
C='cache/bench-latency/efficientnet_lite0-224-005bdebd35-classifier.onnx'
det = rpdetect.Detector(D, providers='cpu')
det2 = rpdetect.Detector(D, providers='cpu')
buf2 = det2._buffer
orig_fill = buf2.fill
def nofill(images, noises):
    return buf2.array()
orig_fill([det2._pixels(np.random.default_rng(0).random(det.info.input_shape, dtype=np.float32))],[None])
buf2.fill = nofill
img = np.random.default_rng(0).random(det.info.input_shape, dtype=np.float32)
fs = SessionBuilder.cpu(None, config={"session.force_spinning_stop": "1"}).build(C).session
x = np.random.default_rng(1).random((11, *det.info.input_shape), dtype=np.float32)
feed = {fs.get_inputs()[0].name: x}
io = det2._binding(buf2.array())
runs = {'floor': lambda: fs.run(None, feed), 'detect': lambda: det.detect(img),
        'detect_nofill': lambda: det2.detect(img),
        'iobind_only': lambda: (det2.session.run_with_iobinding(io), io.copy_outputs_to_cpu())}
R = {k: [] for k in runs}
orders = list(permutations(runs))
for _ in range(3):
    for f in runs.values(): f()
for i in range(240):
    for k in orders[i % len(orders)]:
        t = time.perf_counter(); runs[k](); R[k].append(time.perf_counter() - t)
fl = np.array(R['floor'])
for k, v in R.items():
    r = np.array(v) / fl; lo, hi = median_interval(r)
    print(f'{k:14s} {1e3*np.median(v):8.2f} ms  ratio {np.median(r):.4f} [{lo:.4f}, {hi:.4f}]')
