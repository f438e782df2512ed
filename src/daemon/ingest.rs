//! The ingest directory: which entries are granules, and when each is complete
//! (DESIGN.md "Configuration", `[ingest] ready`).
//!
//! The readiness rules are plain functions over the file system ([`check_complete`],
//! [`snapshot`]) plus a [`Tracker`] that remembers, per entry, when it was first seen and
//! how its size and mtime evolved. The tracker takes `now` as an argument so the quiet
//! period and the incomplete timeout are tested with paused tokio time.
//!
//! Invariants:
//! - an entry is reported ready only when its rule holds *and*, for a zip, its central
//!   directory parses: a half-copied input is never handed on;
//! - an entry incomplete for longer than `incomplete_timeout` is reported expired (to be
//!   quarantined); until then it is only waited for;
//! - markers (`<entry>.ready`), hidden names and in-progress copies (`*.part`, `*.tmp`)
//!   are never entries.
//!
//! [`spawn_watcher`] turns inotify events into pokes on a bounded channel; the periodic
//! rescan covers whatever inotify misses (overflow, a restart, a network mount).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Readiness;
use crate::granule::safe::SafeFiles;
use crate::granule::{tree, GranuleError};

/// Suffix of marker files.
pub const MARKER_SUFFIX: &str = ".ready";

/// An entry of the ingest directory that may be a granule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The entry (directory or file).
    pub path: PathBuf,
    /// Its sibling marker path (which may not exist).
    pub marker: PathBuf,
}

impl Candidate {
    /// The candidate for `path`.
    pub fn new(path: PathBuf) -> Candidate {
        Candidate {
            marker: marker_of(&path),
            path,
        }
    }

    /// The entry's file name.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// `<entry>.ready` beside `entry`.
pub fn marker_of(entry: &Path) -> PathBuf {
    let mut m = entry.as_os_str().to_os_string();
    m.push(MARKER_SUFFIX);
    PathBuf::from(m)
}

/// Whether a file name can be a granule entry.
pub fn is_entry_name(name: &str) -> bool {
    !(name.is_empty()
        || name.starts_with('.')
        || name.ends_with(MARKER_SUFFIX)
        || name.ends_with(".part")
        || name.ends_with(".tmp")
        || name.ends_with('~'))
}

/// The granule entries in `dir`, sorted by name (so instances and restarts take them
/// in a stable order), and the names that are not UTF-8 (never entries: a granule id
/// must be text).
///
/// # Errors
/// The I/O error of listing `dir`.
pub fn list_candidates(dir: &Path) -> std::io::Result<(Vec<Candidate>, Vec<OsString>)> {
    let mut out = Vec::new();
    let mut odd = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(text) = name.to_str() else {
            odd.push(name);
            continue;
        };
        if is_entry_name(text) {
            out.push(Candidate::new(e.path()));
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((out, odd))
}

/// The outcome of a readiness check.
#[derive(Debug, Clone, PartialEq)]
pub enum Completeness {
    /// Complete; `ready_at` is when it became so, when known (the marker's mtime).
    Complete {
        /// When the input became complete.
        ready_at: Option<DateTime<Utc>>,
    },
    /// Not (yet) complete, with why.
    Incomplete(String),
    /// It can never safely become a granule (a link, FIFO or device; a manifest
    /// listing a path outside the product, a link or a FIFO): quarantine it now.
    Refused(String),
}

/// Size and newest mtime of everything under an entry (the `quiet` rule's fingerprint,
/// and the key under which verified checksums are remembered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Total size of the regular files, in bytes.
    pub total_size: u64,
    /// The newest mtime among the entry and everything under it.
    pub newest_mtime: SystemTime,
    /// Number of files.
    pub files: u64,
}

/// The most entries [`snapshot`] visits (bounded like [`tree::MAX_TREE_ENTRIES`]).
const SNAPSHOT_LIMIT: u64 = tree::MAX_TREE_ENTRIES as u64;

/// The `quiet` rule's fingerprint of `path` (links are not followed).
///
/// # Errors
/// The I/O error of a file that cannot be inspected (it may be vanishing), or
/// `InvalidData` for a tree larger than [`tree::MAX_TREE_ENTRIES`] entries.
pub fn snapshot(path: &Path) -> std::io::Result<Snapshot> {
    let mut visited = 0;
    snapshot_bounded(path, &mut visited, 0)
}

fn snapshot_bounded(path: &Path, visited: &mut u64, depth: usize) -> std::io::Result<Snapshot> {
    *visited += 1;
    if *visited > SNAPSHOT_LIMIT || depth > tree::MAX_TREE_DEPTH {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the entry is too large or too deep to fingerprint",
        ));
    }
    let meta = std::fs::symlink_metadata(path)?;
    let mut s = Snapshot {
        total_size: 0,
        newest_mtime: meta.modified()?,
        files: 0,
    };
    if meta.is_dir() {
        for e in std::fs::read_dir(path)? {
            let sub = snapshot_bounded(&e?.path(), visited, depth + 1)?;
            s.total_size += sub.total_size;
            s.files += sub.files;
            s.newest_mtime = s.newest_mtime.max(sub.newest_mtime);
        }
    } else if meta.is_file() {
        s.total_size = meta.len();
        s.files = 1;
    }
    Ok(s)
}

