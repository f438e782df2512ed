#!/usr/bin/env python3
"""What int8 would buy (issue 9, item 7): quantises the body convolutions of a shipped DSen2
model with ONNX Runtime's static QDQ quantisation (int8 per-channel weights, uint8
activations, percentile calibration on 16 patches of the 33UUB training crop; the in-graph
back-projection layer stays float), then measures, against the float model:
  - speed: one 2-thread session each, the same random input, runs alternating (3 each);
  - quality: Wald protocol on the unseen 33NZA L2A crop (harmonised DN = DN - 1000; every
    band degraded by the model's factor with block means; the low-resolution bands
    bilinearly upsampled as the pipeline does), RMSE and PSNR against the real bands,
    16 px border left out. The same protocol for both, so the difference is the cost.
The quantisation itself is scripts/quantise_int8.py's, which writes the shipped int8 graphs.

Usage: int8_probe.py MODEL_DIR OUT_DIR SIDE [inner]
  inner: keep the first and last body convolutions float as well
"""
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'scripts'))
from quantise_int8 import DATA, GROUPS, STD, quantise as quantise_graph, read, up  # noqa: E402

HELD_OUT = DATA / 'S2A_33NZA_20220706_N0400_L2A'


def down(a, f):
    h, w = a.shape[0] // f * f, a.shape[1] // f * f
    return a[:h, :w].reshape(h // f, f, w // f, f).mean((1, 3))


def quantise(src, dst, inner):
    dst.mkdir(parents=True, exist_ok=True)
    return quantise_graph(src / 'model.onnx', dst / 'model.onnx', inner)


def session(path):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 2
    o.enable_mem_pattern = False
    return ort.InferenceSession(str(path), o, providers=['CPUExecutionProvider'])


def speed(a, b, side):
    s = {'float': session(a), 'int8': session(b)}
    feeds = {i.name: np.random.default_rng(0).random((1, i.shape[1], side, side), np.float32) * 0.5
             for i in s['float'].get_inputs()}
    for k in s:
        s[k].run(None, feeds)
    t = {k: [] for k in s}
    for r in range(3):
        for k in (list(s) if r % 2 == 0 else list(s)[::-1]):
            t0 = time.perf_counter()
            s[k].run(None, feeds)
            t[k].append(time.perf_counter() - t0)
    return t


def quality(a, b, scale):
    names = [i.name for i in session(a).get_inputs()]
    out = {'x20': GROUPS['x20'][0], 'x60': GROUPS['x60'][0]}['x20' if scale == 2 else 'x60']
    # The whole crop (1068² at 10 m), cut to whole 6×6 blocks for the back-projection layer.
    side = read(HELD_OUT, 'B02').shape[0] // scale // 6 * 6
    feeds = {}
    for n in names:
        bands, f = GROUPS[n]
        feeds[n] = (np.stack([up(down(read(HELD_OUT, b, 1000), scale), f, side) for b in bands])
                    [None] / STD).astype(np.float32)
    truth = np.stack([read(HELD_OUT, b, 1000) for b in out])[:, :side, :side]
    m = 16
    truth_max = float(truth[:, m:-m, m:-m].max())
    res = {}
    for k, p in (('float', a), ('int8', b)):
        y = session(p).run(None, feeds)[0][0] * STD
        d = (y - truth[:, :y.shape[1], :y.shape[2]])[:, m:-m, m:-m]
        rmse = float(np.sqrt(np.mean(d ** 2)))
        res[k] = (rmse, 20 * np.log10(truth_max / rmse), y)
    diff = float(np.sqrt(np.mean((res['float'][2] - res['int8'][2]) ** 2)))
    return res, diff


def main():
    src, dst, side = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    inner = len(sys.argv) > 4 and sys.argv[4] == 'inner'
    n = quantise(src, dst, inner)
    scale = 6 if 'x60' in [i.name for i in session(src / 'model.onnx').get_inputs()] else 2
    res, diff = quality(src / 'model.onnx', dst / 'model.onnx', scale)
    t = speed(src / 'model.onnx', dst / 'model.onnx', side)
    print(f'{src} -> {dst}: {n} convolutions int8{" (inner)" if inner else ""}')
    for k in ('float', 'int8'):
        print(f'  {k:5} RMSE {res[k][0]:7.2f} DN  PSNR {res[k][1]:6.2f} dB  '
              f'run {side}² (s): {" ".join(f"{x:.2f}" for x in t[k])}')
    print(f'  cost {res["float"][1] - res["int8"][1]:.2f} dB, int8 against float RMSE {diff:.2f} DN, '
          f'speed-up {min(t["float"]) / min(t["int8"]):.2f}x (best of 3)')


if __name__ == '__main__':
    main()
