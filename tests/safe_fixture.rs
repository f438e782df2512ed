//! Builds SAFE-shaped fixtures with real pixels: a real metadata set from
//! `../shared/data/s2-safe-metadata` with its `MTD_TL.xml` patched to the geometry of the
//! real crop `../shared/data/s2-crops/S2A_33UUB_20170527_0_L1C` (600/300/100 px, upper
//! left 300000/6200040, EPSG:32633), and the crop's bands encoded losslessly to
//! JPEG 2000 by GDAL (`JP2OpenJPEG`, `REVERSIBLE=YES`) at the `IMAGE_FILE` paths.
//! L2A fixtures also get SCL, `MSK_CLASSI` (3 components) and `MSK_CLDPRB` masks with
//! known patterns, encoded by `opj_compress` from PGM/PPM.
//!
//! Builders return `None` (after a printed SKIP) when the shared data or a tool is absent.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util;

/// The L1C metadata set used for L1C fixtures (baseline 03.01, no offsets).
pub const L1C_SET: &str = "S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248.SAFE";
/// The L2A metadata set used for L2A fixtures (baseline 05.09, BOA_ADD_OFFSET −1000,
/// lists MSK_CLASSI and MSK_CLDPRB as `.jp2`).
pub const L2A_SET: &str = "S2A_MSIL2A_20230625T234621_N0509_R073_T01WCP_20230626T022157.SAFE";

/// The crop's nominal georeference.
pub const CROP_ULX: f64 = 300000.0;
pub const CROP_ULY: f64 = 6200040.0;
pub const CROP_EPSG: u32 = 32633;

/// A built fixture; the temporary directory lives as long as it does.
pub struct SafeFixture {
    pub dir: tempfile::TempDir,
    /// The `X.SAFE` directory.
    pub safe: PathBuf,
    /// The crop folder the bands came from.
    pub crop: PathBuf,
}

/// The crop folder, or `None` with a SKIP message.
pub fn crop_dir(test: &str) -> Option<PathBuf> {
    Some(util::shared_data(test)?.join("s2-crops/S2A_33UUB_20170527_0_L1C"))
}

/// A real metadata set, or `None` with a SKIP message.
pub fn metadata_set(name: &str, test: &str) -> Option<PathBuf> {
    Some(util::shared_data(test)?.join("s2-safe-metadata").join(name))
}

/// Decodes a single-band uint16 TIFF with the `tiff` crate: (width, height, samples).
pub fn read_tiff_u16(path: &Path) -> (usize, usize, Vec<u16>) {
    let f = fs::File::open(path).unwrap();
    let mut dec = tiff::decoder::Decoder::new(std::io::BufReader::new(f)).unwrap();
    let (w, h) = dec.dimensions().unwrap();
    match dec.read_image().unwrap() {
        tiff::decoder::DecodingResult::U16(v) => (w as usize, h as usize, v),
        _ => panic!("{} is not uint16", path.display()),
    }
}

fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap();
            // The shared data is read-only; the copies must be writable to patch them.
            let mut perm = fs::metadata(&to).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            fs::set_permissions(&to, perm).unwrap();
        }
    }
}