/// Checks the rule-specific completeness of `c` (`marker` or `manifest`; `quiet` needs
/// the [`Tracker`] and only the zip check applies here), plus the zip check. Cheap: no
/// file is hashed here (see [`verify_manifest`]) and nothing but `lstat` touches an
/// entry that is a link, FIFO or device.
pub fn check_complete(c: &Candidate, rule: Readiness) -> Completeness {
    match std::fs::symlink_metadata(&c.path) {
        Ok(meta) => {
            if let Some(why) = tree::refusal(&meta) {
                return Completeness::Refused(format!("{}: {why}", c.path.display()));
            }
        }
        Err(e) => return Completeness::Incomplete(format!("{}: {e}", c.path.display())),
    }
    let mut ready_at = None;
    match rule {
        Readiness::Marker => match std::fs::metadata(&c.marker) {
            Ok(m) => ready_at = m.modified().ok().map(DateTime::<Utc>::from),
            Err(_) => return Completeness::Incomplete(format!("no marker {}", c.marker.display())),
        },
        Readiness::Manifest => match manifest_complete(&c.path) {
            Ok(()) => {}
            Err(other) => return other,
        },
        Readiness::Quiet => {}
    }
    if is_zip(&c.path) {
        if let Err(why) = zip_parses(&c.path) {
            return Completeness::Incomplete(why);
        }
    }
    Completeness::Complete { ready_at }
}

fn is_zip(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
}

/// A zip is complete only when its central directory (at its end) parses.
///
/// # Errors
/// Why it does not.
pub fn zip_parses(path: &Path) -> Result<(), String> {
    let f = tree::open_regular(path).map_err(|e| e.to_string())?;
    zip::ZipArchive::new(f).map(|_| ()).map_err(|e| {
        format!(
            "{}: the zip's central directory does not parse: {e}",
            path.display()
        )
    })
}

/// Whether a granule-layer error means "not yet" (a file still missing, a zip still
/// being written) rather than "never" (a link, FIFO, device, DTD, escaping path).
fn classify(e: GranuleError) -> Completeness {
    match e {
        GranuleError::UnsafeFile { .. }
        | GranuleError::ZipEscape { .. }
        | GranuleError::UnknownLayout { .. } => Completeness::Refused(e.to_string()),
        GranuleError::Xml { ref reason, .. } if reason == crate::granule::xml::DTD_REFUSED => {
            Completeness::Refused(e.to_string())
        }
        other => Completeness::Incomplete(other.to_string()),
    }
}

