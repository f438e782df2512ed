//! JPEG 2000 decoding (stub until the reader lands).
use std::path::Path;

use super::GranuleError;
use crate::raster::Raster;

/// Decodes a single-component JPEG 2000 codestream or JP2 file to uint16.
pub fn decode_u16(_bytes: &[u8], path: &Path) -> Result<Raster<u16>, GranuleError> {
    Err(GranuleError::Jp2 {
        path: path.to_path_buf(),
        reason: "not implemented yet".into(),
    })
}
