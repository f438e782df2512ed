//! SAFE products: a `.SAFE` directory or a `.zip` holding one, L1C or L2A.
//!
//! Opening parses `MTD_MSIL1C.xml` / `MTD_MSIL2A.xml` (level, baseline, quantification,
//! offsets, special values, cloud cover, the `IMAGE_FILE` list) and `GRANULE/*/MTD_TL.xml`
//! (tile, EPSG, per-resolution grids, sensing time, mask files), then locates band and
//! mask files. No pixel is decoded, so a metadata-only SAFE opens: missing band and mask
//! files become warnings (DESIGN.md "Inputs and granule ids").
//!
//! Invariants:
//! - every path taken from metadata (`IMAGE_FILE`, `MASK_FILENAME`, manifest `href`) or
//!   from a zip entry name is checked to stay inside the product: no absolute path, no
//!   `..` component, no backslash, NUL or drive prefix. In a zip, *every* entry is
//!   checked when the archive is opened, relevant or not ([`GranuleError::ZipEscape`]);
//! - a zip is accepted only when its central directory parses, and it must hold exactly
//!   one top-level directory (`X.SAFE/`); entries are read (into memory, or a JPEG 2000
//!   band into a temporary file, [`super::unpack`]) with a size cap
//!   ([`MAX_ENTRY_BYTES`], [`MAX_XML_BYTES`]) that is enforced on the bytes actually
//!   inflated, not on the sizes the archive declares (zip bombs);
//! - `IMAGE_FILE` entries carry no extension: `.jp2` is probed first, then `.tif`;
//! - L2A bands are taken at their native resolution only (B02/03/04/08 from `R10m`,
//!   B05/06/07/8A/11/12 from `R20m`, B01/B09 from `R60m`);
//! - offsets are `RADIO_ADD_OFFSET` (L1C) or `BOA_ADD_OFFSET` (L2A) keyed by `band_id`
//!   through [`Band::from_band_id`]; a SAFE always has `offsets_known = true`, because
//!   the product specification says absent offsets (baseline < 04.00) mean 0.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use zip::ZipArchive;

use super::{
    jp2, read_location, read_raster_u16, tree, xml, Band, CloudMask, GeoRef, GeoTransform,
    GranuleError, GranuleId, GranuleSource, InputKind, Location, MaskFile, MaskKind, Metadata,
    ProductLevel, Resolution, MAX_SIDE,
};
use crate::raster::Raster;

/// The largest zip entry read into memory (a full-tile 10 m band is ~100–250 MB).
pub const MAX_ENTRY_BYTES: u64 = 1 << 30;
/// The largest metadata XML file read (the largest real `MTD_TL.xml` is a few MB).
pub const MAX_XML_BYTES: u64 = 64 << 20;

/// SCL classes flagged in the cloud mask: 3 cloud shadow, 8 cloud medium probability,
/// 9 cloud high probability, 10 thin cirrus, 11 snow/ice.
pub const SCL_FLAGGED: [u16; 5] = [3, 8, 9, 10, 11];
/// `MSK_CLDPRB` probability (percent) from which a pixel counts as cloud.
pub const CLOUD_PROBABILITY_THRESHOLD: u16 = 50;

type Zip = ZipArchive<BufReader<File>>;

/// Opens a `.SAFE` directory.
///
/// # Errors
/// [`GranuleError`] naming the file: unreadable or malformed metadata
/// ([`GranuleError::Xml`], [`GranuleError::Metadata`]), no product metadata file
/// ([`GranuleError::UnknownLayout`]), or a metadata path escaping the product.
pub fn open_dir(path: &Path) -> Result<GranuleSource, GranuleError> {
    let tree = Tree::Dir(path.to_path_buf());
    open_tree(path, InputKind::SafeDir, tree)
}

/// Opens a zipped SAFE (`X.zip` or `X.SAFE.zip` holding one `X.SAFE/` directory).
///
/// # Errors
/// [`GranuleError::Zip`] when the central directory does not parse,
/// [`GranuleError::ZipEscape`] when any entry name would escape the product,
/// [`GranuleError::UnknownLayout`] when the archive does not hold exactly one top-level
/// directory, and the metadata errors of [`open_dir`].
pub fn open_zip(path: &Path) -> Result<GranuleSource, GranuleError> {
    let tree = Tree::open_zip(path)?;
    open_tree(path, InputKind::SafeZip, tree)
}

/// Reads the entry `entry` of the zip `archive` into memory.
///
/// # Errors
/// [`GranuleError::Zip`] when the archive or entry is unreadable, absent, or inflates
/// to more than [`MAX_ENTRY_BYTES`]; [`GranuleError::ZipEscape`] for an unsafe name.
pub fn read_zip_entry(archive: &Path, entry: &str) -> Result<Vec<u8>, GranuleError> {
    let mut zip = open_archive_for(archive, entry)?;
    read_entry(&mut zip, archive, entry, MAX_ENTRY_BYTES)
}

/// The archive, once `entry` is checked not to escape the product.
fn open_archive_for(archive: &Path, entry: &str) -> Result<Zip, GranuleError> {
    if escapes(entry) {
        return Err(GranuleError::ZipEscape {
            path: archive.to_path_buf(),
            entry: entry.to_string(),
        });
    }
    open_archive(archive)
}

