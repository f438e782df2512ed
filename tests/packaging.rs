//! Deployment: the systemd unit (`systemd/s2edge.service`, the GPU drop-in
//! `systemd/gpu.conf`) and the Debian package (`scripts/package.sh`, cargo-deb).
//!
//! - The unit is checked with `systemd-analyze verify` and `systemd-analyze security
//!   --offline=true` inside a temporary root (systemd need not be PID 1): the root holds
//!   the unit where the package puts it, the built binary as `/usr/bin/s2edge` (verify
//!   insists the executables exist), `/bin/kill` and the host's targets and slices.
//! - The package is built once per test process from the binary these tests were built
//!   with (`scripts/package.sh --binary`, fast compression, stripped): no second build.
//!   Its file list, control data and packaged config are checked unpacked
//!   (`dpkg-deb -x`), and the unpacked binary validates its own packaged config.
//! - Installing for real (`dpkg -i`, then `s2edge validate` as the `s2edge` user, then
//!   `dpkg --purge`) changes the machine: it runs only when `S2EDGE_TEST_DPKG=1`
//!   is set, as root (`scripts/test.sh` runs it alone at the end). While it runs, `/etc/s2edge/s2edge.toml` exists on the machine.
//!
//! Missing tools (systemd-analyze, dpkg-deb, cargo-deb, the venv) skip with a message,
//! except in CI, where they are required.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::util;

/// The unit's file name and where the package installs it (merged /usr: also /lib/...).
const UNIT: &str = "s2edge.service";
const UNIT_DIR: &str = "usr/lib/systemd/system";

fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Skips (returns false, with a message) when `cmd` is missing; in CI it is required.
fn have(cmd: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            !in_ci(),
            "{test}: {cmd} is required in CI (run scripts/setup.sh)"
        );
        eprintln!("SKIP {test}: {cmd} not installed (run scripts/setup.sh)");
    }
    found
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Copies (or hard-links, when on the same filesystem) `from` to `to`.
fn install_file(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
    }
}

/// A root for `systemd-analyze --root`: the unit (and optionally the GPU drop-in where
/// `systemctl edit` would put it), the executables it names, and the host's targets
/// and slices that every service depends on.
fn unit_root(with_gpu_dropin: bool) -> tempfile::TempDir {
    let dir = util::tempdir();
    let root = dir.path();
    let units = root.join(UNIT_DIR);
    std::fs::create_dir_all(&units).unwrap();
    std::fs::copy(util::root().join("systemd").join(UNIT), units.join(UNIT)).unwrap();
    if with_gpu_dropin {
        let d = root.join("etc/systemd/system/s2edge.service.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(util::root().join("systemd/gpu.conf"), d.join("gpu.conf")).unwrap();
    }
    install_file(
        Path::new(env!("CARGO_BIN_EXE_s2edge")),
        &root.join("usr/bin/s2edge"),
    );
    let kill = std::fs::canonicalize("/bin/kill").expect("/bin/kill (procps)");
    install_file(&kill, &root.join("bin/kill"));
    for host_dir in ["/usr/lib/systemd/system", "/lib/systemd/system"] {
        let Ok(entries) = std::fs::read_dir(host_dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let n = name.to_string_lossy();
            if (n.ends_with(".target") || n.ends_with(".slice"))
                && e.path().is_file()
                && !units.join(&name).exists()
            {
                std::fs::copy(e.path(), units.join(&name)).unwrap();
            }
        }
    }
    dir
}

/// The overall exposure `systemd-analyze security --offline=true` gives the unit.
fn exposure(root: &Path) -> (f64, String) {
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg(UNIT));
    let all = text(&out);
    assert!(
        out.status.success(),
        "systemd-analyze security failed:\n{all}"
    );
    let marker = format!("Overall exposure level for {UNIT}:");
    let line = all
        .lines()
        .find(|l| l.contains(&marker))
        .unwrap_or_else(|| panic!("no overall score in:\n{all}"));
    let score = line[line.find(&marker).unwrap() + marker.len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("unparsable score line: {line}"));
    (score, all)
}

/// A systemd time span in microseconds, parsed by systemd itself.
fn timespan_us(value: &str) -> u64 {
    let out = run(Command::new("systemd-analyze").args(["timespan", value]));
    let all = text(&out);
    assert!(
        out.status.success(),
        "systemd-analyze timespan {value}: {all}"
    );
    all.lines()
        .find_map(|l| l.trim().strip_prefix("μs:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no μs in: {all}"))
}

/// The value of `key=` in the unit (the last assignment wins, as in systemd).
fn unit_value(unit: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .map(str::to_string)
}

