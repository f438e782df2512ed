//! Per-band GeoTIFF folders (stub until the reader lands).
use std::path::Path;

use super::{GranuleError, GranuleSource};

/// Opens a per-band GeoTIFF folder.
pub fn open(path: &Path) -> Result<GranuleSource, GranuleError> {
    Err(GranuleError::UnknownLayout {
        path: path.to_path_buf(),
        reason: "GeoTIFF folder reading is not implemented yet".into(),
    })
}
