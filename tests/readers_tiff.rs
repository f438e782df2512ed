//! GeoTIFF decoding, per-band GeoTIFF folders and BigEarthNet v1 patch folders.
//!
//! Real data (`../shared/data`, skipped when absent): the 33UUB L1C crop and the six
//! BigEarthNet patches, checked against GDAL (`gdal_translate -of ENVI` dumps compared
//! byte for byte). Synthetic fixtures are written at test time with
//! `s2edge::granule::tiff::write_u16` (12×12 px at 10 m, 6×6 at 20 m, 2×2 at 60 m) and then
//! damaged on purpose; they always run.

use std::path::{Path, PathBuf};
use std::process::Command;

use s2edge::granule::tiff::{decode_u16, read_header, write_u16};
use s2edge::granule::{
    Band, GeoRef, GeoTransform, GranuleError, GranuleSource, InputKind, ProductLevel, Resolution,
    MAX_SIDE,
};
use s2edge::raster::Raster;

use crate::util;

const CROP: &str = "s2-crops/S2A_33UUB_20170527_0_L1C";
const BEN: &str = "bigearthnet-v1-examples";

/// Decodes `tif` independently with GDAL: `gdal_translate -of ENVI -ot UInt16` writes raw
/// little-endian samples, row-major.
fn gdal_dump(tif: &Path, test: &str) -> Option<Vec<u16>> {
    let gdal = util::tool("gdal_translate", test)?;
    let dir = util::tempdir();
    let out = dir.path().join("dump.bin");
    let st = Command::new(gdal)
        .args(["-q", "-of", "ENVI", "-ot", "UInt16"])
        .arg(tif)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "gdal_translate {}", tif.display());
    let bytes = std::fs::read(&out).unwrap();
    Some(
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
    )
}

fn gdal_translate(args: &[&str], src: &Path, dst: &Path, test: &str) -> Option<()> {
    let gdal = util::tool("gdal_translate", test)?;
    let st = Command::new(gdal)
        .arg("-q")
        .args(args)
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success(), "gdal_translate {args:?} {}", src.display());
    Some(())
}

fn grid(epsg: u32, w: usize, px: f64) -> GeoRef {
    GeoRef {
        epsg,
        transform: GeoTransform {
            origin_x: 300000.0,
            origin_y: 6200040.0,
            pixel_width: px,
            pixel_height: -px,
        },
        width: w,
        height: w,
    }
}

/// Writes a synthetic 12-band folder (12/6/2 px) into `dir`; band values encode the band.
fn synthetic_folder(dir: &Path) {
    for b in Band::PRODUCT {
        let f = b.resolution().factor();
        let w = 12 / f;
        let data = (0..w * w).map(|i| 100 * b.band_id() as u16 + i as u16 + 1);
        let r = Raster::from_vec(w, w, data.collect()).unwrap();
        write_u16(
            &dir.join(format!("{b}.tif")),
            &r,
            &grid(32633, w, 10.0 * f as f64),
        )
        .unwrap();
    }
}

fn fixture() -> (tempfile::TempDir, PathBuf) {
    let t = util::tempdir();
    let dir = t.path().join("SYNTH_33UUB");
    std::fs::create_dir(&dir).unwrap();
    synthetic_folder(&dir);
    (t, dir)
}

