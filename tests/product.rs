//! Products judged by independent readers: GDAL (`gdalinfo -json`, `gdal_translate`,
//! `gdaltransform`), `rio cogeo validate`, and the `png` decoder.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use s2edge::granule::{GeoRef, GeoTransform, GranuleId};
use s2edge::product::cog::{write_cog_with, CogOptions};
use s2edge::product::geojson::footprint;
use s2edge::product::stac::{Asset, EoBand, Item, ItemSpec, RasterBand, MEDIA_COG, PROJECTION_EXT};
use s2edge::product::{
    bbox, map_polygon, sweep_stale, utm_to_lonlat, write_cog, write_feature_collection, write_item,
    write_quicklook, CogBand, CogSample, ProductError, Staging,
};
use s2edge::raster::Raster;
use serde_json::Value;

use crate::util;

fn georef(epsg: u32, w: usize, h: usize) -> GeoRef {
    GeoRef {
        epsg,
        transform: GeoTransform {
            origin_x: 399960.0,
            origin_y: 5900040.0,
            pixel_width: 10.0,
            pixel_height: -10.0,
        },
        width: w,
        height: h,
    }
}

/// A deterministic band with structure (gradients plus a hash) and, when `nodata` is
/// given, a nodata stripe and scattered nodata pixels.
fn band<T: Copy>(
    w: usize,
    h: usize,
    b: usize,
    nodata: Option<T>,
    f: impl Fn(u64) -> T,
) -> Raster<T> {
    let mut data = Vec::with_capacity(w * h);
    for r in 0..h {
        for c in 0..w {
            let hash = ((r * 7919 + c * 104729 + b * 1_000_003) as u64)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                >> 40;
            let v = (r + 2 * c + 50 * b) as u64 + hash % 97;
            data.push(match nodata {
                Some(nd) if c < 13 || hash % 53 == 0 => nd,
                _ => f(v),
            });
        }
    }
    Raster::from_vec(w, h, data).unwrap()
}

fn le_bytes<T: Copy>(bands: &[Raster<T>], to: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    bands
        .iter()
        .flat_map(|b| b.data.iter().flat_map(|&v| to(v)))
        .collect()
}

/// `gdal_translate -of ENVI` (band-sequential, native little-endian) of overview level
/// `ovr` (`None`: full resolution).
fn gdal_dump(path: &Path, ovr: Option<usize>, test: &str) -> Option<Vec<u8>> {
    let gt = util::tool("gdal_translate", test)?;
    let dir = util::tempdir();
    let out = dir.path().join("dump.bin");
    let mut cmd = Command::new(gt);
    cmd.args(["-q", "-of", "ENVI"]);
    if let Some(o) = ovr {
        cmd.args(["-oo", &format!("OVERVIEW_LEVEL={o}")]);
    }
    let st = cmd.arg(path).arg(&out).status().unwrap();
    assert!(st.success(), "gdal_translate failed");
    Some(std::fs::read(out).unwrap())
}

