//! Claiming a complete input: an atomic rename from the ingest directory into `work`
//! (on the same file system, checked at startup), then disposing of it after success.
//!
//! The rename is the arbiter between instances sharing one ingest directory: exactly
//! one rename of an entry succeeds, the others see `ENOENT` and move on. The rename
//! never replaces an existing entry in `work` (`RENAME_NOREPLACE`), so a re-delivery
//! cannot clobber an input still being worked on; it waits in ingest instead.
//! The marker moves with the claim, so requeue and quarantine can keep it with the input.
//!
//! Durability: after each rename both directories are fsynced ([`sync_dir`]), so a power
//! cut cannot undo a claim the ledger has already recorded. Moves between the daemon's
//! other directories ([`move_noreplace`]: quarantine, archive, requeue) fall back to
//! copy + fsync + rename + delete when the two lie on different file systems (`EXDEV`).

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

/// fsyncs a directory, making renames into or out of it durable.
///
/// # Errors
/// The I/O error of opening or syncing it.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// fsyncs the parent directory of `path` (best effort: a failure is logged).
pub fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent() {
        if let Err(e) = sync_dir(parent) {
            tracing::warn!(dir = %parent.display(), error = %e, "could not fsync a directory");
        }
    }
}

/// Moves `from` to `to` unless `to` exists: a rename where possible, else (`EXDEV`, the
/// two on different file systems) a copy to a hidden temporary name beside `to`, fsynced,
/// renamed into place, and only then the removal of `from`. Both parents are fsynced.
/// Links are copied as links (never followed); FIFOs are recreated; device nodes refuse.
///
/// # Errors
/// The I/O error; `AlreadyExists` when `to` exists. After a failed copy `from` is intact
/// and the temporary copy removed.
pub fn move_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match rename_noreplace(from, to) {
        Ok(()) => {
            sync_parent(from);
            sync_parent(to);
            return Ok(());
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e) => return Err(e),
    }
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(io::Error::from(io::ErrorKind::AlreadyExists));
    }
    let name = to
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let parent = to.parent().unwrap_or(Path::new("."));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(short_name(name));
    tmp_name.push(format!(".s2edge-move-{}", std::process::id()));
    let tmp = parent.join(tmp_name);
    let _ = remove_any(&tmp);
    let copied = copy_tree(from, &tmp).and_then(|()| sync_tree(&tmp));
    if let Err(e) = copied {
        let _ = remove_any(&tmp);
        return Err(e);
    }
    if let Err(e) = rename_noreplace(&tmp, to) {
        let _ = remove_any(&tmp);
        return Err(e);
    }
    sync_parent(to);
    remove_any(from)?;
    sync_parent(from);
    Ok(())
}

/// `name` cut to at most 200 bytes (on a character boundary), so that a prefix and a
/// suffix still fit the 255-byte file name limit.
pub fn short_name(name: &std::ffi::OsStr) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    if bytes.len() <= 200 {
        return name.to_os_string();
    }
    std::ffi::OsStr::from_bytes(&bytes[..200]).to_os_string()
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::symlink_metadata(from)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        std::fs::create_dir(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)
    } else if ft.is_file() {
        // Not `fs::copy` of a path that could be swapped: open without following links.
        use std::os::unix::fs::OpenOptionsExt;
        let mut src = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(from)?;
        let mut dst = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)?;
        io::copy(&mut src, &mut dst)?;
        Ok(())
    } else if ft.is_fifo() {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(to.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{}: a device node or socket cannot be moved across file systems",
                from.display()
            ),
        ))
    }
}

fn sync_tree(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for e in std::fs::read_dir(path)? {
            sync_tree(&e?.path())?;
        }
        sync_dir(path)
    } else if meta.is_file() {
        std::fs::File::open(path)?.sync_all()
    } else {
        Ok(())
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
    // The claim must survive a power cut once the ledger records it.
    sync_parent(&c.path);
    sync_parent(&input);
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
            sync_parent(&claimed.input);
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
            move_noreplace(&claimed.input, &dst)?;
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

    /// `/dev/shm` is a tmpfs, another file system than the temp dir: a rename across
    /// fails with EXDEV (defect 5 of issue 12) and the fallback must copy.
    #[test]
    fn moves_fall_back_to_copy_across_file_systems() {
        let d = tempfile::tempdir().unwrap();
        let Ok(other) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("SKIP moves_fall_back_to_copy_across_file_systems: no /dev/shm");
            return;
        };
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
        if dev(d.path()) == dev(other.path()) {
            eprintln!("SKIP moves_fall_back_to_copy_across_file_systems: one file system");
            return;
        }
        let g = d.path().join("g");
        std::fs::create_dir_all(g.join("sub")).unwrap();
        std::fs::write(g.join("sub/B01.tif"), b"pixels").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", g.join("link")).unwrap();
        let err = std::fs::rename(&g, other.path().join("plain")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
        let dst = other.path().join("g");
        move_noreplace(&g, &dst).unwrap();
        assert!(!g.exists());
        assert_eq!(std::fs::read(dst.join("sub/B01.tif")).unwrap(), b"pixels");
        assert!(std::fs::symlink_metadata(dst.join("link"))
            .unwrap()
            .file_type()
            .is_symlink());
        // Nothing else left beside it; a second move onto it is refused.
        assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 1);
        std::fs::create_dir(&g).unwrap();
        let e = move_noreplace(&g, &dst).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(g.exists());
        // And the archive disposal crosses too.
        let c = Claimed::in_work(g.clone());
        let archived = dispose(&c, AfterSuccess::Archive, &other.path().join("archive"))
            .unwrap()
            .unwrap();
        assert!(archived.is_dir() && !g.exists());
    }
}
