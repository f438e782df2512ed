//! Quarantine: a bad input (permanent error, exhausted retries, incomplete past its
//! timeout) moves with its marker to `[paths] quarantine/<id>/`, beside a `reason.txt`
//! holding the error chain, the time and the attempts. `s2edge ledger requeue` moves it
//! back into ingest ([`restore`]).
//!
//! Invariants: the input is moved (across file systems: copied, synced, then removed),
//! never deleted, so nothing is lost;
//! `reason.txt` is written to a temp file and renamed, so it is whole or absent; an
//! earlier quarantine of the same id is set aside as `<id>.<unix-time>`, not overwritten;
//! every field of `reason.txt` is one line (control characters in names and errors are
//! escaped), so no field can be spoofed by a crafted file name.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::claim::{move_noreplace, sync_dir, sync_parent};
use super::ingest::{marker_of, MARKER_SUFFIX};

/// The file that explains a quarantine.
pub const REASON_FILE: &str = "reason.txt";

/// Why an input was quarantined.
#[derive(Debug, Clone)]
pub struct Reason {
    /// The error with its chain of causes.
    pub error: String,
    /// Processing attempts made.
    pub attempts: u32,
    /// When it was quarantined.
    pub at: DateTime<Utc>,
    /// Where it was delivered.
    pub source: PathBuf,
}

impl Reason {
    /// The text of `reason.txt`: one `key: value` line per field.
    pub fn render(&self, id: &str) -> String {
        format!(
            "granule: {}\nsource: {}\ntime: {}\nattempts: {}\nerror: {}\n",
            one_line(id),
            one_line(&self.source.display().to_string()),
            self.at.to_rfc3339(),
            self.attempts,
            one_line(&self.error)
        )
    }
}

/// `s` with control characters (newlines included) escaped as `\n`, `\u{1b}`, ...
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Moves `input` (and `marker`) into `<root>/<id>/` with a `reason.txt`; returns that
/// directory.
///
/// # Errors
/// The I/O error of creating the directory, moving the input or writing the reason.
pub fn quarantine(
    root: &Path,
    id: &str,
    input: &Path,
    marker: Option<&Path>,
    reason: &Reason,
) -> io::Result<PathBuf> {
    std::fs::create_dir_all(root)?;
    let dir = root.join(id);
    if dir.exists() {
        let mut aside = super::claim::short_name(std::ffi::OsStr::new(id));
        aside.push(format!(".{}", Utc::now().timestamp_millis()));
        let aside = root.join(aside);
        std::fs::rename(&dir, aside)?;
    }
    std::fs::create_dir(&dir)?;
    let name = input
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let dst = dir.join(name);
    // The reason first: whoever finds the input there finds why.
    let tmp = dir.join(format!(".{REASON_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(reason.render(id).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(REASON_FILE))?;
    sync_dir(&dir)?;
    sync_parent(&dir);
    if let Err(e) = move_noreplace(input, &dst) {
        // Leave no directory that claims to hold an input it does not.
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    if let Some(m) = marker {
        let _ = move_noreplace(m, &marker_of(&dst));
    }
    Ok(dir)
}

/// Moves a quarantined input back into `ingest` with its marker (creating one when
/// `make_marker` and it had none), and removes `<root>/<id>/`; returns the restored
/// entry.
///
/// # Errors
/// `NotFound` when nothing is quarantined under `id`; the I/O error of a move.
pub fn restore(root: &Path, id: &str, ingest: &Path, make_marker: bool) -> io::Result<PathBuf> {
    let dir = root.join(id);
    let mut input = None;
    for e in std::fs::read_dir(&dir)? {
        let name = e?.file_name();
        let n = name.to_string_lossy();
        if n != REASON_FILE && !n.ends_with(MARKER_SUFFIX) && !n.starts_with('.') {
            input = Some(dir.join(&name));
        }
    }
    let input = input.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no input in {}", dir.display()),
        )
    })?;
    let name = input
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let dst = ingest.join(name);
    // The input first, its marker after: a daemon must never see a marker whose input
    // is still arriving.
    move_noreplace(&input, &dst)?;
    let marker = marker_of(&input);
    if marker.exists() {
        move_noreplace(&marker, &marker_of(&dst))?;
    } else if make_marker {
        std::fs::write(marker_of(&dst), b"")?;
    }
    sync_parent(&dst);
    std::fs::remove_dir_all(&dir)?;
    sync_parent(&dir);
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_and_restore_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let (work, q, ingest) = (
            d.path().join("work"),
            d.path().join("q"),
            d.path().join("in"),
        );
        std::fs::create_dir_all(work.join("g")).unwrap();
        std::fs::create_dir_all(&ingest).unwrap();
        std::fs::write(work.join("g/B01.tif"), b"garbage").unwrap();
        std::fs::write(work.join("g.ready"), b"").unwrap();
        let reason = Reason {
            error: "reading B01: not a TIFF".into(),
            attempts: 1,
            at: Utc::now(),
            source: ingest.join("g"),
        };
        let dir = quarantine(
            &q,
            "g",
            &work.join("g"),
            Some(&work.join("g.ready")),
            &reason,
        )
        .unwrap();
        assert!(dir.join("g/B01.tif").is_file() && dir.join("g.ready").is_file());
        let text = std::fs::read_to_string(dir.join(REASON_FILE)).unwrap();
        assert!(
            text.contains("not a TIFF") && text.contains("attempts: 1"),
            "{text}"
        );
        assert!(!work.join("g").exists());
        // A second quarantine of the same id keeps the first.
        std::fs::create_dir_all(work.join("g")).unwrap();
        quarantine(&q, "g", &work.join("g"), None, &reason).unwrap();
        assert_eq!(std::fs::read_dir(&q).unwrap().count(), 2);
        let back = restore(&q, "g", &ingest, true).unwrap();
        assert_eq!(back, ingest.join("g"));
        assert!(ingest.join("g.ready").is_file());
        assert!(!q.join("g").exists());
    }

    #[test]
    fn reason_fields_stay_on_one_line() {
        let reason = Reason {
            error: "bad\nattempts: 0".into(),
            attempts: 3,
            at: Utc::now(),
            source: PathBuf::from("/in/x\nerror: spoofed"),
        };
        let text = reason.render("x\ngranule: other");
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.contains("source: /in/x\\nerror: spoofed"), "{text}");
        assert_eq!(
            text.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{text}"
        );
    }
}
