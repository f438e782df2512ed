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

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Readiness;

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
/// in a stable order).
///
/// # Errors
/// The I/O error of listing `dir`.
pub fn list_candidates(dir: &Path) -> std::io::Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_entry_name(name) {
            out.push(Candidate::new(e.path()));
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
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
}

/// Size and newest mtime of everything under an entry (the `quiet` rule's fingerprint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Total size of the regular files, in bytes.
    pub total_size: u64,
    /// The newest mtime among the entry and everything under it.
    pub newest_mtime: SystemTime,
    /// Number of files.
    pub files: u64,
}

/// The `quiet` rule's fingerprint of `path`.
///
/// # Errors
/// The I/O error of a file that cannot be inspected (it may be vanishing).
pub fn snapshot(path: &Path) -> std::io::Result<Snapshot> {
    let meta = std::fs::symlink_metadata(path)?;
    let mut s = Snapshot {
        total_size: 0,
        newest_mtime: meta.modified()?,
        files: 0,
    };
    if meta.is_dir() {
        for e in std::fs::read_dir(path)? {
            let sub = snapshot(&e?.path())?;
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
/// the [`Tracker`] and only the zip check applies here), plus the zip check.
pub fn check_complete(c: &Candidate, rule: Readiness, verify_checksums: bool) -> Completeness {
    let mut ready_at = None;
    match rule {
        Readiness::Marker => match std::fs::metadata(&c.marker) {
            Ok(m) => ready_at = m.modified().ok().map(DateTime::<Utc>::from),
            Err(_) => return Completeness::Incomplete(format!("no marker {}", c.marker.display())),
        },
        Readiness::Manifest => {
            if let Err(why) = manifest_complete(&c.path, verify_checksums) {
                return Completeness::Incomplete(why);
            }
        }
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
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
}

/// A zip is complete only when its central directory (at its end) parses.
///
/// # Errors
/// Why it does not.
pub fn zip_parses(path: &Path) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    zip::ZipArchive::new(f).map(|_| ()).map_err(|e| {
        format!(
            "{}: the zip's central directory does not parse: {e}",
            path.display()
        )
    })
}

/// One file `manifest.safe` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Path relative to the SAFE root (no leading `./`).
    pub href: String,
    /// Listed size in bytes.
    pub size: Option<u64>,
    /// Listed checksum: (algorithm as written, hex digest).
    pub checksum: Option<(String, String)>,
}

/// The files listed in a `manifest.safe` document.
///
/// # Errors
/// Why the XML does not parse.
pub fn parse_manifest(xml: &str) -> Result<Vec<ManifestFile>, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("manifest.safe: {e}"))?;
    let mut out = Vec::new();
    for bs in doc.descendants().filter(|n| n.has_tag_name("byteStream")) {
        let Some(href) = bs
            .children()
            .find(|n| n.has_tag_name("fileLocation"))
            .and_then(|n| n.attribute("href"))
        else {
            continue;
        };
        let href = href.trim_start_matches("./").to_string();
        if href.contains("..") {
            return Err(format!(
                "manifest.safe: refusing path {href:?} outside the product"
            ));
        }
        let checksum = bs
            .children()
            .find(|n| n.has_tag_name("checksum"))
            .and_then(|n| {
                Some((
                    n.attribute("checksumName")?.to_string(),
                    n.text()?.trim().to_ascii_lowercase(),
                ))
            });
        out.push(ManifestFile {
            size: bs.attribute("size").and_then(|s| s.parse().ok()),
            href,
            checksum,
        });
    }
    Ok(out)
}