/// Decodes the product's cloud/snow mask: the first of SCL, `MSK_CLASSI` and
/// `MSK_CLDPRB` (in that order) that `src.masks` lists.
///
/// - SCL: flagged where the class is in [`SCL_FLAGGED`];
/// - `MSK_CLASSI`: flagged where any component is non-zero. The file is, in practice, a
///   3-component (opaque cloud, cirrus, snow/ice) uint8 JPEG 2000, or a single
///   bit-packed band; OR-ing every component covers both readings;
/// - `MSK_CLDPRB`: flagged where the probability is at least
///   [`CLOUD_PROBABILITY_THRESHOLD`].
///
/// The mask keeps its own grid (SCL and CLDPRB 20 m, CLASSI 60 m), taken from the
/// metadata grid of that size. Returns `Ok(None)` when no mask is listed.
///
/// # Errors
/// The decoder's error when the mask file is corrupt, or [`GranuleError::Metadata`] when
/// its size matches no grid of the granule.
pub fn read_cloud_mask(src: &GranuleSource) -> Result<Option<CloudMask>, GranuleError> {
    let order = [MaskKind::Scl, MaskKind::Classi, MaskKind::CloudProbability];
    let Some(mask) = order
        .iter()
        .find_map(|k| src.masks.iter().find(|m| m.kind == *k))
    else {
        return Ok(None);
    };
    let path = mask.location.display_path();
    let flagged: Raster<u8> = match mask.kind {
        MaskKind::Scl => read_raster_u16(&mask.location)?
            .0
            .map(|v| u8::from(SCL_FLAGGED.contains(&v))),
        MaskKind::CloudProbability => read_raster_u16(&mask.location)?
            .0
            .map(|v| u8::from(v >= CLOUD_PROBABILITY_THRESHOLD)),
        MaskKind::Classi => {
            let comps = if is_jp2(&mask.location) {
                jp2::decode_components(&read_location(&mask.location)?, &path)?
            } else {
                vec![read_raster_u16(&mask.location)?.0]
            };
            or_components(&comps, &path)?
        }
    };
    let native = match mask.kind {
        MaskKind::Classi => Resolution::R60,
        MaskKind::Scl | MaskKind::CloudProbability => Resolution::R20,
    };
    let fits = |g: &&GeoRef| g.width == flagged.width && g.height == flagged.height;
    let georef = src
        .metadata
        .grids
        .get(&native)
        .filter(fits)
        .or_else(|| src.metadata.grids.values().find(fits))
        .copied()
        .ok_or_else(|| GranuleError::Metadata {
            path: path.clone(),
            field: "mask grid".into(),
            reason: format!(
                "the {:?} mask is {}x{}, which matches no grid of the granule",
                mask.kind, flagged.width, flagged.height
            ),
        })?;
    Ok(Some(CloudMask { georef, flagged }))
}

fn is_jp2(loc: &Location) -> bool {
    let name = match loc {
        Location::File(p) => p.to_string_lossy().to_ascii_lowercase(),
        Location::Zip { entry, .. } => entry.to_ascii_lowercase(),
    };
    name.ends_with(".jp2")
}

/// 1 where any component is non-zero.
fn or_components(comps: &[Raster<u16>], path: &Path) -> Result<Raster<u8>, GranuleError> {
    let first = comps.first().ok_or_else(|| GranuleError::Jp2 {
        path: path.to_path_buf(),
        reason: "mask has no component".into(),
    })?;
    let mut out = first.map(|v| u8::from(v != 0));
    for c in &comps[1..] {
        if c.width != out.width || c.height != out.height {
            return Err(GranuleError::Jp2 {
                path: path.to_path_buf(),
                reason: "mask components differ in size".into(),
            });
        }
        for (o, v) in out.data.iter_mut().zip(&c.data) {
            *o |= u8::from(*v != 0);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The product's file tree: a directory, or the top-level directory inside a zip.

enum Tree {
    Dir(PathBuf),
    Zip {
        archive: PathBuf,
        zip: Box<Zip>,
        /// Product-relative path (below `X.SAFE/`) → the entry's name in the archive.
        files: BTreeMap<String, String>,
    },
}

impl Tree {
    fn open_zip(archive: &Path) -> Result<Tree, GranuleError> {
        let mut zip = open_archive(archive)?;
        let escape = |entry: &str| GranuleError::ZipEscape {
            path: archive.to_path_buf(),
            entry: entry.to_string(),
        };
        let names: Vec<String> = zip.file_names().map(str::to_string).collect();
        for (i, name) in names.iter().enumerate() {
            if escapes(name) {
                return Err(escape(name));
            }
            // The zip crate's own check, as a second opinion on every entry.
            let entry = zip.by_index_raw(i).map_err(|e| zip_err(archive, name, e))?;
            if entry.enclosed_name().is_none() {
                return Err(escape(name));
            }
        }
        let mut tops = BTreeSet::new();
        let mut files = BTreeMap::new();
        for name in &names {
            let Some(clean) = clean_rel(name) else {
                continue; // a bare "./" or "/" entry: nothing in it
            };
            let (top, rest) = clean.split_once('/').unwrap_or((clean.as_str(), ""));
            tops.insert(top.to_string());
            if !rest.is_empty() && !name.ends_with('/') {
                files.insert(rest.to_string(), name.clone());
            }
        }
        if tops.len() != 1 || files.is_empty() {
            return Err(GranuleError::UnknownLayout {
                path: archive.to_path_buf(),
                reason: format!(
                    "a zipped SAFE holds exactly one top-level X.SAFE/ directory; found {}",
                    if tops.is_empty() {
                        "nothing".to_string()
                    } else {
                        tops.into_iter().collect::<Vec<_>>().join(", ")
                    }
                ),
            });
        }
        Ok(Tree::Zip {
            archive: archive.to_path_buf(),
            zip: Box::new(zip),
            files,
        })
    }

    fn exists(&self, rel: &str) -> bool {
        match self {
            Tree::Dir(root) => root.join(rel).is_file(),
            Tree::Zip { files, .. } => files.contains_key(rel),
        }
    }

    fn location(&self, rel: &str) -> Location {
        match self {
            Tree::Dir(root) => Location::File(root.join(rel)),
            Tree::Zip { archive, files, .. } => Location::Zip {
                archive: archive.clone(),
                entry: files.get(rel).cloned().unwrap_or_else(|| rel.to_string()),
            },
        }
    }

    /// A path naming `rel` in error messages.
    fn display(&self, rel: &str) -> PathBuf {
        self.location(rel).display_path()
    }

    /// Reads a metadata file as text.
    fn read_text(&mut self, rel: &str) -> Result<String, GranuleError> {
        let path = self.display(rel);
        let bytes = match self {
            Tree::Dir(root) => {
                let p = root.join(rel);
                // Never a link, FIFO or device: a metadata file is read before any
                // pixel, in the daemon before any claim.
                tree::check_beneath(root, rel)?;
                let f = tree::open_regular(&p)?;
                let mut buf = Vec::new();
                f.take(MAX_XML_BYTES + 1)
                    .read_to_end(&mut buf)
                    .map_err(|e| GranuleError::io(&p, e))?;
                if buf.len() as u64 > MAX_XML_BYTES {
                    return Err(GranuleError::Xml {
                        path,
                        reason: format!("larger than {MAX_XML_BYTES} bytes"),
                    });
                }
                buf
            }
            Tree::Zip {
                archive,
                zip,
                files,
            } => {
                let entry = files.get(rel).ok_or_else(|| GranuleError::Zip {
                    path: archive.clone(),
                    reason: format!("no entry for {rel}"),
                })?;
                read_entry(zip, archive, entry, MAX_XML_BYTES)?
            }
        };
        xml::utf8(bytes, &path)
    }

    /// Product-relative paths of `GRANULE/*/MTD_TL.xml`.
    fn tile_metadata_files(&self) -> Vec<String> {
        match self {
            Tree::Dir(root) => std::fs::read_dir(root.join("GRANULE"))
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .filter_map(|e| e.file_name().to_str().map(str::to_string))
                        .map(|g| format!("GRANULE/{g}/MTD_TL.xml"))
                        .filter(|rel| root.join(rel).is_file())
                        .collect()
                })
                .unwrap_or_default(),
            Tree::Zip { files, .. } => files
                .keys()
                .filter(|k| {
                    let parts: Vec<&str> = k.split('/').collect();
                    parts.len() == 3 && parts[0] == "GRANULE" && parts[2] == "MTD_TL.xml"
                })
                .cloned()
                .collect(),
        }
    }
}

fn zip_err(archive: &Path, what: &str, e: zip::result::ZipError) -> GranuleError {
    GranuleError::Zip {
        path: archive.to_path_buf(),
        reason: if what.is_empty() {
            e.to_string()
        } else {
            format!("{what}: {e}")
        },
    }
}

fn open_archive(archive: &Path) -> Result<Zip, GranuleError> {
    let f = File::open(archive).map_err(|e| GranuleError::io(archive, e))?;
    ZipArchive::new(BufReader::new(f)).map_err(|e| zip_err(archive, "", e))
}

/// Reads one entry, refusing more than `cap` bytes whatever the archive declares.
fn read_entry(
    zip: &mut Zip,
    archive: &Path,
    entry: &str,
    cap: u64,
) -> Result<Vec<u8>, GranuleError> {
    let file = capped_entry(zip, archive, entry, cap)?;
    // The declared size is only a hint for the allocation; `copy_capped` enforces the cap.
    let mut buf = Vec::with_capacity(file.size() as usize);
    copy_capped(file, archive, entry, cap, &mut buf)?;
    Ok(buf)
}

/// Copies the entry `entry` of `archive` into `out` as it inflates, refusing more than
/// [`MAX_ENTRY_BYTES`] as [`read_zip_entry`] does, without holding the entry in memory
/// ([`super::unpack`]).
///
/// # Errors
/// [`GranuleError::Zip`] or [`GranuleError::ZipEscape`] as [`read_zip_entry`];
/// `Ok(Err(_))` when writing to `out` failed (the caller's medium, not the input).
pub fn copy_zip_entry(
    archive: &Path,
    entry: &str,
    out: &mut dyn Write,
) -> Result<std::io::Result<u64>, GranuleError> {
    let mut zip = open_archive_for(archive, entry)?;
    let file = capped_entry(&mut zip, archive, entry, MAX_ENTRY_BYTES)?;
    let mut sink = WriteOnce { out, failed: None };
    match copy_capped(file, archive, entry, MAX_ENTRY_BYTES, &mut sink) {
        Ok(n) => Ok(Ok(n)),
        Err(e) => match sink.failed.take() {
            Some(io) => Ok(Err(io)),
            None => Err(e),
        },
    }
}

/// A writer that remembers its first error, so that an inflation error (the input's)
/// and a write error (the output medium's) can be told apart after `io::copy`.
struct WriteOnce<'a> {
    out: &'a mut dyn Write,
    failed: Option<std::io::Error>,
}

