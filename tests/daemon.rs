//! End-to-end tests of `s2edge serve`: a real daemon process on temp directories, the
//! tiny fixture models, `ready = "marker"` and a 1 s rescan. Granules are 240×240 px
//! per-band GeoTIFF folders drawn here (fast to process); bad inputs are a garbage TIFF,
//! an empty folder and a zip with a broken central directory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use s2edge::daemon::ledger::{GranuleState, Ledger, LEDGER_FILE};
use s2edge::granule::{Band, GeoRef, GeoTransform, Resolution};
use s2edge::product::cog::{write_cog, CogBand};
use s2edge::raster::Raster;

use crate::util;

const SIDE: usize = 240;

/// A template granule, written once per test run: 12 bands, 240×240 at 10 m.
pub(crate) fn template() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = util::tempdir();
        let g = d.path().join("template");
        std::fs::create_dir(&g).unwrap();
        let grid = GeoRef {
            epsg: 32633,
            transform: GeoTransform {
                origin_x: 400_000.0,
                origin_y: 5_300_000.0,
                pixel_width: 10.0,
                pixel_height: -10.0,
            },
            width: SIDE,
            height: SIDE,
        };
        for (k, band) in Band::PRODUCT.iter().enumerate() {
            let f = match band.resolution() {
                Resolution::R10 => 1,
                Resolution::R20 => 2,
                Resolution::R60 => 6,
            };
            let n = SIDE / f;
            let data: Vec<u16> = (0..n * n)
                .map(|i| 1000 + ((i % n) * 7 + (i / n) * 3 + k * 100) as u16 % 3000)
                .collect();
            let r = Raster {
                width: n,
                height: n,
                data,
            };
            let georef = GeoRef {
                transform: grid.transform.coarsened(f),
                width: n,
                height: n,
                ..grid
            };
            write_cog(
                &g.join(format!("{}.tif", band.name())),
                &georef,
                &[CogBand {
                    description: band.name(),
                    data: &r,
                }],
                Some(0.0),
            )
            .unwrap();
        }
        d
    });
    dir.path().join("template")
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A free loopback port (bound then released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One daemon instance's directories and process.
pub(crate) struct Daemon {
    pub(crate) root: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) port: u16,
    pub(crate) child: Option<Child>,
    pub(crate) log: PathBuf,
}

impl Daemon {
    /// Directories under `root`; `ingest` may be shared with another instance.
    pub(crate) fn new(root: &Path, ingest: &Path, models: &Path, extra: &str) -> Daemon {
        std::fs::create_dir_all(root).unwrap();
        let port = free_port();
        let config = root.join("s2edge.toml");
        let d = |n: &str| root.join(n).display().to_string();
        let text = format!(
            "[paths]\ningest = \"{}\"\nwork = \"{}\"\noutput = \"{}\"\nquarantine = \"{}\"\n\
             archive = \"{}\"\nmodels = \"{}\"\nstate = \"{}\"\n\
             [ingest]\nready = \"marker\"\nrescan_interval = \"1s\"\nincomplete_timeout = \"3s\"\nafter = \"archive\"\n\
             [models]\nclassifier = \"tiny-ben19\"\nsuperres_2x = \"tiny-dsen2-2x\"\nsuperres_6x = \"tiny-dsen2-6x\"\n\
             [service]\nretry_limit = 1\nretry_backoff = \"1s\"\nshutdown_timeout = \"30s\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n{extra}",
            ingest.display(),
            d("work"),
            d("out"),
            d("quarantine"),
            d("archive"),
            models.display(),
            d("state"),
        );
        // `extra` may repeat a section header; merge by appending keys to the sections.
        std::fs::write(&config, merge_toml(&text)).unwrap();
        Daemon {
            root: root.to_path_buf(),
            config,
            port,
            child: None,
            log: root.join("daemon.log"),
        }
    }

