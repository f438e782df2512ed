//! Typed errors of the product writers. Every variant that touches the file system names
//! the path, so a failed publish in the ledger says which file and why.

use std::path::PathBuf;

/// Why a product (raster, GeoJSON, STAC Item, quicklook) could not be written or
/// published.
#[derive(Debug, thiserror::Error)]
pub enum ProductError {
    /// The file system refused an operation on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The TIFF structure could not be built (too large, compressor failure, ...).
    #[error("{path}: cannot write GeoTIFF: {reason}")]
    Tiff {
        /// The GeoTIFF being written.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The caller's inputs are inconsistent (band sizes disagree, zero bands, a nodata
    /// value the sample type cannot hold, ...).
    #[error("invalid product input: {reason}")]
    Invalid {
        /// What is inconsistent.
        reason: String,
    },
    /// A coordinate operation that is unsupported or failed (e.g. an EPSG code that is
    /// not a WGS84 UTM zone).
    #[error("georeferencing: {reason}")]
    Geo {
        /// What is unsupported.
        reason: String,
    },
    /// A JSON document (GeoJSON, STAC Item) could not be serialised to `path`.
    #[error("{path}: cannot write JSON: {source}")]
    Json {
        /// The JSON file being written.
        path: PathBuf,
        /// The serialiser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The PNG encoder failed on `path`.
    #[error("{path}: cannot write PNG: {source}")]
    Png {
        /// The PNG being written.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: png::EncodingError,
    },
}

impl ProductError {
    /// An [`ProductError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ProductError::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`ProductError::Invalid`] with `reason`.
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        ProductError::Invalid {
            reason: reason.into(),
        }
    }
}

impl ProductError {
    /// True when retrying later may succeed (the disk was full or busy), false when the
    /// inputs themselves cannot make a product.
    pub fn is_transient(&self) -> bool {
        match self {
            ProductError::Io { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            ),
            _ => false,
        }
    }
}
