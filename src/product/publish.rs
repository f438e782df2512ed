//! Atomic publication of a product directory as `<out>/<granule-id>/`.
//!
//! A product is written into a staging directory `<out>/.<id>.tmp-<pid>-<n>` (same file
//! system as its destination, hidden by the leading dot; an id longer than 200 bytes is
//! cut there, so the name fits the file name limit), then [`Staging::publish`]:
//! 1. fsyncs every file and directory in it, so a power cut after the swap cannot leave
//!    a product with empty files;
//! 2. moves it into place: `rename` when no product exists; when one exists, an atomic
//!    swap with `renameat2(RENAME_EXCHANGE)` (Linux ≥ 3.15 on ext4, xfs, btrfs, tmpfs,
//!    ...), after which the old product sits at the staging path and is removed. On
//!    file systems without `RENAME_EXCHANGE` it falls back to renaming the old product
//!    aside, renaming the new one in, and removing the old: a reader may then briefly
//!    see no product, but never a mixed one;
//! 3. fsyncs `<out>` so the rename itself is durable.
//!
//! Invariants: a reader of `<out>/<id>/` sees the complete old or the complete new
//! product; an unpublished [`Staging`] removes itself on drop; what a crash leaves
//! behind matches `.*.tmp-*` and [`sweep_stale`] removes it at the next start.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::ProductError;
use crate::granule::GranuleId;

/// The most bytes of the id a staging name carries: with the dot, [`TMP_MARK`], a pid,
/// a counter and `-old`, the name stays under the 255-byte file name limit for every
/// valid id (ids may be 255 bytes long).
const STAGING_STEM_MAX: usize = 200;

/// The id, cut to [`STAGING_STEM_MAX`] bytes on a character boundary.
fn staging_stem(id: &GranuleId) -> &str {
    let s = id.as_str();
    let mut end = s.len().min(STAGING_STEM_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Distinguishes stagings of one process (several granules at once, or retries).
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Marker in the names of staging (and set-aside) directories.
const TMP_MARK: &str = ".tmp-";

/// A product directory being written; see the module docs.
#[derive(Debug)]
pub struct Staging {
    out_dir: PathBuf,
    id: GranuleId,
    path: PathBuf,
    /// Set once the staging directory has been moved into place: Drop must not remove
    /// what now lives at `path` (the old product, already removed by `publish`).
    published: bool,
}

impl Staging {
    /// Creates `out_dir` if needed and a fresh staging directory in it.
    ///
    /// # Errors
    /// [`ProductError::Io`] when either directory cannot be created.
    pub fn new(out_dir: &Path, id: &GranuleId) -> Result<Staging, ProductError> {
        std::fs::create_dir_all(out_dir).map_err(|e| ProductError::io(out_dir, e))?;
        let pid = std::process::id();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = out_dir.join(format!(".{}{TMP_MARK}{pid}-{n}", staging_stem(id)));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    return Ok(Staging {
                        out_dir: out_dir.to_path_buf(),
                        id: id.clone(),
                        path,
                        published: false,
                    })
                }
                // Left over by an earlier process with the same pid: take the next n.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ProductError::io(path, e)),
            }
        }
    }

    /// The staging directory to write the product files into.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the staged product visible as `<out>/<id>`, replacing an existing one
    /// atomically; returns that path.
    ///
    /// # Errors
    /// [`ProductError::Io`] when syncing or renaming fails; the staging directory is
    /// then removed (on drop) and an existing product is left in place.
    pub fn publish(mut self) -> Result<PathBuf, ProductError> {
        sync_tree(&self.path)?;
        let target = self.out_dir.join(self.id.as_str());
        self.swap_in(&target)?;
        self.published = true;
        sync_dir(&self.out_dir)?;
        Ok(target)
    }

    fn swap_in(&self, target: &Path) -> Result<(), ProductError> {
        let io_err = |e| ProductError::io(target, e);
        // A product can appear or vanish between attempts (another process publishing
        // the same id); three rounds settle any such race.
        for _ in 0..3 {
            match exchange(&self.path, target) {
                Ok(()) => {
                    // The old product is now at the staging path.
                    remove_best_effort(&self.path);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match std::fs::rename(&self.path, target) {
                        Ok(()) => return Ok(()),
                        Err(e) if is_occupied(&e) => continue,
                        Err(e) => return Err(io_err(e)),
                    }
                }
                Err(e) if is_unsupported(&e) => return self.replace_non_atomic(target),
                Err(e) => return Err(io_err(e)),
            }
        }
        Err(io_err(io::Error::other(
            "the product kept changing while publishing",
        )))
    }

    /// Fallback without `RENAME_EXCHANGE`: old aside, new in, old removed.
    fn replace_non_atomic(&self, target: &Path) -> Result<(), ProductError> {
        let mut aside = self.path.clone().into_os_string();
        aside.push("-old");
        let aside = PathBuf::from(aside);
        let had_old = match std::fs::rename(target, &aside) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(ProductError::io(target, e)),
        };
        if let Err(e) = std::fs::rename(&self.path, target) {
            if had_old {
                // Put the old product back rather than leave none.
                let _ = std::fs::rename(&aside, target);
            }
            return Err(ProductError::io(target, e));
        }
        if had_old {
            remove_best_effort(&aside);
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            remove_best_effort(&self.path);
        }
    }
}

