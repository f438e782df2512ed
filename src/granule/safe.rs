//! SAFE products (stub until the SAFE reader lands).
use std::path::Path;

use super::{CloudMask, GranuleError, GranuleSource};

fn todo(path: &Path) -> GranuleError {
    GranuleError::UnknownLayout {
        path: path.to_path_buf(),
        reason: "SAFE reading is not implemented yet".into(),
    }
}
/// Opens a `.SAFE` directory.
pub fn open_dir(path: &Path) -> Result<GranuleSource, GranuleError> {
    Err(todo(path))
}
/// Opens a zipped SAFE.
pub fn open_zip(path: &Path) -> Result<GranuleSource, GranuleError> {
    Err(todo(path))
}
/// Reads one zip entry.
pub fn read_zip_entry(archive: &Path, _entry: &str) -> Result<Vec<u8>, GranuleError> {
    Err(todo(archive))
}
/// Reads the cloud mask.
pub fn read_cloud_mask(_src: &GranuleSource) -> Result<Option<CloudMask>, GranuleError> {
    Ok(None)
}