impl WriteOnce<'_> {
    /// Keeps `e` and hands `io::copy` an error of the same kind.
    fn keep(&mut self, e: std::io::Error) -> std::io::Error {
        let kind = e.kind();
        self.failed = Some(e);
        std::io::Error::from(kind)
    }
}

impl Write for WriteOnce<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf).map_err(|e| self.keep(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush().map_err(|e| self.keep(e))
    }
}

/// The entry `entry`, refused when the archive declares more than `cap` bytes for it.
fn capped_entry<'z>(
    zip: &'z mut Zip,
    archive: &Path,
    entry: &str,
    cap: u64,
) -> Result<zip::read::ZipFile<'z, BufReader<File>>, GranuleError> {
    let file = zip.by_name(entry).map_err(|e| zip_err(archive, entry, e))?;
    if file.size() > cap {
        return Err(too_big(archive, entry, file.size(), cap));
    }
    Ok(file)
}

/// Copies an entry into `out`, refusing more than `cap` bytes whatever the archive
/// declared; returns the bytes copied.
fn copy_capped(
    file: impl Read,
    archive: &Path,
    entry: &str,
    cap: u64,
    out: &mut dyn Write,
) -> Result<u64, GranuleError> {
    let n = std::io::copy(&mut file.take(cap + 1), out).map_err(|e| GranuleError::Zip {
        path: archive.to_path_buf(),
        reason: format!("{entry}: {e}"),
    })?;
    if n > cap {
        return Err(too_big(archive, entry, n, cap));
    }
    Ok(n)
}

fn too_big(archive: &Path, entry: &str, n: u64, cap: u64) -> GranuleError {
    GranuleError::Zip {
        path: archive.to_path_buf(),
        reason: format!("{entry}: inflates to {n} bytes, more than the limit of {cap}"),
    }
}

/// True when a zip entry name or metadata path could leave the product directory or
/// be read differently by another tool: absolute, `..`, backslash, NUL, drive prefix.
fn escapes(name: &str) -> bool {
    name.starts_with('/')
        || name.contains(['\\', '\0'])
        || name.split('/').any(|c| c == ".." || c.contains(':'))
}

