#!/usr/bin/env python3
"""Writes the int8 graph of a shipped DSen2 model beside its float one, for
`[runtime] precision = "int8"` (README, "Reduced precision").

ONNX Runtime's static QDQ quantisation: int8 per-channel weights, uint8 activations,
calibrated on 16 patches of 192² px of the 33UUB L1C training crop (the model's own training
scene, so calibration sees no held-out pixel) with ONNX Runtime's percentile method, whose
activation ranges ignore the rare extremes (scored by `s2edge-train variant` on the unseen
33NZA scene: dsen2-2x@5 with --keep-ends lost 0.24 dB with it, 0.37 dB with MinMax or
entropy calibration; all 14 convolutions int8, 0.51 dB). Only the body convolutions (32
feature maps in or out) are quantised; the in-graph back-projection layer stays float.
`--keep-ends` keeps the first and the last body convolution float as well, which costs
less quality and buys less speed (BENCHMARKS.md, "What int8 would buy").

The graph is written to MODEL_DIR/model.int8.onnx. The manifest is not touched: its
`[precision.int8]` section is written by `s2edge-train variant`, which scores both graphs
with the project's own evaluator and records the cost.

Usage: quantise_int8.py MODEL_DIR [--keep-ends] [--calibration percentile|minmax|entropy]
"""
import sys
from pathlib import Path

import numpy as np
import onnx
import rasterio
import scipy.ndimage as nd
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

DATA = Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 's2-crops'
CALIBRATION = DATA / 'S2A_33UUB_20170527_0_L1C'
GROUPS = {'x10': (['B02', 'B03', 'B04', 'B08'], 1),
          'x20': (['B05', 'B06', 'B07', 'B8A', 'B11', 'B12'], 2),
          'x60': (['B01', 'B09'], 6)}
STD = 2000.0
CALIBRATION_METHODS = {'minmax': CalibrationMethod.MinMax,
                       'percentile': CalibrationMethod.Percentile,
                       'entropy': CalibrationMethod.Entropy}


def read(crop, b, offset=0.0):
    """Band `b` of a crop as float32 harmonised DN (DN - offset, clipped at 0)."""
    a = rasterio.open(crop / f'{b}.tif').read(1).astype(np.float32)
    return np.clip(a - offset, 0, None)


def up(a, f, side):
    """Bilinear upsampling by `f`, cut to `side`² (the pipeline's upsampling of 20/60 m)."""
    return nd.zoom(a, f, order=1)[:side, :side] if f > 1 else a[:side, :side]


def quantise(src_onnx, dst_onnx, keep_ends, calibration='percentile'):
    """Quantises `src_onnx` into `dst_onnx`; returns the number of int8 convolutions."""
    m = onnx.load(src_onnx)
    names = [i.name for i in m.graph.input]
    init = {i.name: i for i in m.graph.initializer}
    body = [n.name for n in m.graph.node
            if n.op_type == 'Conv' and 32 in list(init[n.input[1]].dims)]
    if keep_ends:
        body = body[1:-1]
    side = read(CALIBRATION, 'B02').shape[0]
    arrays = {n: np.stack([up(read(CALIBRATION, b), GROUPS[n][1], side)
                           for b in GROUPS[n][0]]) / STD
              for n in names}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = [{n: arrays[n][None, :, r:r + 192, c:c + 192].astype(np.float32).copy()
                           for n in names} for r in range(0, 400, 100) for c in range(0, 400, 100)]

        def get_next(self):
            return self.items.pop() if self.items else None

    dst_onnx = Path(dst_onnx)
    pre = dst_onnx.with_name(dst_onnx.name + '.pre')
    quant_pre_process(str(src_onnx), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(dst_onnx), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, nodes_to_quantize=body,
                    calibrate_method=CALIBRATION_METHODS[calibration])
    pre.unlink()
    return len(body)


def main():
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('model_dir', type=Path)
    p.add_argument('--keep-ends', action='store_true')
    p.add_argument('--calibration', choices=sorted(CALIBRATION_METHODS), default='percentile')
    a = p.parse_args()
    n = quantise(a.model_dir / 'model.onnx', a.model_dir / 'model.int8.onnx', a.keep_ends,
                 a.calibration)
    print(f'{a.model_dir}/model.int8.onnx: {n} convolutions int8 ({a.calibration} calibration)')


if __name__ == '__main__':
    main()