#[test]
fn systemd_unit_and_gpu_dropin_verify_cleanly() {
    let test = "systemd_unit_and_gpu_dropin_verify_cleanly";
    if !have("systemd-analyze", test) {
        return;
    }
    for gpu in [false, true] {
        let root = unit_root(gpu);
        let out = run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", root.path().display()))
            .arg(format!("/{UNIT_DIR}/{UNIT}")));
        // verify exits 0 on unknown keys and bad values too, printing a warning: any
        // output at all is a finding.
        let all = text(&out);
        assert!(
            out.status.success() && all.trim().is_empty(),
            "verify (gpu drop-in: {gpu}):\n{all}"
        );
    }
}

#[test]
fn systemd_unit_exposure_is_at_most_2() {
    let test = "systemd_unit_exposure_is_at_most_2";
    if !have("systemd-analyze", test) {
        return;
    }
    let (base, report) = exposure(unit_root(false).path());
    let (gpu, gpu_report) = exposure(unit_root(true).path());
    eprintln!("{test}: exposure {base} (base unit), {gpu} (with gpu.conf)");
    assert!(base <= 2.0, "exposure {base} > 2.0:\n{report}");
    assert!(
        gpu <= 2.0,
        "exposure with the GPU drop-in {gpu} > 2.0:\n{gpu_report}"
    );
    // The drop-in relaxes the unit: its score cannot be better.
    assert!(
        gpu >= base,
        "gpu.conf lowered the exposure ({gpu} < {base})?"
    );
}

#[test]
fn systemd_unit_timeouts_fit_the_daemon() {
    let test = "systemd_unit_timeouts_fit_the_daemon";
    if !have("systemd-analyze", test) {
        return;
    }
    let unit = std::fs::read_to_string(util::root().join("systemd").join(UNIT)).unwrap();
    let get = |k: &str| unit_value(&unit, k).unwrap_or_else(|| panic!("{k}= missing in the unit"));
    assert_eq!(get("Type"), "notify");
    assert_eq!(get("NotifyAccess"), "main");
    assert_eq!(get("ExecStart"), "/usr/bin/s2edge serve");
    assert_eq!(get("ExecStartPre"), "/usr/bin/s2edge validate");
    assert_eq!(get("User"), "s2edge");
    // TimeoutStopSec covers the configured drain time ([service] shutdown_timeout).
    let defaults: toml::Table = s2edge::config::DEFAULTS.parse().unwrap();
    let shutdown = defaults["service"]["shutdown_timeout"].as_str().unwrap();
    assert!(
        timespan_us(&get("TimeoutStopSec")) > timespan_us(shutdown),
        "TimeoutStopSec={} does not exceed shutdown_timeout = {shutdown}",
        get("TimeoutStopSec")
    );
    // The watchdog is pinged per batch: minutes, not the hours a granule may take on CPU;
    // the start timeout allows a TensorRT engine build.
    let watchdog = timespan_us(&get("WatchdogSec"));
    assert!(
        (60_000_000..=30 * 60_000_000).contains(&watchdog),
        "WatchdogSec={}",
        get("WatchdogSec")
    );
    assert!(
        timespan_us(&get("TimeoutStartSec")) >= 15 * 60_000_000,
        "TimeoutStartSec={}",
        get("TimeoutStartSec")
    );
}