/// `raw` as a clean product-relative path (`./` and empty components dropped), or `None`
/// when it is empty or [`escapes`].
fn clean_rel(raw: &str) -> Option<String> {
    if escapes(raw) {
        return None;
    }
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

// ---------------------------------------------------------------------------------------
// Metadata.

/// What `MTD_MSIL1C.xml` / `MTD_MSIL2A.xml` says.
#[derive(Debug, Clone, PartialEq)]
struct ProductMtd {
    level: ProductLevel,
    baseline: Option<String>,
    spacecraft: Option<String>,
    quantification: Option<f64>,
    offsets: BTreeMap<Band, f64>,
    cloud_cover: Option<f64>,
    nodata: Option<u16>,
    saturated: Option<u16>,
    /// `IMAGE_FILE` entries, already checked not to escape.
    image_files: Vec<String>,
}

/// What `MTD_TL.xml` says.
#[derive(Debug, Clone, PartialEq)]
struct TileMtd {
    tile_id: Option<String>,
    epsg: u32,
    grids: BTreeMap<Resolution, GeoRef>,
    sensing_time: Option<DateTime<Utc>>,
    /// `MASK_FILENAME` entries of the kinds we use, already checked not to escape.
    masks: Vec<(MaskKind, String)>,
}

fn meta_err(path: &Path, field: &str, reason: impl Into<String>) -> GranuleError {
    GranuleError::Metadata {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn parse_num<T: std::str::FromStr>(
    text: &str,
    path: &Path,
    field: &str,
) -> Result<T, GranuleError> {
    text.trim()
        .parse()
        .map_err(|_| meta_err(path, field, format!("{text:?} is not a number")))
}

/// A metadata path checked not to escape the product.
fn metadata_path(raw: &str, path: &Path, field: &str) -> Result<String, GranuleError> {
    clean_rel(raw).ok_or_else(|| meta_err(path, field, format!("{raw:?} escapes the product")))
}

fn parse_product_mtd(text: &str, path: &Path) -> Result<ProductMtd, GranuleError> {
    let doc = xml::parse(text, path)?;
    let root = doc.root_element();
    let level_text = xml::find_text(root, "PROCESSING_LEVEL");
    let level = match level_text {
        Some(t) if t.starts_with("Level-1C") => ProductLevel::L1C,
        Some(t) if t.starts_with("Level-2A") => ProductLevel::L2A,
        // No or an unknown level element: the root element says which product it is.
        _ if root.tag_name().name().starts_with("Level-1C") => ProductLevel::L1C,
        _ if root.tag_name().name().starts_with("Level-2A") => ProductLevel::L2A,
        _ => ProductLevel::Unknown,
    };
    let quant_name = match level {
        ProductLevel::L2A => "BOA_QUANTIFICATION_VALUE",
        _ => "QUANTIFICATION_VALUE",
    };
    let quantification = xml::find_text(root, quant_name)
        .map(|t| parse_num::<f64>(t, path, quant_name))
        .transpose()?;
    let offset_name = match level {
        ProductLevel::L2A => "BOA_ADD_OFFSET",
        _ => "RADIO_ADD_OFFSET",
    };
    let mut offsets = BTreeMap::new();
    for node in xml::find_all(root, offset_name) {
        let id = node
            .attribute("band_id")
            .ok_or_else(|| meta_err(path, offset_name, "no band_id attribute"))?;
        let id: u8 = parse_num(id, path, &format!("{offset_name} band_id"))?;
        let band = Band::from_band_id(id)
            .ok_or_else(|| meta_err(path, offset_name, format!("band_id {id} is not 0-12")))?;
        let value = xml::text(node).ok_or_else(|| meta_err(path, offset_name, "empty"))?;
        offsets.insert(band, parse_num::<f64>(value, path, offset_name)?);
    }
    let cloud_cover = xml::find_text(root, "Cloud_Coverage_Assessment")
        .map(|t| parse_num::<f64>(t, path, "Cloud_Coverage_Assessment"))
        .transpose()?;
    let (mut nodata, mut saturated) = (None, None);
    for sv in xml::find_all(root, "Special_Values") {
        let (Some(name), Some(index)) = (
            xml::find_text(sv, "SPECIAL_VALUE_TEXT"),
            xml::find_text(sv, "SPECIAL_VALUE_INDEX"),
        ) else {
            continue;
        };
        let value: u16 = parse_num(index, path, "SPECIAL_VALUE_INDEX")?;
        match name {
            "NODATA" => nodata = Some(value),
            "SATURATED" => saturated = Some(value),
            _ => {}
        }
    }
    let image_files = xml::find_all(root, "IMAGE_FILE")
        .filter_map(xml::text)
        .map(|t| metadata_path(t, path, "IMAGE_FILE"))
        .collect::<Result<_, _>>()?;
    Ok(ProductMtd {
        level,
        baseline: xml::find_text(root, "PROCESSING_BASELINE").map(str::to_string),
        spacecraft: xml::find_text(root, "SPACECRAFT_NAME").map(str::to_string),
        quantification,
        offsets,
        cloud_cover,
        nodata,
        saturated,
        image_files,
    })
}

/// The MGRS tile (`33XWJ`) in a name holding a `_T33XWJ_` token.
fn tile_from_name(name: &str) -> Option<String> {
    name.split(['_', '.']).find_map(|tok| {
        let t = tok.strip_prefix('T')?;
        let b = t.as_bytes();
        (b.len() == 5
            && b[..2].iter().all(u8::is_ascii_digit)
            && b[2..].iter().all(u8::is_ascii_uppercase))
        .then(|| t.to_string())
    })
}

fn parse_time(text: &str, path: &Path) -> Result<DateTime<Utc>, GranuleError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            // Some producers omit the zone; the metadata times are UTC by specification.
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc())
        })
        .map_err(|e| meta_err(path, "SENSING_TIME", format!("{text:?}: {e}")))
}

/// The text of the element `name` below `node`, which must be present.
fn required_text<'a>(
    node: roxmltree::Node<'a, '_>,
    name: &str,
    path: &Path,
) -> Result<&'a str, GranuleError> {
    xml::find_text(node, name).ok_or_else(|| meta_err(path, name, "absent"))
}

