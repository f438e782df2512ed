//! SAFE products (directory and zip), JPEG 2000 decoding and hardened metadata parsing,
//! on the real metadata sets and on fixtures built from the real crop
//! (see `safe_fixture`).

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use s2edge::granule::safe::{CLOUD_PROBABILITY_THRESHOLD, SCL_FLAGGED};
use s2edge::granule::{
    jp2, xml, Band, GranuleError, GranuleSource, InputKind, Location, MaskKind, ProductLevel,
    Resolution, MAX_SIDE,
};

use crate::safe_fixture::{self as fx, SafeFixture};
use crate::util;

/// What the real metadata files say (read off MTD_MSIL*.xml and MTD_TL.xml).
struct Expected {
    set: &'static str,
    level: ProductLevel,
    baseline: &'static str,
    spacecraft: &'static str,
    tile: &'static str,
    epsg: u32,
    ul: (f64, f64),
    sensing: &'static str,
    cloud: f64,
    offsets: bool,
}

const SETS: [Expected; 4] = [
    Expected {
        set: "S2A_MSIL2A_20190212T192651_N0212_R013_T07HFE_20201007T160857.SAFE",
        level: ProductLevel::L2A,
        baseline: "02.12",
        spacecraft: "Sentinel-2A",
        tile: "07HFE",
        epsg: 32707,
        ul: (600000.0, 6500020.0),
        sensing: "2019-02-12T19:33:32.161Z",
        cloud: 51.580326,
        offsets: false,
    },
    Expected {
        set: fx::L1C_SET,
        level: ProductLevel::L1C,
        baseline: "03.01",
        spacecraft: "Sentinel-2A",
        tile: "46RER",
        epsg: 32646,
        ul: (499980.0, 3100020.0),
        sensing: "2021-09-08T04:40:48.758475Z",
        cloud: 88.2972,
        offsets: false,
    },
    Expected {
        set: "S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ_20220414T082126.SAFE",
        level: ProductLevel::L2A,
        baseline: "04.00",
        spacecraft: "Sentinel-2B",
        tile: "33XWJ",
        epsg: 32633,
        ul: (499980.0, 8900040.0),
        sensing: "2022-04-13T15:08:07.846358Z",
        cloud: 98.944211,
        offsets: true,
    },
    Expected {
        set: fx::L2A_SET,
        level: ProductLevel::L2A,
        baseline: "05.09",
        spacecraft: "Sentinel-2A",
        tile: "01WCP",
        epsg: 32601,
        ul: (300000.0, 7400040.0),
        sensing: "2023-06-25T23:47:55.578328Z",
        cloud: 15.047897000000003,
        offsets: true,
    },
];