/// The package built from this test binary's `s2edge`, once per process; `None` (with a
/// message) when the tools are missing outside CI.
fn package(test: &str) -> Option<&'static Path> {
    static DEB: OnceLock<Option<PathBuf>> = OnceLock::new();
    DEB.get_or_init(|| {
        if !have("dpkg-deb", test) {
            return None;
        }
        let cargo_deb = Command::new("cargo")
            .args(["deb", "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !cargo_deb && !in_ci() {
            // In CI the script installs it.
            eprintln!("SKIP {test}: cargo-deb not installed (cargo install cargo-deb --locked)");
            return None;
        }
        if !util::root().join(".venv/bin/python").is_file() {
            assert!(
                !in_ci(),
                "{test}: .venv is required in CI (run scripts/setup.sh)"
            );
            eprintln!("SKIP {test}: no .venv with onnxruntime (run scripts/setup.sh)");
            return None;
        }
        // Kept for the whole test process: both package tests use it.
        let out_dir = util::tempdir().keep();
        let t0 = Instant::now();
        let out = run(Command::new(util::root().join("scripts/package.sh"))
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_s2edge"))
            .arg("--fast")
            .arg("--output")
            .arg(&out_dir)
            .current_dir(util::root()));
        assert!(
            out.status.success(),
            "scripts/package.sh failed:\n{}",
            text(&out)
        );
        eprintln!(
            "{test}: package built in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let deb = std::fs::read_dir(&out_dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .unwrap_or_else(|| panic!("no .deb in {}", out_dir.display()));
        Some(deb)
    })
    .as_deref()
}

/// Every `models/<name>/<version>/<file>` in the repository.
fn repo_model_files() -> Vec<String> {
    let mut files = Vec::new();
    for name in std::fs::read_dir(util::root().join("models"))
        .unwrap()
        .flatten()
    {
        for version in std::fs::read_dir(name.path()).unwrap().flatten() {
            for f in std::fs::read_dir(version.path()).unwrap().flatten() {
                files.push(format!(
                    "{}/{}/{}",
                    name.file_name().to_string_lossy(),
                    version.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                ));
            }
        }
    }
    assert!(!files.is_empty(), "no models under models/");
    files
}

#[test]
fn deb_package_holds_the_install_and_validates_unpacked() {
    let test = "deb_package_holds_the_install_and_validates_unpacked";
    let Some(deb) = package(test) else { return };
    let t0 = Instant::now();

    // Control data: dependencies, the conffile, the maintainer scripts with the
    // systemd helper fragments filled in.
    let info = text(&run(Command::new("dpkg-deb").arg("--info").arg(deb)));
    assert!(info.contains("Package: s2edge"), "{info}");
    assert!(
        info.lines()
            .any(|l| l.trim_start().starts_with("Depends:") && l.contains("adduser")),
        "{info}"
    );
    let control = util::tempdir();
    assert!(run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(deb)
        .arg(control.path()))
    .status
    .success());
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/s2edge/s2edge.toml");
    let postinst = std::fs::read_to_string(control.path().join("postinst")).unwrap();
    assert!(
        postinst.contains("adduser") && postinst.contains("/var/lib/s2edge/quarantine"),
        "{postinst}"
    );
    assert!(
        postinst.contains("deb-systemd-helper enable s2edge.service"),
        "{postinst}"
    );
    let postrm = std::fs::read_to_string(control.path().join("postrm")).unwrap();
    assert!(!postinst.contains("#DEBHELPER#") && !postrm.contains("#DEBHELPER#"));
    assert!(postrm.contains("deluser"), "{postrm}");

    // Files.
    let root_dir = util::tempdir();
    let root = root_dir.path();
    let out = run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root));
    assert!(out.status.success(), "{}", text(&out));
    for f in [
        "usr/bin/s2edge",
        "usr/lib/s2edge/libonnxruntime.so",
        "etc/s2edge/s2edge.toml",
        "usr/share/doc/s2edge/gpu.conf",
    ] {
        assert!(root.join(f).is_file(), "{f} missing from the package");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.join("usr/bin/s2edge"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "usr/bin/s2edge mode {mode:o}");
    assert_eq!(
        std::fs::read(root.join(UNIT_DIR).join(UNIT)).unwrap(),
        std::fs::read(util::root().join("systemd").join(UNIT)).unwrap(),
        "packaged unit differs from systemd/{UNIT}"
    );
    for f in repo_model_files() {
        assert_eq!(
            std::fs::read(root.join("usr/share/s2edge/models").join(&f)).ok(),
            Some(std::fs::read(util::root().join("models").join(&f)).unwrap()),
            "model file {f} missing or different in the package"
        );
    }

    // The packaged config is the defaults plus the packaging choices, nothing else.
    let packaged: toml::Table = std::fs::read_to_string(root.join("etc/s2edge/s2edge.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let defaults: toml::Table = s2edge::config::DEFAULTS.parse().unwrap();
    assert_eq!(
        packaged["runtime"]["onnxruntime"].as_str(),
        Some("/usr/lib/s2edge/libonnxruntime.so")
    );
    let classifier = packaged["models"]["classifier"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        root.join("usr/share/s2edge/models")
            .join(&classifier)
            .is_dir(),
        "the packaged classifier {classifier} is not shipped"
    );
    let mut normalized = packaged.clone();
    let rt = normalized["runtime"].as_table_mut().unwrap();
    rt.remove("onnxruntime");
    rt.remove("tensorrt_cache");
    normalized["models"]["classifier"] = defaults["models"]["classifier"].clone();
    assert_eq!(
        normalized, defaults,
        "packaged config drifted from config/s2edge.toml"
    );

    // The unpacked binary, with its packaged library and models, validates the packaged
    // config (paths redirected into the temporary root through the env layer).
    let mut cmd = Command::new(root.join("usr/bin/s2edge"));
    cmd.arg("validate")
        .arg("--config")
        .arg(root.join("etc/s2edge/s2edge.toml"));
    cmd.env_remove("ORT_DYLIB_PATH")
        .env("XDG_CACHE_HOME", root.join("var/cache/s2edge"));
    for (key, dir) in [
        ("INGEST", "ingest"),
        ("WORK", "work"),
        ("OUTPUT", "products"),
        ("QUARANTINE", "quarantine"),
        ("ARCHIVE", "archive"),
        ("STATE", "state"),
    ] {
        let p = root.join("var/lib/s2edge").join(dir);
        std::fs::create_dir_all(&p).unwrap();
        cmd.env(format!("S2EDGE__PATHS__{key}"), p);
    }
    cmd.env(
        "S2EDGE__PATHS__MODELS",
        root.join("usr/share/s2edge/models"),
    );
    cmd.env(
        "S2EDGE__RUNTIME__ONNXRUNTIME",
        root.join("usr/lib/s2edge/libonnxruntime.so"),
    );
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "unpacked s2edge validate failed:\n{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("model {classifier}@")),
        "{}",
        text(&out)
    );
    eprintln!(
        "{test}: checks took {:.1} s after the build",
        t0.elapsed().as_secs_f64()
    );
}

/// Purges the package when dropped, so a failed assertion leaves the machine clean.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let out = dpkg(&["--purge", "s2edge"]);
        if !out.status.success() {
            eprintln!("dpkg --purge s2edge failed:\n{}", text(&out));
        }
    }
}

