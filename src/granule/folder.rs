//! Per-band GeoTIFF folders: `B01.tif` … `B12.tif`, `B8A.tif` (also `.tiff`, any case),
//! as the public Sentinel-2 COG buckets ship them, optionally with a STAC Item beside them.
//!
//! Opening reads only the TIFF headers (size, sample type, georeference), never pixels.
//! Invariants of a returned [`GranuleSource`]:
//! - every band file is single-sample uint16 and georeferenced; bands of one resolution
//!   group share one grid, and the groups agree with each other in CRS, upper-left corner
//!   and relative size (20 m = ⌈10 m size / 2⌉, 60 m = ⌈10 m size / 6⌉), checked by
//!   [`grids_from_headers`], which the BigEarthNet reader shares;
//! - a missing band is a warning (reading it later gives [`GranuleError::MissingBand`]);
//! - offsets come from the STAC Item's `raster:bands` (converted from reflectance to DN),
//!   or from its processing baseline; without either, offsets are empty,
//!   `offsets_known` is false and the warning [`OFFSET_UNKNOWN`] is recorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::tiff::{read_header, SampleKind};
use super::{
    Band, GeoRef, GranuleError, GranuleId, GranuleSource, InputKind, Location, Metadata,
    ProductLevel, Resolution,
};

/// The warning recorded when no source states the radiometric offsets.
pub const OFFSET_UNKNOWN: &str = "offset unknown, assumed 0";

/// JSON files larger than this are not metadata; refusing them bounds memory.
const MAX_JSON_BYTES: u64 = 16 * 1024 * 1024;

/// Tolerance, in map units, for two bands of one group to count as the same grid.
const SAME_GRID_TOL: f64 = 1e-3;

/// Opens a per-band GeoTIFF folder.
///
/// # Errors
/// [`GranuleError::Io`] when the folder cannot be listed, [`GranuleError::UnknownLayout`]
/// when it holds no band file or two files for one band, [`GranuleError::Tiff`] /
/// [`GranuleError::TooLarge`] for a bad band header, [`GranuleError::Metadata`] for a band
/// without georeference or a STAC field that does not parse, [`GranuleError::GridMismatch`]
/// when band grids disagree, and [`GranuleError::Json`] for a malformed `*.json`.
pub fn open(path: &Path) -> Result<GranuleSource, GranuleError> {
    let id = GranuleId::from_path(path)?;
    let listing = list_folder(path)?;
    if listing.bands.is_empty() {
        return Err(GranuleError::UnknownLayout {
            path: path.to_path_buf(),
            reason: "a folder without band files (B01.tif … B12.tif, B8A.tif)".into(),
        });
    }
    let mut georefs = BTreeMap::new();
    for (band, file) in &listing.bands {
        georefs.insert(*band, band_georef(file)?);
    }
    let grids = grids_from_headers(&id, &georefs)?;
    let epsg = grids.values().next().map(|g| g.epsg).unwrap_or_default();

    let mut warnings = missing_band_warnings(&listing.bands, |b| format!("{b}.tif"));
    let mut metadata = Metadata::new(epsg);
    metadata.grids = grids;

    let mut stac = None;
    for json in &listing.json {
        if let Some(item) = read_stac_item(json)? {
            if stac.is_some() {
                warnings.push(format!(
                    "more than one STAC Item; ignoring {}",
                    json.display()
                ));
            } else {
                stac = Some((json.clone(), item));
            }
        }
    }
    match stac {
        Some((json, item)) => apply_stac(&json, &item, &mut metadata, &mut warnings)?,
        None => warnings.push(OFFSET_UNKNOWN.to_string()),
    }

    Ok(GranuleSource {
        id,
        kind: InputKind::TiffFolder,
        path: path.to_path_buf(),
        metadata,
        bands: listing
            .bands
            .into_iter()
            .map(|(b, p)| (b, Location::File(p)))
            .collect(),
        masks: Vec::new(),
        warnings,
        unpacked: Default::default(),
    })
}

/// The files of a folder that matter: band GeoTIFFs and JSON documents (sorted).
struct Listing {
    bands: BTreeMap<Band, PathBuf>,
    json: Vec<PathBuf>,
}

