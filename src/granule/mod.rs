//! Sentinel-2 inputs: ids, bands, georeference, metadata and the three readers.
//!
//! Opening a granule ([`GranuleSource::open`]) parses metadata and locates band files
//! without decoding pixels, so `s2edge info` works on a SAFE that holds only metadata.
//! [`GranuleSource::read_band`] then decodes one band to DN (`u16`, 0 = nodata,
//! 65535 = saturated); radiometric harmonisation lives in [`crate::raster`].
//!
//! Input forms (DESIGN.md "Inputs and granule ids"):
//! - [`safe`]: a `.SAFE` directory or a `.zip` of one, L1C or L2A, JPEG 2000 or GeoTIFF bands;
//! - [`folder`]: a folder of per-band GeoTIFFs, optionally with a STAC Item beside them;
//! - [`bigearthnet`]: a BigEarthNet v1 patch folder with its labels.
//!
//! Invariant: every band group's grid is checked against the 10 m group by relative
//! size (20 m = half, 60 m = one sixth), so a Wald-degraded granule (all pixel sizes
//! doubled) reads the same way as a standard one.

pub mod band;
pub mod bigearthnet;
pub mod error;
pub mod folder;
pub mod georef;
pub mod id;
pub mod jp2;
pub mod labels;
pub mod rows;
pub mod safe;
pub mod tiff;
pub mod tree;
pub mod unpack;
pub mod xml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use band::{Band, Resolution};
pub use error::GranuleError;
pub use georef::{GeoRef, GeoTransform};
pub use id::GranuleId;
pub use rows::BandRows;

use crate::raster::Raster;

/// The DN that means "no data" in every Sentinel-2 product.
pub const NODATA_DN: u16 = 0;
/// The DN that means "saturated".
pub const SATURATED_DN: u16 = 65535;
/// Largest accepted raster side in pixels. A full tile is 10980; anything much larger
/// is a corrupt or hostile header and is refused before allocation.
pub const MAX_SIDE: u64 = 12_000;

/// Which of the accepted input forms a granule came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// An unpacked `.SAFE` directory.
    SafeDir,
    /// A `.zip` holding one `.SAFE` directory.
    SafeZip,
    /// A folder of per-band GeoTIFFs.
    TiffFolder,
    /// A BigEarthNet v1 patch folder.
    BigEarthNet,
}

/// Product processing level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum ProductLevel {
    /// Top-of-atmosphere reflectance.
    L1C,
    /// Bottom-of-atmosphere reflectance.
    L2A,
    /// The input does not say (e.g. a bare GeoTIFF folder without STAC Item).
    Unknown,
}

/// Where a file of the granule lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// A plain file.
    File(PathBuf),
    /// An entry inside a zip archive.
    Zip {
        /// The archive.
        archive: PathBuf,
        /// The entry name inside it (already checked not to escape).
        entry: String,
    },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Zip { archive, entry } => write!(f, "{}!{}", archive.display(), entry),
        }
    }
}

impl Location {
    /// A path naming this location in error messages.
    pub fn display_path(&self) -> PathBuf {
        PathBuf::from(self.to_string())
    }
}

/// Kinds of cloud/snow mask a product may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MaskKind {
    /// L2A scene classification (20 m): classes 3 shadow, 8/9 cloud, 10 cirrus, 11 snow.
    Scl,
    /// L1C `MSK_CLASSI` (60 m, baseline ≥ 04.00): bit planes opaque clouds, cirrus, snow.
    Classi,
    /// L1C `MSK_CLDPRB` cloud probability (percent, 20 m).
    CloudProbability,
}

/// A mask file located through the metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaskFile {
    /// What the mask encodes.
    pub kind: MaskKind,
    /// Where it is.
    pub location: Location,
}

/// A per-pixel cloud/snow flag raster derived from the product's own mask.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudMask {
    /// The mask's own grid (20 m for SCL, 60 m for MSK_CLASSI).
    pub georef: GeoRef,
    /// 1 = cloud, cirrus, cloud shadow or snow; 0 = clear.
    pub flagged: Raster<u8>,
}

/// BigEarthNet labels of a patch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchLabels {
    /// The labels as the patch file spells them (43-class nomenclature names).
    pub names_43: Vec<String>,
    /// Their indices in the 43-class nomenclature.
    pub classes_43: Vec<u8>,
    /// The 19-class indices they map to (sorted, deduplicated; may be empty).
    pub classes_19: Vec<u8>,
}