/// Runs dpkg, waiting out another dpkg/apt holding the lock (up to 5 minutes).
fn dpkg(args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = run(Command::new("dpkg").args(args));
        let all = text(&out);
        if out.status.success() || !all.contains("lock") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

#[test]
fn deb_installs_validates_as_service_user_and_purges() {
    let test = "deb_installs_validates_as_service_user_and_purges";
    if std::env::var("S2EDGE_TEST_DPKG").as_deref() != Ok("1") {
        eprintln!(
            "SKIP {test}: installs into this machine; set S2EDGE_TEST_DPKG=1 to run it (scripts/test.sh does, alone)"
        );
        return;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {test}: needs root (dpkg -i, runuser)");
        return;
    }
    if run(Command::new("dpkg").args(["-s", "s2edge"]))
        .status
        .success()
    {
        eprintln!("SKIP {test}: s2edge is already installed here; not replacing it");
        return;
    }
    let Some(deb) = package(test) else { return };
    let t0 = Instant::now();
    let _purge = Purge;
    let out = dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(out.status.success(), "dpkg -i failed:\n{}", text(&out));

    // The user, with the state directory as home and no login shell.
    let pw = text(&run(Command::new("getent").args(["passwd", "s2edge"])));
    let fields: Vec<&str> = pw.trim().split(':').collect();
    assert_eq!(fields.len(), 7, "getent passwd s2edge: {pw}");
    assert_eq!(fields[5], "/var/lib/s2edge");
    assert!(
        fields[6].ends_with("nologin") || fields[6].ends_with("false"),
        "shell {}",
        fields[6]
    );
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "not a system user: uid {uid}");

    // Files and directories.
    for f in [
        "/usr/bin/s2edge",
        "/usr/lib/s2edge/libonnxruntime.so",
        "/etc/s2edge/s2edge.toml",
        "/lib/systemd/system/s2edge.service",
    ] {
        assert!(Path::new(f).is_file(), "{f} not installed");
    }
    assert!(
        Path::new("/etc/systemd/system/multi-user.target.wants/s2edge.service").exists(),
        "the unit was not enabled"
    );
    use std::os::unix::fs::MetadataExt;
    for d in [
        "",
        "/ingest",
        "/work",
        "/products",
        "/quarantine",
        "/archive",
        "/state",
    ] {
        let p = format!("/var/lib/s2edge{d}");
        let m = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(
            m.is_dir() && m.uid() == uid && m.mode() & 0o777 == 0o750,
            "{p}: uid {} mode {:o}",
            m.uid(),
            m.mode()
        );
    }

    // What ExecStartPre does, as the service user and with the unit's environment only.
    let out = run(Command::new("runuser").args([
        "-u",
        "s2edge",
        "--",
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "XDG_CACHE_HOME=/var/cache/s2edge",
        "/usr/bin/s2edge",
        "validate",
        "--config",
        "/etc/s2edge/s2edge.toml",
    ]));
    let all = text(&out);
    assert!(
        out.status.success(),
        "s2edge validate as s2edge failed:\n{all}"
    );
    assert!(all.contains("configuration ok"), "{all}");
    assert!(
        all.contains("/usr/lib/s2edge/libonnxruntime.so"),
        "not the packaged ONNX Runtime:\n{all}"
    );

    // Purge leaves nothing behind.
    drop(_purge);
    assert!(
        !run(Command::new("getent").args(["passwd", "s2edge"]))
            .status
            .success(),
        "user s2edge survived the purge"
    );
    for p in [
        "/var/lib/s2edge",
        "/var/cache/s2edge",
        "/etc/s2edge",
        "/usr/lib/s2edge",
        "/usr/bin/s2edge",
    ] {
        assert!(!Path::new(p).exists(), "{p} survived the purge");
    }
    eprintln!(
        "{test}: install, validate and purge took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
