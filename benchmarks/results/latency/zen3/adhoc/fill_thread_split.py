import time, numpy as np, threading
import rpdetect
from rpdetect.engine.session import SessionBuilder
from rpdetect.engine import noise as N
D='cache/bench-latency/efficientnet_lite0-224-005bdebd35-detector.onnx'
C='cache/bench-latency/efficientnet_lite0-224-005bdebd35-classifier.onnx'
det = rpdetect.Detector(D, providers='cpu')
fs = SessionBuilder.cpu(None, config={"session.force_spinning_stop": "1"}).build(C).session
x = np.random.default_rng(1).random((11, *det.info.input_shape), dtype=np.float32)
feed = {fs.get_inputs()[0].name: x}
pix = det._pixels(np.random.default_rng(0).random(det.info.input_shape, dtype=np.float32))
src = det.noise_source
log = []
orig = N._Part.fill_scaled
def timed(self, rows, base, scales):
    t0 = time.perf_counter(); orig(self, rows, base, scales); t1 = time.perf_counter()
    log.append((self.own_thread, t0, t1))
N._Part.fill_scaled = timed
buf = np.zeros((10,3,224,224), np.float32)
R = []
for i in range(60):
    fs.run(None, feed)
    log.clear()
    t = time.perf_counter(); src.fill_scaled(buf, pix, det._buffer.kappas); e = time.perf_counter()
    d = {own: (a - t, b - t) for own, a, b in log}
    R.append((e - t, d[False][0], d[False][1], d[True][0], d[True][1]))
R = 1e3 * np.array(R[5:])
print('total %.3f | caller start %.3f end %.3f | helper start %.3f end %.3f' % tuple(np.median(R, axis=0)))
