//! Containment checks on an input's file tree, made *before* any of its files is opened
//! (the daemon runs them on every delivery; `s2edge process` trusts its operator).
//!
//! A granule delivered into an ingest directory must consist of its own files:
//! - no symbolic link anywhere in it (a link to `/etc/passwd`, `/dev/zero` or another
//!   user's data would be read as if it were a band);
//! - no FIFO, socket or device node (opening a FIFO blocks, reading `/dev/zero` never
//!   ends);
//! - no regular file with more than one hard link: a hard link to a file outside the
//!   ingest directory reads data the sender could not otherwise hand over, and from
//!   inside we cannot tell where the other name lives, so any extra link is refused;
//! - bounded size of the tree ([`MAX_TREE_ENTRIES`], [`MAX_TREE_DEPTH`]), so listing a
//!   hostile tree ends quickly.
//!
//! Everything is inspected with `lstat` (links are never followed), and
//! [`open_regular`] opens a file with `O_NOFOLLOW | O_NONBLOCK` and checks the type of
//! what it opened (`fstat`), so a file swapped for a FIFO or a link between the check
//! and the open is still refused without blocking.

use std::fs::{File, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::GranuleError;

/// The most entries (files and directories) an input may hold (a SAFE holds ~150).
pub const MAX_TREE_ENTRIES: usize = 100_000;
/// The deepest nesting accepted below the input (a SAFE nests 5 levels).
pub const MAX_TREE_DEPTH: usize = 16;

fn unsafe_file(path: &Path, reason: impl Into<String>) -> GranuleError {
    GranuleError::UnsafeFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Why a file of this type may not be part of an input, or `None` when it may.
pub fn refusal(meta: &Metadata) -> Option<String> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        Some("a symbolic link (a granule's files must lie inside it)".into())
    } else if ft.is_fifo() {
        Some("a FIFO, not a regular file".into())
    } else if ft.is_socket() {
        Some("a socket, not a regular file".into())
    } else if ft.is_block_device() || ft.is_char_device() {
        Some("a device node, not a regular file".into())
    } else if ft.is_file() && meta.nlink() > 1 {
        Some(format!(
            "a regular file with {} hard links (a granule's files must be its own: copy it, do not link it)",
            meta.nlink()
        ))
    } else if ft.is_file() || ft.is_dir() {
        None
    } else {
        Some("not a regular file or directory".into())
    }
}

/// Checks `path` and, for a directory, everything below it; see the module docs.
///
/// # Errors
/// [`GranuleError::UnsafeFile`] naming the first offending entry;
/// [`GranuleError::Io`] when an entry cannot be inspected.
pub fn check_contained(path: &Path) -> Result<(), GranuleError> {
    let mut seen = 0usize;
    check(path, 0, &mut seen)
}

fn check(path: &Path, depth: usize, seen: &mut usize) -> Result<(), GranuleError> {
    *seen += 1;
    if *seen > MAX_TREE_ENTRIES {
        return Err(unsafe_file(
            path,
            format!("the input holds more than {MAX_TREE_ENTRIES} entries"),
        ));
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| GranuleError::io(path, e))?;
    if let Some(why) = refusal(&meta) {
        return Err(unsafe_file(path, why));
    }
    if meta.is_dir() {
        if depth >= MAX_TREE_DEPTH {
            return Err(unsafe_file(
                path,
                format!("nested deeper than {MAX_TREE_DEPTH} levels"),
            ));
        }
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| GranuleError::io(path, e))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(|e| GranuleError::io(path, e))?;
        entries.sort();
        for e in entries {
            check(&e, depth + 1, seen)?;
        }
    }
    Ok(())
}

/// Checks that `rel` (a clean relative path, see [`super::safe`]) names a regular file
/// below `root` reached through directories only, without opening anything.
///
/// # Errors
/// [`GranuleError::UnsafeFile`] for a link, FIFO, device or hard-linked file on the way;
/// [`GranuleError::Io`] (`NotFound` included) when a component cannot be inspected.
pub fn check_beneath(root: &Path, rel: &str) -> Result<Metadata, GranuleError> {
    let mut cur = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let mut last = None;
    for (i, part) in parts.iter().enumerate() {
        if *part == ".." || *part == "." {
            return Err(unsafe_file(
                &cur.join(part),
                "a relative path leaving the product",
            ));
        }
        cur.push(part);
        let meta = std::fs::symlink_metadata(&cur).map_err(|e| GranuleError::io(&cur, e))?;
        if let Some(why) = refusal(&meta) {
            return Err(unsafe_file(&cur, why));
        }
        let is_last = i + 1 == parts.len();
        if !is_last && !meta.is_dir() {
            return Err(unsafe_file(&cur, "not a directory"));
        }
        if is_last && !meta.is_file() {
            return Err(unsafe_file(&cur, "not a regular file"));
        }
        last = Some(meta);
    }
    last.ok_or_else(|| unsafe_file(root, "an empty path"))
}

/// Opens `path` for reading only if it is a regular file, not a link, FIFO or device:
/// `O_NOFOLLOW | O_NONBLOCK` (so neither a link nor a FIFO is followed or waited on),
/// then `fstat` on what was opened.
///
/// # Errors
/// [`GranuleError::UnsafeFile`] for anything but a regular file with one link;
/// [`GranuleError::Io`] when it cannot be opened.
pub fn open_regular(path: &Path) -> Result<File, GranuleError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                unsafe_file(
                    path,
                    "a symbolic link (a granule's files must lie inside it)",
                )
            } else {
                GranuleError::io(path, e)
            }
        })?;
    let meta = file.metadata().map_err(|e| GranuleError::io(path, e))?;
    if let Some(why) = refusal(&meta) {
        return Err(unsafe_file(path, why));
    }
    if !meta.is_file() {
        return Err(unsafe_file(path, "not a regular file"));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(p: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn links_fifos_and_hardlinks_are_refused_before_opening() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join("g");
        std::fs::create_dir_all(g.join("sub")).unwrap();
        std::fs::write(g.join("sub/B01.tif"), b"x").unwrap();
        check_contained(&g).unwrap();
        check_beneath(&g, "sub/B01.tif").unwrap();
        open_regular(&g.join("sub/B01.tif")).unwrap();

        let outside = d.path().join("outside.tif");
        std::fs::write(&outside, b"secret").unwrap();
        std::os::unix::fs::symlink(&outside, g.join("sub/B02.tif")).unwrap();
        let e = check_contained(&g).unwrap_err().to_string();
        assert!(e.contains("B02.tif") && e.contains("symbolic link"), "{e}");
        assert!(check_beneath(&g, "sub/B02.tif").is_err());
        let e = open_regular(&g.join("sub/B02.tif"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_file(g.join("sub/B02.tif")).unwrap();

        // A symlinked directory on the way.
        std::os::unix::fs::symlink(d.path(), g.join("up")).unwrap();
        assert!(check_beneath(&g, "up/outside.tif").is_err());
        std::fs::remove_file(g.join("up")).unwrap();

        std::fs::hard_link(&outside, g.join("B03.tif")).unwrap();
        let e = check_contained(&g).unwrap_err().to_string();
        assert!(e.contains("hard links"), "{e}");
        std::fs::remove_file(g.join("B03.tif")).unwrap();

        mkfifo(&g.join("B04.tif"));
        let e = check_contained(&g).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        // Opening a FIFO does not block.
        let e = open_regular(&g.join("B04.tif")).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        std::fs::remove_file(g.join("B04.tif")).unwrap();

        let e = open_regular(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("device"), "{e}");
        check_contained(&g).unwrap();
    }
}
