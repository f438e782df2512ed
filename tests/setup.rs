//! `scripts/setup.sh` decides what to install by Debian package state (`dpkg-query`), not by
//! globbing for files. These tests run it with stub `dpkg-query` and `apt-get` first on the
//! `PATH` (`S2EDGE_SETUP_APT_ONLY=1` stops it after the packages) and look at what it asked
//! apt to install.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::util::root;

/// A stub dpkg-query that answers from `$STUB/installed` (one package per line), and a stub
/// apt-get that logs its arguments to `$STUB/apt.log` and, unless `$STUB/broken` names the
/// package, marks each installed package as installed.
fn stubs(dir: &Path, installed: &[&str]) {
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    };
    write(
        "dpkg-query",
        r#"#!/bin/sh
# dpkg-query -W -f='${Status}' PKG
for pkg; do :; done
if grep -qx "$pkg" "$STUB/installed" 2>/dev/null; then printf 'install ok installed'; exit 0; fi
echo "dpkg-query: no packages found matching $pkg" >&2; exit 1
"#,
    );
    write(
        "apt-get",
        r#"#!/bin/sh
echo "$*" >> "$STUB/apt.log"
[ "$1" = update ] && exit 0
for a; do
  case "$a" in -*|install) ;; *) grep -qx "$a" "$STUB/broken" 2>/dev/null || echo "$a" >> "$STUB/installed";; esac
done
"#,
    );
    fs::write(dir.join("installed"), installed.join("\n") + "\n").unwrap();
}

fn run_setup(dir: &Path) -> Output {
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .arg(root().join("scripts/setup.sh"))
        .env("PATH", path)
        .env("STUB", dir)
        .env("S2EDGE_SETUP_APT_ONLY", "1")
        .env_remove("S2EDGE_SETUP_PACKAGES")
        .output()
        .expect("run scripts/setup.sh")
}

fn apt_installs(dir: &Path) -> Vec<String> {
    let log = fs::read_to_string(dir.join("apt.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("install"))
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|a| !a.starts_with('-') && a != "install")
        .collect()
}

const ALL: [&str; 10] = [
    "gdal-bin",
    "libopenjp2-tools",
    "sqlite3",
    "systemd",
    "openmpi-bin",
    "libopenmpi-dev",
    "libclang-dev",
    "time",
    "python3-venv",
    "strace",
];

/// The fresh-machine case that broke CI: the image ships libclang-cpp14 (whose
/// `libclang-cpp.so.14` matched the old glob) but not libclang-dev.
#[test]
fn setup_installs_libclang_dev_when_only_libclang_cpp_is_present() {
    let dir = tempfile::tempdir().unwrap();
    stubs(
        dir.path(),
        &[
            "libclang-cpp14",
            "libllvm14",
            "sqlite3",
            "systemd",
            "time",
            "python3-venv",
        ],
    );
    let out = run_setup(dir.path());
    assert!(
        out.status.success(),
        "setup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = apt_installs(dir.path());
    for pkg in [
        "libclang-dev",
        "gdal-bin",
        "libopenjp2-tools",
        "openmpi-bin",
        "libopenmpi-dev",
    ] {
        assert!(
            got.contains(&pkg.to_string()),
            "{pkg} not installed; apt saw {got:?}"
        );
    }
    for pkg in ["sqlite3", "systemd", "time", "python3-venv"] {
        assert!(
            !got.contains(&pkg.to_string()),
            "{pkg} was present but reinstalled: {got:?}"
        );
    }
    let log = fs::read_to_string(dir.path().join("apt.log")).unwrap();
    assert!(
        log.starts_with("update"),
        "apt-get update must come first: {log}"
    );
}

#[test]
fn setup_installs_nothing_when_every_package_is_present() {
    let dir = tempfile::tempdir().unwrap();
    stubs(dir.path(), &ALL);
    let out = run_setup(dir.path());
    assert!(
        out.status.success(),
        "setup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("apt.log").exists(),
        "apt-get ran although everything is installed"
    );
}

/// A package that apt "installs" but dpkg still does not report stops the set-up at once,
/// naming it.
#[test]
fn setup_fails_early_naming_a_package_still_missing_after_install() {
    let dir = tempfile::tempdir().unwrap();
    let present: Vec<&str> = ALL
        .iter()
        .copied()
        .filter(|p| *p != "libclang-dev")
        .collect();
    stubs(dir.path(), &present);
    fs::write(dir.path().join("broken"), "libclang-dev\n").unwrap();
    let out = run_setup(dir.path());
    assert!(
        !out.status.success(),
        "setup passed with libclang-dev missing"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("still not installed") && err.contains("libclang-dev"),
        "unclear error: {err}"
    );
}

/// No script reaches a build cache or data at a fixed absolute path.
#[test]
fn scripts_use_no_fixed_absolute_work_paths() {
    for dir in ["scripts", ".ci"] {
        for entry in fs::read_dir(root().join(dir)).unwrap() {
            let p = entry.unwrap().path();
            let text = fs::read_to_string(&p).unwrap_or_default();
            for bad in ["/work/target", "/work/shared", "/work/main"] {
                assert!(!text.contains(bad), "{} names {bad}", p.display());
            }
        }
    }
}