fn list_folder(path: &Path) -> Result<Listing, GranuleError> {
    let mut bands = BTreeMap::new();
    let mut json = Vec::new();
    let entries = std::fs::read_dir(path).map_err(|e| GranuleError::io(path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| GranuleError::io(path, e))?;
        let file = entry.path();
        if !file.is_file() {
            continue;
        }
        let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".json") {
            json.push(file);
            continue;
        }
        let Some(stem) = lower
            .strip_suffix(".tif")
            .or_else(|| lower.strip_suffix(".tiff"))
        else {
            continue;
        };
        let Some(band) = Band::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(stem))
        else {
            continue;
        };
        if let Some(other) = bands.insert(band, file.clone()) {
            return Err(GranuleError::UnknownLayout {
                path: path.to_path_buf(),
                reason: format!(
                    "both {} and {} hold band {band}",
                    other.display(),
                    file.display()
                ),
            });
        }
    }
    json.sort();
    Ok(Listing { bands, json })
}

/// One warning per product band (B10 excepted) that has no file.
pub(crate) fn missing_band_warnings(
    bands: &BTreeMap<Band, PathBuf>,
    file_name: impl Fn(Band) -> String,
) -> Vec<String> {
    Band::PRODUCT
        .into_iter()
        .filter(|b| !bands.contains_key(b))
        .map(|b| format!("band {b} is missing (no {})", file_name(b)))
        .collect()
}

/// Reads the header of a band file and insists on uint16 data with a georeference.
///
/// # Errors
/// The header's [`GranuleError`], or [`GranuleError::Tiff`] / [`GranuleError::Metadata`]
/// when the file is 8-bit or carries no georeference.
pub(crate) fn band_georef(file: &Path) -> Result<GeoRef, GranuleError> {
    let header = read_header(file)?;
    if header.sample != SampleKind::U16 {
        return Err(GranuleError::Tiff {
            path: file.to_path_buf(),
            reason: "8-bit samples; a band must be uint16".into(),
        });
    }
    header.georef.ok_or_else(|| GranuleError::Metadata {
        path: file.to_path_buf(),
        field: "georeference".into(),
        reason: "the GeoTIFF carries no GeoKeys or transform".into(),
    })
}