#[test]
fn crop_opens_as_a_tiff_folder_and_decodes_like_gdal() {
    let Some(data) = util::shared_data("crop_opens_as_a_tiff_folder_and_decodes_like_gdal") else {
        return;
    };
    let src = GranuleSource::open(&data.join(CROP)).unwrap();
    assert_eq!(src.id.as_str(), "S2A_33UUB_20170527_0_L1C");
    assert_eq!(src.kind, InputKind::TiffFolder);
    assert_eq!(src.metadata.epsg, 32633);
    let expect = [
        (Resolution::R10, 600, 10.0),
        (Resolution::R20, 300, 20.0),
        (Resolution::R60, 100, 60.0),
    ];
    for (res, size, px) in expect {
        let g = src.metadata.grids[&res];
        assert_eq!((g.width, g.height), (size, size), "{res:?}");
        assert_eq!(g.epsg, 32633);
        assert_eq!(
            g.transform,
            GeoTransform {
                origin_x: 300000.0,
                origin_y: 6200040.0,
                pixel_width: px,
                pixel_height: -px
            }
        );
    }
    assert!(src
        .warnings
        .iter()
        .any(|w| w == "offset unknown, assumed 0"));
    assert!(!src.metadata.offsets_known);
    assert!(src.metadata.offsets.is_empty());
    assert_eq!(src.bands.len(), 12);

    let granule = src.load(&Band::PRODUCT).unwrap();
    for b in Band::PRODUCT {
        let data_b = &granule.bands[&b];
        assert_eq!(data_b.georef, src.metadata.grids[&b.resolution()]);
        let Some(expected) = gdal_dump(&data.join(CROP).join(format!("{b}.tif")), "crop") else {
            return;
        };
        assert_eq!(data_b.dn.data.len(), expected.len(), "{b}");
        assert!(data_b.dn.data == expected, "{b}: pixels differ from GDAL");
        assert!(data_b.dn.data.iter().any(|v| *v > 0), "{b} is all nodata");
    }
}

#[test]
fn other_compressions_and_pixel_is_point_decode_like_the_original() {
    let Some(data) = util::shared_data("other_compressions") else {
        return;
    };
    let src = data.join(CROP).join("B05.tif");
    let (orig, orig_g) = decode_u16(&std::fs::read(&src).unwrap(), &src).unwrap();
    let t = util::tempdir();
    let variants: [&[&str]; 6] = [
        &[
            "-co",
            "COMPRESS=ZSTD",
            "-co",
            "TILED=YES",
            "-co",
            "PREDICTOR=2",
        ],
        &[
            "-co",
            "COMPRESS=LZW",
            "-co",
            "TILED=YES",
            "-co",
            "PREDICTOR=2",
        ],
        // 64 px LZW tiles: `tiff`'s row-by-row tile path fails on these (see decode_tiles).
        &[
            "-co",
            "COMPRESS=LZW",
            "-co",
            "TILED=YES",
            "-co",
            "BLOCKXSIZE=64",
            "-co",
            "BLOCKYSIZE=64",
        ],
        &["-co", "COMPRESS=DEFLATE"],
        &["-co", "COMPRESS=NONE", "-co", "BIGTIFF=YES"],
        &["-mo", "AREA_OR_POINT=Point"],
    ];
    for (k, args) in variants.iter().enumerate() {
        let out = t.path().join(format!("v{k}.tif"));
        if gdal_translate(args, &src, &out, "other_compressions").is_none() {
            return;
        }
        let (r, g) = decode_u16(&std::fs::read(&out).unwrap(), &out).unwrap();
        assert_eq!(r, orig, "{args:?}");
        // PixelIsPoint files carry the centre of pixel (0, 0); the GeoRef stays corner based.
        assert_eq!(g, orig_g, "{args:?}");
        let h = read_header(&out).unwrap();
        assert_eq!((h.width, h.height, h.georef), (300, 300, orig_g));
    }
}

#[test]
fn real_tiled_deflate_file_survives_truncation_and_byte_flips() {
    let Some(data) = util::shared_data("real_tiled_deflate_fuzz") else {
        return;
    };
    let path = data.join(CROP).join("B01.tif");
    let bytes = std::fs::read(&path).unwrap();
    let (full, _) = decode_u16(&bytes, &path).unwrap();
    let step = (bytes.len() / 500).max(1);
    let mut refused = 0;
    for cut in (0..bytes.len()).step_by(step) {
        match decode_u16(&bytes[..cut], &path) {
            Err(GranuleError::Tiff { path: p, .. }) => {
                assert_eq!(p, path);
                refused += 1;
            }
            // A cut that only drops trailing bytes the pixels do not need (the deflate
            // stream's checksum, GDAL's padding) may still decode, but never to other values.
            Ok((r, _)) => assert!(r == full, "truncated at {cut}: wrong pixels"),
            Err(other) => panic!("truncated at {cut}: {other}"),
        }
    }
    assert!(refused > 450, "only {refused} of ~500 truncations refused");
    for pos in (0..bytes.len()).step_by(step) {
        let mut b = bytes.clone();
        b[pos] = b[pos].wrapping_add(0x5A);
        if let Ok((r, _)) = decode_u16(&b, &path) {
            assert_eq!(r.data.len(), r.width * r.height);
        }
    }
}

