//! The reBEN / rico-hdl encoding of BigEarthNet, the way training at scale reads it: an
//! LMDB whose keys are patch ids and whose values are safetensors dicts of `uint16` bands
//! (`B01`..`B12`, `B8A`, each at its native size: 120, 60 or 20 px), plus reBEN's
//! `metadata.parquet` (`patch_id`, `labels` as 19-class names, `split`, `country`,
//! `s1_name`, …).
//!
//! Invariants:
//! - the LMDB is opened read-only and without a lock file (`MDB_RDONLY | MDB_NOLOCK`): the
//!   release is usually on a read-only or shared filesystem, and readers never write;
//! - values are looked up by key (random access); nothing is loaded up front;
//! - a metadata row naming a label outside the 19-class nomenclature is an error (a silent
//!   drop would corrupt the targets); a row whose key is absent from the LMDB is not an
//!   error (the caller skips and counts it), nor is a value that does not decode;
//! - pixels are harmonised DN as stored (reBEN's L2A patches carry no offset) and reach the
//!   network through the same per-patch code path as BigEarthNet v1 folders
//!   ([`super::classify::patch_from_scene`]).
//!
//! [`write_lmdb`] and [`write_metadata`] write the same encoding (tests build fixtures
//! with them; users can convert their own patches).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, WithoutTls};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use safetensors::{Dtype, SafeTensors};

use crate::granule::labels::NAMES_19;
use crate::granule::Band;
use crate::raster::Raster;

use super::config::DataSplit;
use super::TrainError;

/// Patch side of a 10 m band.
const SIDE_10M: usize = 120;