/// Groups the bands' grids by resolution and checks them: bands of one group must share
/// a grid, and every group must agree with the finest one present in CRS, upper-left
/// corner, pixel size ratio and size ratio (⌈size × its factor / group factor⌉).
///
/// Returns one grid per group present, each taken from the group's first band.
///
/// # Errors
/// [`GranuleError::GridMismatch`] naming the first band that disagrees.
pub(crate) fn grids_from_headers(
    id: &GranuleId,
    georefs: &BTreeMap<Band, GeoRef>,
) -> Result<BTreeMap<Resolution, GeoRef>, GranuleError> {
    let mismatch = |band: Band, reason: String| GranuleError::GridMismatch {
        id: id.to_string(),
        band,
        reason,
    };
    let mut groups: BTreeMap<Resolution, (Band, GeoRef)> = BTreeMap::new();
    for (&band, g) in georefs {
        match groups.get(&band.resolution()) {
            None => {
                groups.insert(band.resolution(), (band, *g));
            }
            Some((first, fg)) if !fg.same_grid(g, SAME_GRID_TOL) => {
                return Err(mismatch(
                    band,
                    format!(
                        "grid (EPSG:{}, {}x{}, {:?}) differs from {first}'s (EPSG:{}, {}x{}, {:?})",
                        g.epsg,
                        g.width,
                        g.height,
                        g.transform,
                        fg.epsg,
                        fg.width,
                        fg.height,
                        fg.transform
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    // BTreeMap order is R10, R20, R60: the finest group present is the reference.
    let Some((&ref_res, &(ref_band, reference))) = groups.iter().next() else {
        return Ok(BTreeMap::new());
    };
    let rf = ref_res.factor() as f64;
    let px10 = reference.transform.pixel_width / rf;
    let (w10, h10) = (reference.width as f64 * rf, reference.height as f64 * rf);
    for (&res, &(band, g)) in groups.iter().skip(1) {
        let f = res.factor() as f64;
        if g.epsg != reference.epsg {
            return Err(mismatch(
                band,
                format!(
                    "CRS EPSG:{} differs from {ref_band}'s EPSG:{}",
                    g.epsg, reference.epsg
                ),
            ));
        }
        let (ew, eh) = ((w10 / f).ceil() as usize, (h10 / f).ceil() as usize);
        if g.width != ew || g.height != eh {
            return Err(mismatch(
                band,
                format!(
                    "size {}x{} should be {ew}x{eh} (1/{f} of the 10 m size implied by {ref_band}'s {}x{})",
                    g.width, g.height, reference.width, reference.height
                ),
            ));
        }
        let (pw, ph) = (g.transform.pixel_width, g.transform.pixel_height);
        let tol = 1e-6 * (px10 * f).abs().max(1.0);
        if (pw - px10 * f).abs() > tol || (ph + px10 * f).abs() > tol {
            return Err(mismatch(
                band,
                format!(
                    "pixel size {pw} x {ph} is not {f} x the 10 m-equivalent pixel size {px10}"
                ),
            ));
        }
        let dx = (g.transform.origin_x - reference.transform.origin_x).abs();
        let dy = (g.transform.origin_y - reference.transform.origin_y).abs();
        if dx > px10 * 0.01 || dy > px10 * 0.01 {
            return Err(mismatch(
                band,
                format!("upper-left corner differs from {ref_band}'s by ({dx}, {dy}) map units"),
            ));
        }
    }
    Ok(groups.into_iter().map(|(r, (_, g))| (r, g)).collect())
}

/// Parses `path` as JSON; returns it when it is a STAC Item (`"type": "Feature"` with a
/// `stac_version`), `None` for any other JSON document.
///
/// # Errors
/// [`GranuleError::Json`] when the file is too large or not JSON, [`GranuleError::Io`]
/// when it cannot be read.
fn read_stac_item(path: &Path) -> Result<Option<Value>, GranuleError> {
    let len = std::fs::metadata(path)
        .map_err(|e| GranuleError::io(path, e))?
        .len();
    if len > MAX_JSON_BYTES {
        return Err(GranuleError::Json {
            path: path.to_path_buf(),
            reason: format!("{len} bytes is too large for a metadata document"),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| GranuleError::io(path, e))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| GranuleError::Json {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let is_item = value.get("type").and_then(Value::as_str) == Some("Feature")
        && value.get("stac_version").is_some();
    Ok(is_item.then_some(value))
}

/// Fuzzing entry point, not an API: the STAC Item reader on `bytes` applied to a
/// metadata record of a 240 px EPSG:32633 granule (`fuzz/fuzz_targets/stac_item.rs`).
#[doc(hidden)]
pub fn fuzz_stac_item(bytes: &[u8]) {
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return;
    }
    let Ok(item) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    let mut metadata = Metadata::new(32633);
    let mut warnings = Vec::new();
    let _ = apply_stac(Path::new("item.json"), &item, &mut metadata, &mut warnings);
}

/// Earth Search asset keys (STAC common band names) and the bands they hold.
const COMMON_NAMES: [(&str, Band); 13] = [
    ("coastal", Band::B01),
    ("blue", Band::B02),
    ("green", Band::B03),
    ("red", Band::B04),
    ("rededge1", Band::B05),
    ("rededge2", Band::B06),
    ("rededge3", Band::B07),
    ("nir", Band::B08),
    ("nir08", Band::B8A),
    ("nir09", Band::B09),
    ("cirrus", Band::B10),
    ("swir16", Band::B11),
    ("swir22", Band::B12),
];

fn band_named(name: &str) -> Option<Band> {
    let name = name.trim();
    Band::ALL
        .into_iter()
        .find(|b| b.name().eq_ignore_ascii_case(name))
        .or_else(|| {
            COMMON_NAMES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, b)| *b)
        })
}

/// The band an asset holds: by its key (`B02`, `blue`), its `eo:bands[0].name`, or its
/// href's file stem (`…/B02.tif`).
fn asset_band(key: &str, asset: &Value) -> Option<Band> {
    let eo_name = asset
        .pointer("/eo:bands/0/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let href_stem = asset
        .get("href")
        .and_then(Value::as_str)
        .and_then(|h| h.rsplit('/').next())
        .and_then(|f| f.split('.').next())
        .unwrap_or_default();
    [key, eo_name, href_stem].into_iter().find_map(band_named)
}

/// `sentinel-2a` → `Sentinel-2A`.
fn spacecraft_name(platform: &str) -> String {
    let p = platform.trim();
    match p.get(..10) {
        Some(prefix) if prefix.eq_ignore_ascii_case("sentinel-2") => {
            format!("Sentinel-2{}", p[10..].to_ascii_uppercase())
        }
        _ => p.to_string(),
    }
}

/// Rounds a DN offset to 1e-6, removing the binary noise of `-0.1 / 0.0001`.
fn round_dn(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// Fills `metadata` from a STAC Item's properties and assets.
///
/// # Errors
/// [`GranuleError::Metadata`] naming the field when a present field does not parse or
/// the item's CRS contradicts the bands', or two assets of one band state different
/// offsets.
fn apply_stac(
    path: &Path,
    item: &Value,
    metadata: &mut Metadata,
    warnings: &mut Vec<String>,
) -> Result<(), GranuleError> {
    let bad = |field: &str, reason: String| GranuleError::Metadata {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason,
    };
    let props = item.get("properties").cloned().unwrap_or(Value::Null);
    let text = |k: &str| props.get(k).and_then(Value::as_str);

    let datetime = text("datetime").or_else(|| text("start_datetime"));
    if let Some(dt) = datetime {
        let t = DateTime::parse_from_rfc3339(dt)
            .map_err(|e| bad("properties.datetime", format!("{dt:?}: {e}")))?;
        metadata.sensing_time = Some(t.with_timezone(&Utc));
    }
    metadata.spacecraft = text("platform").map(spacecraft_name);
    metadata.baseline = text("s2:processing_baseline").map(str::to_string);
    metadata.cloud_cover = props.get("eo:cloud_cover").and_then(Value::as_f64);

    let level_hint = [
        text("s2:product_type"),
        text("processing:level"),
        item.get("collection").and_then(Value::as_str),
    ];
    metadata.level = level_hint
        .into_iter()
        .flatten()
        .map(|s| s.to_ascii_uppercase())
        .find_map(|s| {
            if s.contains("1C") {
                Some(ProductLevel::L1C)
            } else if s.contains("2A") {
                Some(ProductLevel::L2A)
            } else {
                None
            }
        })
        .unwrap_or(ProductLevel::Unknown);

    metadata.tile_id = text("s2:mgrs_tile")
        .map(|t| t.trim_start_matches(['T', 't']).to_string())
        .or_else(|| {
            let zone = props.get("mgrs:utm_zone").and_then(Value::as_u64)?;
            let band = text("mgrs:latitude_band")?;
            let square = text("mgrs:grid_square")?;
            Some(format!("{zone:02}{band}{square}"))
        });

    let stac_epsg = props.get("proj:epsg").and_then(Value::as_u64).or_else(|| {
        text("proj:code")
            .and_then(|c| c.strip_prefix("EPSG:"))
            .and_then(|c| c.parse().ok())
    });
    if let Some(e) = stac_epsg {
        if e != u64::from(metadata.epsg) {
            return Err(bad(
                "properties.proj:epsg",
                format!("EPSG:{e} but the band files are EPSG:{}", metadata.epsg),
            ));
        }
    }

    // Offsets: `raster:bands` describe value = DN × scale + offset, so the DN offset is
    // offset / scale (STAC's default scale is 1).
    let mut stated = false;
    let mut scale_seen = None;
    let assets = item.get("assets").and_then(Value::as_object);
    for (key, asset) in assets.into_iter().flatten() {
        let Some(band) = asset_band(key, asset) else {
            continue;
        };
        let Some(rb) = asset.pointer("/raster:bands/0") else {
            continue;
        };
        stated = true;
        let field = format!("assets.{key}.raster:bands");
        let scale = rb.get("scale").and_then(Value::as_f64).unwrap_or(1.0);
        let offset = rb.get("offset").and_then(Value::as_f64).unwrap_or(0.0);
        if scale == 0.0 || !scale.is_finite() || !offset.is_finite() {
            return Err(bad(&field, format!("scale {scale}, offset {offset}")));
        }
        if rb.get("scale").is_some() {
            scale_seen = Some(scale);
        }
        let dn = round_dn(offset / scale);
        if dn == 0.0 {
            continue;
        }
        if let Some(prev) = metadata.offsets.insert(band, dn) {
            if prev != dn {
                return Err(bad(
                    &field,
                    format!("offset {dn} DN but another asset of {band} says {prev}"),
                ));
            }
        }
    }
    if let Some(s) = scale_seen {
        metadata.quantification = Some(round_dn(1.0 / s));
    }
    if stated {
        metadata.offsets_known = true;
        return Ok(());
    }
    // No `raster:bands`: the processing baseline still says whether offsets exist
    // (−1000 DN on every band from baseline 04.00, none before).
    match metadata.baseline.as_deref().map(str::parse::<f64>) {
        Some(Ok(b)) if b >= 4.0 => {
            for band in Band::ALL {
                metadata.offsets.insert(band, -1000.0);
            }
            metadata.offsets_known = true;
            warnings.push(format!(
                "offsets not stated in the STAC Item; -1000 assumed from processing baseline {b:05.2}"
            ));
        }
        Some(Ok(_)) => metadata.offsets_known = true,
        _ => warnings.push(OFFSET_UNKNOWN.to_string()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::granule::GeoTransform;

    fn grid(w: usize, px: f64) -> GeoRef {
        GeoRef {
            epsg: 32633,
            transform: GeoTransform {
                origin_x: 300000.0,
                origin_y: 6200040.0,
                pixel_width: px,
                pixel_height: -px,
            },
            width: w,
            height: w,
        }
    }

    #[test]
    fn groups_check_relative_sizes_with_ceil() {
        let id = GranuleId::new("g").unwrap();
        let mut m = BTreeMap::new();
        m.insert(Band::B02, grid(10980, 10.0));
        m.insert(Band::B05, grid(5490, 20.0));
        m.insert(Band::B01, grid(1830, 60.0));
        let g = grids_from_headers(&id, &m).unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(g[&Resolution::R60].width, 1830);

        // 605 / 6 rounds up to 101.
        let mut m = BTreeMap::new();
        m.insert(Band::B02, grid(605, 10.0));
        m.insert(Band::B01, grid(101, 60.0));
        assert!(grids_from_headers(&id, &m).is_ok());
        m.insert(Band::B09, grid(100, 60.0));
        assert!(matches!(
            grids_from_headers(&id, &m),
            Err(GranuleError::GridMismatch {
                band: Band::B09,
                ..
            })
        ));

        // Only 20 m and 60 m bands: the 20 m group is the reference.
        let mut m = BTreeMap::new();
        m.insert(Band::B05, grid(300, 20.0));
        m.insert(Band::B01, grid(100, 60.0));
        assert!(grids_from_headers(&id, &m).is_ok());
        let mut wrong = grid(100, 60.0);
        wrong.epsg = 32634;
        m.insert(Band::B01, wrong);
        assert!(matches!(
            grids_from_headers(&id, &m),
            Err(GranuleError::GridMismatch {
                band: Band::B01,
                ..
            })
        ));
    }

    #[test]
    fn stac_names_map_to_bands() {
        assert_eq!(band_named("nir08"), Some(Band::B8A));
        assert_eq!(band_named("b8a"), Some(Band::B8A));
        assert_eq!(band_named("visual"), None);
        let asset = serde_json::json!({"href": "s3://x/T33UUB/B11.tif"});
        assert_eq!(asset_band("swir-cog", &asset), Some(Band::B11));
        assert_eq!(spacecraft_name("sentinel-2b"), "Sentinel-2B");
        assert_eq!(round_dn(-0.1 / 0.0001), -1000.0);
    }
}
