//! BigEarthNet v1 patch folders (stub until the reader lands).
use std::path::Path;

use super::{GranuleError, GranuleSource};

/// True when `path` holds `<name>_labels_metadata.json`.
pub fn is_patch_folder(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    path.join(format!("{name}_labels_metadata.json")).is_file()
}
/// Opens a patch folder.
pub fn open(path: &Path) -> Result<GranuleSource, GranuleError> {
    Err(GranuleError::UnknownLayout {
        path: path.to_path_buf(),
        reason: "BigEarthNet reading is not implemented yet".into(),
    })
}