fn parse_tile_mtd(text: &str, path: &Path) -> Result<TileMtd, GranuleError> {
    let doc = xml::parse(text, path)?;
    let root = doc.root_element();
    let tile_id = xml::find_text(root, "TILE_ID").and_then(tile_from_name);
    let code = xml::find_text(root, "HORIZONTAL_CS_CODE")
        .ok_or_else(|| meta_err(path, "HORIZONTAL_CS_CODE", "absent"))?;
    let epsg: u32 = code
        .strip_prefix("EPSG:")
        .ok_or_else(|| {
            meta_err(
                path,
                "HORIZONTAL_CS_CODE",
                format!("{code:?} is not EPSG:n"),
            )
        })
        .and_then(|n| parse_num(n, path, "HORIZONTAL_CS_CODE"))?;
    let resolution = |node: roxmltree::Node<'_, '_>, field: &str| {
        let r = node
            .attribute("resolution")
            .ok_or_else(|| meta_err(path, field, "no resolution attribute"))?;
        let m: u32 = parse_num(r, path, field)?;
        Resolution::from_metres(m)
            .ok_or_else(|| meta_err(path, field, format!("resolution {m} is not 10, 20 or 60")))
    };
    let mut sizes = BTreeMap::new();
    for node in xml::find_all(root, "Size") {
        let res = resolution(node, "Size")?;
        let rows: u64 = parse_num(required_text(node, "NROWS", path)?, path, "NROWS")?;
        let cols: u64 = parse_num(required_text(node, "NCOLS", path)?, path, "NCOLS")?;
        if rows == 0 || cols == 0 || rows > MAX_SIDE || cols > MAX_SIDE {
            return Err(meta_err(
                path,
                "Size",
                format!("{cols}x{rows} at {res} is empty or over {MAX_SIDE} per side"),
            ));
        }
        sizes.insert(res, (cols as usize, rows as usize));
    }
    let mut grids = BTreeMap::new();
    for node in xml::find_all(root, "Geoposition") {
        let res = resolution(node, "Geoposition")?;
        let num = |name: &str| -> Result<f64, GranuleError> {
            let v: f64 = parse_num(required_text(node, name, path)?, path, name)?;
            v.is_finite()
                .then_some(v)
                .ok_or_else(|| meta_err(path, name, "not finite"))
        };
        let transform = GeoTransform {
            origin_x: num("ULX")?,
            origin_y: num("ULY")?,
            pixel_width: num("XDIM")?,
            pixel_height: num("YDIM")?,
        };
        if transform.pixel_width <= 0.0 || transform.pixel_height >= 0.0 {
            return Err(meta_err(
                path,
                "Geoposition",
                format!(
                    "XDIM {} / YDIM {} at {res}: a north-up grid needs XDIM > 0 and YDIM < 0",
                    transform.pixel_width, transform.pixel_height
                ),
            ));
        }
        let (width, height) = *sizes
            .get(&res)
            .ok_or_else(|| meta_err(path, "Size", format!("no Size for resolution {res}")))?;
        grids.insert(
            res,
            GeoRef {
                epsg,
                transform,
                width,
                height,
            },
        );
    }
    let sensing_time = xml::find_text(root, "SENSING_TIME")
        .map(|t| parse_time(t, path))
        .transpose()?;
    let mut masks = Vec::new();
    for node in xml::find_all(root, "MASK_FILENAME") {
        let kind = match node.attribute("type") {
            Some("MSK_CLASSI") => MaskKind::Classi,
            Some("MSK_CLDPRB") => MaskKind::CloudProbability,
            _ => continue,
        };
        if let Some(t) = xml::text(node) {
            masks.push((kind, metadata_path(t, path, "MASK_FILENAME")?));
        }
    }
    Ok(TileMtd {
        tile_id,
        epsg,
        grids,
        sensing_time,
        masks,
    })
}

/// `href`s of `manifest.safe`'s `fileLocation`s, cleaned; unsafe ones are dropped (the
/// manifest is only a fallback for finding files, never trusted to point outside).
fn manifest_hrefs(text: &str, path: &Path) -> Result<Vec<String>, GranuleError> {
    Ok(parse_manifest(text, path)?
        .files
        .into_iter()
        .map(|f| f.href)
        .collect())
}

/// One file listed in `manifest.safe` (a `fileLocation` and its `byteStream`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Product-relative path, cleaned (checked not to escape).
    pub href: String,
    /// The listed size in bytes, when given.
    pub size: Option<u64>,
    /// `(checksumName, lower-case hex digest)`, when given.
    pub checksum: Option<(String, String)>,
}

/// `manifest.safe`, parsed: the one parser of the project (the daemon's `manifest`
/// readiness rule and the SAFE reader both use it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Listed files whose `href` stays inside the product.
    pub files: Vec<ManifestFile>,
    /// Raw `href`s that would leave the product (absolute, `..`, drive, backslash):
    /// never followed; the daemon refuses a product that lists any.
    pub escaping: Vec<String>,
}

/// The most files a manifest may list (a real one lists ~100).
pub const MAX_MANIFEST_FILES: usize = 100_000;

/// Parses `manifest.safe` (the text of the file at `path`) with the hardened parser.
///
/// # Errors
/// [`GranuleError::Xml`] when it does not parse or declares a DTD;
/// [`GranuleError::Metadata`] for an unparsable size or too many entries.
pub fn parse_manifest(text: &str, path: &Path) -> Result<Manifest, GranuleError> {
    let doc = xml::parse(text, path)?;
    let mut out = Manifest::default();
    for loc in xml::find_all(doc.root_element(), "fileLocation") {
        let Some(raw) = loc.attribute("href") else {
            continue;
        };
        if out.files.len() + out.escaping.len() >= MAX_MANIFEST_FILES {
            return Err(meta_err(
                path,
                "fileLocation",
                format!("more than {MAX_MANIFEST_FILES} entries"),
            ));
        }
        let Some(href) = clean_rel(raw) else {
            if !raw.trim().is_empty() && raw.trim() != "." && raw.trim() != "./" {
                out.escaping.push(raw.to_string());
            }
            continue;
        };
        let stream = loc.parent_element().filter(|p| xml::is(*p, "byteStream"));
        let size = match stream.and_then(|b| b.attribute("size")) {
            Some(s) => Some(parse_num::<u64>(s, path, "byteStream size")?),
            None => None,
        };
        let checksum = stream
            .and_then(|b| xml::child(b, "checksum"))
            .and_then(|c| {
                Some((
                    c.attribute("checksumName")?.to_string(),
                    xml::text(c)?.to_ascii_lowercase(),
                ))
            });
        out.files.push(ManifestFile {
            href,
            size,
            checksum,
        });
    }
    Ok(out)
}

/// The files of a SAFE (directory or zip) as the daemon's readiness rule sees them:
/// the manifest, read with the caps and checks of the reader, and each listed file's
/// size and bytes, never following a link or opening a FIFO or device.
pub struct SafeFiles {
    tree: Tree,
}

impl std::fmt::Debug for SafeFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeFiles").finish_non_exhaustive()
    }
}

