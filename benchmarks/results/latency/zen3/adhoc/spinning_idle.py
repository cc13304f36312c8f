import time, numpy as np, resource, os
from rpdetect.engine.session import SessionBuilder
C='cache/bench-latency/efficientnet_lite0-224-005bdebd35-classifier.onnx'
x = np.random.default_rng(1).random((11, 3, 224, 224), dtype=np.float32)
S = {'spin': SessionBuilder.cpu(None, config={"session.force_spinning_stop": "1"}).build(C).session,
     'nospin': SessionBuilder.cpu(None, spinning=False).build(C).session}
R = {k: [] for k in S}; CPU = {k: [] for k in S}
for s in S.values(): s.run(None, {s.get_inputs()[0].name: x})
for i in range(60):
    for k in (('spin','nospin') if i % 2 else ('nospin','spin')):
        s = S[k]; f = {s.get_inputs()[0].name: x}
        c0 = time.process_time(); t = time.perf_counter(); s.run(None, f); w = time.perf_counter() - t; c = time.process_time() - c0
        R[k].append(w); CPU[k].append(c / w)
for k in S:
    print(k, 'wall %.2f ms, cpu/wall %.2f' % (1e3*np.median(R[k]), np.median(CPU[k])))
print('nospin/spin per pair', np.median(np.array(R['nospin'])/np.array(R['spin'])))
