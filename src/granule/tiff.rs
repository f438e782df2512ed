//! GeoTIFF decoding (stub until the reader lands).
use std::path::Path;

use super::{GeoRef, GranuleError};
use crate::raster::Raster;

/// Decodes a single-band uint16 GeoTIFF.
pub fn decode_u16(
    _bytes: &[u8],
    path: &Path,
) -> Result<(Raster<u16>, Option<GeoRef>), GranuleError> {
    Err(GranuleError::Tiff {
        path: path.to_path_buf(),
        reason: "not implemented yet".into(),
    })
}