impl SafeFiles {
    /// Opens a SAFE directory or zip (every zip entry name is checked, as by
    /// [`open_zip`]).
    ///
    /// # Errors
    /// [`GranuleError::UnsafeFile`] when `path` itself is a link, FIFO or device; the
    /// errors of [`open_zip`]'s archive checks.
    pub fn open(path: &Path) -> Result<SafeFiles, GranuleError> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| GranuleError::io(path, e))?;
        if let Some(why) = tree::refusal(&meta) {
            return Err(GranuleError::UnsafeFile {
                path: path.to_path_buf(),
                reason: why,
            });
        }
        let tree = if meta.is_dir() {
            Tree::Dir(path.to_path_buf())
        } else {
            // `open_archive` opens the file; it is a regular file (checked above).
            Tree::open_zip(path)?
        };
        Ok(SafeFiles { tree })
    }

    /// The parsed `manifest.safe`, `None` when the product has none (yet).
    ///
    /// # Errors
    /// As [`parse_manifest`]; [`GranuleError::UnsafeFile`] when it is a link, FIFO or
    /// device; [`GranuleError::Xml`] when larger than [`MAX_XML_BYTES`].
    pub fn manifest(&mut self) -> Result<Option<Manifest>, GranuleError> {
        match &self.tree {
            Tree::Dir(root) => {
                if let Err(e) = std::fs::symlink_metadata(root.join("manifest.safe")) {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        return Ok(None);
                    }
                }
            }
            Tree::Zip { files, .. } => {
                if !files.contains_key("manifest.safe") {
                    return Ok(None);
                }
            }
        }
        let text = self.tree.read_text("manifest.safe")?;
        parse_manifest(&text, &self.tree.display("manifest.safe")).map(Some)
    }

    /// The size of the listed file `rel`, `None` when it is absent.
    ///
    /// # Errors
    /// [`GranuleError::UnsafeFile`] for a link, FIFO, device or hard-linked file on the
    /// way; [`GranuleError::Io`] when it cannot be inspected.
    pub fn size(&mut self, rel: &str) -> Result<Option<u64>, GranuleError> {
        match &mut self.tree {
            Tree::Dir(root) => match tree::check_beneath(root, rel) {
                Ok(meta) => Ok(Some(meta.len())),
                Err(GranuleError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            },
            Tree::Zip {
                archive,
                zip,
                files,
            } => {
                let Some(entry) = files.get(rel) else {
                    return Ok(None);
                };
                let e = zip.by_name(entry).map_err(|e| zip_err(archive, entry, e))?;
                Ok(Some(e.size()))
            }
        }
    }

    /// Streams at most `limit` bytes of the listed file `rel` into `sink` (a digest);
    /// returns how many bytes were read (more than `limit` means the file is longer).
    ///
    /// # Errors
    /// As [`SafeFiles::size`]; the read error.
    pub fn read_into(
        &mut self,
        rel: &str,
        limit: u64,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<u64, GranuleError> {
        let display = self.tree.display(rel);
        let mut reader: Box<dyn Read + '_> = match &mut self.tree {
            Tree::Dir(root) => {
                tree::check_beneath(root, rel)?;
                Box::new(tree::open_regular(&root.join(rel))?)
            }
            Tree::Zip {
                archive,
                zip,
                files,
            } => {
                let entry = files.get(rel).ok_or_else(|| GranuleError::Zip {
                    path: archive.clone(),
                    reason: format!("no entry for {rel}"),
                })?;
                Box::new(zip.by_name(entry).map_err(|e| zip_err(archive, entry, e))?)
            }
        };
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        while total <= limit {
            let n = reader
                .read(&mut buf)
                .map_err(|e| GranuleError::io(&display, e))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            sink(&buf[..n]);
        }
        Ok(total)
    }

    /// `rel` as a path for messages.
    pub fn display(&self, rel: &str) -> PathBuf {
        self.tree.display(rel)
    }
}

/// The tile metadata file named in errors of [`check_tiff_bands_against_tile`].
fn mtd_path_for_errors(tree: &Tree) -> PathBuf {
    tree.tile_metadata_files()
        .first()
        .map(|r| tree.display(r))
        .unwrap_or_else(|| tree.display("GRANULE"))
}

/// GeoTIFF bands (distributor-converted SAFEs) carry their own CRS and size in their
/// header: a tile metadata that contradicts them (another EPSG code) is refused at
/// opening, before any pixel is processed.
/// JPEG 2000 bands are not checked here (their GeoJP2 box is not read).
///
/// # Errors
/// [`GranuleError::Metadata`] naming the band file and both values; the header's error.
fn check_tiff_bands_against_tile(
    bands: &BTreeMap<Band, Location>,
    epsg: u32,
    tile_mtd: &Path,
) -> Result<(), GranuleError> {
    for (band, loc) in bands {
        let Location::File(file) = loc else { continue };
        let lower = file.to_string_lossy().to_ascii_lowercase();
        if !(lower.ends_with(".tif") || lower.ends_with(".tiff")) {
            continue;
        }
        let Ok(header) = super::tiff::read_header(file) else {
            continue; // a corrupt band is reported when it is read
        };
        let Some(g) = header.georef else { continue };
        if g.epsg != epsg {
            return Err(meta_err(
                tile_mtd,
                "HORIZONTAL_CS_CODE",
                format!(
                    "the tile metadata says EPSG:{epsg} but {} (band {band}) is EPSG:{}",
                    file.display(),
                    g.epsg
                ),
            ));
        }
    }
    Ok(())
}

/// Fuzzing entry point, not an API: runs the product-metadata, tile-metadata and
/// manifest parsers on `text` (`fuzz/fuzz_targets/safe_metadata.rs`).
#[doc(hidden)]
pub fn fuzz_metadata(text: &str) {
    let p = Path::new("MTD.xml");
    let _ = parse_product_mtd(text, p);
    let _ = parse_tile_mtd(text, p);
    let _ = parse_manifest(text, p);
}

/// Baseline `NN.NN` as a comparable pair.
fn baseline_key(b: &str) -> Option<(u32, u32)> {
    let (major, minor) = b.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// What an `IMAGE_FILE` name denotes: a band or the SCL, with the resolution suffix of
/// L2A names (`…_B02_10m`); `None` for anything else (TCI, AOT, WVP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImageKind {
    Band(Band),
    Scl,
}

fn image_kind(rel: &str) -> Option<(ImageKind, Option<Resolution>)> {
    let name = rel.rsplit('/').next()?;
    let mut tokens: Vec<&str> = name.split('_').collect();
    let res = tokens.last().and_then(|t| t.parse::<Resolution>().ok());
    if res.is_some() {
        tokens.pop();
    }
    let token = *tokens.last()?;
    if token == "SCL" {
        return Some((ImageKind::Scl, res));
    }
    // Only the exact spellings of file names (B01 … B12, B8A), not `Band`'s lenient parse.
    let band = Band::ALL.into_iter().find(|b| b.name() == token)?;
    Some((ImageKind::Band(band), res))
}

/// The existing file for an `IMAGE_FILE` entry: as given when it already has an
/// extension, else `.jp2` first, then `.tif`.
fn probe(tree: &Tree, rel: &str) -> Option<String> {
    let lower = rel.to_ascii_lowercase();
    if [".jp2", ".tif", ".tiff"].iter().any(|e| lower.ends_with(e)) {
        return tree.exists(rel).then(|| rel.to_string());
    }
    [".jp2", ".tif"]
        .iter()
        .map(|ext| format!("{rel}{ext}"))
        .find(|p| tree.exists(p))
}

