#!/usr/bin/env python3
"""Makes a zipped L1C SAFE of SIDE x SIDE px at 10 m from a bench granule (the per-band
GeoTIFFs of make_granule.py) and a real metadata set (`../shared/data/s2-safe-metadata`),
as the ground segment delivers granules: lossless JPEG 2000 bands (GDAL's JP2OpenJPEG,
1024 px codestream tiles) inside `X.SAFE/`, zipped with deflate. `MTD_TL.xml` is patched
to the granule's grid (sizes, ULX/ULY, EPSG), as tests/safe_fixture.rs patches it for the
crop. Used for the zipped-SAFE memory figures in BENCHMARKS.md.

Usage: make_safe.py GRANULE_DIR METADATA_SAFE OUT_ZIP SIDE
"""

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def set_elements(text: str, tag: str, value: str) -> str:
    return re.sub(rf"(<{tag}[^>]*>)[^<]*(</{tag}>)", rf"\g<1>{value}\g<2>", text)


def main() -> int:
    granule, meta, out, side = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    if side % 6:
        sys.exit(f"SIDE {side} is not a multiple of 6")
    with tempfile.TemporaryDirectory() as tmp:
        safe = Path(tmp) / meta.name
        shutil.copytree(meta, safe)
        tl = next((safe / "GRANULE").iterdir()) / "MTD_TL.xml"
        t = tl.read_text()
        for full, f in ((10980, 1), (5490, 2), (1830, 6)):
            t = t.replace(f">{full}<", f">{side // f}<")
        t = set_elements(t, "ULX", "300000")
        t = set_elements(t, "ULY", "6200040")
        t = set_elements(t, "HORIZONTAL_CS_CODE", "EPSG:32633")
        tl.write_text(t)
        mtd = (safe / "MTD_MSIL1C.xml").read_text()
        for rel in re.findall(r"<IMAGE_FILE>\s*([^<]*?)\s*</IMAGE_FILE>", mtd):
            band = rel.rsplit("_", 1)[-1]
            tif = granule / f"{band}.tif"
            if not tif.is_file():
                continue
            dst = safe / f"{rel}.jp2"
            dst.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["gdal_translate", "-q", "-of", "JP2OpenJPEG", "-co", "QUALITY=100",
                            "-co", "REVERSIBLE=YES", "-co", "BLOCKXSIZE=1024",
                            "-co", "BLOCKYSIZE=1024", str(tif), str(dst)], check=True)
        for aux in safe.rglob("*.aux.xml"):
            aux.unlink()
        tmp_zip = out.with_name(out.name + ".tmp")
        with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(safe.rglob("*")):
                z.write(p, p.relative_to(safe.parent).as_posix())
        tmp_zip.rename(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
