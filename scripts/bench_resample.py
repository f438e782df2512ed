#!/usr/bin/env python3
"""Reference timings for BENCHMARKS.md "Resampling": the same ×2 upsampling of a 1024²
float32 band as `benches/resample.rs`, done by (a) a vectorised numpy implementation of
the same separable, pixel-area-aligned, edge-replicating kernels (no nodata handling, so
it does strictly less work than s2edge), and (b) GDAL `gdal_translate -r bilinear|cubic
-outsize 200% 200%` on a raw ENVI file (process start and file I/O included).

Usage: .venv/bin/python scripts/bench_resample.py
"""

import os
import shutil
import subprocess
import tempfile
import time

import numpy as np

SIDE = 1024
FACTOR = 2


def band():
    i = np.arange(SIDE * SIDE, dtype=np.int64)
    return (1000.0 + (i * 7919) % 4001).astype(np.float32).reshape(SIDE, SIDE)


def keys(d):
    a = -0.5
    d = np.abs(d)
    return np.where(
        d <= 1,
        ((a + 2) * d - (a + 3)) * d * d + 1,
        np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0),
    )


def taps(n, kernel):
    x = (np.arange(n * FACTOR) + 0.5) / FACTOR - 0.5
    x0 = np.floor(x)
    t = x - x0
    offs = [0, 1] if kernel == "bilinear" else [-1, 0, 1, 2]
    idx = [np.clip(x0 + o, 0, n - 1).astype(np.intp) for o in offs]
    if kernel == "bilinear":
        w = [1 - t, t]
    else:
        w = [keys(t - o) for o in offs]
    return idx, [wk.astype(np.float32) for wk in w]


def upsample(a, kernel):
    xi, xw = taps(a.shape[1], kernel)
    h = sum(a[:, i] * w for i, w in zip(xi, xw))
    yi, yw = taps(a.shape[0], kernel)
    return sum(h[i, :] * w[:, None] for i, w in zip(yi, yw))


def best(f, reps=5):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main():
    a = band()
    mp = (SIDE * FACTOR) ** 2 / 1e6
    for k in ["bilinear", "bicubic"]:
        t = best(lambda: upsample(a, k))
        print(f"numpy {k} x{FACTOR}: {t * 1e3:.1f} ms, {mp / t:.0f} MP/s")
    gdal = shutil.which("gdal_translate")
    if gdal is None:
        print("gdal_translate not found: skipping GDAL")
        return
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "in.bin")
        a.astype("<f4").tofile(src)
        with open(os.path.join(d, "in.hdr"), "w") as f:
            f.write(
                f"ENVI\nsamples = {SIDE}\nlines = {SIDE}\nbands = 1\nheader offset = 0\n"
                "file type = ENVI Standard\ndata type = 4\ninterleave = bsq\nbyte order = 0\n"
            )
        for k, g in [("bilinear", "bilinear"), ("bicubic", "cubic")]:
            dst = os.path.join(d, f"{g}.bin")
            cmd = [gdal, "-q", "-of", "ENVI", "-r", g, "-outsize", "200%", "200%", src, dst]
            t = best(lambda: subprocess.run(cmd, check=True))
            print(f"gdal_translate {k} x{FACTOR}: {t * 1e3:.1f} ms, {mp / t:.0f} MP/s (incl. process + I/O)")


if __name__ == "__main__":
    main()
