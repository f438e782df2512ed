//! The hostile corpus (issue 12): generated bad inputs dropped into a running
//! `s2edge serve` between good granules. Every bad case must end in quarantine with a
//! specific reason, every good granule must be published, and (under
//! `strace -f -e trace=file`) the daemon must open nothing outside its configured
//! directories: no symlink target, no hard-linked original, no `/dev/zero`.
//!
//! Cases are GeoTIFF folders derived from the 240 px template of `tests/daemon.rs`,
//! hand-made SAFE directories and zips, and (with the shared data) a real-pixel SAFE
//! with a truncated JPEG 2000 band.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use s2edge::daemon::ledger::GranuleState;
use s2edge::granule::{Band, GeoRef, GeoTransform};
use s2edge::product::cog::{write_cog, CogBand};
use s2edge::raster::Raster;

use crate::daemon::{copy_dir, fixtures_models, runtime_available, template, Daemon};
use crate::{safe_fixture, util};

/// One hostile case: the ingest entry name, the ledger id it ends under, and what its
/// `reason.txt` must say.
struct Case {
    name: String,
    id: String,
    expect: &'static str,
}

struct Corpus {
    ingest: PathBuf,
    outside: PathBuf,
    cases: Vec<Case>,
    good: Vec<String>,
}

impl Corpus {
    /// Builds an entry under a hidden name with `f`, renames it in, writes the marker.
    fn add(&mut self, name: &str, id: &str, expect: &'static str, f: impl FnOnce(&Path)) {
        let tmp = self
            .ingest
            .join(format!(".build-{}.part", self.cases.len()));
        f(&tmp);
        let dst = self.ingest.join(name);
        std::fs::rename(&tmp, &dst).unwrap();
        let mut marker = dst.clone().into_os_string();
        marker.push(".ready");
        std::fs::write(marker, b"").unwrap();
        self.cases.push(Case {
            name: name.to_string(),
            id: id.to_string(),
            expect,
        });
    }

    /// A template copy with `f` applied.
    fn folder(&mut self, name: &str, expect: &'static str, f: impl FnOnce(&Path, &Path)) {
        let outside = self.outside.clone();
        self.add(name, name, expect, |p| {
            copy_dir(&template(), p);
            f(p, &outside);
        });
    }

    fn good_folder(&mut self, name: &str) {
        let tmp = self.ingest.join(format!(".good-{name}.part"));
        copy_dir(&template(), &tmp);
        std::fs::rename(&tmp, self.ingest.join(name)).unwrap();
        std::fs::write(self.ingest.join(format!("{name}.ready")), b"").unwrap();
        self.good.push(name.to_string());
    }
}

fn grid(epsg: u32, side: usize, x0: f64) -> GeoRef {
    GeoRef {
        epsg,
        transform: GeoTransform {
            origin_x: x0,
            origin_y: 5_300_000.0,
            pixel_width: 10.0,
            pixel_height: -10.0,
        },
        width: side,
        height: side,
    }
}

fn write_band(path: &Path, g: &GeoRef, value: u16) {
    let r = Raster {
        width: g.width,
        height: g.height,
        data: vec![value; g.width * g.height],
    };
    write_cog(
        path,
        g,
        &[CogBand {
            description: "B",
            data: &r,
        }],
        Some(0.0),
    )
    .unwrap();
}

/// Overwrites every band of a template copy with `value` on its own grid.
fn write_all_bands(dir: &Path, value: u16) {
    for band in Band::PRODUCT {
        let f = band.resolution().factor();
        let mut g = grid(32633, 240 / f, 400_000.0);
        g.transform.pixel_width *= f as f64;
        g.transform.pixel_height *= f as f64;
        write_band(&dir.join(format!("{}.tif", band.name())), &g, value);
    }
}

