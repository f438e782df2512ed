//! The daemon's error paths (issue 12): hostile `manifest.safe` listings under the
//! `manifest` rule, broken model versions at startup and at hot swap, a SIGHUP whose
//! stage needs a model not yet installed, a deleted ledger, quarantine and archive on
//! another file system, a full output disk, and idle HTTP clients at shutdown. Each runs
//! a real `s2edge serve` with the tiny fixture models (see `tests/daemon.rs`).

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use s2edge::daemon::ledger::GranuleState;

use crate::daemon::{
    add_version, copy_dir, copy_tiny_models, deliver, fixtures_models, item_models, metric,
    parse_metrics, runtime_available, Daemon,
};
use crate::{safe_fixture, util};

fn mkfifo(p: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A `manifest.safe` listing every regular file under `safe` with its size and MD5.
fn write_manifest(safe: &Path) {
    use md5::Digest;
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.file_name().unwrap() != "manifest.safe" {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut files = Vec::new();
    walk(safe, safe, &mut files);
    let mut x = String::from("<?xml version=\"1.0\"?><xfdu:XFDU xmlns:xfdu=\"urn:ccsds:schema:xfdu:1\"><dataObjectSection>");
    for (rel, data) in files {
        x.push_str(&format!(
            "<dataObject><byteStream mimeType=\"application/octet-stream\" size=\"{}\">\
             <fileLocation locatorType=\"URL\" href=\"./{rel}\"/>\
             <checksum checksumName=\"MD5\">{}</checksum></byteStream></dataObject>",
            data.len(),
            hex::encode(md5::Md5::digest(&data))
        ));
    }
    x.push_str("</dataObjectSection></xfdu:XFDU>");
    std::fs::write(safe.join("manifest.safe"), x).unwrap();
}

/// A hostile SAFE directory whose manifest lists one file of 1 MiB at `href`.
fn hostile_safe(ingest: &Path, name: &str, href: &str) -> PathBuf {
    let tmp = ingest.join(format!(".{name}.part"));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(
        tmp.join("manifest.safe"),
        format!(
            "<xfdu:XFDU xmlns:xfdu=\"urn:x\"><dataObjectSection><dataObject>\
             <byteStream size=\"1048576\"><fileLocation href=\"{href}\"/>\
             <checksum checksumName=\"MD5\">00000000000000000000000000000000</checksum>\
             </byteStream></dataObject></dataObjectSection></xfdu:XFDU>"
        ),
    )
    .unwrap();
    tmp
}

fn reason(d: &Daemon, name: &str) -> String {
    std::fs::read_to_string(d.root.join("quarantine").join(name).join("reason.txt"))
        .unwrap_or_default()
}

/// Defect 1: each of these stopped the daemon taking work (endless hashing of
/// `/dev/zero`, a blocked open of a FIFO, unbounded memory). Now each is quarantined
/// at once with its reason, a good SAFE delivered after them is published, and SIGTERM
/// ends the daemon promptly.
#[test]
fn hostile_manifests_neither_stall_nor_escape_the_daemon() {
    let test = "hostile_manifests_neither_stall_nor_escape_the_daemon";
    if !runtime_available(test) {
        return;
    }
    let Some(fx) = safe_fixture::build_l1c(test) else {
        return;
    };
    let tmp = util::tempdir();
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(
        tmp.path(),
        &ingest,
        &fixtures_models(),
        "[ingest]\nready = \"manifest\"\nverify_checksums = true\nincomplete_timeout = \"20s\"\n",
    );
    d.start();
    let publish = |tmp: PathBuf, name: &str| {
        std::fs::rename(&tmp, ingest.join(name)).unwrap();
    };
    let t0 = Instant::now();
    let p = hostile_safe(&ingest, "ABS.SAFE", "/dev/zero");
    publish(p, "ABS.SAFE");
    let p = hostile_safe(&ingest, "FIFO.SAFE", "./data.bin");
    mkfifo(&p.join("data.bin"));
    publish(p, "FIFO.SAFE");
    let p = hostile_safe(&ingest, "LINK.SAFE", "./data.bin");
    std::os::unix::fs::symlink("/dev/zero", p.join("data.bin")).unwrap();
    publish(p, "LINK.SAFE");
    let p = ingest.join(".MFIFO.SAFE.part");
    std::fs::create_dir_all(&p).unwrap();
    mkfifo(&p.join("manifest.safe"));
    publish(p, "MFIFO.SAFE");
    let p = ingest.join(".MZERO.SAFE.part");
    std::fs::create_dir_all(&p).unwrap();
    std::os::unix::fs::symlink("/dev/zero", p.join("manifest.safe")).unwrap();
    publish(p, "MZERO.SAFE");
    let expect = [
        ("ABS", "outside the product"),
        ("FIFO", "FIFO"),
        ("LINK", "symbolic link"),
        ("MFIFO", "FIFO"),
        ("MZERO", "symbolic link"),
    ];
    d.wait_for(
        "every hostile SAFE to be quarantined",
        Duration::from_secs(30),
        |d| {
            expect
                .iter()
                .all(|(id, _)| d.state(id) == Some(GranuleState::Quarantined))
        },
    );
    let took = t0.elapsed();
    for (id, why) in expect {
        let r = reason(&d, id);
        assert!(r.contains(why), "{id}: {r}");
    }
    // A good SAFE after them is published.
    let good = ingest.join(".GOOD.part");
    copy_dir_all(&fx.safe, &good);
    write_manifest(&good);
    let name = fx.safe.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::rename(&good, ingest.join(&name)).unwrap();
    let id = name.trim_end_matches(".SAFE").to_string();
    d.wait_for("the good SAFE", Duration::from_secs(180), |d| {
        d.state(&id) == Some(GranuleState::Done)
    });
    assert_eq!(d.healthz()["status"], "ready", "{}", d.healthz());
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
    eprintln!(
        "hostile manifests quarantined in {:.1} s; SIGTERM exit in {:.2} s",
        took.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
}

fn copy_dir_all(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_dir_all(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// A copy of the fixture models with `tiny-dsen2-2x@2` whose sha256 matches but whose
/// graph disagrees with its manifest (the `broken-io` graph).
fn models_with_broken_v2(root: &Path) -> PathBuf {
    let models = root.join("models");
    copy_tiny_models(&models);
    let v2 = models.join("tiny-dsen2-2x/2");
    std::fs::create_dir_all(&v2).unwrap();
    let broken = fixtures_models().join("broken-io/1");
    std::fs::copy(broken.join("model.onnx"), v2.join("model.onnx")).unwrap();
    let toml = std::fs::read_to_string(broken.join("model.toml"))
        .unwrap()
        .replace("name = \"broken-io\"", "name = \"tiny-dsen2-2x\"")
        .replace("version = 1", "version = 2");
    std::fs::write(v2.join("model.toml"), toml).unwrap();
    models
}

/// "One broken model version breaks the next start": a higher version that verifies
/// (sha256) but does not load is passed over for the good one, by `serve` (degraded,
/// saying why) and by `process`, as the README promises.
#[test]
fn a_broken_higher_model_version_does_not_stop_a_start() {
    if !runtime_available("a_broken_higher_model_version_does_not_stop_a_start") {
        return;
    }
    let tmp = util::tempdir();
    let models = models_with_broken_v2(tmp.path());
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(tmp.path(), &ingest, &models, "");
    d.start();
    let h = d.healthz();
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["reasons"].to_string().contains("tiny-dsen2-2x@2"), "{h}");
    deliver(&ingest, "S2B_FALLBACK");
    d.wait_for("done", Duration::from_secs(60), |d| {
        d.state("S2B_FALLBACK") == Some(GranuleState::Done)
    });
    assert!(item_models(&d.out("S2B_FALLBACK")).contains(&"tiny-dsen2-2x@1".to_string()));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));

    // The one-shot path falls back the same way.
    let g = tmp.path().join("S2B_ONESHOT");
    copy_dir(&crate::daemon::template(), &g);
    let out = util::s2edge()
        .arg("--config")
        .arg(&d.config)
        .arg("process")
        .arg(&g)
        .arg("--out")
        .arg(tmp.path().join("oneshot"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Defect 7: a version whose `model.onnx` was still being copied when its manifest
/// appeared is refused; once the file is complete (same version list, new size/mtime)
/// it is retried and swapped in.
#[test]
fn a_refused_version_is_retried_when_its_files_change() {
    if !runtime_available("a_refused_version_is_retried_when_its_files_change") {
        return;
    }
    let tmp = util::tempdir();
    let models = tmp.path().join("models");
    copy_tiny_models(&models);
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(tmp.path(), &ingest, &models, "");
    d.start();
    // The manifest lands before the graph is fully copied.
    add_version(&models, "tiny-dsen2-2x", 1, 2, false);
    let onnx = models.join("tiny-dsen2-2x/2/model.onnx");
    let full = std::fs::read(&onnx).unwrap();
    std::fs::write(&onnx, &full[..full.len() / 2]).unwrap();
    d.wait_for(
        "the half-copied version to be refused",
        Duration::from_secs(20),
        |d| d.healthz()["status"] == "degraded",
    );
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(&onnx, &full).unwrap();
    d.wait_for(
        "the completed version to be swapped in",
        Duration::from_secs(20),
        |d| {
            d.healthz()["models"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["model"] == "tiny-dsen2-2x@2")
        },
    );
    assert_eq!(d.healthz()["status"], "ready", "{}", d.healthz());
    let m = parse_metrics(&d.http("/metrics").unwrap());
    assert_eq!(metric(&m, "s2edge_model_swaps_total"), 1.0);
}

/// Defect 2: a SIGHUP enabling classification while its model is not yet installed
/// quarantined granules (options before models). Now the running configuration stays,
/// `/healthz` says the reload waits for its model, granules are published meanwhile, and
/// the reload completes once the model appears.
#[test]
fn sighup_enabling_a_stage_waits_for_its_model() {
    if !runtime_available("sighup_enabling_a_stage_waits_for_its_model") {
        return;
    }
    let tmp = util::tempdir();
    let models = tmp.path().join("models");
    for name in ["tiny-dsen2-6x", "tiny-dsen2-2x"] {
        copy_dir(
            &fixtures_models().join(name).join("1"),
            &models.join(name).join("1"),
        );
    }
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(
        tmp.path(),
        &ingest,
        &models,
        "[pipeline]\nclassify = false\n",
    );
    d.start();
    let cfg = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("classify = false", "classify = true");
    std::fs::write(&d.config, cfg).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for(
        "the reload to wait for its model",
        Duration::from_secs(20),
        |d| {
            d.healthz()["reasons"]
                .to_string()
                .contains("reload waits for its models")
        },
    );
    deliver(&ingest, "S2B_GAP");
    d.wait_for("the granule in the gap", Duration::from_secs(60), |d| {
        matches!(
            d.state("S2B_GAP"),
            Some(GranuleState::Done) | Some(GranuleState::Quarantined)
        )
    });
    assert_eq!(
        d.state("S2B_GAP"),
        Some(GranuleState::Done),
        "{}",
        d.log_text()
    );
    // The model arrives: the waiting reload completes.
    copy_dir(
        &fixtures_models().join("tiny-ben19/1"),
        &models.join("tiny-ben19/1"),
    );
    d.wait_for("the reload to complete", Duration::from_secs(20), |d| {
        d.healthz()["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["model"] == "tiny-ben19@1")
    });
    deliver(&ingest, "S2B_AFTER");
    d.wait_for("done", Duration::from_secs(60), |d| {
        d.state("S2B_AFTER") == Some(GranuleState::Done)
    });
    assert!(item_models(&d.out("S2B_AFTER")).contains(&"tiny-ben19@1".to_string()));
    assert_eq!(d.healthz()["status"], "ready", "{}", d.healthz());
}

/// A ledger file deleted under the running daemon went unnoticed (and a restart would
/// reprocess every finished granule): now `/healthz` fails saying so and nothing more
/// is claimed.
#[test]
fn a_deleted_ledger_stops_intake_and_says_so() {
    if !runtime_available("a_deleted_ledger_stops_intake_and_says_so") {
        return;
    }
    let tmp = util::tempdir();
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(tmp.path(), &ingest, &fixtures_models(), "");
    d.start();
    std::fs::remove_file(d.root.join("state/ledger.sqlite")).unwrap();
    d.wait_for("the failing health", Duration::from_secs(10), |d| {
        d.healthz()["status"] == "failing"
    });
    assert!(d.healthz()["reasons"].to_string().contains("ledger"));
    deliver(&ingest, "S2B_NOLEDGER");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        ingest.join("S2B_NOLEDGER").is_dir(),
        "claimed without a ledger"
    );
}

/// Defect 5: quarantine and archive on another file system (`/dev/shm`, a tmpfs)
/// failed with EXDEV; they now copy, sync and remove.
#[test]
fn quarantine_and_archive_cross_file_systems() {
    if !runtime_available("quarantine_and_archive_cross_file_systems") {
        return;
    }
    let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("SKIP quarantine_and_archive_cross_file_systems: no /dev/shm");
        return;
    };
    let tmp = util::tempdir();
    let ingest = tmp.path().join("ingest");
    let extra = format!(
        "[paths]\nquarantine = \"{}\"\narchive = \"{}\"\n",
        shm.path().join("q").display(),
        shm.path().join("a").display()
    );
    let mut d = Daemon::new(tmp.path(), &ingest, &fixtures_models(), &extra);
    d.start();
    let bad = ingest.join(".S2B_XBAD.part");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("B02.tif"), b"not a tiff at all").unwrap();
    std::fs::rename(&bad, ingest.join("S2B_XBAD")).unwrap();
    std::fs::write(ingest.join("S2B_XBAD.ready"), b"").unwrap();
    deliver(&ingest, "S2B_XGOOD");
    d.wait_for("both", Duration::from_secs(60), |d| {
        d.state("S2B_XBAD") == Some(GranuleState::Quarantined)
            && d.state("S2B_XGOOD") == Some(GranuleState::Done)
    });
    let q = shm.path().join("q/S2B_XBAD");
    assert!(q.join("S2B_XBAD/B02.tif").is_file());
    assert!(std::fs::read_to_string(q.join("reason.txt"))
        .unwrap()
        .contains("B02"));
    assert!(shm.path().join("a/S2B_XGOOD/B02.tif").is_file());
    assert_eq!(
        std::fs::read_dir(tmp.path().join("work")).unwrap().count(),
        0
    );
}

/// A full output disk: the granule's attempt does not count, intake pauses with
/// `/healthz` failing ("paused: disk full"), nothing is half-published, and processing
/// resumes once space returns. Needs a tmpfs mount (root); skipped without one.
#[test]
fn a_full_output_disk_pauses_intake_and_resumes() {
    let test = "a_full_output_disk_pauses_intake_and_resumes";
    if !runtime_available(test) {
        return;
    }
    let tmp = util::tempdir();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mount = |opts: &str| {
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(&out)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !mount("size=64k") {
        if std::env::var_os("CI").is_some() && unsafe { libc::geteuid() } == 0 {
            panic!("{test}: cannot mount a tmpfs as root");
        }
        eprintln!("SKIP {test}: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(out.clone());
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(tmp.path(), &ingest, &fixtures_models(), "");
    d.start();
    deliver(&ingest, "S2B_FULL1");
    d.wait_for("the disk-full pause", Duration::from_secs(60), |d| {
        d.healthz()["reasons"].to_string().contains("disk full")
    });
    assert_eq!(d.healthz()["status"], "failing");
    deliver(&ingest, "S2B_FULL2");
    std::thread::sleep(Duration::from_secs(3));
    assert!(ingest.join("S2B_FULL2").is_dir(), "claimed while paused");
    let row = d.ledger().get("S2B_FULL1").unwrap().unwrap();
    assert_eq!(row.attempts, 0, "a full disk must not use up attempts");
    assert_ne!(row.state, GranuleState::Quarantined);
    // Space returns.
    let ok = std::process::Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&out)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    d.wait_for("both granules", Duration::from_secs(120), |d| {
        d.state("S2B_FULL1") == Some(GranuleState::Done)
            && d.state("S2B_FULL2") == Some(GranuleState::Done)
    });
    assert_eq!(d.healthz()["status"], "ready", "{}", d.healthz());
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "leftover staging {name}");
    }
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
}

/// An HTTP client that never finishes its request headers kept the daemon alive after
/// "drained; exiting".
#[test]
fn shutdown_does_not_wait_for_idle_http_clients() {
    if !runtime_available("shutdown_does_not_wait_for_idle_http_clients") {
        return;
    }
    let tmp = util::tempdir();
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(tmp.path(), &ingest, &fixtures_models(), "");
    d.start();
    let mut idle = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let keep = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    drop((idle, keep));
}

fn rss_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn get_timed(port: u16, path: &str) -> Duration {
    use std::io::Read;
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    assert!(
        body.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    t.elapsed()
}

/// A backlog waits on disk, not in memory: RSS after the whole backlog is about what it
/// was after the first granule; 2,000 `/healthz` + `/metrics` requests during processing
/// stay fast. Figures are printed for RELIABILITY.md (`S2EDGE_BACKLOG` sets the size).
#[test]
fn a_backlog_keeps_rss_bounded_and_the_endpoints_fast() {
    if !runtime_available("a_backlog_keeps_rss_bounded_and_the_endpoints_fast") {
        return;
    }
    let n: usize = std::env::var("S2EDGE_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let tmp = util::tempdir();
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(tmp.path(), &ingest, &fixtures_models(), "");
    d.start();
    let pid = d.child.as_ref().unwrap().id();
    deliver(&ingest, "S2B_BACKLOG_0");
    d.wait_for("the first granule", Duration::from_secs(60), |d| {
        d.state("S2B_BACKLOG_0") == Some(GranuleState::Done)
    });
    let rss_first = rss_kb(pid, "VmRSS:");
    for i in 1..n {
        deliver(&ingest, &format!("S2B_BACKLOG_{i}"));
    }
    let mut lat = Vec::new();
    for i in 0..2000 {
        let path = if i % 2 == 0 { "/healthz" } else { "/metrics" };
        lat.push(get_timed(d.port, path));
    }
    d.wait_for("the backlog", Duration::from_secs(600), |d| {
        (0..n).all(|i| d.state(&format!("S2B_BACKLOG_{i}")) == Some(GranuleState::Done))
    });
    let (rss_end, hwm) = (rss_kb(pid, "VmRSS:"), rss_kb(pid, "VmHWM:"));
    lat.sort();
    let p50 = lat[lat.len() / 2];
    let p99 = lat[lat.len() * 99 / 100];
    let max = *lat.last().unwrap();
    eprintln!(
        "backlog of {n}: RSS {} MB after the first granule, {} MB after all (peak {} MB); \
         2000 requests during processing: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
        rss_first / 1024,
        rss_end / 1024,
        hwm / 1024,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    assert!(p99 < Duration::from_millis(250), "p99 {p99:?}");
    assert!(
        rss_end < rss_first + 256 * 1024,
        "RSS grew from {rss_first} kB to {rss_end} kB"
    );
}
