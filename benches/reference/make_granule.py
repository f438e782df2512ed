#!/usr/bin/env python3
"""Makes a per-band GeoTIFF granule of SIDE x SIDE px at 10 m (SIDE a multiple of 6) by
tiling the real crop's bands (600^2 / 300^2 / 100^2 at 10 / 20 / 60 m) and cutting them,
written with rasterio as tiled DEFLATE GeoTIFFs with predictor 2 (as the public COG
buckets ship bands), georeferenced on the crop's grid. Used by
scripts/bench_vs_python.sh (granules of 1, 4, 16 and 121 blocks of 1098^2).

Usage: make_granule.py CROP_DIR OUT_DIR SIDE
"""

import sys
from pathlib import Path

import numpy as np
import rasterio


def main() -> int:
    crop, out, side = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    if side % 6:
        sys.exit(f"SIDE {side} is not a multiple of 6")
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for tif in sorted(crop.glob("B*.tif")):
        with rasterio.open(tif) as src:
            a = src.read(1)
            profile = src.profile
        f = 600 // a.shape[0]
        n = side // f
        reps = -(-n // a.shape[0])
        big = np.tile(a, (reps, reps))[:n, :n]
        profile.update(driver="GTiff", width=n, height=n, count=1, dtype="uint16",
                       tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                       predictor=2, bigtiff="if_safer")
        with rasterio.open(tmp / tif.name, "w", **profile) as dst:
            dst.write(big, 1)
    tmp.rename(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
