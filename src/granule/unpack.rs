//! JPEG 2000 bands of a zipped SAFE, unpacked once per granule.
//!
//! OpenJPEG cannot read a zip entry in place, and the `jpeg2k` crate's memory stream
//! cannot serve decode areas (see [`Jp2Input`]). So the first reader of a band copies
//! the entry, as it inflates, into a temporary file (`s2edge-*.jp2` in the temporary
//! directory: `$TMPDIR`, or the unit's private `/tmp`), and every reader of that granule
//! (each super-resolution panel, the full-width pass) opens that file through OpenJPEG's
//! file stream, which reads only the codestream tiles of its window. Memory stays flat
//! whatever the band's size, and the archive is inflated once per band. The file is
//! deleted when the last reader and the [`GranuleSource`](super::GranuleSource) that
//! made it are dropped. Files are named `s2edge-<pid>-*.jp2`: a process that was killed
//! or lost its power cannot delete its own, so the first unpack of every process deletes
//! those of processes that are gone ([`sweep_stale`]).
//!
//! A temporary file that cannot be written (no space, no directory) is an I/O error of
//! the host, which the daemon retries ([`GranuleError::is_transient`]); the archive's own
//! errors are the input's.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, Once};

use super::jp2::Jp2Input;
use super::{safe, Band, GranuleError};

/// The unpacked JPEG 2000 bands of one granule, by band.
#[derive(Default)]
pub struct UnpackCache {
    bands: Mutex<BTreeMap<Band, Arc<tempfile::NamedTempFile>>>,
}

impl std::fmt::Debug for UnpackCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnpackCache")
            .field("bands", &self.len())
            .finish()
    }
}

impl UnpackCache {
    /// The input for `band`'s JPEG 2000 entry `entry` of `archive`: the temporary file
    /// that an earlier call made, else a new one.
    ///
    /// # Errors
    /// The archive's errors ([`GranuleError::Zip`], [`GranuleError::ZipEscape`],
    /// [`GranuleError::Io`]), or [`GranuleError::Io`] naming the temporary directory when
    /// the file cannot be written.
    pub fn jp2(&self, band: Band, archive: &Path, entry: &str) -> Result<Jp2Input, GranuleError> {
        // Held while unpacking: two readers of one band never unpack it twice.
        let mut bands = self.bands.lock().map_err(|_| GranuleError::Zip {
            path: archive.to_path_buf(),
            reason: "internal: a reader panicked while unpacking a band".into(),
        })?;
        if let Some(file) = bands.get(&band) {
            return Ok(Jp2Input::Unpacked(Arc::clone(file)));
        }
        let file = Arc::new(unpack(archive, entry, &std::env::temp_dir())?);
        bands.insert(band, Arc::clone(&file));
        Ok(Jp2Input::Unpacked(file))
    }

    /// How many bands are unpacked.
    pub fn len(&self) -> usize {
        self.bands.lock().map(|b| b.len()).unwrap_or(0)
    }

    /// Whether no band is unpacked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Copies `entry` of `archive` into a new temporary `.jp2` file in `dir`.
///
/// # Errors
/// As [`UnpackCache::jp2`].
pub fn unpack(
    archive: &Path,
    entry: &str,
    dir: &Path,
) -> Result<tempfile::NamedTempFile, GranuleError> {
    // Not the archive's fault: an error of the host, retried by the daemon.
    let host = |what: String, e: std::io::Error| {
        GranuleError::io(
            dir,
            std::io::Error::other(format!(
                "{what} while unpacking {entry} of {} (set TMPDIR to a writable disk): {e}",
                archive.display()
            )),
        )
    };
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let n = sweep_stale(dir);
        if n > 0 {
            tracing::info!(dir = %dir.display(), files = n, "deleted bands unpacked by processes that are gone");
        }
    });
    let file = tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .suffix(".jp2")
        .tempfile_in(dir)
        .map_err(|e| host("cannot create a temporary file".into(), e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file.as_file());
    safe::copy_zip_entry(archive, entry, &mut out)?
        .and_then(|_| out.flush())
        .map_err(|e| host(format!("cannot write {}", file.path().display()), e))?;
    drop(out);
    Ok(file)
}

/// The name prefix of unpacked files, followed by the process id and `-`.
const PREFIX: &str = "s2edge-";

/// Deletes the unpacked files (`s2edge-<pid>-*.jp2`) in `dir` whose process is gone (no
/// `/proc/<pid>`), and returns how many. Does nothing where `/proc` is not mounted, since
/// then no process can be told alive.
pub fn sweep_stale(dir: &Path) -> usize {
    if !Path::new("/proc/self").exists() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.ends_with(".jp2"))
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists()
            && std::fs::remove_file(e.path()).is_ok()
        {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_files_of_gone_processes_are_swept_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        // u32::MAX is above any pid_max, so no process has it.
        let names = [
            (format!("s2edge-{}-a1b2.jp2", u32::MAX), false),
            (format!("s2edge-{me}-c3d4.jp2"), true),
            ("s2edge-x-e5f6.jp2".to_string(), true),
            (format!("s2edge-{}-g7h8.tif", u32::MAX), true),
            (format!("other-{}-i9j0.jp2", u32::MAX), true),
        ];
        for (name, _) in &names {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(sweep_stale(dir.path()), 1);
        for (name, kept) in &names {
            assert_eq!(dir.path().join(name).exists(), *kept, "{name}");
        }
        assert_eq!(sweep_stale(&dir.path().join("missing")), 0);
    }
}