    pub(crate) fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = util::s2edge()
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_for(
            "the daemon to serve /healthz",
            Duration::from_secs(60),
            |d| d.http("/healthz").is_some(),
        );
    }

    pub(crate) fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// Waits for the process to exit; returns its exit code.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let t = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if t.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "daemon did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` on the daemon's endpoint; the body, or `None` when it is not up.
    pub(crate) fn http(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
        Some(body.to_string())
    }

    pub(crate) fn healthz(&self) -> serde_json::Value {
        serde_json::from_str(&self.http("/healthz").unwrap()).unwrap()
    }

    pub(crate) fn ledger(&self) -> Ledger {
        Ledger::open_file(&self.root.join("state").join(LEDGER_FILE)).unwrap()
    }

    pub(crate) fn state(&self, id: &str) -> Option<GranuleState> {
        self.ledger().get(id).unwrap().map(|r| r.state)
    }

    pub(crate) fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Daemon) -> bool,
    ) {
        let t = Instant::now();
        while !f(self) {
            if t.elapsed() > timeout {
                panic!("timed out waiting for {what}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn out(&self, id: &str) -> PathBuf {
        self.root.join("out").join(id)
    }

    pub(crate) fn cli(&self, args: &[&str]) -> std::process::Output {
        util::s2edge()
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Joins repeated `[section]` blocks so that extra keys land in their section.
pub(crate) fn merge_toml(text: &str) -> String {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            cur = l.to_string();
            if !sections.iter().any(|(s, _)| *s == cur) {
                sections.push((cur.clone(), Vec::new()));
            }
        } else if !l.is_empty() {
            let key = l.split('=').next().unwrap().trim().to_string();
            let entry = &mut sections.iter_mut().find(|(s, _)| *s == cur).unwrap().1;
            entry.retain(|k: &String| k.split('=').next().unwrap().trim() != key);
            entry.push(l.to_string());
        }
    }
    sections
        .into_iter()
        .map(|(s, keys)| format!("{s}\n{}\n", keys.join("\n")))
        .collect()
}

/// Delivers a good granule named `id` into `ingest` (copy, then marker).
pub(crate) fn deliver(ingest: &Path, id: &str) {
    let tmp = ingest.join(format!(".{id}.part"));
    copy_dir(&template(), &tmp);
    std::fs::rename(&tmp, ingest.join(id)).unwrap();
    std::fs::write(ingest.join(format!("{id}.ready")), b"").unwrap();
}

pub(crate) fn fixtures_models() -> PathBuf {
    util::root().join("tests/fixtures/models")
}

pub(crate) fn runtime_available(test: &str) -> bool {
    let ok = s2edge::model::init_runtime(None, Default::default()).is_ok();
    if !ok {
        eprintln!("SKIP {test}: no ONNX Runtime library (run scripts/setup.sh)");
    }
    ok
}

pub(crate) fn item_models(product: &Path) -> Vec<String> {
    let item: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(product.join("item.json")).unwrap()).unwrap();
    item["properties"]["s2edge:models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}@{}", m["name"].as_str().unwrap(), m["version"]))
        .collect()
}

fn item_processed(product: &Path) -> String {
    let item: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(product.join("item.json")).unwrap()).unwrap();
    item["properties"]["s2edge:processed"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Parses Prometheus text exposition: every sample line is `name{labels} value`.
pub(crate) fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "{line}");
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.push((series.to_string(), v));
    }
    out
}

pub(crate) fn metric(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no series {series}"))
}

