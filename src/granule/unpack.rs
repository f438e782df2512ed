//! JPEG 2000 bands of a zipped SAFE, unpacked once per granule.
//!
//! OpenJPEG cannot read a zip entry in place, so a band in a zip used to be inflated into
//! memory whole, once for every reader that opened it: every super-resolution panel and
//! the full-width pass, two panels' copies alive at once. On a full tile that is the
//! band's compressed size (100–250 MB for a 10 m band) up to twice per band, and the
//! archive inflated five to six times (BENCHMARKS.md "Zipped SAFE input").
//!
//! Now the first reader of a band copies the entry as it inflates into a temporary file
//! (`s2edge-*.jp2` in the temporary directory, `$TMPDIR` or the unit's private `/tmp`),
//! and every reader of that granule opens the file through OpenJPEG's file stream, which
//! reads only the codestream tiles of its window. The file is deleted when the last
//! reader and the [`GranuleSource`](super::GranuleSource) that made it are dropped (and
//! by the system's cleaning of its temporary directory after a power cut).
//!
//! When the file cannot be written (no space, no temporary directory), the band's bytes
//! are read into memory once and shared by its readers instead, with a warning in the
//! log: slower memory, the same pixels.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::jp2::Jp2Input;
use super::{read_location, safe, Band, GranuleError, Location};

/// The unpacked (or shared in-memory) JPEG 2000 bands of one granule, by band.
#[derive(Default)]
pub struct UnpackCache {
    bands: Mutex<BTreeMap<Band, Jp2Input>>,
}

impl std::fmt::Debug for UnpackCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.bands.lock().map(|b| b.len()).unwrap_or(0);
        f.debug_struct("UnpackCache").field("bands", &n).finish()
    }
}

impl UnpackCache {
    /// The input for `band`'s JPEG 2000 entry `entry` of `archive`: the temporary file
    /// that an earlier call made, else a new one, else the bytes in memory.
    ///
    /// # Errors
    /// The archive's errors ([`GranuleError::Zip`], [`GranuleError::ZipEscape`],
    /// [`GranuleError::Io`]); a failure to write the temporary file is not one.
    pub fn jp2(&self, band: Band, archive: &Path, entry: &str) -> Result<Jp2Input, GranuleError> {
        // Held while unpacking: two readers of one band never unpack it twice.
        let mut bands = self.bands.lock().map_err(|_| GranuleError::Zip {
            path: archive.to_path_buf(),
            reason: "internal: a reader panicked while unpacking a band".into(),
        })?;
        if let Some(input) = bands.get(&band) {
            return Ok(input.clone());
        }
        let input = match unpack(archive, entry, &std::env::temp_dir())? {
            Ok(file) => Jp2Input::Unpacked(Arc::new(file)),
            Err(reason) => {
                tracing::warn!(
                    archive = %archive.display(),
                    entry,
                    %reason,
                    "cannot unpack the band to a temporary file; reading it into memory"
                );
                let loc = Location::Zip {
                    archive: archive.to_path_buf(),
                    entry: entry.to_string(),
                };
                Jp2Input::Bytes(read_location(&loc)?.into())
            }
        };
        bands.insert(band, input.clone());
        Ok(input)
    }

    /// How many bands were unpacked to files, and how many are held in memory.
    pub fn counts(&self) -> (usize, usize) {
        let bands = self
            .bands
            .lock()
            .map(|b| b.values().cloned().collect::<Vec<_>>());
        let bands = bands.unwrap_or_default();
        let files = bands
            .iter()
            .filter(|i| matches!(i, Jp2Input::Unpacked(_)))
            .count();
        (files, bands.len() - files)
    }
}

/// Copies `entry` of `archive` into a new temporary `.jp2` file in `dir`. The outer
/// error is the archive's; the inner one says why the file could not be written.
pub fn unpack(
    archive: &Path,
    entry: &str,
    dir: &Path,
) -> Result<Result<tempfile::NamedTempFile, String>, GranuleError> {
    let file = match tempfile::Builder::new()
        .prefix("s2edge-")
        .suffix(".jp2")
        .tempfile_in(dir)
    {
        Ok(f) => f,
        Err(e) => {
            return Ok(Err(format!(
                "cannot create a file in {}: {e}",
                dir.display()
            )))
        }
    };
    let mut out = BufWriter::with_capacity(1 << 20, file.as_file());
    let written = safe::copy_zip_entry(archive, entry, &mut out)?.and_then(|_| out.flush());
    drop(out);
    Ok(match written {
        Ok(()) => Ok(file),
        Err(e) => Err(format!("cannot write {}: {e}", file.path().display())),
    })
}