/// What can go wrong reading the reBEN encoding.
#[derive(Debug, thiserror::Error)]
pub enum RebenError {
    /// The LMDB environment could not be opened or read.
    #[error("LMDB {path}: {reason}")]
    Lmdb {
        /// The LMDB folder.
        path: PathBuf,
        /// LMDB's reason.
        reason: String,
    },
    /// `metadata.parquet` could not be read or lacks a column.
    #[error("metadata {path}: {reason}")]
    Metadata {
        /// The parquet file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A metadata row names a label outside the 19-class nomenclature.
    #[error("metadata {path}: row {row} (patch {patch}): unknown label {label:?} (not one of the 19 BigEarthNet classes)")]
    UnknownLabel {
        /// The parquet file.
        path: PathBuf,
        /// Row index.
        row: usize,
        /// Patch id.
        patch: String,
        /// The label as written.
        label: String,
    },
    /// A value is not a safetensors dict of the expected bands.
    #[error("patch {key}: {reason}")]
    Corrupt {
        /// The LMDB key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The key is not in the LMDB.
    #[error("patch {key}: not in the LMDB")]
    Missing {
        /// The LMDB key.
        key: String,
    },
}

impl RebenError {
    /// True for per-patch problems the trainer skips and counts (missing key, corrupt
    /// value); false for problems of the whole dataset.
    pub fn is_per_patch(&self) -> bool {
        matches!(
            self,
            RebenError::Corrupt { .. } | RebenError::Missing { .. }
        )
    }
}

impl From<RebenError> for TrainError {
    fn from(e: RebenError) -> TrainError {
        let path = match &e {
            RebenError::Lmdb { path, .. }
            | RebenError::Metadata { path, .. }
            | RebenError::UnknownLabel { path, .. } => path.clone(),
            RebenError::Corrupt { key, .. } | RebenError::Missing { key } => PathBuf::from(key),
        };
        TrainError::Dataset {
            path,
            reason: e.to_string(),
        }
    }
}

/// A row to write with [`write_metadata`]: (patch_id, labels, split, country, s1_name).
pub type MetaRecord = (String, Vec<String>, String, String, String);

/// One row of `metadata.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetaRow {
    /// The LMDB key of the Sentinel-2 patch.
    pub patch_id: String,
    /// 19-class indices (official order), sorted.
    pub classes: Vec<u8>,
    /// The split.
    pub split: DataSplit,
    /// Country of the patch.
    pub country: String,
    /// The LMDB key of the co-registered Sentinel-1 patch, when there is one.
    pub s1_name: Option<String>,
}

impl MetaRow {
    /// The multi-hot 19-class target.
    pub fn target(&self) -> [f32; 19] {
        let mut y = [0f32; 19];
        for &c in &self.classes {
            if let Some(v) = y.get_mut(c as usize) {
                *v = 1.0;
            }
        }
        y
    }
}

fn split_of(s: &str) -> Option<DataSplit> {
    match s {
        "train" => Some(DataSplit::Train),
        "validation" | "val" => Some(DataSplit::Validation),
        "test" => Some(DataSplit::Test),
        _ => None,
    }
}

/// Reads every row of reBEN's `metadata.parquet` (the row order of the file).
///
/// # Errors
/// [`RebenError::Metadata`] for an unreadable file, a missing column or an unknown split;
/// [`RebenError::UnknownLabel`] for a label outside the 19-class nomenclature.
pub fn read_metadata(path: &Path) -> Result<Vec<MetaRow>, RebenError> {
    let meta_err = |reason: String| RebenError::Metadata {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| meta_err(e.to_string()))?;
    let reader = SerializedFileReader::new(file).map_err(|e| meta_err(e.to_string()))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| meta_err(e.to_string()))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| meta_err(format!("row {i}: {e}")))?;
        let (mut id, mut labels, mut split, mut country, mut s1) = (None, None, None, None, None);
        for (name, field) in row.get_column_iter() {
            match (name.as_str(), field) {
                ("patch_id", Field::Str(s)) => id = Some(s.clone()),
                ("labels", Field::ListInternal(l)) => {
                    let mut names = Vec::new();
                    for e in l.elements() {
                        match e {
                            Field::Str(s) => names.push(s.clone()),
                            Field::Null => {}
                            other => {
                                return Err(meta_err(format!(
                                    "row {i}: labels hold {other}, not strings"
                                )))
                            }
                        }
                    }
                    labels = Some(names);
                }
                ("labels", Field::Null) => labels = Some(Vec::new()),
                ("split", Field::Str(s)) => split = Some(s.clone()),
                ("country", Field::Str(s)) => country = Some(s.clone()),
                ("s1_name", Field::Str(s)) => s1 = Some(s.clone()),
                _ => {}
            }
        }
        let id = id.ok_or_else(|| meta_err(format!("row {i}: no patch_id string")))?;
        let labels = labels.ok_or_else(|| meta_err(format!("row {i}: no labels list")))?;
        let split_s = split.ok_or_else(|| meta_err(format!("row {i}: no split string")))?;
        let split = split_of(&split_s).ok_or_else(|| {
            meta_err(format!(
                "row {i}: split {split_s:?} is not train, validation or test"
            ))
        })?;
        let mut classes = Vec::with_capacity(labels.len());
        for l in labels {
            let c = NAMES_19
                .iter()
                .position(|n| *n == l.trim())
                .ok_or_else(|| RebenError::UnknownLabel {
                    path: path.to_path_buf(),
                    row: i,
                    patch: id.clone(),
                    label: l.clone(),
                })?;
            classes.push(c as u8);
        }
        classes.sort_unstable();
        classes.dedup();
        out.push(MetaRow {
            patch_id: id,
            classes,
            split,
            country: country.unwrap_or_default(),
            s1_name: s1.filter(|s| !s.is_empty()),
        });
    }
    Ok(out)
}

/// A reBEN LMDB opened read-only, without a lock file. Cheap to clone and shareable
/// across threads (each lookup runs in its own read transaction).
#[derive(Clone)]
pub struct Lmdb {
    env: Env<WithoutTls>,
    db: Database<Bytes, Bytes>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for Lmdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lmdb").field("path", &self.path).finish()
    }
}

impl Lmdb {
    /// Opens the LMDB folder `dir` (holding `data.mdb`) with `MDB_RDONLY | MDB_NOLOCK`.
    ///
    /// # Errors
    /// [`RebenError::Lmdb`] when the folder or its `data.mdb` is missing or LMDB refuses it.
    pub fn open(dir: &Path) -> Result<Lmdb, RebenError> {
        // LMDB (and heed) allow one environment per path and process: share it.
        static OPEN: std::sync::OnceLock<std::sync::Mutex<BTreeMap<PathBuf, Lmdb>>> =
            std::sync::OnceLock::new();
        let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut open = OPEN
            .get_or_init(Default::default)
            .lock()
            .map_err(|_| RebenError::Lmdb {
                path: dir.to_path_buf(),
                reason: "the environment table is poisoned".into(),
            })?;
        if let Some(l) = open.get(&key) {
            return Ok(l.clone());
        }
        let l = Lmdb::open_new(dir)?;
        open.insert(key, l.clone());
        Ok(l)
    }