/// Everything the metadata says about a granule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metadata {
    /// MGRS tile id without the `T` (e.g. `33UUB`), when known.
    pub tile_id: Option<String>,
    /// EPSG code of the UTM CRS.
    pub epsg: u32,
    /// The grid of each band group present (upper-left corner, pixel size, size).
    pub grids: BTreeMap<Resolution, GeoRef>,
    /// Sensing time (UTC).
    pub sensing_time: Option<DateTime<Utc>>,
    /// `Sentinel-2A`, `Sentinel-2B`, ...
    pub spacecraft: Option<String>,
    /// L1C or L2A.
    pub level: ProductLevel,
    /// Processing baseline, e.g. `04.00`.
    pub baseline: Option<String>,
    /// Reflectance quantification value (10000).
    pub quantification: Option<f64>,
    /// Per-band additive radiometric offset (`RADIO_ADD_OFFSET` / `BOA_ADD_OFFSET`);
    /// empty when the product has none (baseline < 04.00).
    pub offsets: BTreeMap<Band, f64>,
    /// False when the offsets were not stated and 0 was assumed.
    pub offsets_known: bool,
    /// The nodata DN (0).
    pub nodata: u16,
    /// The saturated DN (65535).
    pub saturated: u16,
    /// Cloud cover percentage from the metadata, when given.
    pub cloud_cover: Option<f64>,
    /// BigEarthNet labels, for patch folders.
    pub labels: Option<PatchLabels>,
}

impl Metadata {
    /// A metadata record with only the CRS known; readers fill in the rest.
    pub fn new(epsg: u32) -> Self {
        Metadata {
            tile_id: None,
            epsg,
            grids: BTreeMap::new(),
            sensing_time: None,
            spacecraft: None,
            level: ProductLevel::Unknown,
            baseline: None,
            quantification: None,
            offsets: BTreeMap::new(),
            offsets_known: false,
            nodata: NODATA_DN,
            saturated: SATURATED_DN,
            cloud_cover: None,
            labels: None,
        }
    }

    /// The additive offset of `band` (0 when the product has none).
    pub fn offset(&self, band: Band) -> f64 {
        self.offsets.get(&band).copied().unwrap_or(0.0)
    }

    /// The 10 m reference grid.
    pub fn grid_10m(&self) -> Option<&GeoRef> {
        self.grids.get(&Resolution::R10)
    }
}

/// One decoded band: DN on its native grid.
#[derive(Debug, Clone, PartialEq)]
pub struct BandData {
    /// Which band.
    pub band: Band,
    /// Its grid.
    pub georef: GeoRef,
    /// Raw DN (0 = nodata, 65535 = saturated).
    pub dn: Raster<u16>,
}

/// An opened granule: metadata parsed, band files located, no pixels decoded yet.
#[derive(Debug, Clone, Serialize)]
pub struct GranuleSource {
    /// The granule id.
    pub id: GranuleId,
    /// The input form.
    pub kind: InputKind,
    /// The path the granule was opened from.
    pub path: PathBuf,
    /// Parsed metadata.
    pub metadata: Metadata,
    /// Where each available band's file is.
    pub bands: BTreeMap<Band, Location>,
    /// Cloud/snow masks the product carries.
    pub masks: Vec<MaskFile>,
    /// Problems that do not stop processing (missing band files, assumed offsets, ...).
    pub warnings: Vec<String>,
    /// Zip entries unpacked for the band readers, shared by this source's clones
    /// ([`unpack`]).
    #[serde(skip)]
    pub unpacked: std::sync::Arc<unpack::UnpackCache>,
}

impl GranuleSource {
    /// Opens the granule at `path`, recognising its form from its layout.
    ///
    /// # Errors
    /// [`GranuleError`] naming the file and reason when the input is unreadable or not
    /// one of the accepted forms.
    pub fn open(path: &Path) -> Result<GranuleSource, GranuleError> {
        let meta = std::fs::metadata(path).map_err(|e| GranuleError::io(path, e))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if meta.is_file() {
            if name.ends_with(".zip") {
                return safe::open_zip(path);
            }
            return Err(GranuleError::UnknownLayout {
                path: path.to_path_buf(),
                reason: "a file that is not a .zip".into(),
            });
        }
        if path.join("manifest.safe").is_file() || name.ends_with(".safe") {
            return safe::open_dir(path);
        }
        if bigearthnet::is_patch_folder(path) {
            return bigearthnet::open(path);
        }
        folder::open(path)
    }

