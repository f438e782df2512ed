//! Times the decoding of one band file, for `scripts/bench_decode.sh`.
//!
//! `decode_band [--reps N] FILE...`: for each file, reads it from disk and decodes it to
//! `u16` N times (default 1), then prints one line
//! `file=… decoder=… width=… height=… best_s=… runs_s=…`.
//!
//! `decode_band --check RAW FILE.jp2`: decodes once and compares the pixels with a raw
//! little-endian uint16 file (e.g. `opj_decompress` output); exits 1 when they differ.
//!
//! `.jp2` files go through the project's decoder ([`s2edge::granule::jp2::decode_u16`],
//! OpenJPEG via `jpeg2k`); `.tif` files through the `tiff` crate's decoder directly (the
//! project's GeoTIFF reader wraps the same crate), for comparison. The timing includes
//! reading the file (from the page cache after the first run) and excludes writing the
//! pixels anywhere.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};

/// Decodes a `.jp2` and compares it with a raw little-endian uint16 file.
fn check(raw: &Path, path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let r = s2edge::granule::jp2::decode_u16(&bytes, path)?;
    let want = std::fs::read(raw).with_context(|| raw.display().to_string())?;
    let same = want.len() == r.data.len() * 2
        && want
            .chunks_exact(2)
            .zip(&r.data)
            .all(|(w, v)| u16::from_le_bytes([w[0], w[1]]) == *v);
    if !same {
        bail!(
            "{} decodes differently from {}",
            path.display(),
            raw.display()
        );
    }
    println!("identical: {} == {}", path.display(), raw.display());
    Ok(())
}

fn decode(path: &Path) -> anyhow::Result<(usize, usize)> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    if ext.eq_ignore_ascii_case("jp2") {
        let r = s2edge::granule::jp2::decode_u16(&bytes, path)?;
        return Ok((r.width, r.height));
    }
    let mut dec = tiff::decoder::Decoder::new(std::io::Cursor::new(bytes))?
        .with_limits(tiff::decoder::Limits::unlimited());
    let (w, h) = dec.dimensions()?;
    match dec.read_image()? {
        tiff::decoder::DecodingResult::U16(v) if v.len() == w as usize * h as usize => {
            Ok((w as usize, h as usize))
        }
        _ => bail!("{}: not a single-band uint16 TIFF", path.display()),
    }
}

fn main() -> anyhow::Result<()> {
    let mut reps = 1usize;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--check" {
            let raw = args.next().context("--check needs a raw file")?;
            let jp2 = args.next().context("--check needs a .jp2 file")?;
            return check(Path::new(&raw), Path::new(&jp2));
        } else if a == "--reps" {
            reps = args.next().context("--reps needs a number")?.parse()?;
        } else {
            files.push(a);
        }
    }
    if files.is_empty() {
        bail!("usage: decode_band [--reps N] FILE...");
    }
    for f in files {
        let path = Path::new(&f);
        let mut runs = Vec::new();
        let mut size = (0, 0);
        for _ in 0..reps.max(1) {
            let t = Instant::now();
            size = decode(path)?;
            runs.push(t.elapsed().as_secs_f64());
        }
        let best = runs.iter().copied().fold(f64::INFINITY, f64::min);
        let decoder = if f.to_ascii_lowercase().ends_with(".jp2") {
            "s2edge-jp2"
        } else {
            "tiff-crate"
        };
        let runs: Vec<String> = runs.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "file={f} decoder={decoder} width={} height={} best_s={best:.3} runs_s={}",
            size.0,
            size.1,
            runs.join(",")
        );
    }
    Ok(())
}
