#!/usr/bin/env python3
"""The usual Python way of super-resolving a Sentinel-2 granule, as DSen2's own driver
does it (Lanaras et al. 2018, `DSen2/testing/supres.py` + `utils/patches.py`), with
the same ONNX models s2edge ships. It is the reference s2edge is timed against
(issue 9, `scripts/bench_vs_python.sh`); it is written to be fast, not weak:

- every band is read whole into RAM (rasterio) and converted to float32;
- the 20 m and 60 m bands are upsampled to 10 m with scipy (`ndimage.zoom`, order 1 =
  bilinear, `grid_mode=True` so pixel areas align as in s2edge, edges replicated);
- the 10 m image is cut into 128 px patches with an 8 px border (2x) and 192 px
  patches with a 12 px border (6x), symmetric padding at the image edges, exactly the
  driver's `get_test_patches`; patches are inferred in batches of 8 with the
  `onnxruntime` package (intra-op threads: `--threads`, default ONNX Runtime's own);
- the patch centres are stitched back (`recompose_images`), de-normalised with the
  manifest's mean/std, and the s2edge product rules are applied vectorised (nodata
  where the low-resolution pixel or a 10 m guide is 0, 65535 on saturated blocks,
  round and clip to uint16 with 0 reserved for nodata);
- `superres.tif` (12 bands at 10 m, s2edge's band order) is written with rasterio:
  tiled 256, ZSTD, horizontal predictor, with internal overviews (average), as s2edge
  writes its COG.

Usage: dsen2_reference.py GRANULE_DIR OUT_TIF [--models DIR] [--threads N]
       [--only 2x|6x] [--no-overviews] [--providers cuda,cpu]
(`--providers`: ONNX Runtime execution providers in order, among `tensorrt`, `cuda` and
`cpu`, as s2edge's `[runtime] providers`; the GPU ones need the `onnxruntime-gpu` wheel.)
Prints `stage=seconds` lines on stderr and one `key=value` summary on stdout.
"""

import argparse
import sys
import time
import tomllib
from pathlib import Path

try:
    import numpy as np
    import onnxruntime as ort
    import rasterio
    from rasterio.enums import Resampling
    from scipy import ndimage
except ImportError as e:  # pragma: no cover - environment check
    sys.exit(f"dsen2_reference.py needs numpy, onnxruntime, rasterio and scipy: {e} "
             "(scripts/setup.sh installs them into .venv)")

PRODUCT = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
FACTOR = {"B01": 6, "B09": 6, "B05": 2, "B06": 2, "B07": 2, "B8A": 2, "B11": 2, "B12": 2}


def latest(models: Path, name: str) -> Path:
    versions = sorted((int(p.name), p) for p in (models / name).iterdir()
                      if p.name.isdigit() and (p / "model.toml").is_file())
    return versions[-1][1]


def get_test_patches(img: np.ndarray, patch: int, border: int) -> tuple[np.ndarray, tuple]:
    """DSen2 `get_test_patches`: symmetric border, patches at a stride of
    patch - 2*border, the image end padded so the patches cover it."""
    c, h, w = img.shape
    step = patch - 2 * border
    ny, nx = -(-h // step), -(-w // step)
    ph, pw = ny * step + 2 * border, nx * step + 2 * border
    padded = np.pad(img, ((0, 0), (border, ph - h - border), (border, pw - w - border)),
                    mode="symmetric")
    out = np.empty((ny * nx, c, patch, patch), dtype=np.float32)
    k = 0
    for y in range(ny):
        for x in range(nx):
            out[k] = padded[:, y * step:y * step + patch, x * step:x * step + patch]
            k += 1
    return out, (ny, nx)


def recompose_images(pred: np.ndarray, border: int, grid: tuple, h: int, w: int) -> np.ndarray:
    """DSen2 `recompose_images`: the centre of every patch, in order."""
    ny, nx = grid
    n, c, p, _ = pred.shape
    step = p - 2 * border
    core = pred[:, :, border:border + step, border:border + step]
    img = core.reshape(ny, nx, c, step, step).transpose(2, 0, 3, 1, 4).reshape(c, ny * step, nx * step)
    return img[:, :h, :w]


PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
             "cpu": "CPUExecutionProvider"}


