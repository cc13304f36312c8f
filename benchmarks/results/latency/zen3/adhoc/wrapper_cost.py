import time, numpy as np, cProfile, pstats, io
import rpdetect
D='cache/bench-latency/efficientnet_lite0-224-005bdebd35-detector.onnx'
det = rpdetect.Detector(D, providers='cpu')
img = np.random.default_rng(0).random(det.info.input_shape, dtype=np.float32)
buf = det._buffer
buf.fill([det._pixels(img)], [None])
buf.fill = lambda images, noises: buf.array()
io_ = det._binding(buf.array())
def tm(f, k=30):
    ts = []
    for _ in range(k):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return np.array(ts)
# interleave
A=[];B=[]
for i in range(40):
    A.append(tm(lambda: det.detect(img), 1)[0]); B.append(tm(lambda: (det.session.run_with_iobinding(io_), io_.copy_outputs_to_cpu()), 1)[0])
print('detect_nofill - iobind: %.3f ms' % (1e3*(np.median(A)-np.median(B))))
# profile wrapper: replace session run with no-op to see python costs
class FakeSess:
    def __init__(s, real): s.real = real; s.out = None
    def run_with_iobinding(s, io): pass
    def io_binding(s): return s.real.io_binding()
det.session.run_with_iobinding(io_)
outs = io_.copy_outputs_to_cpu()
class FakeIO:
    def copy_outputs_to_cpu(self): return outs
det._binding = lambda b: FakeIO()
real = det.session
det.session = FakeSess(real)
ts = tm(lambda: det.detect(img), 300)
print('detect without session run: %.3f ms' % (1e3*np.median(ts)))
pr = cProfile.Profile(); pr.enable()
for _ in range(300): det.detect(img)
pr.disable(); s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats('tottime').print_stats(14); print(s.getvalue()[:3500])
