//! `classification.png` (issue 10 §2), checked the way a person looks at it: decoded
//! with the `png` crate and compared against the CORINE Land Cover palette, patch by
//! patch, against the scores in `labels.geojson`.

use std::ffi::OsStr;
use std::path::Path;

use s2edge::product::classmap::{
    self, cell_size, class_rgb, Cell, ClassMap, BEN19_PALETTE, CLOUDY_DOT_RGB, CLOUDY_RGB, EDGE_RGB,
};

use crate::cli::{run, sample, tiny_config};
use crate::util;

/// Decodes a PNG to RGBA8 (palette and tRNS expanded): (width, height, pixels).
pub fn decode_rgba(path: &Path) -> (usize, usize, Vec<[u8; 4]>) {
    let mut dec = png::Decoder::new(std::fs::File::open(path).unwrap());
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let px: Vec<[u8; 4]> = match info.color_type {
        png::ColorType::Rgba => buf[..w * h * 4]
            .chunks(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect(),
        png::ColorType::Rgb => buf[..w * h * 3]
            .chunks(3)
            .map(|c| [c[0], c[1], c[2], 255])
            .collect(),
        other => panic!("unexpected colour type {other:?}"),
    };
    (w, h, px)
}

fn rgba(c: [u8; 3]) -> [u8; 4] {
    [c[0], c[1], c[2], 255]
}

#[test]
fn every_style_decodes_to_its_palette_colours() {
    let classes: Vec<String> = BEN19_PALETTE
        .iter()
        .map(|(n, _, _)| n.to_string())
        .collect();
    // One row per class, then cloudy, edge and nodata.
    let mut cells: Vec<Cell> = (0..19).map(Cell::Class).collect();
    cells.extend([Cell::Cloudy, Cell::Edge, Cell::Nodata]);
    let cols = cells.len();
    let map = ClassMap {
        cols,
        rows: 1,
        cells,
        classes,
    };
    let tmp = util::tempdir();
    let path = tmp.path().join("classification.png");
    classmap::write_classmap(&path, &map).unwrap();
    let (w, h, px) = decode_rgba(&path);
    let s = cell_size(cols, 1);
    assert_eq!((w, h), (cols * s, s));
    let block = |c: usize| -> Vec<[u8; 4]> {
        (0..s)
            .flat_map(|y| (0..s).map(move |x| (x, y)))
            .map(|(x, y)| px[y * w + c * s + x])
            .collect()
    };
    for (k, (name, _, rgb)) in BEN19_PALETTE.iter().enumerate() {
        assert!(
            block(k).iter().all(|p| *p == rgba(*rgb)),
            "{name}: expected {rgb:?}"
        );
    }
    let cloudy = block(19);
    assert!(cloudy
        .iter()
        .all(|p| *p == rgba(CLOUDY_RGB) || *p == rgba(CLOUDY_DOT_RGB)));
    assert!(cloudy.contains(&rgba(CLOUDY_DOT_RGB)) && cloudy.contains(&rgba(CLOUDY_RGB)));
    let edge = block(20);
    assert!(edge.iter().all(|p| *p == rgba(EDGE_RGB) || p[3] == 0));
    assert!(edge.contains(&rgba(EDGE_RGB)) && edge.iter().any(|p| p[3] == 0));
    assert!(block(21).iter().all(|p| p[3] == 0), "nodata is transparent");
}

#[test]
fn a_product_map_shows_each_patch_top_label_in_clc_colours() {
    if !util::runtime("a_product_map_shows_each_patch_top_label_in_clc_colours") {
        return;
    }
    let tmp = util::tempdir();
    let cfg = tiny_config(tmp.path(), "[pipeline]\nsuperres = false\n");
    let out = tmp.path().join("out");
    let fixtures = util::fixtures();
    let r = run(
        &[
            OsStr::new("process"),
            sample().as_os_str(),
            OsStr::new("--out"),
            out.as_os_str(),
            OsStr::new("--models"),
            fixtures.as_os_str(),
            OsStr::new("--config"),
            cfg.as_os_str(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.context());
    let product = out.join(s2edge::sample::SAMPLE_ID);
    let (w, h, px) = decode_rgba(&product.join("classification.png"));
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(product.join("labels.geojson")).unwrap())
            .unwrap();
    let features = labels["features"].as_array().unwrap();
    let cols = features
        .iter()
        .map(|f| f["properties"]["col"].as_u64().unwrap())
        .max()
        .unwrap() as usize
        + 1;
    let rows = features
        .iter()
        .map(|f| f["properties"]["row"].as_u64().unwrap())
        .max()
        .unwrap() as usize
        + 1;
    let s = cell_size(cols, rows);
    assert_eq!((w, h), (cols * s, rows * s));
    let classes: Vec<String> = BEN19_PALETTE
        .iter()
        .map(|(n, _, _)| n.to_string())
        .collect();
    let mut ok = 0;
    let mut nodata = 0;
    for f in features {
        let p = &f["properties"];
        let (row, col) = (
            p["row"].as_u64().unwrap() as usize,
            p["col"].as_u64().unwrap() as usize,
        );
        let centre = px[(row * s + s / 2) * w + col * s + s / 2];
        match p["status"].as_str().unwrap() {
            "ok" => {
                let scores: Vec<f32> = classes
                    .iter()
                    .map(|c| p["scores"][c].as_f64().unwrap() as f32)
                    .collect();
                let top = classmap::top(&scores).unwrap();
                assert_eq!(centre, rgba(class_rgb(&classes[top])), "patch {row},{col}");
                ok += 1;
            }
            "nodata" => {
                assert_eq!(centre[3], 0, "patch {row},{col} is transparent");
                nodata += 1;
            }
            other => panic!("status {other} in the sample"),
        }
    }
    assert!(ok > 50 && nodata > 0, "ok {ok}, nodata {nodata}");

    // item.json: the map and the quicklook are overview/visual assets; the legend is the
    // classification extension's, with the palette's colours.
    let item: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(product.join("item.json")).unwrap()).unwrap();
    let map = &item["assets"]["classification_map"];
    assert_eq!(map["href"], "./classification.png");
    assert_eq!(map["type"], "image/png");
    for role in ["overview", "visual"] {
        assert!(
            map["roles"].as_array().unwrap().contains(&role.into()),
            "{map}"
        );
        assert!(
            item["assets"]["quicklook"]["roles"]
                .as_array()
                .unwrap()
                .contains(&role.into()),
            "{}",
            item["assets"]["quicklook"]
        );
    }
    let legend = map["classification:classes"].as_array().unwrap();
    assert_eq!(legend.len(), 19 + 4);
    for (k, (name, _, rgb)) in BEN19_PALETTE.iter().enumerate() {
        assert_eq!(legend[k]["value"], k);
        assert_eq!(legend[k]["name"], *name);
        assert_eq!(
            legend[k]["color-hint"],
            format!("{:02X}{:02X}{:02X}", rgb[0], rgb[1], rgb[2])
        );
    }
    let names: Vec<&str> = legend[19..]
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cloudy", "cloudy", "edge", "nodata"]);
    assert!(item["stac_extensions"]
        .as_array()
        .unwrap()
        .contains(&s2edge::product::stac::CLASSIFICATION_EXT.into()));
}