#[test]
fn real_metadata_sets_parse_exactly() {
    let Some(data) = util::shared_data("real_metadata_sets_parse_exactly") else {
        return;
    };
    for e in &SETS {
        let path = data.join("s2-safe-metadata").join(e.set);
        let src = GranuleSource::open(&path).unwrap_or_else(|err| panic!("{}: {err}", e.set));
        let m = &src.metadata;
        assert_eq!(src.kind, InputKind::SafeDir);
        assert_eq!(src.id.as_str(), e.set.trim_end_matches(".SAFE"));
        assert_eq!(m.level, e.level, "{}", e.set);
        assert_eq!(m.baseline.as_deref(), Some(e.baseline));
        assert_eq!(m.spacecraft.as_deref(), Some(e.spacecraft));
        assert_eq!(m.tile_id.as_deref(), Some(e.tile));
        assert_eq!(m.epsg, e.epsg);
        assert_eq!(m.quantification, Some(10000.0));
        assert_eq!(m.cloud_cover, Some(e.cloud));
        assert_eq!((m.nodata, m.saturated), (0, 65535));
        let sensing: DateTime<Utc> = e.sensing.parse().unwrap();
        assert_eq!(m.sensing_time, Some(sensing), "{}", e.set);
        // The sensing time is the one MTD_TL.xml states, to the microsecond.
        let tl = fs::read_dir(path.join("GRANULE"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("MTD_TL.xml");
        assert!(fs::read_to_string(tl).unwrap().contains(e.sensing));
        for (res, size, px) in [
            (Resolution::R10, 10980, 10.0),
            (Resolution::R20, 5490, 20.0),
            (Resolution::R60, 1830, 60.0),
        ] {
            let g = m
                .grids
                .get(&res)
                .unwrap_or_else(|| panic!("{} {res}", e.set));
            assert_eq!((g.width, g.height), (size, size), "{} {res}", e.set);
            assert_eq!(g.epsg, e.epsg);
            assert_eq!((g.transform.origin_x, g.transform.origin_y), e.ul);
            assert_eq!(
                (g.transform.pixel_width, g.transform.pixel_height),
                (px, -px)
            );
        }
        assert!(m.offsets_known, "a SAFE always knows its offsets");
        if e.offsets {
            assert_eq!(m.offsets.len(), 13, "{}", e.set);
            for b in Band::ALL {
                assert_eq!(m.offsets.get(&b), Some(&-1000.0), "{} {b}", e.set);
            }
            // band_id 8 is B8A, 10 is B10, 12 is B12: every id mapped to its own band.
            assert_eq!(m.offset(Band::B8A), -1000.0);
            assert_eq!(m.offset(Band::B12), -1000.0);
        } else {
            assert!(m.offsets.is_empty(), "{}: {:?}", e.set, m.offsets);
            assert_eq!(m.offset(Band::B04), 0.0);
        }
        // Metadata only: no band file, each listed band a warning, nothing fails.
        assert!(src.bands.is_empty());
        assert!(src.masks.is_empty());
        let band_warnings = src
            .warnings
            .iter()
            .filter(|w| w.starts_with("band ") && w.ends_with(".jp2 (or .tif) is missing"))
            .count();
        let expected = if e.level == ProductLevel::L1C { 13 } else { 12 };
        assert_eq!(band_warnings, expected, "{}: {:#?}", e.set, src.warnings);
        assert!(src
            .warnings
            .iter()
            .any(|w| w.starts_with("band B02: file GRANULE/")));
        if e.level == ProductLevel::L2A {
            assert!(
                src.warnings
                    .iter()
                    .any(|w| w.contains("B02_10m.jp2 (or .tif)")),
                "L2A bands come from their native resolution: {:#?}",
                src.warnings
            );
            assert!(src.warnings.iter().any(|w| w.starts_with("mask SCL")));
        }
        let missing = src.read_band(Band::B02).unwrap_err();
        assert!(matches!(missing, GranuleError::MissingBand { .. }));
    }
}

fn assert_same_as_crop(src: &GranuleSource, crop: &Path) {
    assert_eq!(src.metadata.epsg, fx::CROP_EPSG);
    for b in Band::PRODUCT {
        let band = src
            .read_band(b)
            .unwrap_or_else(|e| panic!("{} {b}: {e}", src.path.display()));
        let (w, h, data) = fx::read_tiff_u16(&fx::crop_band(crop, b.name()));
        assert_eq!((band.dn.width, band.dn.height), (w, h), "{b}");
        assert!(band.dn.data == data, "{b}: pixels differ from the crop");
        let f = b.resolution().factor();
        let g = band.georef;
        assert_eq!((g.width, g.height), (600 / f, 600 / f), "{b}");
        assert_eq!(g.epsg, fx::CROP_EPSG);
        assert_eq!(g.transform.origin_x, fx::CROP_ULX);
        assert_eq!(g.transform.origin_y, fx::CROP_ULY);
        assert_eq!(g.transform.pixel_width, 10.0 * f as f64);
        assert_eq!(g.transform.pixel_height, -10.0 * f as f64);
    }
    // The grid check across bands passes on a full load.
    let granule = src.load(&Band::PRODUCT).unwrap();
    assert_eq!(granule.grid_10m().unwrap().width, 600);
    // The crop has no B10: a warning, not an error.
    assert!(!src.bands.contains_key(&Band::B10));
    assert!(src
        .warnings
        .iter()
        .any(|w| w.starts_with("band B10: file ") && w.ends_with("is missing")));
}

/// The crop's georeference as GDAL reads it, to tie the fixture to the GeoTIFF folder.
fn crop_georef_matches_constants(crop: &Path) {
    if let Some(info) = util::gdalinfo(&fx::crop_band(crop, "B02")) {
        let gt: Vec<f64> = info["geoTransform"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(gt, [fx::CROP_ULX, 10.0, 0.0, fx::CROP_ULY, 0.0, -10.0]);
    }
}

#[test]
fn safe_dir_reads_the_crop_pixel_identically() {
    let Some(f) = fx::build_l1c("safe_dir_reads_the_crop_pixel_identically") else {
        return;
    };
    crop_georef_matches_constants(&f.crop);
    let src = GranuleSource::open(&f.safe).unwrap();
    assert_eq!(src.kind, InputKind::SafeDir);
    assert_eq!(src.metadata.level, ProductLevel::L1C);
    assert_eq!(src.bands.len(), 12);
    assert!(
        matches!(src.bands[&Band::B8A], Location::File(ref p) if p.extension().unwrap() == "jp2")
    );
    assert_same_as_crop(&src, &f.crop);
    assert_eq!(
        src.read_cloud_mask().unwrap(),
        None,
        "L1C 03.01 has no raster mask"
    );
}

#[test]
fn safe_zip_reads_like_the_directory() {
    let Some(f) = fx::build_l1c("safe_zip_reads_like_the_directory") else {
        return;
    };
    for name in [
        format!("{}.zip", f.safe.file_stem().unwrap().to_str().unwrap()),
        format!("{}.zip", f.safe.file_name().unwrap().to_str().unwrap()),
    ] {
        let zip = f.dir.path().join(&name);
        fx::zip_safe(&f.safe, &zip);
        let src = GranuleSource::open(&zip).unwrap();
        let dir = GranuleSource::open(&f.safe).unwrap();
        assert_eq!(src.kind, InputKind::SafeZip);
        assert_eq!(src.id, dir.id, "{name}");
        assert_eq!(src.metadata, dir.metadata);
        match &src.bands[&Band::B02] {
            Location::Zip { archive, entry } => {
                assert_eq!(archive, &zip);
                assert!(
                    entry.starts_with(&format!("{}/GRANULE/", fx::L1C_SET)),
                    "{entry}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_same_as_crop(&src, &f.crop);
    }
}

#[test]
fn l2a_takes_native_bands_and_reads_masks_in_order() {
    let Some(f) = fx::build_l2a("l2a_takes_native_bands_and_reads_masks_in_order") else {
        return;
    };
    let src = GranuleSource::open(&f.safe).unwrap();
    assert_eq!(src.metadata.level, ProductLevel::L2A);
    assert_eq!(src.metadata.offset(Band::B11), -1000.0);
    let name = |b: Band| match &src.bands[&b] {
        Location::File(p) => p.file_name().unwrap().to_str().unwrap().to_string(),
        other => panic!("{other:?}"),
    };
    assert!(name(Band::B02).ends_with("_B02_10m.jp2"));
    assert!(name(Band::B05).ends_with("_B05_20m.jp2"));
    assert!(name(Band::B01).ends_with("_B01_60m.jp2"));
    assert!(!src.bands.contains_key(&Band::B10));
    assert_same_as_crop_l2a(&src, &f);
    let kinds: Vec<MaskKind> = src.masks.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [MaskKind::Scl, MaskKind::Classi, MaskKind::CloudProbability]
    );

    // SCL first.
    let m = src.read_cloud_mask().unwrap().unwrap();
    assert_eq!(m.georef, src.metadata.grids[&Resolution::R20]);
    let want: Vec<u8> = fx::scl_pattern()
        .iter()
        .map(|&c| u8::from(SCL_FLAGGED.contains(&u16::from(c))))
        .collect();
    assert_eq!(m.flagged.data, want);
    assert!(want.contains(&0) && want.contains(&1));

    // Without SCL: the 3-plane MSK_CLASSI, OR-ed, on the 60 m grid.
    let mut no_scl = src.clone();
    no_scl.masks.retain(|m| m.kind != MaskKind::Scl);
    let m = no_scl.read_cloud_mask().unwrap().unwrap();
    assert_eq!(m.georef, src.metadata.grids[&Resolution::R60]);
    let [a, b, c] = fx::classi_pattern();
    let want: Vec<u8> = (0..a.len()).map(|i| a[i] | b[i] | c[i]).collect();
    assert_eq!(m.flagged.data, want);

    // Then MSK_CLDPRB, thresholded.
    no_scl.masks.retain(|m| m.kind != MaskKind::Classi);
    let m = no_scl.read_cloud_mask().unwrap().unwrap();
    assert_eq!(m.georef, src.metadata.grids[&Resolution::R20]);
    let want: Vec<u8> = fx::cldprb_pattern()
        .iter()
        .map(|&p| u8::from(u16::from(p) >= CLOUD_PROBABILITY_THRESHOLD))
        .collect();
    assert_eq!(m.flagged.data, want);

    no_scl.masks.clear();
    assert_eq!(no_scl.read_cloud_mask().unwrap(), None);

    // A mask file that is listed but absent on disk is a warning at open, not a mask.
    let classi = match &src.masks[1].location {
        Location::File(p) => p.clone(),
        other => panic!("{other:?}"),
    };
    fs::remove_file(&classi).unwrap();
    let reopened = GranuleSource::open(&f.safe).unwrap();
    assert!(reopened.masks.iter().all(|m| m.kind != MaskKind::Classi));
    assert!(reopened
        .warnings
        .iter()
        .any(|w| w.starts_with("mask MSK_CLASSI")));
}

fn assert_same_as_crop_l2a(src: &GranuleSource, f: &SafeFixture) {
    for b in [Band::B04, Band::B8A, Band::B09] {
        let band = src.read_band(b).unwrap();
        let (_, _, data) = fx::read_tiff_u16(&fx::crop_band(&f.crop, b.name()));
        assert!(band.dn.data == data, "{b}");
    }
}

// ------------------------------------------------------------------ bad input

/// A band file of the L1C fixture.
fn band_file(src: &GranuleSource, b: Band) -> PathBuf {
    match &src.bands[&b] {
        Location::File(p) => p.clone(),
        other => panic!("{other:?}"),
    }
}

fn expect_jp2_error(r: Result<impl std::fmt::Debug, GranuleError>, path: &Path) {
    match r {
        Err(GranuleError::Jp2 { path: p, reason }) => {
            assert_eq!(p, path, "{reason}");
        }
        other => panic!(
            "expected a Jp2 error naming {}, got {other:?}",
            path.display()
        ),
    }
}

#[test]
fn bad_jpeg2000_files_are_typed_errors() {
    let Some(f) = fx::build_l1c("bad_jpeg2000_files_are_typed_errors") else {
        return;
    };
    let src = GranuleSource::open(&f.safe).unwrap();
    let b02 = band_file(&src, Band::B02);
    let good = fs::read(&b02).unwrap();
    assert_eq!(jp2::decode_u16(&good, &b02).unwrap().width, 600);
    let header = jp2::read_header(&good, &b02).unwrap();
    assert_eq!(
        (header.width, header.height, header.components.len()),
        (600, 600, 1)
    );

    // Truncated, at several points: header, early data, just before the end.
    for cut in [20, 300, good.len() / 2, good.len() - 10] {
        expect_jp2_error(jp2::decode_u16(&good[..cut], &b02), &b02);
    }
    // Through the granule: the error names the band file.
    fs::write(&b02, &good[..good.len() / 2]).unwrap();
    expect_jp2_error(src.read_band(Band::B02), &b02);

    // Random bytes (a fixed LCG, so the test is reproducible).
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let noise: Vec<u8> = (0..50_000)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect();
    expect_jp2_error(jp2::decode_u16(&noise, &b02), &b02);
    // The JP2 signature followed by noise.
    let mut sig_noise = good[..12].to_vec();
    sig_noise.extend_from_slice(&noise);
    expect_jp2_error(jp2::decode_u16(&sig_noise, &b02), &b02);

    // A SIZ marker claiming a huge image: TooLarge, before any decoding.
    let siz = good
        .windows(4)
        .position(|w| w == [0xff, 0x4f, 0xff, 0x51])
        .unwrap();
    let mut huge = good.clone();
    huge[siz + 8..siz + 12].copy_from_slice(&200_000u32.to_be_bytes()); // Xsiz
    huge[siz + 12..siz + 16].copy_from_slice(&150_000u32.to_be_bytes()); // Ysiz
    fs::write(&b02, &huge).unwrap();
    match src.read_band(Band::B02) {
        Err(GranuleError::TooLarge {
            path,
            width,
            height,
            limit,
        }) => {
            assert_eq!(path, b02);
            assert_eq!((width, height, limit), (200_000, 150_000, MAX_SIDE));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn malformed_and_dtd_metadata_is_refused() {
    let Some(f) = fx::build_l1c("malformed_and_dtd_metadata_is_refused") else {
        return;
    };
    let mtd = f.safe.join("MTD_MSIL1C.xml");
    let original = fs::read_to_string(&mtd).unwrap();

    // Malformed: cut in the middle of an element.
    fs::write(&mtd, &original[..original.len() / 2]).unwrap();
    match GranuleSource::open(&f.safe) {
        Err(GranuleError::Xml { path, .. }) => assert_eq!(path, mtd),
        other => panic!("expected Xml, got {other:?}"),
    }

    // "Billion laughs": an entity declaration in an internal DTD subset.
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
"#;
    let body = original.split_once("?>").unwrap().1;
    fs::write(&mtd, format!("{laughs}{body}")).unwrap();
    match GranuleSource::open(&f.safe) {
        Err(GranuleError::Xml { path, reason }) => {
            assert_eq!(path, mtd);
            assert_eq!(reason, xml::DTD_REFUSED);
        }
        other => panic!("expected the DTD to be refused, got {other:?}"),
    }

    // An external entity in the tile metadata.
    fs::write(&mtd, &original).unwrap();
    let tl = f
        .safe
        .join("GRANULE")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("MTD_TL.xml");
    let tl_text = fs::read_to_string(&tl).unwrap();
    let body = tl_text.split_once("?>").unwrap().1;
    fs::write(
        &tl,
        format!("<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{body}"),
    )
    .unwrap();
    match GranuleSource::open(&f.safe) {
        Err(GranuleError::Xml { path, reason }) => {
            assert_eq!(path, tl);
            assert_eq!(reason, xml::DTD_REFUSED);
        }
        other => panic!("expected the DTD to be refused, got {other:?}"),
    }

    // An IMAGE_FILE pointing outside the product.
    fs::write(&tl, &tl_text).unwrap();
    let first = fx::image_files(&original)[0].clone();
    fs::write(&mtd, original.replacen(&first, "../../../etc/passwd", 1)).unwrap();
    match GranuleSource::open(&f.safe) {
        Err(GranuleError::Metadata { path, field, .. }) => {
            assert_eq!(path, mtd);
            assert_eq!(field, "IMAGE_FILE");
        }
        other => panic!("expected a Metadata error, got {other:?}"),
    }
}

#[test]
fn hostile_and_broken_zips_are_refused() {
    let dir = util::tempdir();
    let ok: &[u8] = b"<x/>";
    for bad in ["../evil", "/abs", "X.SAFE/../../evil", "X.SAFE\\..\\evil"] {
        let zip = dir.path().join("X.zip");
        // The escaping entry is irrelevant to the product, and still refused at open.
        fx::zip_raw(&zip, &[("X.SAFE/manifest.safe", ok), (bad, ok)]);
        match GranuleSource::open(&zip) {
            Err(GranuleError::ZipEscape { path, entry }) => {
                assert_eq!(path, zip);
                assert_eq!(entry, bad);
            }
            other => panic!("{bad:?}: expected ZipEscape, got {other:?}"),
        }
        match s2edge::granule::safe::read_zip_entry(&zip, bad) {
            Err(GranuleError::ZipEscape { .. }) => {}
            other => panic!("{bad:?}: expected ZipEscape, got {other:?}"),
        }
    }

    // Truncated: the central directory is gone.
    let zip = dir.path().join("T.zip");
    fx::zip_raw(&zip, &[("T.SAFE/manifest.safe", &[b'a'; 4096])]);
    let bytes = fs::read(&zip).unwrap();
    fs::write(&zip, &bytes[..bytes.len() - 60]).unwrap();
    match GranuleSource::open(&zip) {
        Err(GranuleError::Zip { path, .. }) => assert_eq!(path, zip),
        other => panic!("expected Zip, got {other:?}"),
    }
    // Not a zip at all.
    fs::write(&zip, b"PK\x03\x04 not really").unwrap();
    assert!(matches!(
        GranuleSource::open(&zip),
        Err(GranuleError::Zip { .. })
    ));

    // Two top-level directories.
    let zip = dir.path().join("Two.zip");
    fx::zip_raw(
        &zip,
        &[("A.SAFE/manifest.safe", ok), ("B.SAFE/manifest.safe", ok)],
    );
    match GranuleSource::open(&zip) {
        Err(GranuleError::UnknownLayout { reason, .. }) => {
            assert!(reason.contains("A.SAFE, B.SAFE"), "{reason}")
        }
        other => panic!("expected UnknownLayout, got {other:?}"),
    }

    // A well-formed zip without product metadata.
    let zip = dir.path().join("Empty.zip");
    fx::zip_raw(&zip, &[("E.SAFE/readme.txt", ok)]);
    assert!(matches!(
        GranuleSource::open(&zip),
        Err(GranuleError::UnknownLayout { .. })
    ));
}

/// The streaming reader (`BandRows`, OpenJPEG decode areas) gives exactly the whole-file
/// decode, for a tiled and an untiled file, read from disk and from memory, in windows
/// that do and do not line up with the codestream tiles.
#[test]
fn jpeg2000_windows_equal_the_whole_decode() {
    const TEST: &str = "jpeg2000_windows_equal_the_whole_decode";
    let Some(gdal) = util::tool("gdal_translate", TEST) else {
        return;
    };
    let tmp = util::tempdir();
    let (w, h) = (203, 190);
    let data: Vec<u16> = (0..w * h)
        .map(|i| ((i % w) * 131 + (i / w) * 71 + (i * 7919) % 397) as u16 % 12000)
        .collect();
    let raster = s2edge::raster::Raster::from_vec(w, h, data).unwrap();
    let georef = s2edge::granule::GeoRef {
        epsg: 32633,
        transform: s2edge::granule::GeoTransform {
            origin_x: 300000.0,
            origin_y: 6200040.0,
            pixel_width: 10.0,
            pixel_height: -10.0,
        },
        width: w,
        height: h,
    };
    let tif = tmp.path().join("B02.tif");
    s2edge::granule::tiff::write_u16(&tif, &raster, &georef).unwrap();
    for (name, tile) in [("untiled", None), ("tiled", Some(64))] {
        let jp = tmp.path().join(format!("{name}.jp2"));
        let blocks = tile.map(|t| [format!("BLOCKXSIZE={t}"), format!("BLOCKYSIZE={t}")]);
        let extra: Vec<&str> = blocks
            .iter()
            .flatten()
            .flat_map(|b| ["-co", b.as_str()])
            .collect();
        fx::encode_jp2_with(&gdal, &tif, &jp, &extra);
        let bytes = fs::read(&jp).unwrap();
        let whole = jp2::decode_u16(&bytes, &jp).unwrap();
        assert_eq!(whole, raster, "{name}: lossless");
        let header = jp2::read_header(&bytes, &jp).unwrap();
        assert_eq!(
            header.tile_height < h as u64,
            tile.is_some(),
            "{name}: {header:?}"
        );
        for step in [1, 37, 64, 190, 500] {
            let (mut rows, _) = s2edge::granule::BandRows::open(
                Band::B02,
                &Location::File(jp.clone()),
                &Default::default(),
            )
            .unwrap();
            let mut got = Vec::new();
            while rows.rows_left() > 0 {
                got.extend_from_slice(&rows.read(step).unwrap().data);
            }
            assert!(got == whole.data, "{name}: windows of {step} rows");
        }
        // A truncated file fails with a typed error naming it, at open or at a window.
        let cut = tmp.path().join(format!("{name}-cut.jp2"));
        fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let r = s2edge::granule::BandRows::open(
            Band::B02,
            &Location::File(cut.clone()),
            &Default::default(),
        )
        .and_then(|(mut rows, _)| {
            while rows.rows_left() > 0 {
                rows.read(64)?;
            }
            Ok(())
        });
        expect_jp2_error(r, &cut);
    }
}