/// Hand-checked against the patches' `_labels_metadata.json`.
struct Patch {
    name: &'static str,
    epsg: u32,
    ulx: f64,
    uly: f64,
    tile: &'static str,
    spacecraft: &'static str,
    time: &'static str,
    classes_43: &'static [u8],
    classes_19: &'static [u8],
}

const PATCHES: [Patch; 6] = [
    Patch {
        name: "S2A_MSIL2A_20170613T101031_87_48",
        epsg: 32633,
        ulx: 404400.0,
        uly: 5342400.0,
        tile: "33UUP",
        spacecraft: "Sentinel-2A",
        time: "2017-06-13T10:10:31+00:00",
        // Non-irrigated arable land; Land principally occupied by agriculture, ...
        classes_43: &[11, 20],
        classes_19: &[2, 6],
    },
    Patch {
        name: "S2A_MSIL2A_20170617T113321_36_85",
        epsg: 32629,
        ulx: 643200.0,
        uly: 5798040.0,
        tile: "29UPU",
        spacecraft: "Sentinel-2A",
        time: "2017-06-17T11:33:21+00:00",
        // Non-irrigated arable land; Pastures
        classes_43: &[11, 17],
        classes_19: &[2, 4],
    },
    Patch {
        name: "S2A_MSIL2A_20170617T113321_4_55",
        epsg: 32629,
        ulx: 604800.0,
        uly: 5834040.0,
        tile: "29UPU",
        spacecraft: "Sentinel-2A",
        time: "2017-06-17T11:33:21+00:00",
        // Pastures
        classes_43: &[17],
        classes_19: &[4],
    },
    Patch {
        name: "S2A_MSIL2A_20171221T112501_56_35",
        epsg: 32629,
        ulx: 567180.0,
        uly: 4358040.0,
        tile: "29SND",
        spacecraft: "Sentinel-2A",
        time: "2017-12-21T11:25:01+00:00",
        // Complex cultivation patterns; Land principally ...; Broad-leaved forest;
        // Transitional woodland/shrub
        classes_43: &[19, 20, 22, 28],
        classes_19: &[5, 6, 8, 13],
    },
    Patch {
        name: "S2B_MSIL2A_20170924T93020_69_24",
        epsg: 32635,
        ulx: 682800.0,
        uly: 6971220.0,
        tile: "35VPK",
        spacecraft: "Sentinel-2B",
        time: "2017-09-24T09:30:20+00:00",
        // Coniferous forest; Mixed forest; Transitional woodland/shrub; Peatbogs;
        // Water bodies
        classes_43: &[23, 24, 28, 34, 39],
        classes_19: &[9, 10, 13, 15, 17],
    },
    Patch {
        name: "S2B_MSIL2A_20180204T94161_57_38",
        epsg: 32635,
        ulx: 668400.0,
        uly: 6954420.0,
        tile: "35VPK",
        spacecraft: "Sentinel-2B",
        time: "2018-02-04T09:41:56+00:00",
        // Non-irrigated arable land; Coniferous forest; Mixed forest
        classes_43: &[11, 23, 24],
        classes_19: &[2, 9, 10],
    },
];

