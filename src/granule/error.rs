//! Typed errors of the granule readers. Every variant names the file (or granule) and
//! the reason, so a quarantined granule's `reason.txt` is actionable.

use std::path::PathBuf;

use super::Band;

/// Why a granule could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum GranuleError {
    /// The file system refused an operation.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path is none of the three accepted input forms.
    #[error("{path}: not a recognised granule ({reason})")]
    UnknownLayout { path: PathBuf, reason: String },
    /// The granule id derived from the path is unusable.
    #[error("invalid granule id {id:?}: {reason}")]
    BadId { id: String, reason: String },
    /// XML that does not parse, or that uses a DTD / entities (refused on principle).
    #[error("{path}: malformed XML: {reason}")]
    Xml { path: PathBuf, reason: String },
    /// JSON metadata (STAC item, BigEarthNet labels) that does not parse.
    #[error("{path}: malformed JSON: {reason}")]
    Json { path: PathBuf, reason: String },
    /// A metadata field the reader needs is absent or unparsable.
    #[error("{path}: metadata field {field}: {reason}")]
    Metadata {
        path: PathBuf,
        field: String,
        reason: String,
    },
    /// A TIFF that is truncated, corrupt or of an unsupported kind.
    #[error("{path}: bad GeoTIFF: {reason}")]
    Tiff { path: PathBuf, reason: String },
    /// A JPEG 2000 codestream that is truncated, corrupt or unsupported.
    #[error("{path}: bad JPEG 2000: {reason}")]
    Jp2 { path: PathBuf, reason: String },
    /// A zip whose central directory does not parse, or an unreadable entry.
    #[error("{path}: bad zip: {reason}")]
    Zip { path: PathBuf, reason: String },
    /// A zip entry whose name would escape the product directory.
    #[error("{path}: zip entry {entry:?} escapes the product")]
    ZipEscape { path: PathBuf, entry: String },
    /// A file of the input that is a link, FIFO, device or hard-linked file, refused
    /// before it is opened ([`super::tree`]).
    #[error("{path}: refused: {reason}")]
    UnsafeFile { path: PathBuf, reason: String },
    /// A band the operation needs has no file.
    #[error("granule {id}: band {band} is missing")]
    MissingBand { id: String, band: Band },
    /// Header dimensions beyond what a Sentinel-2 tile can be; refused before allocating.
    #[error("{path}: {width}x{height} pixels exceeds the limit of {limit} per side")]
    TooLarge {
        path: PathBuf,
        width: u64,
        height: u64,
        limit: u64,
    },
    /// Bands whose sizes, CRS or origins disagree.
    #[error("granule {id}: band {band}: {reason}")]
    GridMismatch {
        id: String,
        band: Band,
        reason: String,
    },
}

impl GranuleError {
    /// True when retrying later may succeed (an I/O hiccup), false when the input itself
    /// is bad and the granule belongs in quarantine.
    pub fn is_transient(&self) -> bool {
        match self {
            GranuleError::Io { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::PermissionDenied
            ),
            _ => false,
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GranuleError::Io {
            path: path.into(),
            source,
        }
    }
}