/// A little-endian TIFF header claiming `w`×`h` uint16 pixels in one tiny strip.
fn tiff_header(w: u32, h: u32) -> Vec<u8> {
    let mut b = vec![b'I', b'I', 42, 0, 8, 0, 0, 0];
    let entries: [(u16, u16, u32, u32); 8] = [
        (256, 4, 1, w),   // ImageWidth
        (257, 4, 1, h),   // ImageLength
        (258, 3, 1, 16),  // BitsPerSample
        (259, 3, 1, 8),   // Compression: deflate
        (262, 3, 1, 1),   // Photometric
        (273, 4, 1, 200), // StripOffsets
        (278, 4, 1, h),   // RowsPerStrip
        (279, 4, 1, 16),  // StripByteCounts
    ];
    b.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, typ, n, v) in entries {
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&typ.to_le_bytes());
        b.extend_from_slice(&n.to_le_bytes());
        if typ == 3 {
            b.extend_from_slice(&(v as u16).to_le_bytes());
            b.extend_from_slice(&[0, 0]);
        } else {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    b.extend_from_slice(&[0, 0, 0, 0]);
    b.resize(216, 0x78);
    b
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A character device like /dev/null; `false` when this process may not create one.
fn mknod_null(p: &Path) -> bool {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; makedev(1, 3) is /dev/null.
    unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) == 0 }
}

fn zip_raw(path: &Path, entries: &[(&str, &[u8])]) {
    safe_fixture::zip_raw(path, entries);
}

/// A minimal SAFE directory: `MTD_MSIL1C.xml` with `mtd` and a manifest.
fn mini_safe(dir: &Path, mtd: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("MTD_MSIL1C.xml"), mtd).unwrap();
    std::fs::write(
        dir.join("manifest.safe"),
        "<xfdu:XFDU xmlns:xfdu=\"urn:x\"><dataObjectSection/></xfdu:XFDU>",
    )
    .unwrap();
}

/// Paths the daemon opened (or tried to), from an `strace -f -e trace=file` log.
fn opened_paths(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(call) = ["open(", "openat(", "openat2(", "creat("]
            .iter()
            .find_map(|c| line.find(c).map(|i| &line[i..]))
        else {
            continue;
        };
        if let Some(start) = call.find('"') {
            if let Some(len) = call[start + 1..].find('"') {
                out.push(call[start + 1..start + 1 + len].to_string());
            }
        }
    }
    out
}