#[test]
fn bigearthnet_patches_open_with_grids_and_labels() {
    let Some(data) = util::shared_data("bigearthnet_patches_open") else {
        return;
    };
    for p in &PATCHES {
        let dir = data.join(BEN).join(p.name);
        let src = GranuleSource::open(&dir).unwrap();
        assert_eq!(src.id.as_str(), p.name);
        assert_eq!(src.kind, InputKind::BigEarthNet);
        assert_eq!(src.bands.len(), 12, "{}", p.name);
        assert!(!src.bands.contains_key(&Band::B10));
        assert!(src.warnings.is_empty(), "{}: {:?}", p.name, src.warnings);
        let m = &src.metadata;
        assert_eq!(m.level, ProductLevel::L2A);
        assert!(m.offsets_known && m.offsets.is_empty());
        assert_eq!(m.epsg, p.epsg, "{}", p.name);
        assert_eq!(m.tile_id.as_deref(), Some(p.tile));
        assert_eq!(m.spacecraft.as_deref(), Some(p.spacecraft));
        assert_eq!(m.sensing_time.unwrap().to_rfc3339(), p.time);
        for (res, size) in [
            (Resolution::R10, 120),
            (Resolution::R20, 60),
            (Resolution::R60, 20),
        ] {
            let g = m.grids[&res];
            assert_eq!((g.width, g.height, g.epsg), (size, size, p.epsg));
            let px = 10.0 * res.factor() as f64;
            assert_eq!(
                g.transform,
                GeoTransform {
                    origin_x: p.ulx,
                    origin_y: p.uly,
                    pixel_width: px,
                    pixel_height: -px
                },
                "{} {res:?}",
                p.name
            );
        }
        let labels = m.labels.as_ref().unwrap();
        assert_eq!(labels.classes_43, p.classes_43, "{}", p.name);
        assert_eq!(labels.classes_19, p.classes_19, "{}", p.name);
        assert_eq!(labels.names_43.len(), p.classes_43.len());
    }

    // One patch fully decoded and compared with GDAL.
    let p = &PATCHES[4];
    let dir = data.join(BEN).join(p.name);
    let g = GranuleSource::open(&dir)
        .unwrap()
        .load(&Band::PRODUCT)
        .unwrap();
    for b in Band::PRODUCT {
        let file = dir.join(format!("{}_{b}.tif", p.name));
        let Some(expected) = gdal_dump(&file, "bigearthnet") else {
            return;
        };
        assert!(g.bands[&b].dn.data == expected, "{b}");
    }
}

