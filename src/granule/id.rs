//! Granule ids: the product name (SAFE without `.SAFE`/`.zip`), the folder name (GeoTIFF
//! folders) or the patch name (BigEarthNet). Ids are never parsed with a strict time
//! regex: some BigEarthNet names carry a 5-digit time (`…T93020_69_24`).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::GranuleError;

/// A validated granule id: non-empty, at most 255 bytes, and safe as a single path
/// component (no `/`, `\`, NUL, and not `.` or `..`), since products are published as
/// `<out>/<granule-id>/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GranuleId(String);

impl GranuleId {
    /// Validates `id`.
    ///
    /// # Errors
    /// [`GranuleError::BadId`] when `id` could not be a single path component.
    pub fn new(id: impl Into<String>) -> Result<Self, GranuleError> {
        let id = id.into();
        let bad = |reason: &str| GranuleError::BadId {
            id: id.clone(),
            reason: reason.to_string(),
        };
        if id.is_empty() {
            return Err(bad("empty"));
        }
        if id.len() > 255 {
            return Err(bad("longer than 255 bytes"));
        }
        if id == "." || id == ".." {
            return Err(bad("not a name"));
        }
        if id.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
            return Err(bad("contains a path separator or control character"));
        }
        Ok(GranuleId(id))
    }

    /// The id of the input at `path`: its file name without a trailing `.zip` and/or
    /// `.SAFE` (case-insensitive), so `X.SAFE.zip`, `X.zip` and `X.SAFE` all give `X`.
    ///
    /// # Errors
    /// [`GranuleError::BadId`] when the path has no usable file name.
    pub fn from_path(path: &Path) -> Result<Self, GranuleError> {
        let name =
            path.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| GranuleError::BadId {
                    id: path.display().to_string(),
                    reason: "no UTF-8 file name".into(),
                })?;
        let mut stem = name;
        for ext in [".zip", ".safe"] {
            if stem.len() > ext.len() && stem.to_ascii_lowercase().ends_with(ext) {
                stem = &stem[..stem.len() - ext.len()];
            }
        }
        GranuleId::new(stem)
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GranuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for GranuleId {
    type Error = GranuleError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        GranuleId::new(s)
    }
}

impl From<GranuleId> for String {
    fn from(id: GranuleId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_safe_and_zip_suffixes() {
        let p = Path::new("/in/S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248.SAFE");
        assert_eq!(
            GranuleId::from_path(p).unwrap().as_str(),
            "S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248"
        );
        assert_eq!(
            GranuleId::from_path(Path::new("a/X.SAFE.zip"))
                .unwrap()
                .as_str(),
            "X"
        );
        assert_eq!(
            GranuleId::from_path(Path::new("a/X.zip")).unwrap().as_str(),
            "X"
        );
        assert_eq!(
            GranuleId::from_path(Path::new("S2B_MSIL2A_20170924T93020_69_24"))
                .unwrap()
                .as_str(),
            "S2B_MSIL2A_20170924T93020_69_24"
        );
    }

    #[test]
    fn rejects_unsafe_ids() {
        assert!(GranuleId::new("").is_err());
        assert!(GranuleId::new("..").is_err());
        assert!(GranuleId::new("a/b").is_err());
        assert!(GranuleId::new("a\nb").is_err());
    }
}