/// Writes `bands` and checks everything GDAL and rio-cogeo can see.
#[allow(clippy::too_many_arguments)]
fn check_cog<T: CogSample>(
    test: &str,
    bands: &[Raster<T>],
    names: &[&str],
    g: &GeoRef,
    nodata: Option<f64>,
    options: &CogOptions,
    to_le: impl Fn(T) -> Vec<u8> + Copy,
    expect_overviews: &[(u64, u64)],
) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = util::tempdir();
    let path = dir.path().join("x.tif");
    let cog: Vec<CogBand<'_, T>> = bands
        .iter()
        .zip(names)
        .map(|(data, description)| CogBand { description, data })
        .collect();
    write_cog_with(&path, g, &cog, nodata, options).unwrap();

    let info = util::gdalinfo(&path)?;
    assert_eq!(info["driverShortName"], "GTiff");
    assert_eq!(info["size"], serde_json::json!([g.width, g.height]));
    let wkt = info["coordinateSystem"]["wkt"].as_str().unwrap();
    assert!(
        wkt.trim_end()
            .ends_with(&format!("ID[\"EPSG\",{}]]", g.epsg)),
        "CRS is not EPSG:{}: {wkt}",
        g.epsg
    );
    assert_eq!(info["stac"]["proj:epsg"], g.epsg);
    let gt: Vec<f64> = info["geoTransform"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(gt, g.transform.to_gdal().to_vec());
    assert_eq!(info["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"], "ZSTD");
    assert_eq!(info["metadata"]["IMAGE_STRUCTURE"]["INTERLEAVE"], "BAND");
    let gbands = info["bands"].as_array().unwrap();
    assert_eq!(gbands.len(), bands.len());
    for (i, gb) in gbands.iter().enumerate() {
        assert_eq!(gb["type"], T::GDAL_TYPE);
        assert_eq!(gb["description"], names[i]);
        assert_eq!(gb["block"], serde_json::json!([256, 256]));
        match nodata {
            Some(nd) => assert_eq!(gb["noDataValue"].as_f64(), Some(nd), "band {i} nodata"),
            None => assert!(gb.get("noDataValue").is_none()),
        }
        let ovr: Vec<(u64, u64)> = gb["overviews"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| {
                        (
                            o["size"][0].as_u64().unwrap(),
                            o["size"][1].as_u64().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(ovr, expect_overviews, "band {i} overviews");
    }

    let pixels = gdal_dump(&path, None, test)?;
    assert!(
        pixels == le_bytes(bands, to_le),
        "GDAL reads different pixels"
    );
    util::rio_validate(&path, test);
    Some((dir, path))
}

fn u16_le(v: u16) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

#[test]
fn cog_u16_roundtrips_through_gdal_with_overviews() {
    let t = "cog_u16_roundtrips_through_gdal_with_overviews";
    let (w, h) = (1100, 700);
    let names = ["B01", "B02", "B03"];
    let bands: Vec<Raster<u16>> = (0..3)
        .map(|b| band(w, h, b, Some(0u16), |v| (v % 60000 + 1) as u16))
        .collect();
    let g = georef(32633, w, h);
    let Some((_dir, path)) = check_cog(
        t,
        &bands,
        &names,
        &g,
        Some(0.0),
        &CogOptions::default(),
        u16_le,
        &[(550, 350), (275, 175), (138, 88)],
    ) else {
        return;
    };
    // The first overview, as GDAL reads it, is the 2x2 mean of valid samples.
    let Some(ovr) = gdal_dump(&path, Some(0), t) else {
        return;
    };
    let (ow, oh) = (550, 350);
    let mut expect = Vec::new();
    for b in &bands {
        for r in 0..oh {
            for c in 0..ow {
                let vals: Vec<f64> = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .iter()
                    .map(|(dr, dc)| b.get(2 * c + dc, 2 * r + dr))
                    .filter(|&v| v != 0)
                    .map(f64::from)
                    .collect();
                let m = if vals.is_empty() {
                    0
                } else {
                    (vals.iter().sum::<f64>() / vals.len() as f64).round() as u16
                };
                expect.extend_from_slice(&m.to_le_bytes());
            }
        }
    }
    assert!(ovr == expect, "overview 0 is not the nodata-aware 2x2 mean");
}

#[test]
fn cog_u16_odd_size_roundtrips() {
    let (w, h) = (600, 517);
    let names = ["B04", "B8A"];
    let bands: Vec<Raster<u16>> = (0..2)
        .map(|b| band(w, h, b, Some(0u16), |v| (v + 1) as u16))
        .collect();
    check_cog(
        "cog_u16_odd_size_roundtrips",
        &bands,
        &names,
        &georef(32633, w, h),
        Some(0.0),
        &CogOptions::default(),
        u16_le,
        &[(300, 259), (150, 130)],
    );
}

#[test]
fn cog_u8_roundtrips_without_nodata() {
    let (w, h) = (300, 200);
    let names = ["a", "b & <c> \"q\""];
    let bands: Vec<Raster<u8>> = (0..2)
        .map(|b| band(w, h, b, None, |v| (v % 256) as u8))
        .collect();
    check_cog(
        "cog_u8_roundtrips_without_nodata",
        &bands,
        &names,
        &georef(32601, w, h),
        None,
        &CogOptions::default(),
        |v| vec![v],
        &[(150, 100)],
    );
}

#[test]
fn cog_f32_roundtrips_with_class_names() {
    let (w, h) = (600, 517);
    let names = [
        "Urban fabric",
        "Land principally occupied by agriculture, with significant areas of natural vegetation",
        "Marine waters",
    ];
    let bands: Vec<Raster<f32>> = (0..3)
        .map(|b| band(w, h, b, Some(-1.0f32), |v| (v % 1000) as f32 / 999.0))
        .collect();
    check_cog(
        "cog_f32_roundtrips_with_class_names",
        &bands,
        &names,
        &georef(32733, w, h),
        Some(-1.0),
        &CogOptions::default(),
        |v: f32| v.to_le_bytes().to_vec(),
        &[(300, 259), (150, 130)],
    );
}

#[test]
fn cog_tiny_image_has_no_overviews_and_bigtiff_path_reads() {
    let (w, h) = (37, 20);
    let bands = vec![band(w, h, 0, Some(0u16), |v| (v + 1) as u16)];
    let options = CogOptions {
        force_bigtiff: true,
        threads: 1,
        ..CogOptions::default()
    };
    let Some((_dir, path)) = check_cog(
        "cog_tiny_image_has_no_overviews_and_bigtiff_path_reads",
        &bands,
        &["B01"],
        &georef(32633, w, h),
        Some(0.0),
        &options,
        u16_le,
        &[],
    ) else {
        return;
    };
    let head = std::fs::read(&path).unwrap();
    assert_eq!(&head[0..4], b"II+\0", "BigTIFF magic");
}

#[test]
fn cog_rejects_bands_of_different_sizes() {
    let dir = util::tempdir();
    let a = Raster::filled(10, 10, 1u16);
    let b = Raster::filled(10, 9, 1u16);
    let err = write_cog(
        &dir.path().join("x.tif"),
        &georef(32633, 10, 10),
        &[
            CogBand {
                description: "a",
                data: &a,
            },
            CogBand {
                description: "b",
                data: &b,
            },
        ],
        Some(0.0),
    )
    .unwrap_err();
    assert!(matches!(err, ProductError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("band 2"), "{err}");
}

fn rings(geom: &Value) -> Vec<Vec<(f64, f64)>> {
    let polys: Vec<&Value> = match geom["type"].as_str().unwrap() {
        "Polygon" => vec![&geom["coordinates"]],
        "MultiPolygon" => geom["coordinates"].as_array().unwrap().iter().collect(),
        t => panic!("unexpected {t}"),
    };
    polys
        .iter()
        .map(|p| {
            p[0].as_array()
                .unwrap()
                .iter()
                .map(|c| (c[0].as_f64().unwrap(), c[1].as_f64().unwrap()))
                .collect()
        })
        .collect()
}

/// Closed, counter-clockwise, in range, no edge longer than 180° of longitude.
fn assert_rfc7946_ring(ring: &[(f64, f64)]) {
    assert!(ring.len() >= 4);
    assert_eq!(ring.first(), ring.last(), "ring not closed");
    let mut area = 0.0;
    for w in ring.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert!(
            (-180.0..=180.0).contains(&a.0) && (-90.0..=90.0).contains(&a.1),
            "{a:?} out of range"
        );
        assert!(
            (b.0 - a.0).abs() <= 180.0,
            "edge {a:?} -> {b:?} spans the antimeridian"
        );
        area += a.0 * b.1 - b.0 * a.1;
    }
    assert!(area > 0.0, "exterior ring is not counter-clockwise");
}

#[test]
fn zone33_polygon_matches_gdaltransform() {
    let t = "zone33_polygon_matches_gdaltransform";
    let corners = [
        (399960.0, 5790240.0),
        (509760.0, 5790240.0),
        (509760.0, 5900040.0),
        (399960.0, 5900040.0),
    ];
    let mut pts = corners.to_vec();
    pts.extend([
        (455000.5, 5845000.25),
        (300000.0, 100.0),
        (800000.0, 9_000_000.0),
    ]);
    let Some(reference) = util::gdaltransform(32633, &pts, t) else {
        return;
    };
    for (p, r) in pts.iter().zip(&reference) {
        let (lon, lat) = utm_to_lonlat(32633, p.0, p.1).unwrap();
        assert!(
            (lon - r.0).abs() < 1e-6 && (lat - r.1).abs() < 1e-6,
            "{p:?}: {lon},{lat} vs {r:?}"
        );
    }
    let geom = map_polygon(32633, &corners).unwrap();
    assert_eq!(geom["type"], "Polygon");
    let ring = &rings(&geom)[0];
    assert_rfc7946_ring(ring);
    assert_eq!(ring.len(), 4 * 8 + 1, "8 points per edge, closed");
    for r in &reference[..4] {
        assert!(
            ring.iter()
                .any(|v| (v.0 - r.0).abs() < 1e-6 && (v.1 - r.1).abs() < 1e-6),
            "corner {r:?} missing"
        );
    }
    // Southern hemisphere too.
    let Some(south) = util::gdaltransform(32733, &[(600000.0, 7000000.0)], t) else {
        return;
    };
    let (lon, lat) = utm_to_lonlat(32733, 600000.0, 7000000.0).unwrap();
    assert!((lon - south[0].0).abs() < 1e-6 && (lat - south[0].1).abs() < 1e-6);
}

/// The T01WCP tile grid from its real MTD_TL.xml.
fn t01wcp(data: &Path) -> GeoRef {
    let safe = data
        .join("s2-safe-metadata/S2A_MSIL2A_20230625T234621_N0509_R073_T01WCP_20230626T022157.SAFE");
    let mtd = walk(&safe)
        .into_iter()
        .find(|p| p.file_name().unwrap() == "MTD_TL.xml")
        .unwrap();
    let text = std::fs::read_to_string(mtd).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let find = |name: &str, res: Option<&str>| {
        doc.descendants()
            .find(|n| {
                n.has_tag_name(name) && res.is_none_or(|r| n.attribute("resolution") == Some(r))
            })
            .unwrap()
    };
    let child = |n: roxmltree::Node, name: &str| -> f64 {
        n.children()
            .find(|c| c.has_tag_name(name))
            .unwrap()
            .text()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let epsg = find("HORIZONTAL_CS_CODE", None)
        .text()
        .unwrap()
        .trim_start_matches("EPSG:")
        .parse()
        .unwrap();
    let size = find("Size", Some("10"));
    let pos = find("Geoposition", Some("10"));
    GeoRef {
        epsg,
        transform: GeoTransform {
            origin_x: child(pos, "ULX"),
            origin_y: child(pos, "ULY"),
            pixel_width: child(pos, "XDIM"),
            pixel_height: child(pos, "YDIM"),
        },
        width: child(size, "NCOLS") as usize,
        height: child(size, "NROWS") as usize,
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn t01wcp_footprint_is_split_at_the_antimeridian() {
    let t = "t01wcp_footprint_is_split_at_the_antimeridian";
    let Some(data) = util::shared_data(t) else {
        return;
    };
    let g = t01wcp(&data);
    assert_eq!(g.epsg, 32601);
    let geom = footprint(&g).unwrap();
    assert_eq!(geom["type"], "MultiPolygon", "{geom}");
    let parts = rings(&geom);
    assert_eq!(parts.len(), 2);
    for ring in &parts {
        assert_rfc7946_ring(ring);
    }
    let east = parts
        .iter()
        .find(|r| r.iter().all(|p| p.0 >= 0.0))
        .expect("an eastern part");
    let west = parts
        .iter()
        .find(|r| r.iter().all(|p| p.0 <= 0.0))
        .expect("a western part");
    assert!(east.iter().any(|p| p.0 == 180.0) && west.iter().any(|p| p.0 == -180.0));
    // Both parts meet at the same latitudes on the antimeridian.
    let cut = |r: &Vec<(f64, f64)>| {
        let mut l: Vec<f64> = r
            .iter()
            .filter(|p| p.0.abs() == 180.0)
            .map(|p| p.1)
            .collect();
        l.sort_by(f64::total_cmp);
        l.dedup();
        l
    };
    let (ce, cw) = (cut(east), cut(west));
    assert_eq!(ce.len(), 2);
    assert!(
        ce.iter().zip(&cw).all(|(a, b)| (a - b).abs() < 1e-12),
        "{ce:?} vs {cw:?}"
    );

    // The corners agree with GDAL, and the bbox wraps (west > east).
    let (x0, y0, x1, y1) = g.bounds();
    let Some(corners) = util::gdaltransform(32601, &[(x0, y0), (x1, y0), (x1, y1), (x0, y1)], t)
    else {
        return;
    };
    let all: Vec<(f64, f64)> = parts.concat();
    for c in &corners {
        assert!(
            all.iter()
                .any(|v| (v.0 - c.0).abs() < 1e-6 && (v.1 - c.1).abs() < 1e-6),
            "corner {c:?}"
        );
    }
    let b = bbox(&geom).unwrap();
    assert!(
        b[0] > b[2],
        "antimeridian bbox must have west > east: {b:?}"
    );
    assert!(b[0] > 170.0 && b[2] < -170.0 && b[1] < b[3], "{b:?}");
    for c in &corners {
        assert!(c.0 >= b[0] || c.0 <= b[2], "corner {c:?} outside {b:?}");
        assert!(c.1 >= b[1] - 1e-9 && c.1 <= b[3] + 1e-9);
    }

    let dir = util::tempdir();
    let p = dir.path().join("labels.geojson");
    write_feature_collection(
        &p,
        vec![serde_json::json!({"type": "Feature", "geometry": geom, "properties": {"row": 0}})],
    )
    .unwrap();
    let back: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    assert_eq!(back["type"], "FeatureCollection");
    assert_eq!(back["features"][0]["geometry"]["type"], "MultiPolygon");
}

#[test]
fn stac_item_has_the_required_structure() {
    let t = "stac_item_has_the_required_structure";
    let g = georef(32633, 600, 517);
    let mut assets = BTreeMap::new();
    let mut sr = Asset::new(
        "./superres.tif",
        MEDIA_COG,
        "Super-resolved bands",
        &["data"],
    );
    sr.raster_bands = Some(
        ["B01", "B02"]
            .iter()
            .map(|n| RasterBand {
                name: Some(n.to_string()),
                data_type: "uint16".into(),
                nodata: Some(0.0),
                scale: Some(0.0001),
                offset: Some(0.0),
                unit: None,
            })
            .collect(),
    );
    sr.eo_bands = Some(vec![EoBand {
        name: "B01".into(),
        common_name: Some("coastal".into()),
        center_wavelength: Some(0.443),
    }]);
    assets.insert("superres".to_string(), sr);
    let coarse = GeoRef {
        transform: g.transform.coarsened(120),
        width: 5,
        height: 4,
        ..g
    };
    assets.insert(
        "classification".to_string(),
        Asset::new(
            "./classification.tif",
            MEDIA_COG,
            "Class probabilities",
            &["data"],
        )
        .with_grid(&coarse),
    );
    let mut props = serde_json::Map::new();
    props.insert("s2edge:input".into(), "S2A_TEST".into());
    let sensing = chrono::DateTime::parse_from_rfc3339("2017-05-27T10:30:21.5Z")
        .unwrap()
        .into();
    let item = Item::build(ItemSpec {
        id: "S2A_TEST".into(),
        sensing_time: Some(sensing),
        processed: chrono::Utc::now(),
        georef: g,
        assets,
        properties: props,
        self_href: None,
    })
    .unwrap();
    let dir = util::tempdir();
    let path = dir.path().join("item.json");
    write_item(&path, &item).unwrap();
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();

    assert_eq!(v["type"], "Feature");
    assert_eq!(v["stac_version"], "1.0.0");
    assert_eq!(v["id"], "S2A_TEST");
    let ext: Vec<&str> = v["stac_extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(ext.contains(&PROJECTION_EXT));
    assert!(
        ext.iter().any(|e| e.contains("/raster/v1.1.0/"))
            && ext.iter().any(|e| e.contains("/eo/v1.1.0/"))
    );
    let p = &v["properties"];
    assert_eq!(p["datetime"], "2017-05-27T10:30:21.500Z");
    assert!(chrono::DateTime::parse_from_rfc3339(p["created"].as_str().unwrap()).is_ok());
    assert_eq!(p["proj:code"], "EPSG:32633");
    assert_eq!(p["proj:shape"], serde_json::json!([517, 600]));
    assert_eq!(
        p["proj:transform"],
        serde_json::json!(g.transform.to_stac())
    );
    assert_eq!(p["s2edge:input"], "S2A_TEST");
    assert!(p.get("s2edge:warnings").is_none());
    assert!(v["links"].is_array());
    assert_eq!(v["geometry"]["type"], "Polygon");
    assert_rfc7946_ring(&rings(&v["geometry"])[0]);
    let sr = &v["assets"]["superres"];
    assert_eq!(sr["href"], "./superres.tif");
    assert_eq!(sr["type"], MEDIA_COG);
    assert_eq!(sr["raster:bands"][1]["scale"], 0.0001);
    assert_eq!(sr["raster:bands"][1]["data_type"], "uint16");
    let cl = &v["assets"]["classification"];
    assert_eq!(cl["proj:shape"], serde_json::json!([4, 5]));
    assert_eq!(cl["proj:transform"][0], 1200.0);
    // It parses back into the same Item.
    // (Coordinates may differ in the last ulp: serde_json parses floats fast, not exactly.)
    let back: Item = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(
        (&back.id, &back.properties, &back.assets),
        (&item.id, &item.properties, &item.assets)
    );
    assert!(back
        .bbox
        .iter()
        .zip(item.bbox)
        .all(|(a, b)| (a - b).abs() < 1e-12));

    // The bbox covers GDAL's own WGS84 extent of the same grid.
    let tif = dir.path().join("g.tif");
    let r = Raster::filled(600, 517, 1u16);
    write_cog(
        &tif,
        &g,
        &[CogBand {
            description: "x",
            data: &r,
        }],
        None,
    )
    .unwrap();
    let Some(info) = util::gdalinfo(&tif) else {
        return;
    };
    let b: Vec<f64> = v["bbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!(b[0] < b[2] && b[1] < b[3]);
    let _ = t;
    for c in info["wgs84Extent"]["coordinates"][0].as_array().unwrap() {
        let (lon, lat) = (c[0].as_f64().unwrap(), c[1].as_f64().unwrap());
        assert!(
            lon >= b[0] - 1e-6 && lon <= b[2] + 1e-6 && lat >= b[1] - 1e-6 && lat <= b[3] + 1e-6,
            "{lon},{lat} outside {b:?}"
        );
    }
}

#[test]
fn quicklook_is_a_png_with_transparent_nodata() {
    let (w, h) = (600, 517);
    let mut r = band(w, h, 0, None, |v| (v * 5 % 4000 + 1) as u16);
    let g = band(w, h, 1, None, |v| (v * 3 % 4000 + 1) as u16);
    let b = band(w, h, 2, None, |v| (v % 4000 + 1) as u16);
    // Left 30 columns nodata in red only: still nodata for the whole pixel.
    for row in 0..h {
        for col in 0..30 {
            *r.get_mut(col, row) = 0;
        }
    }
    let dir = util::tempdir();
    let path = dir.path().join("quicklook.png");
    write_quicklook(&path, &r, &g, &b, 256).unwrap();
    let dec = png::Decoder::new(std::fs::File::open(&path).unwrap());
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgba);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    // block 3: 600/3 = 200, ceil(517/3) = 173
    assert_eq!((info.width, info.height), (200, 173));
    assert!(info.width.max(info.height) <= 256);
    let px = |x: usize, y: usize| &buf[(y * 200 + x) * 4..(y * 200 + x) * 4 + 4];
    assert_eq!(px(0, 0)[3], 0, "nodata is transparent");
    assert_eq!(px(9, 50)[3], 0);
    assert_eq!(px(10, 50)[3], 255);
    assert_eq!(px(199, 172)[3], 255);
    assert!(px(100, 100)[..3].iter().any(|&c| c > 0));

    let small = Raster::filled(10, 10, 1u16);
    assert!(write_quicklook(&path, &r, &g, &small, 256).is_err());
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn publish_replaces_atomically_and_leaves_no_temp_dirs() {
    let dir = util::tempdir();
    let out = dir.path().join("out");
    let id = GranuleId::new("S2A_MSIL1C_TEST").unwrap();

    let s = Staging::new(&out, &id).unwrap();
    assert!(s.path().starts_with(&out));
    std::fs::write(s.path().join("a.txt"), "first").unwrap();
    std::fs::create_dir(s.path().join("sub")).unwrap();
    std::fs::write(s.path().join("sub/x"), "x").unwrap();
    let p = s.publish().unwrap();
    assert_eq!(p, out.join("S2A_MSIL1C_TEST"));
    assert_eq!(std::fs::read_to_string(p.join("a.txt")).unwrap(), "first");
    assert_eq!(listing(&out), vec!["S2A_MSIL1C_TEST"]);

    let s = Staging::new(&out, &id).unwrap();
    std::fs::write(s.path().join("b.txt"), "second").unwrap();
    let p2 = s.publish().unwrap();
    assert_eq!(p2, p);
    assert_eq!(listing(&p), vec!["b.txt"], "only the new content remains");
    assert_eq!(std::fs::read_to_string(p.join("b.txt")).unwrap(), "second");
    assert_eq!(listing(&out), vec!["S2A_MSIL1C_TEST"]);

    // Dropped without publishing: nothing is left, the product is untouched.
    let s = Staging::new(&out, &id).unwrap();
    std::fs::write(s.path().join("c.txt"), "abandoned").unwrap();
    let staged = s.path().to_path_buf();
    drop(s);
    assert!(!staged.exists());
    assert_eq!(listing(&out), vec!["S2A_MSIL1C_TEST"]);
    assert_eq!(listing(&p), vec!["b.txt"]);
}

#[test]
fn sweep_removes_only_dead_stagings() {
    let dir = util::tempdir();
    let out = dir.path();
    // pid above the kernel's maximum pid (4194304): certainly not alive.
    std::fs::create_dir_all(out.join(".G.tmp-4194305-0/sub")).unwrap();
    std::fs::create_dir(out.join(".G.tmp-4194305-1-old")).unwrap();
    std::fs::create_dir(out.join("G")).unwrap();
    std::fs::create_dir(out.join(".hidden")).unwrap();
    let live = Staging::new(out, &GranuleId::new("H").unwrap()).unwrap();
    assert_eq!(sweep_stale(out).unwrap(), 2);
    let names = listing(out);
    assert!(names.contains(&"G".to_string()) && names.contains(&".hidden".to_string()));
    assert!(
        live.path().exists(),
        "a live process's staging survives the sweep"
    );
    assert_eq!(names.len(), 3);
    assert_eq!(sweep_stale(&out.join("missing")).unwrap(), 0);
}