#[test]
fn hostile_corpus_is_quarantined_with_reasons_while_good_granules_flow() {
    let test = "hostile_corpus_is_quarantined_with_reasons_while_good_granules_flow";
    if !runtime_available(test) {
        return;
    }
    let strace = util::tool("strace", test);
    let tmp = util::tempdir();
    let ingest = tmp.path().join("ingest");
    std::fs::create_dir_all(&ingest).unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("secret.tif");
    std::fs::copy(template().join("B02.tif"), &secret).unwrap();
    let mut c = Corpus {
        ingest: ingest.clone(),
        outside: outside.clone(),
        cases: Vec::new(),
        good: Vec::new(),
    };

    // --- GeoTIFF folders --------------------------------------------------------------
    c.good_folder("S2B_GOOD_A");
    c.folder("H_TRUNCATED", "B02", |p, _| {
        let b = std::fs::read(p.join("B02.tif")).unwrap();
        std::fs::write(p.join("B02.tif"), &b[..b.len() / 3]).unwrap();
    });
    c.folder("H_GARBAGE_TIFF", "B03", |p, _| {
        std::fs::write(p.join("B03.tif"), vec![0x5a; 5000]).unwrap();
    });
    c.folder("H_ZERO_LENGTH", "B04", |p, _| {
        std::fs::write(p.join("B04.tif"), b"").unwrap();
    });
    c.folder("H_ALL_ZERO_LENGTH", "B", |p, _| {
        for e in std::fs::read_dir(p).unwrap() {
            std::fs::write(e.unwrap().path(), b"").unwrap();
        }
    });
    // All nodata / all saturated: refused when the first band is decoded, with the reason.
    c.folder(
        "H_ALL_NODATA",
        "holds no valid pixel (every pixel is nodata",
        |p, _| {
            write_all_bands(p, 0);
        },
    );
    c.folder(
        "H_ALL_SATURATED",
        "holds no valid pixel (every pixel is saturated",
        |p, _| {
            write_all_bands(p, u16::MAX);
        },
    );
    c.folder("H_WRONG_SIZE", "B02", |p, _| {
        write_band(&p.join("B02.tif"), &grid(32633, 100, 400_000.0), 1000);
    });
    c.folder("H_OTHER_CRS", "B03", |p, _| {
        write_band(&p.join("B03.tif"), &grid(32634, 240, 400_000.0), 1000);
    });
    c.folder("H_OTHER_ORIGIN", "B04", |p, _| {
        write_band(&p.join("B04.tif"), &grid(32633, 240, 410_000.0), 1000);
    });
    c.folder("H_HEADER_BOMB", "exceeds the limit", |p, _| {
        std::fs::write(p.join("B02.tif"), tiff_header(200_000, 200_000)).unwrap();
    });
    c.folder("H_BAD_IFD", "B08", |p, _| {
        let mut b = vec![b'I', b'I', 42, 0];
        b.extend_from_slice(&0x7fff_fff0u32.to_le_bytes());
        std::fs::write(p.join("B08.tif"), b).unwrap();
    });
    c.folder("H_FLOAT_NAN", "B02", |p, _| {
        let f = std::fs::File::create(p.join("B02.tif")).unwrap();
        let mut enc = tiff::encoder::TiffEncoder::new(f).unwrap();
        let data: Vec<f32> = (0..240 * 240)
            .map(|i| match i % 3 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                _ => f32::NEG_INFINITY,
            })
            .collect();
        enc.write_image::<tiff::encoder::colortype::Gray32Float>(240, 240, &data)
            .unwrap();
    });
    c.folder("H_DUPLICATE_BAND", "hold band B02", |p, _| {
        std::fs::copy(p.join("B02.tif"), p.join("b02.TIFF")).unwrap();
    });
    c.folder("H_GARBAGE_STAC", "malformed JSON", |p, _| {
        std::fs::write(
            p.join("item.json"),
            b"{\"type\": \"Feature\", \"properties\": {",
        )
        .unwrap();
    });
    c.folder("H_STAC_CONTRADICTS", "proj", |p, _| {
        std::fs::write(
            p.join("item.json"),
            br#"{"type": "Feature", "stac_version": "1.0.0", "id": "x",
                "properties": {"datetime": "2024-05-01T10:00:00Z", "proj:epsg": 4326,
                               "proj:code": "EPSG:4326"},
                "assets": {}}"#,
        )
        .unwrap();
    });
    c.folder("H_HUGE_JSON", "json", |p, _| {
        let mut f = std::fs::File::create(p.join("item.json")).unwrap();
        f.write_all(b"{\"a\": \"").unwrap();
        f.write_all(&vec![b'x'; 17 << 20]).unwrap();
        f.write_all(b"\"}").unwrap();
    });
    c.folder("H_SYMLINK_BAND", "symbolic link", |p, out| {
        std::fs::remove_file(p.join("B02.tif")).unwrap();
        std::os::unix::fs::symlink(out.join("secret.tif"), p.join("B02.tif")).unwrap();
    });
    c.folder("H_SYMLINK_PASSWD", "symbolic link", |p, _| {
        std::os::unix::fs::symlink("/etc/passwd", p.join("item.json")).unwrap();
    });
    c.folder("H_SYMLINK_ZERO", "symbolic link", |p, _| {
        std::fs::remove_file(p.join("B04.tif")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", p.join("B04.tif")).unwrap();
    });
    c.folder("H_SYMLINK_DIR", "symbolic link", |p, out| {
        std::os::unix::fs::symlink(out, p.join("more")).unwrap();
    });
    c.folder("H_HARDLINK_BAND", "hard links", |p, out| {
        std::fs::remove_file(p.join("B03.tif")).unwrap();
        std::fs::hard_link(out.join("secret.tif"), p.join("B03.tif")).unwrap();
    });
    c.folder("H_FIFO_BAND", "FIFO", |p, _| {
        std::fs::remove_file(p.join("B05.tif")).unwrap();
        mkfifo(&p.join("B05.tif"));
    });
    let probe = outside.join("probe-dev");
    let can_mknod = mknod_null(&probe);
    let _ = std::fs::remove_file(&probe);
    if can_mknod {
        c.folder("H_DEVICE_BAND", "device node", |p, _| {
            std::fs::remove_file(p.join("B06.tif")).unwrap();
            assert!(mknod_null(&p.join("B06.tif")));
        });
    }
    c.good_folder("-rf");
    c.folder("H_EMPTY_FOLDER", "without band files", |p, _| {
        for e in std::fs::read_dir(p).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
    });
    c.add("H_BAD\nNAME", "H_BAD\nNAME", "control character", |p| {
        copy_dir(&template(), p);
    });
    // The entry itself a link leaving the ingest directory, or a FIFO.
    {
        let t = template();
        c.add("H_LINKED_ENTRY", "H_LINKED_ENTRY", "symbolic link", |p| {
            std::os::unix::fs::symlink(&t, p).unwrap();
        });
    }
    c.add("H_FIFO_ENTRY.zip", "H_FIFO_ENTRY", "FIFO", mkfifo);
    c.add("H_PLAIN_FILE", "H_PLAIN_FILE", "not a .zip", |p| {
        std::fs::write(p, b"hello").unwrap();
    });

    // --- SAFE directories -------------------------------------------------------------
    c.add("H_NO_MTD.SAFE", "H_NO_MTD", "MTD_MSIL1C.xml", |p| {
        std::fs::create_dir_all(p).unwrap();
        std::fs::write(p.join("manifest.safe"), "<a/>").unwrap();
    });
    c.add("H_ENTITIES.SAFE", "H_ENTITIES", "DTD/entity", |p| {
        mini_safe(
            p,
            "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]><r>&b;</r>",
        );
    });
    c.add("H_XXE.SAFE", "H_XXE", "DTD/entity", |p| {
        mini_safe(
            p,
            "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><r>&x;</r>",
        );
    });
    c.add("H_BAD_XML.SAFE", "H_BAD_XML", "malformed XML", |p| {
        mini_safe(p, "<n1:Level-1C_User_Product><General_Info></n1:Level");
    });
    c.add(
        "H_MANIFEST_LINK.SAFE",
        "H_MANIFEST_LINK",
        "symbolic link",
        |p| {
            mini_safe(p, "<a/>");
            std::fs::remove_file(p.join("manifest.safe")).unwrap();
            std::os::unix::fs::symlink("/dev/zero", p.join("manifest.safe")).unwrap();
        },
    );
    c.add("H_MANIFEST_FIFO.SAFE", "H_MANIFEST_FIFO", "FIFO", |p| {
        mini_safe(p, "<a/>");
        std::fs::remove_file(p.join("manifest.safe")).unwrap();
        mkfifo(&p.join("manifest.safe"));
    });

    // --- zips -------------------------------------------------------------------------
    c.add("H_ZIP_SLIP.zip", "H_ZIP_SLIP", "escapes the product", |p| {
        zip_raw(
            p,
            &[
                ("H_ZIP_SLIP.SAFE/MTD_MSIL1C.xml", b"<a/>"),
                ("H_ZIP_SLIP.SAFE/../../../../tmp/evil.txt", b"owned"),
            ],
        );
    });
    c.add("H_ZIP_ABS.zip", "H_ZIP_ABS", "escapes the product", |p| {
        zip_raw(p, &[("/etc/cron.d/evil", b"owned")]);
    });
    c.add(
        "H_ZIP_TWO_TOPS.zip",
        "H_ZIP_TWO_TOPS",
        "exactly one top-level",
        |p| {
            zip_raw(p, &[("A.SAFE/MTD_MSIL1C.xml", b"<a/>"), ("B.SAFE/x", b"x")]);
        },
    );
    c.add("H_ZIP_BOMB.zip", "H_ZIP_BOMB", "limit", |p| {
        let mut w = zip::ZipWriter::new(std::fs::File::create(p).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        w.start_file("H_ZIP_BOMB.SAFE/MTD_MSIL1C.xml", opts)
            .unwrap();
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..80 {
            w.write_all(&chunk).unwrap();
        }
        w.finish().unwrap();
    });
    c.add("H_ZIP_CUT.zip", "H_ZIP_CUT", "central directory", |p| {
        zip_raw(p, &[("H_ZIP_CUT.SAFE/MTD_MSIL1C.xml", &[b'x'; 4000])]);
        let b = std::fs::read(p).unwrap();
        std::fs::write(p, &b[..b.len() - 40]).unwrap();
    });
    c.add("H_NOT_A_ZIP.zip", "H_NOT_A_ZIP", "central directory", |p| {
        std::fs::write(p, vec![0u8; 3000]).unwrap();
    });
    c.add("H_ZIP_DTD.zip", "H_ZIP_DTD", "DTD/entity", |p| {
        zip_raw(
            p,
            &[(
                "H_ZIP_DTD.SAFE/MTD_MSIL1C.xml",
                b"<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/shadow\">]><r>&x;</r>",
            )],
        );
    });
    c.good_folder("S2B_GOOD_B");

    // --- real-pixel SAFE (shared data and GDAL): good dir, good zip, truncated JP2 ------
    let fx = safe_fixture::build_l1c(test);
    if let Some(fx) = &fx {
        let name = fx.safe.file_name().unwrap().to_string_lossy().into_owned();
        let id = name.trim_end_matches(".SAFE").to_string();
        let tmp_safe = ingest.join(".safe-good.part");
        copy_tree(&fx.safe, &tmp_safe);
        std::fs::rename(&tmp_safe, ingest.join(&name)).unwrap();
        std::fs::write(ingest.join(format!("{name}.ready")), b"").unwrap();
        c.good.push(id.clone());
        let zip_name = format!("{}_Z.SAFE.zip", id);
        let zdir = tmp.path().join("zipsrc").join(format!("{id}_Z.SAFE"));
        copy_tree(&fx.safe, &zdir);
        let ztmp = ingest.join(".zip-good.part");
        safe_fixture::zip_safe(&zdir, &ztmp);
        std::fs::rename(&ztmp, ingest.join(&zip_name)).unwrap();
        std::fs::write(ingest.join(format!("{zip_name}.ready")), b"").unwrap();
        c.good.push(format!("{id}_Z"));
        let (src, crop) = (fx.safe.clone(), fx.crop.clone());
        c.add(
            &format!("{id}_CRS.SAFE"),
            &format!("{id}_CRS"),
            "says EPSG:32634",
            |p| {
                copy_tree(&src, p);
                let jp2 = find_file(p, "_B02.jp2").unwrap();
                std::fs::remove_file(&jp2).unwrap();
                let tif = jp2.with_extension("tif");
                std::fs::copy(safe_fixture::crop_band(&crop, "B02"), tif).unwrap();
                let tl = find_file(p, "MTD_TL.xml").unwrap();
                let text = std::fs::read_to_string(&tl).unwrap();
                std::fs::write(
                    &tl,
                    safe_fixture::set_elements(&text, "HORIZONTAL_CS_CODE", "EPSG:32634"),
                )
                .unwrap();
            },
        );
        let src = fx.safe.clone();
        c.add(
            &format!("{id}_TRUNC.SAFE"),
            &format!("{id}_TRUNC"),
            "JPEG 2000",
            |p| {
                copy_tree(&src, p);
                let jp2 = find_file(p, "_B02.jp2").unwrap();
                let b = std::fs::read(&jp2).unwrap();
                std::fs::write(&jp2, &b[..b.len() / 2]).unwrap();
            },
        );
    }

    // A name that is not UTF-8: never an entry, logged once, left alone.
    let odd = ingest.join(std::ffi::OsStr::from_bytes(b"H_ODD_\xff\xfe"));
    std::fs::create_dir_all(&odd).unwrap();

    // --- run the daemon (under strace when available) -----------------------------------
    let mut d = Daemon::new(tmp.path(), &ingest, &fixtures_models(), "");
    let trace = tmp.path().join("strace.log");
    let mut cmd = match &strace {
        Some(s) => {
            let mut cmd = std::process::Command::new(s);
            cmd.args(["-f", "-qq", "-e", "trace=open,openat,openat2,creat", "-o"])
                .arg(&trace)
                .arg(env!("CARGO_BIN_EXE_s2edge"));
            cmd
        }
        None => util::s2edge(),
    };
    let log = std::fs::File::create(&d.log).unwrap();
    d.child = Some(
        cmd.arg("--config")
            .arg(&d.config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    d.wait_for("/healthz", Duration::from_secs(120), |d| {
        d.http("/healthz").is_some()
    });
    let total = c.cases.len() + c.good.len();
    d.wait_for("every case to end", Duration::from_secs(600), |d| {
        c.cases
            .iter()
            .all(|k| d.state(&k.id) == Some(GranuleState::Quarantined))
            && c.good.iter().all(|g| {
                matches!(
                    d.state(g),
                    Some(GranuleState::Done) | Some(GranuleState::Quarantined)
                )
            })
    });
    let took = t0.elapsed();
    let mut failures = Vec::new();
    for g in &c.good {
        if d.state(g) != Some(GranuleState::Done) {
            let row = d.ledger().get(g).unwrap().unwrap();
            failures.push(format!("good {g:?} not published: {:?}", row.last_error));
        }
    }
    let mut reasons = BTreeMap::new();
    for k in &c.cases {
        let row = d.ledger().get(&k.id).unwrap().unwrap();
        let err = row.last_error.unwrap_or_default();
        let text =
            std::fs::read_to_string(tmp.path().join("quarantine").join(&k.id).join("reason.txt"))
                .unwrap_or_default();
        if !err.contains(k.expect) || !text.contains("error: ") {
            failures.push(format!("{:?}: expected {:?} in {err:?}", k.name, k.expect));
        }
        assert_eq!(
            text.lines().count(),
            5,
            "{:?}: reason.txt not one line per field: {text}",
            k.name
        );
        reasons.insert(k.name.clone(), err);
    }
    for (n, r) in &reasons {
        eprintln!("{n:?}: {r}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(c.cases.len() >= 35, "only {} hostile cases", c.cases.len());
    assert!(odd.is_dir(), "the non-UTF-8 entry was touched");
    let log_text = d.log_text();
    assert_eq!(
        log_text.matches("whose name is not UTF-8").count(),
        1,
        "non-UTF-8 names are logged once"
    );
    assert_eq!(d.healthz()["status"], "ready", "{}", d.healthz());
    // Under strace the daemon is strace's child: signal it, not strace (which would
    // detach and leave it running); strace then exits with its status.
    let strace_pid = d.child.as_ref().unwrap().id();
    let pid = if strace.is_some() {
        std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .expect("the daemon under strace")
    } else {
        strace_pid as i32
    };
    // SAFETY: kill(2) on the daemon we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(d.wait_exit(Duration::from_secs(30)), Some(0));
    eprintln!(
        "hostile corpus: {} hostile cases quarantined, {} good granules published, {total} entries in {:.1} s",
        c.cases.len(),
        c.good.len(),
        took.as_secs_f64()
    );

    // Nothing outside the configured directories was opened.
    if strace.is_some() {
        let paths = opened_paths(&trace);
        assert!(paths.len() > 50, "strace saw only {} opens", paths.len());
        let root = tmp.path().to_string_lossy().into_owned();
        let allowed: Vec<String> = [
            "ingest",
            "work",
            "out",
            "quarantine",
            "archive",
            "state",
            "s2edge.toml",
        ]
        .iter()
        .map(|d| format!("{root}/{d}"))
        .collect();
        let mut bad: Vec<&String> = paths
            .iter()
            .filter(|p| {
                p.as_str() == "/dev/zero"
                    || p.as_str() == "/etc/passwd"
                    || p.as_str() == "/etc/shadow"
                    || p.contains("/tmp/evil")
                    || (p.starts_with(&root) && !allowed.iter().any(|a| p.starts_with(a.as_str())))
            })
            .collect();
        bad.sort();
        bad.dedup();
        assert!(
            bad.is_empty(),
            "opened outside the configured directories: {bad:?}"
        );
        eprintln!(
            "strace: {} file opens, none outside the configured directories",
            paths.len()
        );
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (s, d) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_tree(&s, &d);
        } else {
            std::fs::copy(&s, &d).unwrap();
        }
    }
}

fn find_file(dir: &Path, suffix: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, suffix) {
                return Some(f);
            }
        } else if p.to_string_lossy().ends_with(suffix) {
            return Some(p);
        }
    }
    None
}

/// Replays every input kept under `tests/fixtures/fuzz/<target>/` (crashes found by the
/// cargo-fuzz targets in `fuzz/`, and seeds) through the same entry points: each must
/// return, never panic.
#[test]
fn fuzz_regression_inputs_replay_without_panics() {
    let root = util::root().join("tests/fixtures/fuzz");
    let mut n = 0;
    for target in std::fs::read_dir(&root).into_iter().flatten() {
        let target = target.unwrap().path();
        let name = target.file_name().unwrap().to_string_lossy().into_owned();
        for input in std::fs::read_dir(&target).unwrap() {
            let input = input.unwrap().path();
            let data = std::fs::read(&input).unwrap();
            let text = std::str::from_utf8(&data).ok();
            let p = Path::new("fuzz");
            match name.as_str() {
                "tiff" => {
                    let _ = s2edge::granule::tiff::decode_u16(&data, p);
                    let _ = s2edge::granule::tiff::decode_any_u16(&data, p);
                }
                "jp2" => {
                    if s2edge::granule::jp2::read_header(&data, p).is_ok() {
                        let _ = s2edge::granule::jp2::decode_u16(&data, p);
                    }
                }
                "safe_metadata" => {
                    if let Some(t) = text {
                        s2edge::granule::safe::fuzz_metadata(t);
                    }
                }
                "safe_zip" => {
                    let z = util::tempdir();
                    let path = z.path().join("F.SAFE.zip");
                    std::fs::write(&path, &data).unwrap();
                    let _ = s2edge::granule::safe::open_zip(&path);
                    if let Ok(mut f) = s2edge::granule::safe::SafeFiles::open(&path) {
                        let _ = f.manifest();
                    }
                }
                "model_manifest" => {
                    if let Some(Ok(spec)) = text.map(s2edge::model::ModelSpec::parse) {
                        let _ = spec.validate();
                    }
                }
                "stac_item" => s2edge::granule::folder::fuzz_stac_item(&data),
                "config" => {
                    if let Some(Ok(s)) = text.map(toml::from_str::<s2edge::config::Settings>) {
                        let _ = s.validate();
                    }
                }
                other => panic!("unknown fuzz target directory {other}"),
            }
            n += 1;
        }
    }
    eprintln!("replayed {n} fuzz regression inputs");
}
