//! Shared helpers of the integration tests: fixture locations, the s2edge binary, GDAL.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/data`, or `None` with a printed skip message when it is absent.
pub fn shared_data(test: &str) -> Option<PathBuf> {
    let p = root().join("../shared/data");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIP {test}: ../shared/data is absent (real Sentinel-2 test data)");
        None
    }
}

/// The built `s2edge` binary.
pub fn s2edge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_s2edge"))
}

/// A tool from PATH or the project venv (`gdalinfo`, `rio`, `opj_compress`, ...), or
/// `None` with a printed skip message.
pub fn tool(name: &str, test: &str) -> Option<PathBuf> {
    let venv = root().join(".venv/bin").join(name);
    if venv.is_file() {
        return Some(venv);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {name} is required in CI (run scripts/setup.sh)");
    }
    eprintln!("SKIP {test}: {name} not installed (run scripts/setup.sh)");
    None
}

/// `gdalinfo -json -stats`-free metadata of a raster, parsed.
pub fn gdalinfo(path: &Path) -> Option<serde_json::Value> {
    let gdal = tool("gdalinfo", "gdalinfo")?;
    let out = Command::new(gdal)
        .arg("-json")
        .arg(path)
        .output()
        .expect("run gdalinfo");
    assert!(
        out.status.success(),
        "gdalinfo {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("gdalinfo JSON"))
}

/// A fresh temporary directory, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("s2edge-test-")
        .tempdir()
        .expect("tempdir")
}

/// The committed test models (`tests/fixtures/models`, made by `scripts/gen_models.py`).
pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures/models")
}

/// Loads ONNX Runtime with the default search; `false` (after printing SKIP) when absent.
pub fn runtime(test: &str) -> bool {
    match s2edge::model::init_runtime(None, Default::default()) {
        Ok(_) => true,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIP {test}: ONNX Runtime unavailable: {e}");
            false
        }
        Err(e) => panic!("{test}: ONNX Runtime is required in CI: {e}"),
    }
}

/// `gdaltransform` of map points to lon/lat (OGC:CRS84 axis order).
pub fn gdaltransform(epsg: u32, pts: &[(f64, f64)], test: &str) -> Option<Vec<(f64, f64)>> {
    use std::io::Write;
    let tool = tool("gdaltransform", test)?;
    let mut child = std::process::Command::new(tool)
        .args([
            "-s_srs",
            &format!("EPSG:{epsg}"),
            "-t_srs",
            "OGC:CRS84",
            "-output_xy",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = pts.iter().map(|(x, y)| format!("{x} {y}\n")).collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Vec<f64> = l.split_whitespace().map(|s| s.parse().unwrap()).collect();
                (v[0], v[1])
            })
            .collect(),
    )
}

/// Asserts that `rio cogeo validate --strict` accepts `path` (skips without rio-cogeo).
pub fn rio_validate(path: &Path, test: &str) {
    let Some(rio) = tool("rio", test) else {
        return;
    };
    let out = std::process::Command::new(rio)
        .args(["cogeo", "validate", "--strict"])
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("is a valid cloud optimized GeoTIFF"),
        "rio cogeo validate {}: {stdout}{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