    /// Decodes one band to DN on its native grid.
    ///
    /// # Errors
    /// [`GranuleError::MissingBand`] when the band has no file, or the decoder's error.
    pub fn read_band(&self, band: Band) -> Result<BandData, GranuleError> {
        let loc = self.location(band)?;
        let (dn, file_georef) = read_raster_u16(loc)?;
        let georef = self.band_grid(band, loc, file_georef, dn.width, dn.height)?;
        Ok(BandData { band, georef, dn })
    }

    /// Opens one band for reading window by window, top to bottom ([`BandRows`]): the
    /// streaming pipeline's reader. Only the header is read here; the grid is checked as
    /// [`GranuleSource::read_band`] checks it.
    ///
    /// # Errors
    /// As [`GranuleSource::read_band`].
    pub fn band_rows(&self, band: Band) -> Result<BandRows, GranuleError> {
        let loc = self.location(band)?;
        let (rows, file_georef) = BandRows::open(band, loc, &self.unpacked)?;
        let (w, h) = rows.size();
        let georef = self.band_grid(band, loc, file_georef, w, h)?;
        Ok(rows.with_georef(georef))
    }

    /// Where the band's file is.
    fn location(&self, band: Band) -> Result<&Location, GranuleError> {
        self.bands
            .get(&band)
            .ok_or_else(|| GranuleError::MissingBand {
                id: self.id.to_string(),
                band,
            })
    }

    /// The band's grid: the metadata's for its resolution, else the file's own; refused
    /// when the file's size differs from it.
    fn band_grid(
        &self,
        band: Band,
        loc: &Location,
        file_georef: Option<GeoRef>,
        width: usize,
        height: usize,
    ) -> Result<GeoRef, GranuleError> {
        let georef = match self.metadata.grids.get(&band.resolution()) {
            Some(g) => *g,
            None => file_georef.ok_or_else(|| GranuleError::Metadata {
                path: loc.display_path(),
                field: format!("{band} georeference"),
                reason: "neither the metadata nor the file gives one".into(),
            })?,
        };
        if georef.width != width || georef.height != height {
            return Err(GranuleError::GridMismatch {
                id: self.id.to_string(),
                band,
                reason: format!(
                    "file is {}x{} but the metadata grid is {}x{}",
                    width, height, georef.width, georef.height
                ),
            });
        }
        Ok(georef)
    }

    /// Reads the product's cloud/snow mask, if it carries one that can be decoded.
    ///
    /// # Errors
    /// The decoder's error when a mask file is listed but corrupt.
    pub fn read_cloud_mask(&self) -> Result<Option<CloudMask>, GranuleError> {
        safe::read_cloud_mask(self)
    }

    /// Decodes `bands` and checks that their grids agree with each other.
    ///
    /// # Errors
    /// Any band's read error, or [`GranuleError::GridMismatch`].
    pub fn load(&self, bands: &[Band]) -> Result<Granule, GranuleError> {
        let mut out = BTreeMap::new();
        for &b in bands {
            out.insert(b, self.read_band(b)?);
        }
        let granule = Granule {
            source: self.clone(),
            bands: out,
        };
        granule.check_grids()?;
        Ok(granule)
    }
}

/// A granule with decoded bands.
#[derive(Debug, Clone)]
pub struct Granule {
    /// What it was opened from, with its metadata.
    pub source: GranuleSource,
    /// Decoded bands.
    pub bands: BTreeMap<Band, BandData>,
}

impl Granule {
    /// The 10 m reference grid: from a decoded 10 m band, else from the metadata.
    pub fn grid_10m(&self) -> Option<GeoRef> {
        self.bands
            .values()
            .find(|b| b.band.resolution() == Resolution::R10)
            .map(|b| b.georef)
            .or_else(|| self.source.metadata.grid_10m().copied())
    }