def run_model(model_dir: Path, bands: dict, h: int, w: int, patch: int, border: int,
              threads: int, batch: int, providers: list, timings: dict, tag: str) -> dict:
    spec = tomllib.loads((model_dir / "model.toml").read_text())
    so = ort.SessionOptions()
    if threads > 0:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), so, providers=providers)
    missing = [p for p in providers if p not in sess.get_providers()]
    if missing:
        sys.exit(f"{model_dir}: ONNX Runtime did not register {missing} (has {sess.get_providers()})")
    mean = np.asarray(spec["normalisation"]["mean"], dtype=np.float32)
    std = np.asarray(spec["normalisation"]["std"], dtype=np.float32)

    t = time.perf_counter()
    inputs = {}
    k = 0
    chans = {}
    for name, inp in spec["inputs"].items():
        planes = []
        for b in inp["bands"]:
            x = bands[b]
            f = FACTOR.get(b, 1)
            if f > 1:
                x = ndimage.zoom(x, f, order=1, mode="nearest", grid_mode=True)[:h, :w]
            planes.append((x - mean[k]) / std[k])
            chans[b] = k
            k += 1
        inputs[name] = np.stack(planes).astype(np.float32, copy=False)
    timings[f"{tag} upsample"] = time.perf_counter() - t

    t = time.perf_counter()
    patches = {n: get_test_patches(v, patch, border) for n, v in inputs.items()}
    del inputs
    grid = next(iter(patches.values()))[1]
    npatch = next(iter(patches.values()))[0].shape[0]
    out_name = next(iter(spec["outputs"]))
    preds = []
    for i in range(0, npatch, batch):
        feed = {n: p[0][i:i + batch] for n, p in patches.items()}
        preds.append(sess.run([out_name], feed)[0])
    pred = np.concatenate(preds)
    del patches, preds
    timings[f"{tag} infer"] = time.perf_counter() - t

    t = time.perf_counter()
    img = recompose_images(pred, border, grid, h, w)
    out = {}
    guides = [bands[b] for b in spec["inputs"]["x10"]["bands"]]
    guide_nodata = np.zeros((h, w), dtype=bool)
    for g in guides:
        guide_nodata |= g == 0
    for c, b in enumerate(spec["outputs"][out_name]["bands"]):
        k = chans[b]
        y = img[c] * std[k] + mean[k]
        y = np.clip(np.rint(y), 1, 65535).astype(np.uint16)
        f = FACTOR[b]
        low = bands[b]
        low_up = np.repeat(np.repeat(low, f, axis=0), f, axis=1)[:h, :w]
        y[low_up == 65535] = 65535
        y[(low_up == 0) | guide_nodata] = 0
        out[b] = y
    timings[f"{tag} stitch"] = time.perf_counter() - t
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("granule", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[2] / "models")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--only", choices=["2x", "6x"])
    ap.add_argument("--no-overviews", action="store_true")
    ap.add_argument("--providers", default="cpu",
                    help="comma-separated, among " + ", ".join(PROVIDERS))
    a = ap.parse_args()
    try:
        providers = [PROVIDERS[p.strip()] for p in a.providers.split(",")]
    except KeyError as e:
        ap.error(f"unknown provider {e}; expected {', '.join(PROVIDERS)}")
    timings = {}
    t0 = time.perf_counter()

    t = time.perf_counter()
    bands = {}
    profile = None
    for b in PRODUCT:
        with rasterio.open(a.granule / f"{b}.tif") as src:
            bands[b] = src.read(1).astype(np.float32)
            if FACTOR.get(b, 1) == 1 and profile is None:
                profile = src.profile
    timings["read"] = time.perf_counter() - t
    h, w = bands["B02"].shape

    sr = {}
    if a.only in (None, "2x"):
        sr.update(run_model(latest(a.models, "dsen2-2x"), bands, h, w, 128, 8,
                            a.threads, a.batch, providers, timings, "2x"))
    if a.only in (None, "6x"):
        sr.update(run_model(latest(a.models, "dsen2-6x"), bands, h, w, 192, 12,
                            a.threads, a.batch, providers, timings, "6x"))

    t = time.perf_counter()
    order = [b for b in PRODUCT if FACTOR.get(b, 1) == 1 or b in sr]
    profile.update(driver="GTiff", count=len(order), dtype="uint16", nodata=0, tiled=True,
                   blockxsize=256, blockysize=256, compress="zstd", zstd_level=3,
                   predictor=2, interleave="band", bigtiff="if_safer")
    with rasterio.open(a.out, "w", **profile) as dst:
        for i, b in enumerate(order, start=1):
            data = sr[b] if b in sr else bands[b].astype(np.uint16)
            dst.write(data, i)
            dst.set_band_description(i, b)
        if not a.no_overviews:
            factors, f = [], 2
            while max(h, w) / f > 256 / 2:
                factors.append(f)
                f *= 2
            dst.build_overviews(factors, Resampling.average)
    timings["write"] = time.perf_counter() - t
    wall = time.perf_counter() - t0
    for k, v in timings.items():
        print(f"  {k:<14} {v:8.2f} s", file=sys.stderr)
    infer = sum(v for k, v in timings.items() if k.endswith("infer"))
    print(f"tool=python wall_s={wall:.2f} infer_s={infer:.2f} px={h}x{w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
