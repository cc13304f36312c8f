import time, numpy as np
import rpdetect
from rpdetect.engine.session import SessionBuilder
from rpdetect.engine.noise import NoiseSource
D='cache/bench-latency/efficientnet_lite0-224-005bdebd35-detector.onnx'
C='cache/bench-latency/efficientnet_lite0-224-005bdebd35-classifier.onnx'
det = rpdetect.Detector(D, providers='cpu')
img = np.random.default_rng(0).random(det.info.input_shape, dtype=np.float32)
fs = SessionBuilder.cpu(None, config={"session.force_spinning_stop": "1"}).build(C).session
x = np.random.default_rng(1).random((11, *det.info.input_shape), dtype=np.float32)
feed = {fs.get_inputs()[0].name: x}
pix = det._pixels(img)
buf = np.zeros((10,3,224,224), np.float32)
big = np.zeros(64<<20, np.uint8)
S = {1: NoiseSource((10,3,224,224), threads=1), 2: NoiseSource((10,3,224,224), threads=2)}
k = det._buffer.kappas
R = {}
for i in range(40):
    for th, s in S.items():
        fs.run(None, feed)
        t=time.perf_counter(); s.fill_scaled(buf, pix, k); R.setdefault(f'after run t{th}', []).append(time.perf_counter()-t)
        t=time.perf_counter(); s.fill_scaled(buf, pix, k); R.setdefault(f'warm t{th}', []).append(time.perf_counter()-t)
        big += 1
        t=time.perf_counter(); s.fill_scaled(buf, pix, k); R.setdefault(f'after 64MB touch t{th}', []).append(time.perf_counter()-t)
        time.sleep(0.05)
        t=time.perf_counter(); s.fill_scaled(buf, pix, k); R.setdefault(f'after 50ms sleep t{th}', []).append(time.perf_counter()-t)
for key, v in R.items(): print(f'{key:26s} {1e3*np.median(v[3:]):.3f} ms')
