//! BigEarthNet v1 patch folders: `<patch>/<patch>_Bxx.tif` (12 bands, no B10; 120×120 px
//! at 10 m, 60×60 at 20 m, 20×20 at 60 m) plus `<patch>_labels_metadata.json` with the
//! 43-class labels, the UTM corner coordinates, the WKT projection, the source tile and the
//! acquisition date.
//!
//! Invariants of a returned [`GranuleSource`]:
//! - the id is the patch name, taken verbatim (never parsed with a time regex: some
//!   names carry 5-digit times such as `S2B_MSIL2A_20170924T93020_69_24`);
//! - the grids come from the TIFF headers and agree with the JSON corner coordinates to
//!   1 m and with its projection's EPSG code;
//! - the level is L2A and the offsets are empty but known (`offsets_known`): BigEarthNet
//!   v1 stores Sen2Cor L2A DN from baselines before 04.00, so harmonised DN = DN;
//! - every label is a 43-class name; [`PatchLabels`] carries both nomenclatures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;

use super::folder::{band_georef, grids_from_headers, missing_band_warnings};
use super::{
    labels, Band, GeoRef, GranuleError, GranuleId, GranuleSource, InputKind, Location, Metadata,
    PatchLabels, ProductLevel,
};

/// How far (map units, metres) the JSON corners may lie from the TIFF grid's.
const CORNER_TOL_M: f64 = 1.0;

/// True when `path` holds `<name>_labels_metadata.json`.
pub fn is_patch_folder(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    path.join(format!("{name}_labels_metadata.json")).is_file()
}

/// The patch's `_labels_metadata.json`, as BigEarthNet v1 writes it.
#[derive(Debug, Deserialize)]
struct PatchJson {
    labels: Vec<String>,
    coordinates: Option<Corners>,
    projection: Option<String>,
    tile_source: Option<String>,
    acquisition_date: Option<String>,
}

/// Upper-left and lower-right corners in the patch's UTM CRS.
#[derive(Debug, Deserialize)]
struct Corners {
    ulx: f64,
    uly: f64,
    lrx: f64,
    lry: f64,
}

/// Opens a BigEarthNet v1 patch folder.
///
/// # Errors
/// [`GranuleError::Json`] when the labels file does not parse, [`GranuleError::Metadata`]
/// for an unknown label name, an unparsable date, or corners/projection that contradict
/// the TIFF headers, [`GranuleError::UnknownLayout`] when no band file exists, and the
/// header errors of the band files ([`GranuleError::Tiff`], [`GranuleError::TooLarge`],
/// [`GranuleError::GridMismatch`]).
pub fn open(path: &Path) -> Result<GranuleSource, GranuleError> {
    let id = GranuleId::from_path(path)?;
    let name = id.as_str().to_string();
    let json_path = path.join(format!("{name}_labels_metadata.json"));
    let patch = read_patch_json(&json_path)?;

    let mut files: BTreeMap<Band, PathBuf> = BTreeMap::new();
    for band in Band::PRODUCT {
        let file = path.join(format!("{name}_{band}.tif"));
        if file.is_file() {
            files.insert(band, file);
        }
    }
    if files.is_empty() {
        return Err(GranuleError::UnknownLayout {
            path: path.to_path_buf(),
            reason: format!("a BigEarthNet patch folder without band files ({name}_B02.tif …)"),
        });
    }
    let warnings = missing_band_warnings(&files, |b| format!("{name}_{b}.tif"));
    let mut georefs = BTreeMap::new();
    for (band, file) in &files {
        georefs.insert(*band, band_georef(file)?);
    }
    let grids = grids_from_headers(&id, &georefs)?;
    let Some(reference) = grids.values().next().copied() else {
        return Err(GranuleError::UnknownLayout {
            path: path.to_path_buf(),
            reason: "no band grid".into(),
        });
    };
    check_against_json(&json_path, &patch, &reference)?;

    let labels = patch_labels(&json_path, &patch.labels)?;
    let mut metadata = Metadata::new(reference.epsg);
    metadata.grids = grids;
    metadata.level = ProductLevel::L2A;
    // Sen2Cor BOA reflectance is DN / 10000; BigEarthNet v1 predates offsets.
    metadata.quantification = Some(10_000.0);
    metadata.offsets_known = true;
    metadata.spacecraft = spacecraft_of(&name);
    metadata.tile_id = patch.tile_source.as_deref().and_then(tile_of_source);
    metadata.sensing_time = patch
        .acquisition_date
        .as_deref()
        .map(|d| parse_acquisition_date(&json_path, d))
        .transpose()?;
    metadata.labels = Some(labels);

    Ok(GranuleSource {
        id,
        kind: InputKind::BigEarthNet,
        path: path.to_path_buf(),
        metadata,
        bands: files
            .into_iter()
            .map(|(b, p)| (b, Location::File(p)))
            .collect(),
        masks: Vec::new(),
        warnings,
        unpacked: Default::default(),
    })
}

