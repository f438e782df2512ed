//! Claiming a complete input: an atomic rename from the ingest directory into `work`
//! (on the same file system, checked at startup), then disposing of it after success.
//!
//! The rename is the arbiter between instances sharing one ingest directory: exactly
//! one rename of an entry succeeds, the others see `ENOENT` and move on. The rename
//! never replaces an existing entry in `work` (`RENAME_NOREPLACE`), so a re-delivery
//! cannot clobber an input still being worked on; it waits in ingest instead.
//! The marker moves with the claim, so requeue and quarantine can keep it with the input.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::AfterSuccess;

use super::ingest::{marker_of, Candidate};

/// An input in `work`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The input, now under `work`.
    pub input: PathBuf,
    /// Its marker under `work`, when it had one.
    pub marker: Option<PathBuf>,
    /// Where it was delivered.
    pub source: PathBuf,
}

impl Claimed {
    /// An input already in `work` (a restart resumes it).
    pub fn in_work(input: PathBuf) -> Claimed {
        let marker = Some(marker_of(&input)).filter(|m| m.exists());
        Claimed {
            source: input.clone(),
            input,
            marker,
        }
    }
}

/// How a claim attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The input is ours.
    Claimed(Claimed),
    /// It vanished first: another instance claimed it, or it was removed.
    Lost,
    /// `work` already holds an entry of that name; the input stays in ingest.
    Occupied,
}

/// Renames `from` to `to` unless `to` exists (atomically where the file system
/// supports `RENAME_NOREPLACE`).
///
/// # Errors
/// The rename's I/O error; `AlreadyExists` when `to` exists.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths living across the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // No RENAME_NOREPLACE on this file system: check, then rename (racy only
        // against another writer of the same name in `work`, which is per instance).
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if to.exists() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            std::fs::rename(from, to)
        }
        _ => Err(err),
    }
}

/// Claims `c` into `work`; see the module docs.
///
/// # Errors
/// An I/O error other than losing the race or finding the name taken.
pub fn claim(c: &Candidate, work: &Path) -> io::Result<ClaimOutcome> {
    let name = c
        .path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let input = work.join(name);
    match rename_noreplace(&c.path, &input) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ClaimOutcome::Lost),
        Err(e)
            if e.kind() == io::ErrorKind::AlreadyExists
                || e.raw_os_error() == Some(libc::ENOTEMPTY) =>
        {
            return Ok(ClaimOutcome::Occupied)
        }
        Err(e) => return Err(e),
    }
    let marker_dst = marker_of(&input);
    let marker = match std::fs::rename(&c.marker, &marker_dst) {
        Ok(()) => Some(marker_dst),
        Err(_) => None,
    };
    Ok(ClaimOutcome::Claimed(Claimed {
        input,
        marker,
        source: c.path.clone(),
    }))
}

/// Removes a file or a directory tree; a missing path is not an error.
///
/// # Errors
/// The I/O error of the removal.
pub fn remove_any(path: &Path) -> io::Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Deletes or archives a processed input (`[ingest] after`); returns the archived path.
/// An older archived input of the same name is replaced.
///
/// # Errors
/// The I/O error of the removal or move.
pub fn dispose(
    claimed: &Claimed,
    after: AfterSuccess,
    archive: &Path,
) -> io::Result<Option<PathBuf>> {
    if let Some(m) = &claimed.marker {
        remove_any(m)?;
    }
    match after {
        AfterSuccess::Delete => {
            remove_any(&claimed.input)?;
            Ok(None)
        }
        AfterSuccess::Archive => {
            let name = claimed
                .input
                .file_name()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
            std::fs::create_dir_all(archive)?;
            let dst = archive.join(name);
            remove_any(&dst)?;
            std::fs::rename(&claimed.input, &dst)?;
            Ok(Some(dst))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_claim_wins_and_the_marker_follows() {
        let d = tempfile::tempdir().unwrap();
        let (ingest, w1, w2) = (
            d.path().join("in"),
            d.path().join("w1"),
            d.path().join("w2"),
        );
        for p in [&ingest, &w1, &w2] {
            std::fs::create_dir(p).unwrap();
        }
        std::fs::create_dir(ingest.join("g")).unwrap();
        std::fs::write(ingest.join("g/B01.tif"), b"x").unwrap();
        let c = Candidate::new(ingest.join("g"));
        std::fs::write(&c.marker, b"").unwrap();
        let ClaimOutcome::Claimed(got) = claim(&c, &w1).unwrap() else {
            panic!()
        };
        assert_eq!(claim(&c, &w2).unwrap(), ClaimOutcome::Lost);
        assert!(got.input.join("B01.tif").is_file());
        assert_eq!(got.marker, Some(w1.join("g.ready")));
        assert!(!c.marker.exists());
        // A re-delivery while the first is still in work waits in ingest.
        std::fs::create_dir(ingest.join("g")).unwrap();
        std::fs::write(ingest.join("g/B01.tif"), b"y").unwrap();
        assert_eq!(claim(&c, &w1).unwrap(), ClaimOutcome::Occupied);
        assert!(ingest.join("g/B01.tif").is_file());
        assert_eq!(std::fs::read(w1.join("g/B01.tif")).unwrap(), b"x");
    }

    #[test]
    fn dispose_deletes_or_archives() {
        let d = tempfile::tempdir().unwrap();
        let work = d.path().join("work");
        std::fs::create_dir_all(work.join("g")).unwrap();
        std::fs::write(work.join("g.ready"), b"").unwrap();
        let c = Claimed::in_work(work.join("g"));
        assert!(c.marker.is_some());
        let archived = dispose(&c, AfterSuccess::Archive, &d.path().join("archive"))
            .unwrap()
            .unwrap();
        assert!(archived.is_dir());
        assert!(!work.join("g").exists() && !work.join("g.ready").exists());
        std::fs::write(work.join("h.zip"), b"z").unwrap();
        dispose(
            &Claimed::in_work(work.join("h.zip")),
            AfterSuccess::Delete,
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert!(!work.join("h.zip").exists());
    }
}