/// The `manifest` rule without checksums: `manifest.safe` parses (with the granule
/// layer's capped reader and hardened parser), lists nothing outside the product, and
/// every file it lists is present as a regular file with its listed size, in a SAFE
/// directory or zip.
///
/// # Errors
/// [`Completeness::Incomplete`] with what is missing or differs;
/// [`Completeness::Refused`] for a listed path outside the product, or a listed file
/// that is a link, FIFO or device.
pub fn manifest_complete(path: &Path) -> Result<(), Completeness> {
    let mut files = SafeFiles::open(path).map_err(classify)?;
    let manifest = files.manifest().map_err(classify)?.ok_or_else(|| {
        Completeness::Incomplete(format!("{}: no manifest.safe yet", path.display()))
    })?;
    if let Some(raw) = manifest.escaping.first() {
        return Err(Completeness::Refused(format!(
            "{}: manifest.safe lists {raw:?}, a path outside the product",
            path.display()
        )));
    }
    for f in &manifest.files {
        let shown = files.display(&f.href);
        match files.size(&f.href).map_err(classify)? {
            None => {
                return Err(Completeness::Incomplete(format!(
                    "{} is missing",
                    shown.display()
                )))
            }
            Some(actual) => {
                if let Some(size) = f.size.filter(|s| *s != actual) {
                    return Err(Completeness::Incomplete(format!(
                        "{} has {actual} bytes of {size}",
                        shown.display()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Verifies the checksums `manifest.safe` lists (MD5, SHA3-256; others are skipped).
/// Each listed file is read at most up to its listed size (plus one byte), through the
/// same checks as [`manifest_complete`], so a hostile listing cannot make it read
/// without end.
///
/// # Errors
/// Why a checksum differs or a file cannot be read.
pub fn verify_manifest(path: &Path) -> Result<(), Completeness> {
    use sha3::Digest;
    let mut files = SafeFiles::open(path).map_err(classify)?;
    let Some(manifest) = files.manifest().map_err(classify)? else {
        return Err(Completeness::Incomplete(format!(
            "{}: no manifest.safe yet",
            path.display()
        )));
    };
    for f in &manifest.files {
        let (Some((alg, expected)), Some(size)) = (&f.checksum, f.size) else {
            continue;
        };
        let shown = files.display(&f.href);
        let (n, actual) = match alg.to_ascii_uppercase().as_str() {
            "MD5" => {
                let mut h = md5::Md5::new();
                let n = files
                    .read_into(&f.href, size, &mut |b| h.update(b))
                    .map_err(classify)?;
                (n, hex::encode(h.finalize()))
            }
            "SHA3-256" => {
                let mut h = sha3::Sha3_256::new();
                let n = files
                    .read_into(&f.href, size, &mut |b| h.update(b))
                    .map_err(classify)?;
                (n, hex::encode(h.finalize()))
            }
            // An algorithm we cannot check is not evidence of an incomplete copy.
            _ => continue,
        };
        if n != size {
            return Err(Completeness::Incomplete(format!(
                "{} has {n} bytes of {size}",
                shown.display()
            )));
        }
        if actual != *expected {
            return Err(Completeness::Incomplete(format!(
                "{}: {alg} checksum differs from the manifest",
                shown.display()
            )));
        }
    }
    Ok(())
}

/// What the tracker concluded about one entry in one scan.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Complete: claim it.
    Ready {
        /// When it became complete, when known.
        ready_at: Option<DateTime<Utc>>,
    },
    /// Not yet; wait.
    Wait(String),
    /// Incomplete for longer than `incomplete_timeout`: quarantine it with this reason.
    Expired(String),
    /// Never acceptable (see [`Completeness::Refused`]): quarantine it now.
    Refused(String),
}

/// Per-entry memory across scans; see the module docs.
#[derive(Debug, Default)]
pub struct Tracker {
    entries: HashMap<PathBuf, Seen>,
    /// Checksum verdicts per entry, valid while the entry's [`Snapshot`] is unchanged:
    /// each entry is hashed once per snapshot (`None` = verified).
    verified: HashMap<PathBuf, (Snapshot, Option<String>)>,
    /// Non-UTF-8 names already logged (each is logged once).
    odd_names: HashSet<OsString>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    first: Instant,
    snapshot: Option<Snapshot>,
    /// When `snapshot` was first observed unchanged.
    stable_since: Instant,
}

/// The readiness parameters a scan uses (`[ingest]`).
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The rule.
    pub ready: Readiness,
    /// For `quiet`.
    pub quiet_period: Duration,
    /// Incomplete inputs are quarantined after this.
    pub incomplete_timeout: Duration,
    /// For `manifest`.
    pub verify_checksums: bool,
}

impl Tracker {
    /// Combines one observation of `path` at `now` into a verdict.
    ///
    /// `completeness` is the result of [`check_complete`]; `snap` the entry's fingerprint
    /// (needed for `quiet` only).
    pub fn observe(
        &mut self,
        path: &Path,
        completeness: Completeness,
        snap: Option<Snapshot>,
        rules: &Rules,
        now: Instant,
    ) -> Verdict {
        let seen = self.entries.entry(path.to_path_buf()).or_insert(Seen {
            first: now,
            snapshot: snap,
            stable_since: now,
        });
        if seen.snapshot != snap {
            seen.snapshot = snap;
            seen.stable_since = now;
        }
        let verdict = match completeness {
            Completeness::Refused(why) => return Verdict::Refused(why),
            Completeness::Incomplete(why) => Verdict::Wait(why),
            Completeness::Complete { ready_at } if rules.ready == Readiness::Quiet => {
                let quiet_for = now.saturating_duration_since(seen.stable_since);
                if snap.is_some() && quiet_for >= rules.quiet_period {
                    Verdict::Ready { ready_at }
                } else {
                    Verdict::Wait(format!(
                        "changed {:.1} s ago (quiet period {:?})",
                        quiet_for.as_secs_f64(),
                        rules.quiet_period
                    ))
                }
            }
            Completeness::Complete { ready_at } => Verdict::Ready { ready_at },
        };
        match verdict {
            Verdict::Wait(why)
                if now.saturating_duration_since(seen.first) >= rules.incomplete_timeout =>
            {
                Verdict::Expired(format!(
                    "still incomplete after {:?} (incomplete_timeout): {why}",
                    rules.incomplete_timeout
                ))
            }
            v => v,
        }
    }

    /// Forgets entries not in `present` (claimed, removed), and `path` itself once it is
    /// handed on.
    pub fn retain(&mut self, present: &[PathBuf]) {
        let present: HashSet<&PathBuf> = present.iter().collect();
        self.entries.retain(|p, _| present.contains(p));
        self.verified.retain(|p, _| present.contains(p));
    }

    /// Forgets one entry.
    pub fn forget(&mut self, path: &Path) {
        self.entries.remove(path);
        self.verified.remove(path);
    }

    /// The checksum verdict for `path` at `snap`: the remembered one while the snapshot
    /// is unchanged, else a fresh verification when `budget` allows one (a slot is
    /// free), else a wait.
    fn checksums(
        &mut self,
        path: &Path,
        snap: Option<Snapshot>,
        budget: &mut usize,
    ) -> Completeness {
        if let (Some(snap), Some((at, verdict))) = (snap, self.verified.get(path)) {
            if *at == snap {
                return match verdict {
                    None => Completeness::Complete { ready_at: None },
                    Some(why) => Completeness::Incomplete(why.clone()),
                };
            }
        }
        if *budget == 0 {
            return Completeness::Incomplete(
                "checksums not verified yet: waiting for a free slot".into(),
            );
        }
        *budget -= 1;
        let result = verify_manifest(path);
        match (&result, snap) {
            (Ok(()), Some(snap)) => {
                self.verified.insert(path.to_path_buf(), (snap, None));
            }
            (Err(Completeness::Incomplete(why)), Some(snap)) => {
                self.verified
                    .insert(path.to_path_buf(), (snap, Some(why.clone())));
            }
            _ => {}
        }
        match result {
            Ok(()) => Completeness::Complete { ready_at: None },
            Err(c) => c,
        }
    }
}

/// One scan of the ingest directory: the verdict per entry (blocking I/O; run it off
/// the async threads). With `verify_checksums`, at most `verify_budget` entries (the
/// free slots) are hashed, each once per snapshot.
///
/// # Errors
/// The I/O error of listing `dir`.
pub fn scan(
    dir: &Path,
    tracker: &mut Tracker,
    rules: &Rules,
    now: Instant,
    verify_budget: usize,
) -> std::io::Result<Vec<(Candidate, Verdict)>> {
    let (candidates, odd) = list_candidates(dir)?;
    tracker.odd_names.retain(|n| odd.contains(n));
    for name in odd {
        if tracker.odd_names.insert(name.clone()) {
            tracing::warn!(
                entry = ?name,
                "ignoring an ingest entry whose name is not UTF-8 (a granule id must be text); rename it"
            );
        }
    }
    tracker.retain(
        &candidates
            .iter()
            .map(|c| c.path.clone())
            .collect::<Vec<_>>(),
    );
    let mut budget = verify_budget;
    let mut out = Vec::with_capacity(candidates.len());
    for c in candidates {
        let mut completeness = check_complete(&c, rules.ready);
        let needs_snap = rules.ready == Readiness::Quiet
            || (rules.ready == Readiness::Manifest && rules.verify_checksums);
        let snap = if needs_snap {
            snapshot(&c.path).ok()
        } else {
            None
        };
        if let (Completeness::Complete { ready_at }, Readiness::Manifest, true) =
            (&completeness, rules.ready, rules.verify_checksums)
        {
            let ready_at = *ready_at;
            completeness = match tracker.checksums(&c.path, snap, &mut budget) {
                Completeness::Complete { .. } => Completeness::Complete { ready_at },
                other => other,
            };
        }
        let quiet_snap = if rules.ready == Readiness::Quiet {
            snap
        } else {
            None
        };
        let v = tracker.observe(&c.path, completeness, quiet_snap, rules, now);
        out.push((c, v));
    }
    Ok(out)
}

/// Watches `dir` (not recursively) and pokes `poke` on every event. A full channel
/// means a poke is already pending, so the event is dropped on purpose.
///
/// # Errors
/// The watcher could not be created (inotify limits) or `dir` not watched.
pub fn spawn_watcher(
    dir: &Path,
    poke: mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if ev.kind.is_access() => {}
            Ok(_) => {
                let _ = poke.try_send(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "inotify error; the periodic rescan covers it");
                let _ = poke.try_send(());
            }
        })?;
    watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn rules(ready: Readiness) -> Rules {
        Rules {
            ready,
            quiet_period: Duration::from_secs(30),
            incomplete_timeout: Duration::from_secs(600),
            verify_checksums: true,
        }
    }

    #[test]
    fn entry_names() {
        assert!(is_entry_name("S2A_X.SAFE"));
        assert!(is_entry_name("g.zip"));
        for n in ["g.zip.ready", ".hidden", "g.zip.part", "x.tmp", "x~", ""] {
            assert!(!is_entry_name(n), "{n}");
        }
        assert_eq!(
            marker_of(Path::new("/a/g.zip")),
            PathBuf::from("/a/g.zip.ready")
        );
    }

    #[test]
    fn marker_rule_and_zip_check() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join("g");
        std::fs::create_dir(&g).unwrap();
        let c = Candidate::new(g);
        assert!(matches!(
            check_complete(&c, Readiness::Marker),
            Completeness::Incomplete(_)
        ));
        std::fs::write(&c.marker, b"").unwrap();
        assert!(matches!(
            check_complete(&c, Readiness::Marker),
            Completeness::Complete { ready_at: Some(_) }
        ));
        // A zip whose central directory is cut off is incomplete even with a marker.
        let z = d.path().join("h.zip");
        let mut w = zip::ZipWriter::new(std::fs::File::create(&z).unwrap());
        w.start_file("a.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(&[7u8; 1000]).unwrap();
        w.finish().unwrap();
        let zc = Candidate::new(z.clone());
        std::fs::write(&zc.marker, b"").unwrap();
        assert!(matches!(
            check_complete(&zc, Readiness::Marker),
            Completeness::Complete { .. }
        ));
        let bytes = std::fs::read(&z).unwrap();
        std::fs::write(&z, &bytes[..bytes.len() - 30]).unwrap();
        match check_complete(&zc, Readiness::Marker) {
            Completeness::Incomplete(why) => assert!(why.contains("central directory"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    fn manifest(files: &[(&str, &[u8])]) -> String {
        use sha3::Digest;
        let mut x = String::from("<xfdu:XFDU xmlns:xfdu=\"urn:x\"><dataObjectSection>");
        for (name, data) in files {
            let md5 = hex::encode(md5::Md5::digest(data));
            x.push_str(&format!(
                "<dataObject><byteStream size=\"{}\"><fileLocation href=\"./{name}\"/>\
                 <checksum checksumName=\"MD5\">{md5}</checksum></byteStream></dataObject>",
                data.len()
            ));
        }
        x.push_str("</dataObjectSection></xfdu:XFDU>");
        x
    }

    fn incomplete(r: Result<(), Completeness>) -> String {
        match r {
            Err(Completeness::Incomplete(why)) => why,
            other => panic!("not incomplete: {other:?}"),
        }
    }

    fn refused(r: Result<(), Completeness>) -> String {
        match r {
            Err(Completeness::Refused(why)) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn manifest_rule_checks_presence_size_and_md5() {
        let d = tempfile::tempdir().unwrap();
        let safe = d.path().join("P.SAFE");
        std::fs::create_dir_all(safe.join("GRANULE")).unwrap();
        let files: [(&str, &[u8]); 2] = [("MTD.xml", b"<a/>"), ("GRANULE/B01.jp2", b"0123456789")];
        std::fs::write(safe.join("manifest.safe"), manifest(&files)).unwrap();
        std::fs::write(safe.join("MTD.xml"), b"<a/>").unwrap();
        let err = incomplete(manifest_complete(&safe));
        assert!(err.contains("B01.jp2 is missing"), "{err}");
        std::fs::write(safe.join("GRANULE/B01.jp2"), b"01234").unwrap();
        assert!(incomplete(manifest_complete(&safe)).contains("5 bytes of 10"));
        std::fs::write(safe.join("GRANULE/B01.jp2"), b"0123456780").unwrap();
        manifest_complete(&safe).unwrap();
        assert!(incomplete(verify_manifest(&safe)).contains("MD5"));
        std::fs::write(safe.join("GRANULE/B01.jp2"), b"0123456789").unwrap();
        verify_manifest(&safe).unwrap();
    }

    fn mkfifo(p: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// Defect 1 of issue 12: each of these stalled the scan (endless read, blocked
    /// open) or was followed outside the product. Each must now end at once, refused.
    #[test]
    fn hostile_manifests_are_refused_without_reading_them() {
        let d = tempfile::tempdir().unwrap();
        let mk = |name: &str, listing: &str| {
            let safe = d.path().join(name);
            std::fs::create_dir_all(&safe).unwrap();
            std::fs::write(
                safe.join("manifest.safe"),
                format!(
                    "<xfdu:XFDU xmlns:xfdu=\"urn:x\"><dataObjectSection><dataObject>\
                     <byteStream size=\"1048576\"><fileLocation href=\"{listing}\"/>\
                     <checksum checksumName=\"MD5\">00</checksum></byteStream></dataObject>\
                     </dataObjectSection></xfdu:XFDU>"
                ),
            )
            .unwrap();
            safe
        };
        let t = std::time::Instant::now();
        // An absolute href.
        let abs = mk("ABS.SAFE", "/dev/zero");
        assert!(refused(manifest_complete(&abs)).contains("outside the product"));
        // A FIFO listed inside the product.
        let fifo = mk("FIFO.SAFE", "./data.bin");
        mkfifo(&fifo.join("data.bin"));
        assert!(refused(manifest_complete(&fifo)).contains("FIFO"));
        assert!(refused(verify_manifest(&fifo)).contains("FIFO"));
        // A symlink to /dev/zero listed inside the product.
        let link = mk("LINK.SAFE", "./data.bin");
        std::os::unix::fs::symlink("/dev/zero", link.join("data.bin")).unwrap();
        assert!(refused(manifest_complete(&link)).contains("symbolic link"));
        assert!(refused(verify_manifest(&link)).contains("symbolic link"));
        // manifest.safe itself a FIFO (hung even without checksums).
        let mfifo = d.path().join("MFIFO.SAFE");
        std::fs::create_dir_all(&mfifo).unwrap();
        mkfifo(&mfifo.join("manifest.safe"));
        assert!(refused(manifest_complete(&mfifo)).contains("FIFO"));
        // manifest.safe a symlink to /dev/zero (grew to 4.5 GB).
        let mzero = d.path().join("MZERO.SAFE");
        std::fs::create_dir_all(&mzero).unwrap();
        std::os::unix::fs::symlink("/dev/zero", mzero.join("manifest.safe")).unwrap();
        assert!(refused(manifest_complete(&mzero)).contains("symbolic link"));
        // An entity declaration.
        let dtd = d.path().join("DTD.SAFE");
        std::fs::create_dir_all(&dtd).unwrap();
        std::fs::write(
            dtd.join("manifest.safe"),
            "<!DOCTYPE r [<!ENTITY a \"aaaa\">]><r>&a;</r>",
        )
        .unwrap();
        assert!(refused(manifest_complete(&dtd)).contains("DTD"));
        // The candidate itself a symlink or a FIFO: refused by lstat alone.
        let c = Candidate::new(d.path().join("L.zip"));
        std::os::unix::fs::symlink("/dev/zero", &c.path).unwrap();
        assert!(matches!(
            check_complete(&c, Readiness::Quiet),
            Completeness::Refused(_)
        ));
        let c = Candidate::new(d.path().join("F.zip"));
        mkfifo(&c.path);
        assert!(matches!(
            check_complete(&c, Readiness::Manifest),
            Completeness::Refused(_)
        ));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    /// A zip whose manifest.safe inflates past the XML cap is refused after reading at
    /// most the cap (it reached 2.4 GB of RAM before).
    #[test]
    fn zip_manifest_bomb_is_capped() {
        let d = tempfile::tempdir().unwrap();
        let z = d.path().join("BOMB.SAFE.zip");
        let mut w = zip::ZipWriter::new(std::fs::File::create(&z).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        w.start_file("BOMB.SAFE/manifest.safe", opts).unwrap();
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..80 {
            w.write_all(&chunk).unwrap();
        }
        w.finish().unwrap();
        assert!(std::fs::metadata(&z).unwrap().len() < 1 << 20);
        let why = incomplete(manifest_complete(&z));
        assert!(
            why.contains("limit") || why.contains("larger than"),
            "{why}"
        );
    }

    /// Checksums are verified once per snapshot, and only within the budget (free
    /// slots); a failed verification is not repeated until the entry changes.
    #[test]
    fn checksums_are_hashed_once_per_snapshot_and_only_with_a_free_slot() {
        let d = tempfile::tempdir().unwrap();
        let ingest = d.path().join("in");
        let safe = ingest.join("P.SAFE");
        std::fs::create_dir_all(&safe).unwrap();
        let files: [(&str, &[u8]); 1] = [("B01.jp2", b"0123456789")];
        std::fs::write(safe.join("manifest.safe"), manifest(&files)).unwrap();
        std::fs::write(safe.join("B01.jp2"), b"0123456780").unwrap();
        let r = Rules {
            ready: Readiness::Manifest,
            ..rules(Readiness::Manifest)
        };
        let mut t = Tracker::default();
        let now = Instant::now();
        let v = scan(&ingest, &mut t, &r, now, 0).unwrap();
        assert!(
            matches!(&v[0].1, Verdict::Wait(w) if w.contains("free slot")),
            "{v:?}"
        );
        let v = scan(&ingest, &mut t, &r, now, 1).unwrap();
        assert!(
            matches!(&v[0].1, Verdict::Wait(w) if w.contains("MD5")),
            "{v:?}"
        );
        assert_eq!(t.verified.len(), 1);
        // Unchanged: the remembered verdict, no budget used.
        let v = scan(&ingest, &mut t, &r, now, 0).unwrap();
        assert!(
            matches!(&v[0].1, Verdict::Wait(w) if w.contains("MD5")),
            "{v:?}"
        );
        // Fixed (a new snapshot): verified again, then ready.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(safe.join("B01.jp2"), b"0123456789").unwrap();
        let v = scan(&ingest, &mut t, &r, now, 0).unwrap();
        assert!(matches!(&v[0].1, Verdict::Wait(_)), "{v:?}");
        let v = scan(&ingest, &mut t, &r, now, 1).unwrap();
        assert!(matches!(&v[0].1, Verdict::Ready { .. }), "{v:?}");
        let v = scan(&ingest, &mut t, &r, now, 0).unwrap();
        assert!(matches!(&v[0].1, Verdict::Ready { .. }), "{v:?}");
    }

    #[test]
    fn real_manifests_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/s2-safe-metadata");
        let Ok(dirs) = std::fs::read_dir(&root) else {
            eprintln!("SKIP real_manifests_parse: no shared data");
            return;
        };
        for d in dirs {
            let m = d.unwrap().path().join("manifest.safe");
            if let Ok(xml) = std::fs::read_to_string(&m) {
                let files = crate::granule::safe::parse_manifest(&xml, &m).unwrap();
                assert!(files.escaping.is_empty());
                assert!(
                    files.files.iter().any(|f| f.href.starts_with("GRANULE/")),
                    "{}",
                    m.display()
                );
                assert!(files.files.iter().all(|f| f.size.is_some()));
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_period_restarts_on_every_change() {
        let r = rules(Readiness::Quiet);
        let mut t = Tracker::default();
        let p = Path::new("/in/g");
        let snap = |size| Snapshot {
            total_size: size,
            newest_mtime: SystemTime::UNIX_EPOCH,
            files: 1,
        };
        let complete = || Completeness::Complete { ready_at: None };
        assert!(matches!(
            t.observe(p, complete(), Some(snap(1)), &r, Instant::now()),
            Verdict::Wait(_)
        ));
        tokio::time::advance(Duration::from_secs(20)).await;
        // It grew: the quiet period starts again.
        assert!(matches!(
            t.observe(p, complete(), Some(snap(2)), &r, Instant::now()),
            Verdict::Wait(_)
        ));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(matches!(
            t.observe(p, complete(), Some(snap(2)), &r, Instant::now()),
            Verdict::Wait(_)
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(
            t.observe(p, complete(), Some(snap(2)), &r, Instant::now()),
            Verdict::Ready { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn incomplete_inputs_expire_after_the_timeout() {
        let r = rules(Readiness::Marker);
        let mut t = Tracker::default();
        let p = Path::new("/in/g");
        let inc = || Completeness::Incomplete("no marker".into());
        assert!(matches!(
            t.observe(p, inc(), None, &r, Instant::now()),
            Verdict::Wait(_)
        ));
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(matches!(
            t.observe(p, inc(), None, &r, Instant::now()),
            Verdict::Wait(_)
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        match t.observe(p, inc(), None, &r, Instant::now()) {
            Verdict::Expired(why) => assert!(why.contains("no marker"), "{why}"),
            v => panic!("{v:?}"),
        }
        // Forgotten (e.g. removed and delivered again): the clock starts over.
        t.retain(&[]);
        assert!(matches!(
            t.observe(p, inc(), None, &r, Instant::now()),
            Verdict::Wait(_)
        ));
    }
}