fn read_patch_json(path: &Path) -> Result<PatchJson, GranuleError> {
    let bytes = std::fs::read(path).map_err(|e| GranuleError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| GranuleError::Json {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn patch_labels(path: &Path, names: &[String]) -> Result<PatchLabels, GranuleError> {
    labels::to_19(names).map_err(|e| GranuleError::Metadata {
        path: path.to_path_buf(),
        field: "labels".into(),
        reason: e.to_string(),
    })
}

/// Checks the JSON corners (to [`CORNER_TOL_M`]) and projection EPSG against `grid`.
fn check_against_json(path: &Path, patch: &PatchJson, grid: &GeoRef) -> Result<(), GranuleError> {
    if let Some(c) = &patch.coordinates {
        let (ulx, uly) = grid.transform.apply(0.0, 0.0);
        let (lrx, lry) = grid.transform.apply(grid.width as f64, grid.height as f64);
        let worst = [
            (c.ulx - ulx).abs(),
            (c.uly - uly).abs(),
            (c.lrx - lrx).abs(),
            (c.lry - lry).abs(),
        ]
        .into_iter()
        .fold(0.0f64, f64::max);
        if worst.is_nan() || worst > CORNER_TOL_M {
            return Err(GranuleError::Metadata {
                path: path.to_path_buf(),
                field: "coordinates".into(),
                reason: format!(
                    "corners ({}, {}) – ({}, {}) disagree with the band grid ({ulx}, {uly}) – ({lrx}, {lry})",
                    c.ulx, c.uly, c.lrx, c.lry
                ),
            });
        }
    }
    if let Some(epsg) = patch.projection.as_deref().and_then(wkt_epsg) {
        if epsg != grid.epsg {
            return Err(GranuleError::Metadata {
                path: path.to_path_buf(),
                field: "projection".into(),
                reason: format!("EPSG:{epsg} but the band files are EPSG:{}", grid.epsg),
            });
        }
    }
    Ok(())
}

/// The EPSG code of a WKT1 CRS: its last `AUTHORITY["EPSG","…"]`, which is the outermost
/// one (the inner ones name the datum, ellipsoid and units).
fn wkt_epsg(wkt: &str) -> Option<u32> {
    const KEY: &str = "AUTHORITY[\"EPSG\",\"";
    let start = wkt.rfind(KEY)? + KEY.len();
    let rest = wkt.get(start..)?;
    rest.split('"').next()?.parse().ok()
}

/// `S2A_…` → `Sentinel-2A`.
fn spacecraft_of(id: &str) -> Option<String> {
    let unit = id.strip_prefix("S2")?.chars().next()?;
    unit.is_ascii_uppercase()
        .then(|| format!("Sentinel-2{unit}"))
}

/// The MGRS tile of a source product name: `…_T33UUP_…` → `33UUP`.
fn tile_of_source(source: &str) -> Option<String> {
    source
        .trim_end_matches(".SAFE")
        .split('_')
        .find(|part| {
            let b = part.as_bytes();
            b.len() == 6
                && b[0] == b'T'
                && b[1..3].iter().all(u8::is_ascii_digit)
                && b[3..].iter().all(u8::is_ascii_uppercase)
        })
        .map(|part| part[1..].to_string())
}

/// `2017-06-13 10:10:31` (UTC).
fn parse_acquisition_date(path: &Path, date: &str) -> Result<DateTime<Utc>, GranuleError> {
    NaiveDateTime::parse_from_str(date.trim(), "%Y-%m-%d %H:%M:%S")
        .map(|t| t.and_utc())
        .map_err(|e| GranuleError::Metadata {
            path: path.to_path_buf(),
            field: "acquisition_date".into(),
            reason: format!("{date:?}: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sources_parse_without_a_time_regex() {
        assert_eq!(
            spacecraft_of("S2B_MSIL2A_20170924T93020_69_24").as_deref(),
            Some("Sentinel-2B")
        );
        assert_eq!(spacecraft_of("LC08_x"), None);
        assert_eq!(
            tile_of_source("S2A_MSIL1C_20170613T101031_N0205_R022_T33UUP_20170613T101608.SAFE")
                .as_deref(),
            Some("33UUP")
        );
        assert_eq!(tile_of_source("nothing_here"), None);
        let t = parse_acquisition_date(Path::new("j"), "2017-06-13 10:10:31").unwrap();
        assert_eq!(t.to_rfc3339(), "2017-06-13T10:10:31+00:00");
        assert!(matches!(
            parse_acquisition_date(Path::new("j"), "13/06/2017"),
            Err(GranuleError::Metadata { .. })
        ));
        assert_eq!(
            wkt_epsg(
                r#"PROJCS["x",GEOGCS["y",AUTHORITY["EPSG","4326"]],AUTHORITY["EPSG","32633"]]"#
            ),
            Some(32633)
        );
    }
}