    fn open_new(dir: &Path) -> Result<Lmdb, RebenError> {
        let err = |reason: String| RebenError::Lmdb {
            path: dir.to_path_buf(),
            reason,
        };
        if !dir.join("data.mdb").is_file() {
            return Err(err(
                "no data.mdb in this folder (not an LMDB environment)".into()
            ));
        }
        let mut opts = EnvOpenOptions::new().read_txn_without_tls();
        // The map must cover the file; LMDB grows a read-only map to the file size anyway.
        let size = std::fs::metadata(dir.join("data.mdb"))
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        opts.map_size(size.max(1 << 20).next_multiple_of(page_size()));
        opts.max_readers(1024);
        // SAFETY: the environment is opened read-only and never written by this process;
        // NO_LOCK is sound because nothing writes it while training reads (the reBEN
        // release is immutable), which is the documented condition for MDB_NOLOCK.
        let env = unsafe {
            opts.flags(EnvFlags::READ_ONLY | EnvFlags::NO_LOCK);
            opts.open(dir)
        }
        .map_err(|e| err(e.to_string()))?;
        let rtxn = env.read_txn().map_err(|e| err(e.to_string()))?;
        let db: Database<Bytes, Bytes> = env
            .open_database(&rtxn, None)
            .map_err(|e| err(e.to_string()))?
            .ok_or_else(|| err("no unnamed database".into()))?;
        rtxn.commit().map_err(|e| err(e.to_string()))?;
        Ok(Lmdb {
            env,
            db,
            path: Arc::new(dir.to_path_buf()),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value stored under `key` (copied out of the map), or `None`.
    ///
    /// # Errors
    /// [`RebenError::Lmdb`] when the read transaction fails.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RebenError> {
        let err = |e: heed::Error| RebenError::Lmdb {
            path: self.path.to_path_buf(),
            reason: e.to_string(),
        };
        let rtxn = self.env.read_txn().map_err(err)?;
        let v = self.db.get(&rtxn, key.as_bytes()).map_err(err)?;
        Ok(v.map(<[u8]>::to_vec))
    }

    /// Number of entries.
    ///
    /// # Errors
    /// [`RebenError::Lmdb`].
    pub fn entries(&self) -> Result<u64, RebenError> {
        let err = |e: heed::Error| RebenError::Lmdb {
            path: self.path.to_path_buf(),
            reason: e.to_string(),
        };
        let rtxn = self.env.read_txn().map_err(err)?;
        self.db.len(&rtxn).map_err(err)
    }

    /// Reads and decodes the Sentinel-2 patch `key`: `bands` on their native grids.
    ///
    /// # Errors
    /// [`RebenError::Missing`], [`RebenError::Corrupt`] (both per patch) or
    /// [`RebenError::Lmdb`].
    pub fn s2_patch(
        &self,
        key: &str,
        bands: &[Band],
    ) -> Result<BTreeMap<Band, Raster<u16>>, RebenError> {
        let bytes = self.get(key)?.ok_or_else(|| RebenError::Missing {
            key: key.to_string(),
        })?;
        decode_s2(key, &bytes, bands)
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Whether `dir` is an LMDB folder (holds a `data.mdb`).
pub fn is_lmdb(dir: &Path) -> bool {
    dir.join("data.mdb").is_file()
}

/// Decodes a safetensors dict of `uint16` bands, checking each band's shape against its
/// native resolution (120 px at 10 m, 60 at 20 m, 20 at 60 m).
///
/// # Errors
/// [`RebenError::Corrupt`] naming the key and the problem.
pub fn decode_s2(
    key: &str,
    bytes: &[u8],
    bands: &[Band],
) -> Result<BTreeMap<Band, Raster<u16>>, RebenError> {
    let corrupt = |reason: String| RebenError::Corrupt {
        key: key.to_string(),
        reason,
    };
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| corrupt(format!("not a safetensors dict: {e}")))?;
    let mut out = BTreeMap::new();
    for &b in bands {
        let name = b.to_string();
        let t = st
            .tensor(&name)
            .map_err(|_| corrupt(format!("band {name} is missing")))?;
        if t.dtype() != Dtype::U16 {
            return Err(corrupt(format!(
                "band {name} is {:?}, expected U16",
                t.dtype()
            )));
        }
        let side = SIDE_10M / b.resolution().factor();
        if t.shape() != [side, side] {
            return Err(corrupt(format!(
                "band {name} has shape {:?}, expected [{side}, {side}]",
                t.shape()
            )));
        }
        let data: Vec<u16> = t
            .data()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        out.insert(
            b,
            Raster {
                width: side,
                height: side,
                data,
            },
        );
    }
    Ok(out)
}

/// Encodes bands as reBEN does: a safetensors dict of `uint16` `[h, w]` tensors named
/// after the band.
///
/// # Errors
/// [`RebenError::Corrupt`] when safetensors refuses the dict.
pub fn encode_s2(key: &str, bands: &BTreeMap<Band, Raster<u16>>) -> Result<Vec<u8>, RebenError> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = bands
        .iter()
        .map(|(b, r)| {
            (
                b.to_string(),
                r.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![r.height, r.width],
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, d, s)| {
            safetensors::tensor::TensorView::new(Dtype::U16, s.clone(), d)
                .map(|v| (n.clone(), v))
                .map_err(|e| RebenError::Corrupt {
                    key: key.to_string(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize(views, None).map_err(|e| RebenError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Writes `entries` (key, value) into a new LMDB environment in the folder `dir` (created
/// when missing).
///
/// # Errors
/// [`RebenError::Lmdb`].
pub fn write_lmdb(dir: &Path, entries: &[(String, Vec<u8>)]) -> Result<(), RebenError> {
    let err = |reason: String| RebenError::Lmdb {
        path: dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let total: usize = entries.iter().map(|(k, v)| k.len() + v.len() + 64).sum();
    let mut opts = EnvOpenOptions::new();
    opts.map_size((2 * total + (1 << 20)).next_multiple_of(page_size()));
    // SAFETY: a fresh environment only this function touches.
    let env = unsafe { opts.open(dir) }.map_err(|e| err(e.to_string()))?;
    let mut wtxn = env.write_txn().map_err(|e| err(e.to_string()))?;
    let db: Database<Bytes, Bytes> = env
        .create_database(&mut wtxn, None)
        .map_err(|e| err(e.to_string()))?;
    for (k, v) in entries {
        db.put(&mut wtxn, k.as_bytes(), v)
            .map_err(|e| err(e.to_string()))?;
    }
    wtxn.commit().map_err(|e| err(e.to_string()))?;
    env.prepare_for_closing().wait();
    Ok(())
}

/// Writes `rows` as a reBEN `metadata.parquet` (same column names and types: strings,
/// `labels` a list of strings, Snappy-compressed pages).
///
/// # Errors
/// [`RebenError::Metadata`].
pub fn write_metadata(path: &Path, rows: &[MetaRecord]) -> Result<(), RebenError> {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    let err = |reason: String| RebenError::Metadata {
        path: path.to_path_buf(),
        reason,
    };
    let schema = parse_message_type(
        "message schema {
            OPTIONAL BYTE_ARRAY patch_id (STRING);
            OPTIONAL group labels (LIST) {
                REPEATED group list {
                    OPTIONAL BYTE_ARRAY element (STRING);
                }
            }
            OPTIONAL BYTE_ARRAY split (STRING);
            OPTIONAL BYTE_ARRAY country (STRING);
            OPTIONAL BYTE_ARRAY s1_name (STRING);
        }",
    )
    .map_err(|e| err(e.to_string()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let file = File::create(path).map_err(|e| err(e.to_string()))?;
    let mut w = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props))
        .map_err(|e| err(e.to_string()))?;
    let mut rg = w.next_row_group().map_err(|e| err(e.to_string()))?;
    let strings = |f: &dyn Fn(&MetaRecord) -> &str| {
        rows.iter()
            .map(|r| ByteArray::from(f(r)))
            .collect::<Vec<_>>()
    };
    let mut col = 0usize;
    while let Some(mut c) = rg.next_column().map_err(|e| err(e.to_string()))? {
        let typed = c.typed::<ByteArrayType>();
        let res = if col == 1 {
            // list<string>: def 3 = element present, 1 = empty list; rep 0 starts a row.
            let (mut vals, mut def, mut rep) = (Vec::new(), Vec::new(), Vec::new());
            for r in rows {
                if r.1.is_empty() {
                    def.push(1);
                    rep.push(0);
                }
                for (j, l) in r.1.iter().enumerate() {
                    vals.push(ByteArray::from(l.as_str()));
                    def.push(3);
                    rep.push(if j == 0 { 0 } else { 1 });
                }
            }
            typed.write_batch(&vals, Some(&def[..]), Some(&rep[..]))
        } else {
            let vals = match col {
                0 => strings(&|r| r.0.as_str()),
                2 => strings(&|r| r.2.as_str()),
                3 => strings(&|r| r.3.as_str()),
                _ => strings(&|r| r.4.as_str()),
            };
            let def = vec![1i16; vals.len()];
            typed.write_batch(&vals, Some(&def[..]), None)
        };
        res.map_err(|e| err(e.to_string()))?;
        c.close().map_err(|e| err(e.to_string()))?;
        col += 1;
    }
    rg.close().map_err(|e| err(e.to_string()))?;
    w.close().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// The rows of `split` in file order.
pub fn rows_of_split(rows: &[MetaRow], split: DataSplit) -> Vec<MetaRow> {
    rows.iter().filter(|r| r.split == split).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bands_of(v: u16) -> BTreeMap<Band, Raster<u16>> {
        Band::PRODUCT
            .iter()
            .map(|&b| {
                let s = SIDE_10M / b.resolution().factor();
                (
                    b,
                    Raster {
                        width: s,
                        height: s,
                        data: (0..s * s).map(|i| v + i as u16).collect(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn safetensors_round_trip_and_shape_check() {
        let b = bands_of(100);
        let bytes = encode_s2("k", &b).unwrap();
        let back = decode_s2("k", &bytes, &Band::PRODUCT).unwrap();
        assert_eq!(back, b);
        // Truncated value: corrupt, per patch.
        let e = decode_s2("k", &bytes[..bytes.len() / 2], &Band::PRODUCT).unwrap_err();
        assert!(e.is_per_patch(), "{e}");
        // A 20 m band stored at 10 m size: corrupt.
        let mut wrong = b.clone();
        wrong.insert(Band::B05, b[&Band::B02].clone());
        let bytes = encode_s2("k", &wrong).unwrap();
        let e = decode_s2("k", &bytes, &[Band::B05]).unwrap_err();
        assert!(e.to_string().contains("expected [60, 60]"), "{e}");
    }

    #[test]
    fn lmdb_and_parquet_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let lm = dir.path().join("S2");
        write_lmdb(
            &lm,
            &[
                ("a".into(), encode_s2("a", &bands_of(1)).unwrap()),
                ("b".into(), b"garbage".to_vec()),
            ],
        )
        .unwrap();
        let db = Lmdb::open(&lm).unwrap();
        assert_eq!(db.entries().unwrap(), 2);
        assert_eq!(
            db.s2_patch("a", &[Band::B02]).unwrap()[&Band::B02].data[0],
            1
        );
        assert!(matches!(
            db.s2_patch("b", &[Band::B02]),
            Err(RebenError::Corrupt { .. })
        ));
        assert!(matches!(
            db.s2_patch("zz", &[Band::B02]),
            Err(RebenError::Missing { .. })
        ));
        let meta = dir.path().join("metadata.parquet");
        write_metadata(
            &meta,
            &[
                (
                    "a".into(),
                    vec!["Arable land".into(), "Urban fabric".into()],
                    "train".into(),
                    "Austria".into(),
                    "".into(),
                ),
                (
                    "b".into(),
                    vec![],
                    "validation".into(),
                    "Serbia".into(),
                    "S1x".into(),
                ),
            ],
        )
        .unwrap();
        let rows = read_metadata(&meta).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].classes, vec![0, 2]);
        assert_eq!(rows[0].s1_name, None);
        assert_eq!(rows[1].split, DataSplit::Validation);
        assert_eq!(rows[1].s1_name.as_deref(), Some("S1x"));
        assert!(rows[1].classes.is_empty());
    }
}