fn copy_patch(data: &Path, name: &str) -> (tempfile::TempDir, PathBuf) {
    let t = util::tempdir();
    let dir = t.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(data.join(BEN).join(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    (t, dir)
}

#[test]
fn bigearthnet_bad_labels_and_coordinates_are_metadata_errors() {
    let Some(data) = util::shared_data("bigearthnet_bad_metadata") else {
        return;
    };
    let name = PATCHES[0].name;
    let (_t, dir) = copy_patch(&data, name);
    let json = dir.join(format!("{name}_labels_metadata.json"));
    let orig = std::fs::read_to_string(&json).unwrap();

    std::fs::write(
        &json,
        orig.replace("Non-irrigated arable land", "Moon base"),
    )
    .unwrap();
    match GranuleSource::open(&dir) {
        Err(GranuleError::Metadata {
            path,
            field,
            reason,
        }) => {
            assert_eq!(path, json);
            assert_eq!(field, "labels");
            assert!(reason.contains("Moon base"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    std::fs::write(&json, orig.replace("\"ulx\": 404400", "\"ulx\": 404402")).unwrap();
    assert!(matches!(
        GranuleSource::open(&dir),
        Err(GranuleError::Metadata { field, .. }) if field == "coordinates"
    ));

    std::fs::write(&json, &orig[..orig.len() / 2]).unwrap();
    assert!(matches!(
        GranuleSource::open(&dir),
        Err(GranuleError::Json { path, .. }) if path == json
    ));

    // A missing band is a warning at open and MissingBand at read.
    std::fs::write(&json, &orig).unwrap();
    std::fs::remove_file(dir.join(format!("{name}_B8A.tif"))).unwrap();
    let src = GranuleSource::open(&dir).unwrap();
    assert!(
        src.warnings.iter().any(|w| w.contains("B8A")),
        "{:?}",
        src.warnings
    );
    assert!(matches!(
        src.read_band(Band::B8A),
        Err(GranuleError::MissingBand {
            band: Band::B8A,
            ..
        })
    ));
}

#[test]
fn synthetic_folder_opens_and_round_trips() {
    let (_t, dir) = fixture();
    // Upper-case, `.tiff` spellings are accepted too.
    std::fs::rename(dir.join("B8A.tif"), dir.join("b8a.TIFF")).unwrap();
    let src = GranuleSource::open(&dir).unwrap();
    assert_eq!(src.id.as_str(), "SYNTH_33UUB");
    assert_eq!(src.bands.len(), 12);
    assert_eq!(src.metadata.grids[&Resolution::R60].width, 2);
    assert_eq!(src.metadata.level, ProductLevel::Unknown);
    assert_eq!(src.warnings, vec!["offset unknown, assumed 0".to_string()]);
    let g = src.load(&Band::PRODUCT).unwrap();
    assert_eq!(g.bands[&Band::B8A].dn.get(0, 0), 100 * 8 + 1);
    assert_eq!(g.bands[&Band::B12].dn.get(5, 5), 100 * 12 + 36);
}

#[test]
fn missing_band_is_a_warning_then_missing_band_error() {
    let (_t, dir) = fixture();
    std::fs::remove_file(dir.join("B05.tif")).unwrap();
    let src = GranuleSource::open(&dir).unwrap();
    assert!(src
        .warnings
        .iter()
        .any(|w| w.contains("B05") && w.contains("missing")));
    assert!(src.read_band(Band::B06).is_ok());
    match src.read_band(Band::B05) {
        Err(GranuleError::MissingBand { id, band }) => {
            assert_eq!((id.as_str(), band), ("SYNTH_33UUB", Band::B05))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_folder_is_unknown_layout() {
    let t = util::tempdir();
    std::fs::write(t.path().join("notes.txt"), "x").unwrap();
    assert!(matches!(
        GranuleSource::open(t.path()),
        Err(GranuleError::UnknownLayout { .. })
    ));
}

#[test]
fn truncated_and_garbage_tiffs_are_tiff_errors_naming_the_file() {
    let (_t, dir) = fixture();
    let b02 = dir.join("B02.tif");
    let bytes = std::fs::read(&b02).unwrap();

    // Cut inside the header: refused at open.
    std::fs::write(&b02, &bytes[..6]).unwrap();
    match GranuleSource::open(&dir) {
        Err(GranuleError::Tiff { path, .. }) => assert_eq!(path, b02),
        other => panic!("{other:?}"),
    }

    // Garbage: refused at open.
    std::fs::write(&b02, b"this is not a tiff at all, just some bytes").unwrap();
    match GranuleSource::open(&dir) {
        Err(GranuleError::Tiff { path, reason }) => {
            assert_eq!(path, b02);
            assert!(reason.contains("signature"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // Pixel data destroyed but header intact: opens, fails at read.
    let mut dec = tiff::decoder::Decoder::new(std::io::Cursor::new(&bytes)).unwrap();
    let offsets = dec.get_tag_u64_vec(tiff::tags::Tag::StripOffsets).unwrap();
    let counts = dec
        .get_tag_u64_vec(tiff::tags::Tag::StripByteCounts)
        .unwrap();
    let mut damaged = bytes.clone();
    for (o, n) in offsets.iter().zip(&counts) {
        damaged[*o as usize..(*o + *n) as usize].fill(0);
    }
    std::fs::write(&b02, &damaged).unwrap();
    let src = GranuleSource::open(&dir).unwrap();
    match src.read_band(Band::B02) {
        Err(GranuleError::Tiff { path, .. }) => assert_eq!(path, b02),
        other => panic!("{other:?}"),
    }
}

/// Patches ImageWidth/ImageLength of the first IFD of a little-endian classic TIFF.
fn patch_dimensions(bytes: &mut [u8], w: u32, h: u32) {
    let ifd = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let n = u16::from_le_bytes(bytes[ifd..ifd + 2].try_into().unwrap()) as usize;
    for k in 0..n {
        let e = ifd + 2 + 12 * k;
        let v = match u16::from_le_bytes(bytes[e..e + 2].try_into().unwrap()) {
            256 => w,
            257 => h,
            _ => continue,
        };
        bytes[e + 2..e + 4].copy_from_slice(&4u16.to_le_bytes());
        bytes[e + 8..e + 12].copy_from_slice(&v.to_le_bytes());
    }
}

#[test]
fn huge_header_is_too_large_before_allocation() {
    let (_t, dir) = fixture();
    let b02 = dir.join("B02.tif");
    let mut bytes = std::fs::read(&b02).unwrap();
    patch_dimensions(&mut bytes, 100_000, 100_000);
    std::fs::write(&b02, &bytes).unwrap();
    let expect_too_large = |r: Result<_, GranuleError>| match r {
        Err(GranuleError::TooLarge {
            path,
            width,
            height,
            limit,
        }) => {
            assert_eq!(path, b02);
            assert_eq!((width, height, limit), (100_000, 100_000, MAX_SIDE));
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted a 100000x100000 header"),
    };
    expect_too_large(GranuleSource::open(&dir).map(|_| ()));
    expect_too_large(decode_u16(&bytes, &b02).map(|_| ()));
}

#[test]
fn disagreeing_grids_are_grid_mismatch() {
    // Every 20 m band one pixel too large: 7x7 instead of 6x6.
    let (_t, dir) = fixture();
    for b in Band::PRODUCT
        .into_iter()
        .filter(|b| b.resolution() == Resolution::R20)
    {
        let r = Raster::filled(7, 7, 5u16);
        write_u16(&dir.join(format!("{b}.tif")), &r, &grid(32633, 7, 20.0)).unwrap();
    }
    match GranuleSource::open(&dir) {
        Err(GranuleError::GridMismatch { id, band, reason }) => {
            assert_eq!(id, "SYNTH_33UUB");
            assert_eq!(band, Band::B05);
            assert!(reason.contains("6x6"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // One 10 m band in another CRS.
    let (_t, dir) = fixture();
    let r = Raster::filled(12, 12, 5u16);
    write_u16(&dir.join("B04.tif"), &r, &grid(32634, 12, 10.0)).unwrap();
    match GranuleSource::open(&dir) {
        Err(GranuleError::GridMismatch { band, reason, .. }) => {
            assert_eq!(band, Band::B04);
            assert!(reason.contains("32634"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // The whole 60 m group in another CRS.
    let (_t, dir) = fixture();
    for b in [Band::B01, Band::B09] {
        let r = Raster::filled(2, 2, 5u16);
        write_u16(&dir.join(format!("{b}.tif")), &r, &grid(32634, 2, 60.0)).unwrap();
    }
    assert!(matches!(
        GranuleSource::open(&dir),
        Err(GranuleError::GridMismatch {
            band: Band::B01,
            ..
        })
    ));
}

#[test]
fn real_band_reprojected_label_is_grid_mismatch() {
    let Some(data) = util::shared_data("real_band_other_epsg") else {
        return;
    };
    let t = util::tempdir();
    let dir = t.path().join("crop");
    std::fs::create_dir(&dir).unwrap();
    for b in Band::PRODUCT {
        let f = format!("{b}.tif");
        std::fs::copy(data.join(CROP).join(&f), dir.join(&f)).unwrap();
    }
    std::fs::remove_file(dir.join("B11.tif")).unwrap();
    if gdal_translate(
        &["-a_srs", "EPSG:32632"],
        &data.join(CROP).join("B11.tif"),
        &dir.join("B11.tif"),
        "real_band_other_epsg",
    )
    .is_none()
    {
        return;
    }
    match GranuleSource::open(&dir) {
        Err(GranuleError::GridMismatch { band, reason, .. }) => {
            assert_eq!(band, Band::B11);
            assert!(reason.contains("32632"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

fn stac_item(offset: f64) -> serde_json::Value {
    let mut assets = serde_json::Map::new();
    for b in Band::PRODUCT {
        assets.insert(
            b.name().to_string(),
            serde_json::json!({
                "href": format!("./{b}.tif"),
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": offset}]
            }),
        );
    }
    assets.insert(
        "scl".into(),
        serde_json::json!({"href": "./SCL.tif", "raster:bands": [{"nodata": 0}]}),
    );
    serde_json::json!({
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "S2B_33UUB_20230710_0_L2A",
        "collection": "sentinel-2-l2a",
        "geometry": null,
        "properties": {
            "datetime": "2023-07-10T10:16:04.123000Z",
            "platform": "sentinel-2b",
            "s2:processing_baseline": "05.09",
            "s2:product_type": "S2MSI2A",
            "eo:cloud_cover": 12.5,
            "mgrs:utm_zone": 33,
            "mgrs:latitude_band": "U",
            "mgrs:grid_square": "UB",
            "proj:epsg": 32633
        },
        "assets": assets,
        "links": []
    })
}

#[test]
fn stac_item_gives_offsets_in_dn_and_metadata() {
    let (_t, dir) = fixture();
    std::fs::write(
        dir.join("item.json"),
        serde_json::to_vec_pretty(&stac_item(-0.1)).unwrap(),
    )
    .unwrap();
    let src = GranuleSource::open(&dir).unwrap();
    let m = &src.metadata;
    assert!(m.offsets_known);
    assert!(src.warnings.is_empty(), "{:?}", src.warnings);
    for b in Band::PRODUCT {
        assert_eq!(m.offset(b), -1000.0, "{b}");
    }
    assert_eq!(m.quantification, Some(10000.0));
    assert_eq!(m.level, ProductLevel::L2A);
    assert_eq!(m.spacecraft.as_deref(), Some("Sentinel-2B"));
    assert_eq!(m.baseline.as_deref(), Some("05.09"));
    assert_eq!(m.cloud_cover, Some(12.5));
    assert_eq!(m.tile_id.as_deref(), Some("33UUB"));
    assert_eq!(
        m.sensing_time.unwrap().to_rfc3339(),
        "2023-07-10T10:16:04.123+00:00"
    );

    // Offset 0 stated: known, empty, no warning.
    std::fs::write(
        dir.join("item.json"),
        serde_json::to_vec(&stac_item(0.0)).unwrap(),
    )
    .unwrap();
    let src = GranuleSource::open(&dir).unwrap();
    assert!(src.metadata.offsets_known && src.metadata.offsets.is_empty());
    assert!(src.warnings.is_empty());
}

#[test]
fn malformed_stac_json_is_a_json_error() {
    let (_t, dir) = fixture();
    let item = dir.join("item.json");
    std::fs::write(&item, b"{\"type\": \"Feature\", \"stac_version\": ").unwrap();
    match GranuleSource::open(&dir) {
        Err(GranuleError::Json { path, .. }) => assert_eq!(path, item),
        other => panic!("{other:?}"),
    }

    // Well-formed JSON with an unparsable datetime names the field.
    let mut v = stac_item(-0.1);
    v["properties"]["datetime"] = "yesterday".into();
    std::fs::write(&item, serde_json::to_vec(&v).unwrap()).unwrap();
    assert!(matches!(
        GranuleSource::open(&dir),
        Err(GranuleError::Metadata { field, .. }) if field == "properties.datetime"
    ));

    // A JSON file that is not a STAC Item is ignored.
    std::fs::write(&item, b"{\"hello\": 1}").unwrap();
    let src = GranuleSource::open(&dir).unwrap();
    assert!(!src.metadata.offsets_known);
}