/// Replaces the text of every `<tag>…</tag>` element with `value`.
pub fn set_elements(text: &str, tag: &str, value: &str) -> String {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(&open) {
        let start = i + open.len();
        let end = start + rest[start..].find(&close).unwrap();
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `MTD_TL.xml` patched to the crop's geometry.
fn patch_tile_metadata(text: &str) -> String {
    let mut t = text
        .replace(">10980<", ">600<")
        .replace(">5490<", ">300<")
        .replace(">1830<", ">100<");
    t = set_elements(&t, "ULX", "300000");
    t = set_elements(&t, "ULY", "6200040");
    set_elements(&t, "HORIZONTAL_CS_CODE", "EPSG:32633")
}

/// The `IMAGE_FILE` entries of a product metadata file.
pub fn image_files(mtd: &str) -> Vec<String> {
    mtd.split("<IMAGE_FILE>")
        .skip(1)
        .map(|s| s[..s.find("</IMAGE_FILE>").unwrap()].trim().to_string())
        .collect()
}

/// Encodes a GeoTIFF band losslessly to JPEG 2000 with GDAL.
pub fn encode_jp2(gdal_translate: &Path, src: &Path, dst: &Path) {
    encode_jp2_with(gdal_translate, src, dst, &[]);
}

/// [`encode_jp2`] with further creation options, e.g. `["-co", "BLOCKXSIZE=64"]`.
pub fn encode_jp2_with(gdal_translate: &Path, src: &Path, dst: &Path, extra: &[&str]) {
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    let out = Command::new(gdal_translate)
        .args([
            "-q",
            "-of",
            "JP2OpenJPEG",
            "-co",
            "QUALITY=100",
            "-co",
            "REVERSIBLE=YES",
        ])
        .args(extra)
        .arg(src)
        .arg(dst)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gdal_translate {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Encodes 8-bit components (1 = PGM, 3 = PPM) of `w`x`h` losslessly with opj_compress.
pub fn encode_u8_jp2(opj_compress: &Path, w: usize, h: usize, comps: &[Vec<u8>], dst: &Path) {
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    let (magic, ext) = match comps.len() {
        1 => ("P5", "pgm"),
        3 => ("P6", "ppm"),
        n => panic!("{n} components"),
    };
    let pnm = dst.with_extension(ext);
    let mut bytes = format!("{magic}\n{w} {h}\n255\n").into_bytes();
    for i in 0..w * h {
        for c in comps {
            bytes.push(c[i]);
        }
    }
    fs::write(&pnm, bytes).unwrap();
    let out = Command::new(opj_compress)
        .arg("-i")
        .arg(&pnm)
        .arg("-o")
        .arg(dst)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "opj_compress: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::remove_file(pnm).unwrap();
}

/// The crop band file for `band` (`B02` …).
pub fn crop_band(crop: &Path, band: &str) -> PathBuf {
    crop.join(format!("{band}.tif"))
}

/// The band token of an IMAGE_FILE name and its resolution suffix, if any.
fn band_token(rel: &str) -> (String, Option<String>) {
    let name = rel.rsplit('/').next().unwrap();
    let mut toks: Vec<&str> = name.split('_').collect();
    let res = toks
        .last()
        .filter(|t| t.ends_with('m') && t[..t.len() - 1].parse::<u32>().is_ok())
        .map(|t| t.to_string());
    if res.is_some() {
        toks.pop();
    }
    (toks.last().unwrap().to_string(), res)
}

fn native_res(band: &str) -> &'static str {
    match band {
        "B02" | "B03" | "B04" | "B08" => "10m",
        "B01" | "B09" | "B10" => "60m",
        _ => "20m",
    }
}

fn build(set: &str, test: &str, encode: &[&str]) -> Option<SafeFixture> {
    let crop = crop_dir(test)?;
    let src = metadata_set(set, test)?;
    let gdal = util::tool("gdal_translate", test)?;
    let dir = util::tempdir();
    let safe = dir.path().join(set);
    copy_tree(&src, &safe);
    let granule = fs::read_dir(safe.join("GRANULE"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let tl = granule.join("MTD_TL.xml");
    fs::write(&tl, patch_tile_metadata(&fs::read_to_string(&tl).unwrap())).unwrap();
    let mtd_name = if set.contains("MSIL1C") {
        "MTD_MSIL1C.xml"
    } else {
        "MTD_MSIL2A.xml"
    };
    let mtd = fs::read_to_string(safe.join(mtd_name)).unwrap();
    for rel in image_files(&mtd) {
        let (band, res) = band_token(&rel);
        let tif = crop_band(&crop, &band);
        // Only bands the crop has, at their native resolution (the crop has no B10).
        if !tif.is_file() || res.as_deref().is_some_and(|r| r != native_res(&band)) {
            continue;
        }
        encode_jp2_with(&gdal, &tif, &safe.join(format!("{rel}.jp2")), encode);
    }
    Some(SafeFixture { dir, safe, crop })
}

/// An L1C SAFE (baseline 03.01 metadata) with the crop's 12 bands; B10 is missing.
pub fn build_l1c(test: &str) -> Option<SafeFixture> {
    build(L1C_SET, test, &[])
}

/// [`build_l1c`] with JPEG 2000 bands of `tile`-px codestream tiles, so that a band has
/// several tile rows and columns and a window's decode area skips tiles (real bands do).
pub fn build_l1c_tiled(test: &str, tile: usize) -> Option<SafeFixture> {
    let (x, y) = (format!("BLOCKXSIZE={tile}"), format!("BLOCKYSIZE={tile}"));
    build(L1C_SET, test, &["-co", &x, "-co", &y])
}

/// The SCL pattern of L2A fixtures (300x300): class `(col + row) % 12`.
pub fn scl_pattern() -> Vec<u8> {
    (0..300 * 300)
        .map(|i| ((i % 300 + i / 300) % 12) as u8)
        .collect()
}

/// The three MSK_CLASSI planes of L2A fixtures (100x100): opaque clouds in the first
/// column band, cirrus in the first row band, snow on the diagonal.
pub fn classi_pattern() -> [Vec<u8>; 3] {
    let f = |p: fn(usize, usize) -> bool| -> Vec<u8> {
        (0..100 * 100)
            .map(|i| u8::from(p(i % 100, i / 100)))
            .collect()
    };
    [f(|c, _| c < 10), f(|_, r| r < 5), f(|c, r| c == r)]
}

/// The MSK_CLDPRB pattern of L2A fixtures (300x300): probability `col / 3` percent.
pub fn cldprb_pattern() -> Vec<u8> {
    (0..300 * 300).map(|i| ((i % 300) / 3) as u8).collect()
}

/// An L2A SAFE (baseline 05.09 metadata) with the crop's 12 bands at their native
/// resolutions, plus SCL, MSK_CLASSI and MSK_CLDPRB masks with known patterns.
pub fn build_l2a(test: &str) -> Option<SafeFixture> {
    let opj = util::tool("opj_compress", test)?;
    let fx = build(L2A_SET, test, &[])?;
    let mtd = fs::read_to_string(fx.safe.join("MTD_MSIL2A.xml")).unwrap();
    let scl = image_files(&mtd)
        .into_iter()
        .find(|f| f.ends_with("_SCL_20m"))
        .unwrap();
    encode_u8_jp2(
        &opj,
        300,
        300,
        &[scl_pattern()],
        &fx.safe.join(format!("{scl}.jp2")),
    );
    let granule = scl.split('/').take(2).collect::<Vec<_>>().join("/");
    let qi = fx.safe.join(&granule).join("QI_DATA");
    encode_u8_jp2(
        &opj,
        100,
        100,
        &classi_pattern(),
        &qi.join("MSK_CLASSI_B00.jp2"),
    );
    encode_u8_jp2(
        &opj,
        300,
        300,
        &[cldprb_pattern()],
        &qi.join("MSK_CLDPRB_20m.jp2"),
    );
    Some(fx)
}

/// Zips `safe` (an `X.SAFE` directory) into `zip_path` with `X.SAFE/` as its only
/// top-level directory.
pub fn zip_safe(safe: &Path, zip_path: &Path) {
    let top = safe.file_name().unwrap().to_str().unwrap().to_string();
    let mut zw = zip::ZipWriter::new(fs::File::create(zip_path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    fn walk(
        dir: &Path,
        prefix: &str,
        zw: &mut zip::ZipWriter<fs::File>,
        opts: zip::write::SimpleFileOptions,
    ) {
        zw.add_directory(format!("{prefix}/"), opts).unwrap();
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = format!("{prefix}/{}", e.file_name().to_str().unwrap());
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), &name, zw, opts);
            } else {
                zw.start_file(name, opts).unwrap();
                zw.write_all(&fs::read(e.path()).unwrap()).unwrap();
            }
        }
    }
    walk(safe, &top, &mut zw, opts);
    zw.finish().unwrap();
}

/// Writes a zip with the given (name, content) entries, names unchecked.
pub fn zip_raw(zip_path: &Path, entries: &[(&str, &[u8])]) {
    let mut zw = zip::ZipWriter::new(fs::File::create(zip_path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, content) in entries {
        zw.start_file(*name, opts).unwrap();
        zw.write_all(content).unwrap();
    }
    zw.finish().unwrap();
}