#[test]
fn mixed_inputs_are_published_or_quarantined_and_observable() {
    if !runtime_available("mixed_inputs_are_published_or_quarantined_and_observable") {
        return;
    }
    let tmp = util::tempdir();
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(tmp.path(), &ingest, &fixtures_models(), "");
    d.start();
    assert_eq!(d.healthz()["status"], "ready");

    deliver(&ingest, "S2B_GOOD_1");
    deliver(&ingest, "S2B_GOOD_2");
    // Garbage TIFFs.
    let bad = ingest.join("S2B_GARBAGE");
    std::fs::create_dir(&bad).unwrap();
    for b in Band::PRODUCT {
        std::fs::write(
            bad.join(format!("{}.tif", b.name())),
            b"II*\0 not really a tiff",
        )
        .unwrap();
    }
    std::fs::write(ingest.join("S2B_GARBAGE.ready"), b"").unwrap();
    // An empty folder with a marker.
    std::fs::create_dir(ingest.join("S2B_EMPTY")).unwrap();
    std::fs::write(ingest.join("S2B_EMPTY.ready"), b"").unwrap();
    // A zip whose central directory is cut off.
    let zip_path = ingest.join("S2B_BROKEN.zip");
    {
        let mut w = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        w.start_file(
            "S2B_BROKEN.SAFE/manifest.safe",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        w.write_all(&[b'x'; 4096]).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&zip_path).unwrap();
        std::fs::write(&zip_path, &bytes[..bytes.len() - 40]).unwrap();
    }
    std::fs::write(ingest.join("S2B_BROKEN.zip.ready"), b"").unwrap();

    let ids = [
        "S2B_GOOD_1",
        "S2B_GOOD_2",
        "S2B_GARBAGE",
        "S2B_EMPTY",
        "S2B_BROKEN",
    ];
    d.wait_for("every input to settle", Duration::from_secs(120), |d| {
        ids.iter().all(|id| {
            matches!(
                d.state(id),
                Some(GranuleState::Done | GranuleState::Quarantined)
            )
        })
    });
    for id in ["S2B_GOOD_1", "S2B_GOOD_2"] {
        assert_eq!(d.state(id), Some(GranuleState::Done));
        let product = d.out(id);
        if let Some(info) = util::gdalinfo(&product.join("superres.tif")) {
            assert_eq!(info["size"], serde_json::json!([SIDE, SIDE]));
            assert_eq!(info["bands"].as_array().unwrap().len(), 12);
            let wkt = info["coordinateSystem"]["wkt"].as_str().unwrap();
            assert!(wkt.contains("32633"), "{wkt}");
            assert_eq!(info["geoTransform"][0], 400_000.0);
            assert_eq!(info["bands"][0]["noDataValue"], 0.0);
        }
        assert!(product.join("item.json").is_file());
        // Every model Item the product links to was written by the daemon.
        let item: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(product.join("item.json")).unwrap())
                .unwrap();
        let models: Vec<&str> = item["links"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["rel"] == "derived_from")
            .map(|l| l["href"].as_str().unwrap())
            .collect();
        assert!(!models.is_empty(), "{item}");
        for href in models {
            let target = product.join(href);
            let mlm: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&target)
                    .unwrap_or_else(|e| panic!("{id}: derived_from {href} does not resolve: {e}")),
            )
            .unwrap();
            assert!(mlm["properties"]["mlm:name"].is_string(), "{mlm}");
        }
        // after = "archive": the input moved to the archive, the marker is gone.
        assert!(tmp.path().join("archive").join(id).is_dir());
        assert!(!ingest.join(id).exists() && !ingest.join(format!("{id}.ready")).exists());
    }
    for (id, entry, why) in [
        ("S2B_GARBAGE", "S2B_GARBAGE", "B0"),
        ("S2B_EMPTY", "S2B_EMPTY", "not a recognised granule"),
        ("S2B_BROKEN", "S2B_BROKEN.zip", "central directory"),
    ] {
        assert_eq!(d.state(id), Some(GranuleState::Quarantined), "{id}");
        let q = tmp.path().join("quarantine").join(id);
        assert!(q.join(entry).exists(), "{id}: input kept in quarantine");
        let reason = std::fs::read_to_string(q.join("reason.txt")).unwrap();
        assert!(reason.contains(why), "{id}: {reason}");
        assert!(
            reason.contains("attempts:") && reason.contains("time:"),
            "{reason}"
        );
    }
    // Still up and healthy, with nothing left in work.
    assert_eq!(d.healthz()["status"], "ready");
    assert_eq!(
        std::fs::read_dir(tmp.path().join("work")).unwrap().count(),
        0
    );
    let m = parse_metrics(&d.http("/metrics").unwrap());
    assert_eq!(metric(&m, "s2edge_granules{state=\"done\"}"), 2.0);
    assert_eq!(metric(&m, "s2edge_granules{state=\"quarantined\"}"), 3.0);
    assert_eq!(metric(&m, "s2edge_granules_total{outcome=\"done\"}"), 2.0);
    assert!(metric(&m, "s2edge_superres_pixels_total") > 0.0);
    // Every input that reached the worker (the two good ones, the garbage and the empty
    // folder) has a ready-to-start latency; the broken zip never did.
    assert_eq!(metric(&m, "s2edge_ready_to_start_seconds_count"), 4.0);
    assert!(m.iter().any(|(s, v)| s.starts_with("s2edge_model_info{")
        && s.contains("tiny-ben19")
        && s.contains("precision=\"float32\"")
        && *v == 1.0));
    assert!(m
        .iter()
        .any(|(s, _)| s.starts_with("s2edge_stage_seconds_bucket{stage=\"read\"")));

    // The ledger CLI beside the running daemon.
    let out = d.cli(&["ledger", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(table.lines().count(), 6, "{table}");
    assert!(table
        .lines()
        .any(|l| l.starts_with("S2B_EMPTY") && l.contains("quarantined")));
    let out = d.cli(&["ledger", "show", "S2B_GOOD_1"]);
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(row["state"], "done");
    assert!(row["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "tiny-dsen2-2x@1"));

    // A quarantined input requeued (still bad) comes back to quarantine with 2 deliveries.
    let out = d.cli(&["ledger", "requeue", "S2B_EMPTY"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.wait_for(
        "the requeued input to be quarantined again",
        Duration::from_secs(60),
        |d| {
            d.ledger()
                .get("S2B_EMPTY")
                .unwrap()
                .is_some_and(|r| r.deliveries == 2 && r.state == GranuleState::Quarantined)
        },
    );
    let out = d.cli(&["ledger", "purge", "S2B_EMPTY"]);
    assert!(out.status.success());
    assert_eq!(d.state("S2B_EMPTY"), None);

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(30)), Some(0));
}

/// Granules already queued when one starts are opened ahead of their turn (their reader
/// decodes the first strip during the current granule's inference), and each is still
/// published once, whole.
#[test]
fn queued_granules_are_opened_ahead_of_their_turn() {
    if !runtime_available("queued_granules_are_opened_ahead_of_their_turn") {
        return;
    }
    let tmp = util::tempdir();
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(tmp.path(), &ingest, &fixtures_models(), "");
    let ids = [
        "S2B_QUEUE_1",
        "S2B_QUEUE_2",
        "S2B_QUEUE_3",
        "S2B_QUEUE_4",
        "S2B_QUEUE_5",
    ];
    for id in ids {
        deliver(&ingest, id);
    }
    d.start();
    d.wait_for("the queue to drain", Duration::from_secs(120), |d| {
        ids.iter().all(|id| d.state(id) == Some(GranuleState::Done))
    });
    let log = d.log_text();
    assert!(
        log.contains("opened ahead"),
        "no granule was opened ahead:\n{log}"
    );
    for id in ids {
        let item = std::fs::read_to_string(d.out(id).join("item.json")).unwrap();
        assert!(item.contains(id), "{id}");
        assert!(d.out(id).join("superres.tif").is_file(), "{id}");
    }
}

#[test]
fn redelivery_is_a_duplicate_until_requeued() {
    if !runtime_available("redelivery_is_a_duplicate_until_requeued") {
        return;
    }
    let tmp = util::tempdir();
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(tmp.path(), &ingest, &fixtures_models(), "");
    d.start();
    deliver(&ingest, "S2B_AGAIN");
    d.wait_for("done", Duration::from_secs(60), |d| {
        d.state("S2B_AGAIN") == Some(GranuleState::Done)
    });
    let first = item_processed(&d.out("S2B_AGAIN"));
    // Delivered again: recorded, not reprocessed.
    deliver(&ingest, "S2B_AGAIN");
    d.wait_for(
        "the duplicate to be recorded",
        Duration::from_secs(60),
        |d| d.ledger().get("S2B_AGAIN").unwrap().unwrap().deliveries == 2,
    );
    d.wait_for(
        "the duplicate input to be archived",
        Duration::from_secs(10),
        |_| !ingest.join("S2B_AGAIN").exists(),
    );
    assert_eq!(item_processed(&d.out("S2B_AGAIN")), first);
    assert_eq!(d.state("S2B_AGAIN"), Some(GranuleState::Done));
    // Requeued: the archived input comes back and the product is rebuilt in place.
    let out = d.cli(&["ledger", "requeue", "S2B_AGAIN"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reprocessed"));
    d.wait_for("the rebuilt product", Duration::from_secs(60), |d| {
        d.state("S2B_AGAIN") == Some(GranuleState::Done)
            && d.out("S2B_AGAIN").join("item.json").is_file()
            && item_processed(&d.out("S2B_AGAIN")) != first
    });
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "models")
        .collect();
    assert_eq!(leftovers, vec!["S2B_AGAIN".to_string()]);
}

#[test]
fn kill9_mid_run_then_restart_finishes_each_granule_once() {
    if !runtime_available("kill9_mid_run_then_restart_finishes_each_granule_once") {
        return;
    }
    let tmp = util::tempdir();
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(tmp.path(), &ingest, &fixtures_models(), "");
    d.start();
    let ids: Vec<String> = (0..4).map(|i| format!("S2B_CRASH_{i}")).collect();
    for id in &ids {
        deliver(&ingest, id);
    }
    d.wait_for("a granule in processing", Duration::from_secs(60), |d| {
        ids.iter()
            .any(|id| d.state(id) == Some(GranuleState::Processing))
    });
    d.kill9();
    let claimed_before: Vec<String> = ids
        .iter()
        .filter(|id| d.state(id).is_some())
        .cloned()
        .collect();
    assert!(!claimed_before.is_empty());
    d.start();
    d.wait_for("every granule done", Duration::from_secs(120), |d| {
        ids.iter().all(|id| d.state(id) == Some(GranuleState::Done))
    });
    for id in &ids {
        let row = d.ledger().get(id).unwrap().unwrap();
        assert_eq!(row.deliveries, 1, "{id}: claimed exactly once");
        assert!(
            row.attempts >= 1 && row.attempts <= 2,
            "{id}: {} attempts",
            row.attempts
        );
        assert!(d.out(id).join("item.json").is_file());
    }
    // No half product, nothing left in work.
    for e in std::fs::read_dir(tmp.path().join("out")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "leftover staging {name}");
    }
    assert_eq!(
        std::fs::read_dir(tmp.path().join("work")).unwrap().count(),
        0
    );
    assert!(d
        .log_text()
        .contains("resuming a granule claimed before the restart"));
}

#[test]
fn sighup_reloads_and_sigterm_drains() {
    if !runtime_available("sighup_reloads_and_sigterm_drains") {
        return;
    }
    let tmp = util::tempdir();
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(tmp.path(), &ingest, &fixtures_models(), "");
    d.start();
    // A broken configuration is refused and the running one kept.
    let good = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        format!("{good}\n[pipeline]\nmax_cloud_fraction = 7.0\n"),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for("the refused reload", Duration::from_secs(10), |d| {
        d.healthz()["status"] == "degraded"
    });
    assert!(d.healthz()["reasons"][0]
        .as_str()
        .unwrap()
        .contains("max_cloud_fraction"));
    // A good one with on_publish is taken; its changed [runtime] keys rebuild the sessions
    // (int8 asked for: the test models ship no int8 graph, so the product says float32 ran
    // and why), and its other arena, fixed when the runtime loaded, is refused with a
    // warning.
    let marker = tmp.path().join("published.txt");
    let cfg = merge_toml(&format!(
        "{good}\n[service]\non_publish = [\"/bin/cp\", \"{{product}}/item.json\", \"{}\"]\n\
         [runtime]\nmemory_pattern = true\narena = \"per_session\"\nprecision = \"int8\"\n",
        marker.display()
    ));
    std::fs::write(&d.config, cfg).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for("the reload", Duration::from_secs(10), |d| {
        d.healthz()["status"] == "ready"
    });
    deliver(&ingest, "S2B_HUP");
    d.wait_for("on_publish to run", Duration::from_secs(60), |_| {
        marker.is_file()
    });
    let published = std::fs::read_to_string(&marker).unwrap();
    assert!(published.contains("S2B_HUP"));
    assert!(
        published.contains("tiny-dsen2-2x@1 ships no int8 graph; running float32"),
        "the reloaded precision is not in the product: {published}"
    );
    assert!(
        d.log_text()
            .contains("[runtime] session keys changed: loading the models again"),
        "a [runtime] change must rebuild the sessions"
    );
    assert!(
        d.log_text()
            .contains("need a restart; the loaded pool and arena stay"),
        "an arena change must say that it needs a restart"
    );

    // SIGTERM with a granule in flight: it finishes, then the daemon exits 0.
    deliver(&ingest, "S2B_DRAIN");
    d.wait_for("the granule in flight", Duration::from_secs(30), |d| {
        d.state("S2B_DRAIN") == Some(GranuleState::Processing)
            || d.state("S2B_DRAIN") == Some(GranuleState::Done)
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(40)), Some(0));
    assert_eq!(d.state("S2B_DRAIN"), Some(GranuleState::Done));
    assert!(d.log_text().contains("drained; exiting"));
}

/// Version 1 of the three tiny models, copied into `models` (a directory the test may
/// change under a running daemon).
pub(crate) fn copy_tiny_models(models: &Path) {
    for name in ["tiny-ben19", "tiny-dsen2-2x", "tiny-dsen2-6x"] {
        copy_dir(
            &fixtures_models().join(name).join("1"),
            &models.join(name).join("1"),
        );
    }
}

/// Copies a fixture model version as `version`, optionally with a wrong sha256; the
/// manifest is renamed in last, as a deployment must.
pub(crate) fn add_version(models: &Path, name: &str, from: u32, version: u32, bad_sha: bool) {
    let src = models.join(name).join(from.to_string());
    let dst = models.join(name).join(version.to_string());
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::copy(src.join("model.onnx"), dst.join("model.onnx")).unwrap();
    let mut toml = std::fs::read_to_string(src.join("model.toml"))
        .unwrap()
        .replace(
            &format!("version = {from}"),
            &format!("version = {version}"),
        );
    if bad_sha {
        let start = toml.find("onnx_sha256 = \"").unwrap() + "onnx_sha256 = \"".len();
        toml.replace_range(start..start + 64, &"0".repeat(64));
    }
    std::fs::write(dst.join(".model.toml.tmp"), toml).unwrap();
    std::fs::rename(dst.join(".model.toml.tmp"), dst.join("model.toml")).unwrap();
}

#[test]
fn model_hot_swap_refuses_a_bad_version_and_takes_a_good_one() {
    if !runtime_available("model_hot_swap_refuses_a_bad_version_and_takes_a_good_one") {
        return;
    }
    let tmp = util::tempdir();
    let models = tmp.path().join("models");
    copy_tiny_models(&models);
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(tmp.path(), &ingest, &models, "");
    d.start();

    add_version(&models, "tiny-dsen2-2x", 1, 2, true);
    d.wait_for(
        "the bad version to be refused",
        Duration::from_secs(20),
        |d| d.healthz()["status"] == "degraded",
    );
    let h = d.healthz();
    assert!(
        h["reasons"][0]
            .as_str()
            .unwrap()
            .contains("tiny-dsen2-2x@2"),
        "{h}"
    );
    assert!(h["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["model"] == "tiny-dsen2-2x@1"));
    let m = parse_metrics(&d.http("/metrics").unwrap());
    assert!(metric(&m, "s2edge_model_rejected_total") >= 1.0);
    deliver(&ingest, "S2B_V1");
    d.wait_for("done", Duration::from_secs(60), |d| {
        d.state("S2B_V1") == Some(GranuleState::Done)
    });
    assert!(item_models(&d.out("S2B_V1")).contains(&"tiny-dsen2-2x@1".to_string()));

    add_version(&models, "tiny-dsen2-2x", 1, 3, false);
    d.wait_for(
        "the good version to be swapped in",
        Duration::from_secs(20),
        |d| {
            d.healthz()["models"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["model"] == "tiny-dsen2-2x@3")
        },
    );
    assert_eq!(d.healthz()["status"], "ready");
    deliver(&ingest, "S2B_V3");
    d.wait_for("done", Duration::from_secs(60), |d| {
        d.state("S2B_V3") == Some(GranuleState::Done)
    });
    let used = item_models(&d.out("S2B_V3"));
    assert!(used.contains(&"tiny-dsen2-2x@3".to_string()), "{used:?}");
    let m = parse_metrics(&d.http("/metrics").unwrap());
    assert_eq!(metric(&m, "s2edge_model_swaps_total"), 1.0);
}

#[test]
fn an_unreadable_models_directory_degrades_and_recovers_after_sighup() {
    if !runtime_available("an_unreadable_models_directory_degrades_and_recovers_after_sighup") {
        return;
    }
    let tmp = util::tempdir();
    let models = tmp.path().join("models");
    copy_tiny_models(&models);
    let ingest = tmp.path().join("ingest");
    let mut d = Daemon::new(tmp.path(), &ingest, &models, "");
    d.start();
    assert_eq!(d.healthz()["status"], "ready");
    // The models directory becomes unreadable: a file where the directory was (ENOTDIR;
    // the tests run as root, for whom permission bits do not apply).
    let aside = tmp.path().join("models-aside");
    std::fs::rename(&models, &aside).unwrap();
    std::fs::write(&models, b"not a directory").unwrap();
    d.wait_for(
        "the unreadable directory to degrade",
        Duration::from_secs(20),
        |d| d.healthz()["status"] == "degraded",
    );
    let h = d.healthz();
    let reason = h["reasons"][0].as_str().unwrap().to_string();
    assert!(!reason.contains("not found"), "{h}");
    assert!(reason.contains(models.to_str().unwrap()), "{h}");
    // The models in use keep running.
    assert!(!h["models"].as_array().unwrap().is_empty(), "{h}");
    // Restored, then SIGHUP: ready again.
    std::fs::remove_file(&models).unwrap();
    std::fs::rename(&aside, &models).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for("ready after the restore", Duration::from_secs(20), |d| {
        d.healthz()["status"] == "ready"
    });
    deliver(&ingest, "S2B_AFTER");
    d.wait_for("done", Duration::from_secs(60), |d| {
        d.state("S2B_AFTER") == Some(GranuleState::Done)
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn two_instances_on_one_ingest_directory_process_each_granule_once() {
    if !runtime_available("two_instances_on_one_ingest_directory_process_each_granule_once") {
        return;
    }
    let tmp = util::tempdir();
    let ingest = tmp.path().join("ingest");
    let mut a = Daemon::new(&tmp.path().join("a"), &ingest, &fixtures_models(), "");
    let mut b = Daemon::new(&tmp.path().join("b"), &ingest, &fixtures_models(), "");
    a.start();
    b.start();
    let ids: Vec<String> = (0..8).map(|i| format!("S2B_SHARED_{i}")).collect();
    for id in &ids {
        deliver(&ingest, id);
    }
    let done = |d: &Daemon, id: &str| d.state(id) == Some(GranuleState::Done);
    a.wait_for(
        "every granule done by one instance",
        Duration::from_secs(180),
        |a| ids.iter().all(|id| done(a, id) || done(&b, id)),
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut per = [0usize; 2];
    for id in &ids {
        let (in_a, in_b) = (a.state(id).is_some(), b.state(id).is_some());
        assert!(
            in_a ^ in_b,
            "{id} claimed by both instances (a: {in_a}, b: {in_b})"
        );
        per[usize::from(in_b)] += 1;
        let d = if in_a { &a } else { &b };
        assert_eq!(d.ledger().get(id).unwrap().unwrap().attempts, 1);
    }
    eprintln!("instance a processed {}, b {}", per[0], per[1]);
}