fn remove_best_effort(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove staging directory; sweep_stale will retry at the next start");
        }
    }
}

fn is_occupied(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST))
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

/// Atomically exchanges `a` and `b` (both must exist).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let cb = CString::new(b.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both pointers are NUL-terminated strings that outlive the call; the raw
    // syscall (rather than glibc's wrapper, absent before glibc 2.28) takes plain ints.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// fsyncs every regular file and directory under `dir` (symlinks are not followed),
/// then `dir` itself.
fn sync_tree(dir: &Path) -> Result<(), ProductError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ProductError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ProductError::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| ProductError::io(&path, e))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| ProductError::io(&path, e))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), ProductError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| ProductError::io(dir, e))
}

/// Removes staging directories (`.<id>.tmp-<pid>-<n>` and their `-old` siblings) left
/// in `out_dir` by a crash; returns how many were removed. Call it at startup.
///
/// Entries whose `<pid>` is a live process are kept: a concurrent `s2edge process`
/// writing into the same output directory must not lose its staging. (A recycled pid
/// only delays the cleanup to a later start.) A missing `out_dir` is not an error.
///
/// # Errors
/// [`ProductError::Io`] when `out_dir` cannot be listed or an entry cannot be removed.
pub fn sweep_stale(out_dir: &Path) -> Result<usize, ProductError> {
    let entries = match std::fs::read_dir(out_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(ProductError::io(out_dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| ProductError::io(out_dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = stale_pid(name) else { continue };
        if pid_alive(pid) {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| ProductError::io(&path, e))?;
        let res = if kind.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match res {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ProductError::io(path, e)),
        }
    }
    Ok(removed)
}

/// The pid in a staging name `.<id>.tmp-<pid>-<n>[-old]`, or `None` for other names.
fn stale_pid(name: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    let (_, rest) = name.rsplit_once(TMP_MARK)?;
    let mut parts = rest.split('-');
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    match parts.next() {
        None | Some("old") if parts.next().is_none() => Some(pid),
        _ => None,
    }
}

fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 sends nothing; it only checks that the pid exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_parse() {
        assert_eq!(stale_pid(".X.tmp-123-4"), Some(123));
        assert_eq!(stale_pid(".X.tmp-123-4-old"), Some(123));
        assert_eq!(stale_pid(".a.tmp-b.tmp-7-0"), Some(7));
        assert_eq!(stale_pid("X.tmp-123-4"), None);
        assert_eq!(stale_pid(".X.tmp-123"), None);
        assert_eq!(stale_pid(".X.tmp-123-4-new"), None);
        assert_eq!(stale_pid(".X.tmp-abc-4"), None);
    }

    #[test]
    fn fallback_replaces_too() {
        let dir = tempfile::tempdir().unwrap();
        let id = GranuleId::new("G").unwrap();
        let old = dir.path().join("G");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("a"), "old").unwrap();
        let s = Staging::new(dir.path(), &id).unwrap();
        std::fs::write(s.path().join("b"), "new").unwrap();
        s.replace_non_atomic(&old).unwrap();
        assert!(!old.join("a").exists());
        assert_eq!(std::fs::read_to_string(old.join("b")).unwrap(), "new");
        drop(s);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("G")]);
    }

    /// Ids of up to 255 bytes are valid; the staging name (id + pid + counter + "-old")
    /// must still fit the 255-byte file name limit (it did not: ENAMETOOLONG, classed
    /// transient, retried four times).
    #[test]
    fn the_longest_ids_publish() {
        let dir = tempfile::tempdir().unwrap();
        let id = GranuleId::new("é".repeat(127) + "x").unwrap();
        assert_eq!(id.as_str().len(), 255);
        for _ in 0..2 {
            let s = Staging::new(dir.path(), &id).unwrap();
            std::fs::write(s.path().join("item.json"), "{}").unwrap();
            let p = s.publish().unwrap();
            assert!(p.join("item.json").is_file());
        }
        let s = Staging::new(dir.path(), &id).unwrap();
        s.replace_non_atomic(&dir.path().join(id.as_str())).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