/// `rel` with its extension swapped between `.jp2` and `.tif`, for mask files whose
/// listed extension a distributor changed when converting the product.
fn other_extension(rel: &str) -> Option<String> {
    if let Some(stem) = rel.strip_suffix(".jp2") {
        Some(format!("{stem}.tif"))
    } else {
        rel.strip_suffix(".tif").map(|stem| format!("{stem}.jp2"))
    }
}

fn open_tree(path: &Path, kind: InputKind, mut tree: Tree) -> Result<GranuleSource, GranuleError> {
    let id = GranuleId::from_path(path)?;
    let mut warnings = Vec::new();

    let hrefs = if tree.exists("manifest.safe") {
        let text = tree.read_text("manifest.safe")?;
        manifest_hrefs(&text, &tree.display("manifest.safe"))?
    } else {
        warnings.push("manifest.safe is missing; files located by name".to_string());
        Vec::new()
    };

    let mtd_rel = ["MTD_MSIL2A.xml", "MTD_MSIL1C.xml"]
        .iter()
        .map(|s| s.to_string())
        .find(|r| tree.exists(r))
        .or_else(|| {
            hrefs
                .iter()
                .find(|h| !h.contains('/') && h.starts_with("MTD_MSIL") && h.ends_with(".xml"))
                .filter(|h| tree.exists(h))
                .cloned()
        })
        .ok_or_else(|| GranuleError::UnknownLayout {
            path: path.to_path_buf(),
            reason: "a SAFE without MTD_MSIL1C.xml or MTD_MSIL2A.xml".into(),
        })?;
    let mtd_text = tree.read_text(&mtd_rel)?;
    let product = parse_product_mtd(&mtd_text, &tree.display(&mtd_rel))?;

    // The granule directory: the one the IMAGE_FILE entries live in, else the manifest's
    // or the tree's only GRANULE/*/MTD_TL.xml.
    let granule_dirs: BTreeSet<String> = product
        .image_files
        .iter()
        .filter_map(|f| {
            let mut it = f.splitn(3, '/');
            match (it.next(), it.next()) {
                (Some("GRANULE"), Some(g)) => Some(format!("GRANULE/{g}")),
                _ => None,
            }
        })
        .collect();
    let tl_candidates: Vec<String> = if granule_dirs.is_empty() {
        let from_manifest: Vec<String> = hrefs
            .iter()
            .filter(|h| h.starts_with("GRANULE/") && h.ends_with("/MTD_TL.xml"))
            .cloned()
            .collect();
        if from_manifest.is_empty() {
            tree.tile_metadata_files()
        } else {
            from_manifest
        }
    } else {
        granule_dirs
            .iter()
            .map(|g| format!("{g}/MTD_TL.xml"))
            .collect()
    };
    let tl_rel = match tl_candidates.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(GranuleError::UnknownLayout {
                path: path.to_path_buf(),
                reason: "no GRANULE/*/MTD_TL.xml".into(),
            })
        }
        many => {
            return Err(GranuleError::UnknownLayout {
                path: path.to_path_buf(),
                reason: format!(
                    "{} granules ({}); only single-tile products are supported",
                    many.len(),
                    many.join(", ")
                ),
            })
        }
    };
    if !tree.exists(&tl_rel) {
        return Err(GranuleError::Metadata {
            path: tree.display(&tl_rel),
            field: "MTD_TL.xml".into(),
            reason: "the tile metadata file is missing".into(),
        });
    }
    let tl_text = tree.read_text(&tl_rel)?;
    let tile = parse_tile_mtd(&tl_text, &tree.display(&tl_rel))?;

    // Bands and the SCL from IMAGE_FILE.
    let mut bands = BTreeMap::new();
    let mut masks = Vec::new();
    let mut off_native: BTreeSet<Band> = BTreeSet::new();
    for rel in &product.image_files {
        let Some((what, res)) = image_kind(rel) else {
            continue;
        };
        let label = match what {
            ImageKind::Band(b) => {
                // L2A lists most bands at several resolutions: take the native one only.
                if res.is_some_and(|r| r != b.resolution()) {
                    off_native.insert(b);
                    continue;
                }
                if bands.contains_key(&b) {
                    continue;
                }
                format!("band {b}")
            }
            ImageKind::Scl => {
                if res.is_some_and(|r| r != Resolution::R20)
                    || masks.iter().any(|m: &MaskFile| m.kind == MaskKind::Scl)
                {
                    continue;
                }
                "mask SCL".to_string()
            }
        };
        match probe(&tree, rel) {
            Some(found) => {
                let loc = tree.location(&found);
                match what {
                    ImageKind::Band(b) => {
                        bands.insert(b, loc);
                    }
                    ImageKind::Scl => masks.push(MaskFile {
                        kind: MaskKind::Scl,
                        location: loc,
                    }),
                }
            }
            None => warnings.push(format!("{label}: file {rel}.jp2 (or .tif) is missing")),
        }
    }
    let listed_native: BTreeSet<Band> = product
        .image_files
        .iter()
        .filter_map(|f| match image_kind(f) {
            Some((ImageKind::Band(b), r)) if r.is_none_or(|r| r == b.resolution()) => Some(b),
            _ => None,
        })
        .collect();
    for b in off_native.difference(&listed_native) {
        warnings.push(format!(
            "band {b}: listed only at other resolutions than its native {}",
            b.resolution()
        ));
    }

    // MSK_CLASSI and MSK_CLDPRB: from MTD_TL, else from the manifest.
    for (kind, needle) in [
        (MaskKind::Classi, "MSK_CLASSI"),
        (MaskKind::CloudProbability, "MSK_CLDPRB_20m"),
    ] {
        let listed: Vec<String> = tile
            .masks
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, r)| r.clone())
            .chain(hrefs.iter().filter(|h| h.contains(needle)).cloned())
            .collect();
        let Some(first) = listed.first() else {
            continue;
        };
        let found = listed
            .iter()
            .flat_map(|r| [Some(r.clone()), other_extension(r)])
            .flatten()
            .find(|r| tree.exists(r));
        match found {
            Some(r) => masks.push(MaskFile {
                kind,
                location: tree.location(&r),
            }),
            None => warnings.push(format!("mask {needle}: file {first} is missing")),
        }
    }

    if let Some(b) = &product.baseline {
        if product.offsets.is_empty() && baseline_key(b).is_some_and(|k| k >= (4, 0)) {
            warnings.push(format!(
                "processing baseline {b} should list radiometric offsets but none are given; \
                 assuming 0"
            ));
        }
    }

    check_tiff_bands_against_tile(&bands, tile.epsg, &mtd_path_for_errors(&tree))?;

    let mut metadata = Metadata::new(tile.epsg);
    metadata.tile_id = tile.tile_id.or_else(|| tile_from_name(id.as_str()));
    metadata.grids = tile.grids;
    metadata.sensing_time = tile.sensing_time;
    metadata.spacecraft = product.spacecraft;
    metadata.level = product.level;
    metadata.baseline = product.baseline;
    metadata.quantification = product.quantification;
    metadata.offsets = product.offsets;
    metadata.offsets_known = true;
    metadata.cloud_cover = product.cloud_cover;
    if let Some(v) = product.nodata {
        metadata.nodata = v;
    }
    if let Some(v) = product.saturated {
        metadata.saturated = v;
    }
    Ok(GranuleSource {
        id,
        kind,
        path: path.to_path_buf(),
        metadata,
        bands,
        masks,
        warnings,
        unpacked: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_names_are_caught() {
        for bad in [
            "../evil",
            "/abs",
            "X.SAFE/../../evil",
            "X.SAFE\\..\\evil",
            "C:/x",
            "a/\0b",
        ] {
            assert!(escapes(bad), "{bad:?}");
            assert_eq!(clean_rel(bad), None);
        }
        assert_eq!(
            clean_rel("./GRANULE//x/./MTD_TL.xml").as_deref(),
            Some("GRANULE/x/MTD_TL.xml")
        );
        assert_eq!(clean_rel("./"), None);
    }

    #[test]
    fn image_names_map_to_bands_and_resolutions() {
        let k = |s| image_kind(s);
        assert_eq!(
            k("GRANULE/g/IMG_DATA/T46RER_20210908T042701_B8A"),
            Some((ImageKind::Band(Band::B8A), None))
        );
        assert_eq!(
            k("GRANULE/g/IMG_DATA/R20m/T07HFE_20190212T192651_B02_20m"),
            Some((ImageKind::Band(Band::B02), Some(Resolution::R20)))
        );
        assert_eq!(
            k("GRANULE/g/IMG_DATA/R20m/T07HFE_20190212T192651_SCL_20m"),
            Some((ImageKind::Scl, Some(Resolution::R20)))
        );
        assert_eq!(k("GRANULE/g/IMG_DATA/T46RER_20210908T042701_TCI"), None);
        assert_eq!(k("GRANULE/g/IMG_DATA/R10m/T_20190212T192651_AOT_10m"), None);
    }

    #[test]
    fn tile_ids_and_baselines_parse() {
        assert_eq!(
            tile_from_name("S2A_OPER_MSI_L1C_TL_VGS4_20210908T070248_A032448_T46RER_N03.01")
                .as_deref(),
            Some("46RER")
        );
        assert_eq!(tile_from_name("no_tile_here"), None);
        assert_eq!(baseline_key("04.00"), Some((4, 0)));
        assert!(baseline_key("03.01") < baseline_key("04.00"));
        assert_eq!(baseline_key("x"), None);
    }

    #[test]
    fn product_metadata_maps_band_ids_and_refuses_bad_ones() {
        let t = r#"<n1:Level-1C_User_Product xmlns:n1="urn:x"><n1:General_Info>
            <PROCESSING_LEVEL>Level-1C</PROCESSING_LEVEL>
            <PROCESSING_BASELINE>04.00</PROCESSING_BASELINE>
            <QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>
            <RADIO_ADD_OFFSET band_id="8">-1000</RADIO_ADD_OFFSET>
            <RADIO_ADD_OFFSET band_id="10">-900</RADIO_ADD_OFFSET>
            <IMAGE_FILE>GRANULE/g/IMG_DATA/T_B01</IMAGE_FILE>
            </n1:General_Info></n1:Level-1C_User_Product>"#;
        let p = parse_product_mtd(t, Path::new("MTD_MSIL1C.xml")).unwrap();
        assert_eq!(p.level, ProductLevel::L1C);
        assert_eq!(p.quantification, Some(10000.0));
        assert_eq!(p.offsets.get(&Band::B8A), Some(&-1000.0));
        assert_eq!(p.offsets.get(&Band::B10), Some(&-900.0));
        assert_eq!(p.offsets.len(), 2);
        let bad = t.replace("band_id=\"10\"", "band_id=\"13\"");
        let e = parse_product_mtd(&bad, Path::new("MTD_MSIL1C.xml")).unwrap_err();
        assert!(matches!(e, GranuleError::Metadata { .. }), "{e}");
        let escape = t.replace("GRANULE/g/IMG_DATA/T_B01", "../../etc/passwd");
        assert!(parse_product_mtd(&escape, Path::new("MTD_MSIL1C.xml")).is_err());
    }

    #[test]
    fn entries_over_the_cap_are_refused() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.zip");
        let mut zw = zip::ZipWriter::new(File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zw.start_file("X.SAFE/big.jp2", opts).unwrap();
        // 1 MB of zeros deflates to about 1 kB: the shape of a zip bomb.
        zw.write_all(&vec![0u8; 1 << 20]).unwrap();
        zw.finish().unwrap();
        let mut zip = open_archive(&path).unwrap();
        let e = read_entry(&mut zip, &path, "X.SAFE/big.jp2", 1000).unwrap_err();
        assert!(matches!(e, GranuleError::Zip { .. }));
        assert!(e.to_string().contains("more than the limit of 1000"), "{e}");
        let ok = read_entry(&mut zip, &path, "X.SAFE/big.jp2", 1 << 20).unwrap();
        assert_eq!(ok.len(), 1 << 20);
        let missing = read_zip_entry(&path, "X.SAFE/absent.jp2").unwrap_err();
        assert!(
            missing.to_string().contains("X.SAFE/absent.jp2"),
            "{missing}"
        );
    }

    #[test]
    fn or_of_components_flags_any_plane() {
        let a = Raster::from_vec(2, 1, vec![0u16, 1]).unwrap();
        let b = Raster::from_vec(2, 1, vec![4u16, 0]).unwrap();
        let c = Raster::from_vec(2, 1, vec![0u16, 0]).unwrap();
        let m = or_components(&[c.clone(), a, b], Path::new("m")).unwrap();
        assert_eq!(m.data, vec![1, 1]);
        assert_eq!(
            or_components(&[c], Path::new("m")).unwrap().data,
            vec![0, 0]
        );
    }
}