    /// Checks every band against the others; see [`check_grids`].
    ///
    /// # Errors
    /// [`GranuleError::GridMismatch`] naming the first band that disagrees.
    pub fn check_grids(&self) -> Result<(), GranuleError> {
        let grids: Vec<(Band, GeoRef)> = self.bands.values().map(|b| (b.band, b.georef)).collect();
        check_grids(&self.source.id, &grids)
    }
}

/// Checks band grids against each other: same CRS, same upper-left corner, and the size
/// ratio of each band's group (20 m = 1/2, 60 m = 1/6 of the 10 m size, rounded up).
/// Groups are judged by relative size, not absolute pixel size, so a Wald-degraded
/// granule passes the same way.
///
/// # Errors
/// [`GranuleError::GridMismatch`] naming the first band that disagrees.
pub fn check_grids(id: &GranuleId, grids: &[(Band, GeoRef)]) -> Result<(), GranuleError> {
    // The finest band is the reference: from a 10 m band the expected sizes are exact.
    let Some(&(ref_band, ref_grid)) = grids.iter().min_by_key(|(b, _)| b.resolution().factor())
    else {
        return Ok(());
    };
    let rf = ref_band.resolution().factor() as f64;
    // The 10 m-equivalent size and pixel size implied by the reference band.
    let w10 = ref_grid.width as f64 * rf;
    let h10 = ref_grid.height as f64 * rf;
    let px10 = ref_grid.transform.pixel_width / rf;
    for &(band, g) in grids {
        let mismatch = |reason: String| GranuleError::GridMismatch {
            id: id.to_string(),
            band,
            reason,
        };
        let f = band.resolution().factor() as f64;
        if g.epsg != ref_grid.epsg {
            return Err(mismatch(format!(
                "CRS EPSG:{} differs from {ref_band}'s EPSG:{}",
                g.epsg, ref_grid.epsg
            )));
        }
        // Exact (rounded up) from a 10 m reference; up to the reference's rounding otherwise.
        let slack = if rf == 1.0 { 0.0 } else { (rf / f).ceil() };
        let size_ok = |actual: usize, full: f64| {
            let expect = (full / f).ceil();
            (actual as f64 - expect).abs() <= slack
        };
        if !size_ok(g.width, w10) || !size_ok(g.height, h10) {
            return Err(mismatch(format!(
                "size {}x{} is not 1/{f} of the 10 m-equivalent size {w10}x{h10} implied by {ref_band}",
                g.width, g.height
            )));
        }
        let px = g.transform.pixel_width;
        if (px - px10 * f).abs() > 1e-6 * px.abs().max(1.0) {
            return Err(mismatch(format!(
                "pixel size {px} is not {f}x the 10 m-group pixel size {px10}"
            )));
        }
        let dx = (g.transform.origin_x - ref_grid.transform.origin_x).abs();
        let dy = (g.transform.origin_y - ref_grid.transform.origin_y).abs();
        if dx > px10 * 0.01 || dy > px10 * 0.01 {
            return Err(mismatch(format!(
                "upper-left corner differs from {ref_band}'s by ({dx}, {dy}) map units"
            )));
        }
    }
    Ok(())
}

/// Decodes a single-band uint16 raster (GeoTIFF or JPEG 2000, by extension) and its
/// georeference when the file carries one.
///
/// # Errors
/// The decoder's typed error naming the file.
pub fn read_raster_u16(loc: &Location) -> Result<(Raster<u16>, Option<GeoRef>), GranuleError> {
    let name = match loc {
        Location::File(p) => p.to_string_lossy().to_ascii_lowercase(),
        Location::Zip { entry, .. } => entry.to_ascii_lowercase(),
    };
    let bytes = read_location(loc)?;
    if name.ends_with(".jp2") {
        let r = jp2::decode_u16(&bytes, &loc.display_path())?;
        Ok((r, None))
    } else {
        let (r, g) = tiff::decode_u16(&bytes, &loc.display_path())?;
        Ok((r, g))
    }
}

/// Reads a whole file or zip entry into memory.
///
/// # Errors
/// [`GranuleError::Io`] or [`GranuleError::Zip`].
pub fn read_location(loc: &Location) -> Result<Vec<u8>, GranuleError> {
    match loc {
        Location::File(p) => std::fs::read(p).map_err(|e| GranuleError::io(p, e)),
        Location::Zip { archive, entry } => safe::read_zip_entry(archive, entry),
    }
}