fn digest_matches(
    algorithm: &str,
    expected: &str,
    reader: &mut dyn Read,
) -> Result<Option<bool>, String> {
    use sha3::Digest;
    let mut buf = vec![0u8; 1 << 16];
    macro_rules! hash {
        ($h:expr) => {{
            let mut h = $h;
            loop {
                let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(Some(hex::encode(h.finalize()) == expected))
        }};
    }
    match algorithm.to_ascii_uppercase().as_str() {
        "MD5" => hash!(md5::Md5::new()),
        "SHA3-256" => hash!(sha3::Sha3_256::new()),
        // An algorithm we cannot check is not evidence of an incomplete copy.
        _ => Ok(None),
    }
}

/// The `manifest` rule: every file `manifest.safe` lists is present with its listed size
/// (and checksum when `verify`), in a SAFE directory or zip.
///
/// # Errors
/// What is missing or differs.
pub fn manifest_complete(path: &Path, verify: bool) -> Result<(), String> {
    if is_zip(path) {
        return manifest_complete_zip(path, verify);
    }
    let manifest = path.join("manifest.safe");
    let xml =
        std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    for f in parse_manifest(&xml)? {
        let p = path.join(&f.href);
        let meta = std::fs::metadata(&p).map_err(|_| format!("{} is missing", p.display()))?;
        if let Some(size) = f.size {
            if meta.len() != size {
                return Err(format!(
                    "{} has {} bytes of {size}",
                    p.display(),
                    meta.len()
                ));
            }
        }
        if let (true, Some((alg, sum))) = (verify, &f.checksum) {
            let mut file = File::open(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            if digest_matches(alg, sum, &mut file)? == Some(false) {
                return Err(format!(
                    "{}: {alg} checksum differs from the manifest",
                    p.display()
                ));
            }
        }
    }
    Ok(())
}

fn manifest_complete_zip(path: &Path, verify: bool) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| {
        format!(
            "{}: the zip's central directory does not parse: {e}",
            path.display()
        )
    })?;
    let manifest_name = zip
        .file_names()
        .filter(|n| n.ends_with("manifest.safe"))
        .min_by_key(|n| n.len())
        .map(str::to_string)
        .ok_or_else(|| format!("{}: no manifest.safe in the zip", path.display()))?;
    let root = manifest_name.trim_end_matches("manifest.safe").to_string();
    let mut xml = String::new();
    zip.by_name(&manifest_name)
        .and_then(|mut e| e.read_to_string(&mut xml).map_err(Into::into))
        .map_err(|e| format!("{}: {manifest_name}: {e}", path.display()))?;
    for f in parse_manifest(&xml)? {
        let name = format!("{root}{}", f.href);
        let mut entry = zip
            .by_name(&name)
            .map_err(|_| format!("{}: {name} is missing", path.display()))?;
        if let Some(size) = f.size {
            if entry.size() != size {
                return Err(format!(
                    "{}: {name} has {} bytes of {size}",
                    path.display(),
                    entry.size()
                ));
            }
        }
        if let (true, Some((alg, sum))) = (verify, &f.checksum) {
            if digest_matches(alg, sum, &mut entry)? == Some(false) {
                return Err(format!(
                    "{}: {name}: {alg} checksum differs from the manifest",
                    path.display()
                ));
            }
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
}

/// Per-entry memory across scans; see the module docs.
#[derive(Debug, Default)]
pub struct Tracker {
    entries: HashMap<PathBuf, Seen>,
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
        self.entries.retain(|p, _| present.contains(p));
    }

    /// Forgets one entry.
    pub fn forget(&mut self, path: &Path) {
        self.entries.remove(path);
    }
}

/// One scan of the ingest directory: the verdict per entry (blocking I/O; run it off
/// the async threads).
///
/// # Errors
/// The I/O error of listing `dir`.
pub fn scan(
    dir: &Path,
    tracker: &mut Tracker,
    rules: &Rules,
    now: Instant,
) -> std::io::Result<Vec<(Candidate, Verdict)>> {
    let candidates = list_candidates(dir)?;
    tracker.retain(
        &candidates
            .iter()
            .map(|c| c.path.clone())
            .collect::<Vec<_>>(),
    );
    let mut out = Vec::with_capacity(candidates.len());
    for c in candidates {
        let completeness = check_complete(&c, rules.ready, rules.verify_checksums);
        let snap = if rules.ready == Readiness::Quiet {
            snapshot(&c.path).ok()
        } else {
            None
        };
        let v = tracker.observe(&c.path, completeness, snap, rules, now);
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
            check_complete(&c, Readiness::Marker, false),
            Completeness::Incomplete(_)
        ));
        std::fs::write(&c.marker, b"").unwrap();
        assert!(matches!(
            check_complete(&c, Readiness::Marker, false),
            Completeness::Complete { ready_at: Some(_) }
        ));
        // A zip whose central directory is cut off is incomplete even with a marker.
        let z = d.path().join("h.zip");
        let mut w = zip::ZipWriter::new(File::create(&z).unwrap());
        w.start_file("a.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(&[7u8; 1000]).unwrap();
        w.finish().unwrap();
        let zc = Candidate::new(z.clone());
        std::fs::write(&zc.marker, b"").unwrap();
        assert!(matches!(
            check_complete(&zc, Readiness::Marker, false),
            Completeness::Complete { .. }
        ));
        let bytes = std::fs::read(&z).unwrap();
        std::fs::write(&z, &bytes[..bytes.len() - 30]).unwrap();
        match check_complete(&zc, Readiness::Marker, false) {
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

    #[test]
    fn manifest_rule_checks_presence_size_and_md5() {
        let d = tempfile::tempdir().unwrap();
        let safe = d.path().join("P.SAFE");
        std::fs::create_dir_all(safe.join("GRANULE")).unwrap();
        let files: [(&str, &[u8]); 2] = [("MTD.xml", b"<a/>"), ("GRANULE/B01.jp2", b"0123456789")];
        std::fs::write(safe.join("manifest.safe"), manifest(&files)).unwrap();
        std::fs::write(safe.join("MTD.xml"), b"<a/>").unwrap();
        let err = manifest_complete(&safe, false).unwrap_err();
        assert!(err.contains("B01.jp2 is missing"), "{err}");
        std::fs::write(safe.join("GRANULE/B01.jp2"), b"01234").unwrap();
        assert!(manifest_complete(&safe, false)
            .unwrap_err()
            .contains("5 bytes of 10"));
        std::fs::write(safe.join("GRANULE/B01.jp2"), b"0123456780").unwrap();
        manifest_complete(&safe, false).unwrap();
        assert!(manifest_complete(&safe, true).unwrap_err().contains("MD5"));
        std::fs::write(safe.join("GRANULE/B01.jp2"), b"0123456789").unwrap();
        manifest_complete(&safe, true).unwrap();
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
                let files = parse_manifest(&xml).unwrap();
                assert!(
                    files.iter().any(|f| f.href.starts_with("GRANULE/")),
                    "{}",
                    m.display()
                );
                assert!(files.iter().all(|f| f.size.is_some()));
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
