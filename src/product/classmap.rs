//! The product's `classification.png`: a map of each patch's top label, coloured with the
//! CORINE Land Cover (CLC) palette, and its legend for `item.json`.
//!
//! The PNG is palette-indexed, so its pixel values *are* the legend values (the STAC
//! classification extension's `classification:classes`, written on the asset):
//!
//! | value | meaning | style |
//! | --- | --- | --- |
//! | 0–18 | the patch's top-scoring class (BigEarthNet 19-class order) | solid CLC colour |
//! | 19, 20 | `cloudy` patch | white with a grey dot every 4 px |
//! | 21 | `edge` patch (a partial patch skipped at the right or bottom border) | dark diagonal hatching over transparency |
//! | 255 | `nodata` patch | fully transparent |
//!
//! Colours: each BigEarthNet class merges one or more CLC level-3 classes; it takes the
//! official CLC legend colour of the level-3 class named in [`BEN19_PALETTE`] (the main
//! one of the merge). The palette reproduces the EEA CLC legend RGB values.
//!
//! Each patch is drawn as a square of [`cell_size`] pixels, so a whole tile (92 × 92
//! patches) gives a map of about 1000 px. Classes with a name outside the BigEarthNet
//! nomenclature (test models) get a neutral grey so that they stay visible.

use std::path::Path;

use serde_json::{json, Value};

use super::ProductError;

/// Legend value of a cloudy patch's fill.
pub const CLOUDY: u8 = 19;
/// Legend value of a cloudy patch's dots.
pub const CLOUDY_DOT: u8 = 20;
/// Legend value of an edge patch's hatching.
pub const EDGE: u8 = 21;
/// Legend value (and transparent palette entry) of nodata.
pub const NODATA: u8 = 255;
/// The longest side the map aims at, in pixels.
pub const TARGET_SIDE: usize = 1024;
/// The largest square drawn for one patch, in pixels.
pub const MAX_CELL: usize = 32;

/// The 19 BigEarthNet classes in official order: (name, CLC level-3 code the colour
/// comes from, RGB of that code in the CLC legend).
pub const BEN19_PALETTE: [(&str, &str, [u8; 3]); 19] = [
    ("Urban fabric", "111", [230, 0, 77]),
    ("Industrial or commercial units", "121", [204, 77, 242]),
    ("Arable land", "211", [255, 255, 168]),
    ("Permanent crops", "221", [230, 128, 0]),
    ("Pastures", "231", [230, 230, 77]),
    ("Complex cultivation patterns", "242", [255, 230, 77]),
    (
        "Land principally occupied by agriculture, with significant areas of natural vegetation",
        "243",
        [230, 204, 77],
    ),
    ("Agro-forestry areas", "244", [242, 204, 166]),
    ("Broad-leaved forest", "311", [128, 255, 0]),
    ("Coniferous forest", "312", [0, 166, 0]),
    ("Mixed forest", "313", [77, 255, 0]),
    (
        "Natural grassland and sparsely vegetated areas",
        "321",
        [204, 242, 77],
    ),
    (
        "Moors, heathland and sclerophyllous vegetation",
        "322",
        [166, 255, 128],
    ),
    ("Transitional woodland, shrub", "324", [166, 242, 0]),
    ("Beaches, dunes, sands", "331", [230, 230, 230]),
    ("Inland wetlands", "411", [166, 166, 255]),
    ("Coastal wetlands", "421", [204, 204, 255]),
    ("Inland waters", "511", [0, 204, 242]),
    ("Marine waters", "523", [230, 242, 255]),
];

/// Fill of a cloudy patch.
pub const CLOUDY_RGB: [u8; 3] = [255, 255, 255];
/// Dots of a cloudy patch.
pub const CLOUDY_DOT_RGB: [u8; 3] = [150, 150, 150];
/// Hatching of an edge patch.
pub const EDGE_RGB: [u8; 3] = [64, 64, 64];
/// A class outside the BigEarthNet nomenclature.
pub const UNKNOWN_RGB: [u8; 3] = [128, 128, 128];

/// What one patch shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// Classified; the index of its top-scoring class.
    Class(usize),
    /// Touches nodata.
    Nodata,
    /// Too cloudy to classify.
    Cloudy,
    /// A partial edge patch that was skipped.
    Edge,
}

/// The patch grid to draw: `rows × cols` cells, row-major, and the class names.
#[derive(Debug, Clone)]
pub struct ClassMap {
    /// Patch columns.
    pub cols: usize,
    /// Patch rows.
    pub rows: usize,
    /// One cell per patch, row-major.
    pub cells: Vec<Cell>,
    /// The classifier's class names, in output order.
    pub classes: Vec<String>,
}

/// The RGB of class `name` (see the module docs).
pub fn class_rgb(name: &str) -> [u8; 3] {
    BEN19_PALETTE
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, rgb)| *rgb)
        .unwrap_or(UNKNOWN_RGB)
}

/// The side of the square drawn per patch for a `cols × rows` grid.
pub fn cell_size(cols: usize, rows: usize) -> usize {
    (TARGET_SIDE / cols.max(rows).max(1)).clamp(1, MAX_CELL)
}

impl ClassMap {
    fn check(&self) -> Result<(), ProductError> {
        if self.cols == 0 || self.rows == 0 || self.cells.len() != self.cols * self.rows {
            return Err(ProductError::invalid(format!(
                "class map of {}x{} patches with {} cells",
                self.cols,
                self.rows,
                self.cells.len()
            )));
        }
        if self.classes.len() > usize::from(CLOUDY) {
            return Err(ProductError::invalid(format!(
                "class map: {} classes, at most {} fit the palette",
                self.classes.len(),
                CLOUDY
            )));
        }
        if let Some(Cell::Class(k)) = self
            .cells
            .iter()
            .find(|c| matches!(c, Cell::Class(k) if *k >= self.classes.len()))
        {
            return Err(ProductError::invalid(format!(
                "class map: class index {k} of {} classes",
                self.classes.len()
            )));
        }
        Ok(())
    }

    /// The palette (RGB triples, 256 entries) and the tRNS alphas.
    fn palette(&self) -> (Vec<u8>, Vec<u8>) {
        let mut rgb = vec![0u8; 256 * 3];
        let mut alpha = vec![255u8; 256];
        let mut put = |i: usize, c: [u8; 3]| rgb[i * 3..i * 3 + 3].copy_from_slice(&c);
        for (k, name) in self.classes.iter().enumerate() {
            put(k, class_rgb(name));
        }
        put(usize::from(CLOUDY), CLOUDY_RGB);
        put(usize::from(CLOUDY_DOT), CLOUDY_DOT_RGB);
        put(usize::from(EDGE), EDGE_RGB);
        alpha[usize::from(NODATA)] = 0;
        (rgb, alpha)
    }

    /// The indexed pixels, `(width, height, values)`.
    pub fn render(&self) -> (usize, usize, Vec<u8>) {
        let s = cell_size(self.cols, self.rows);
        let (w, h) = (self.cols * s, self.rows * s);
        let mut px = vec![NODATA; w * h];
        for (i, cell) in self.cells.iter().enumerate() {
            let (r, c) = (i / self.cols, i % self.cols);
            for y in 0..s {
                for x in 0..s {
                    let v = match *cell {
                        // `check` bounds k below CLOUDY (19), so it fits a u8.
                        Cell::Class(k) => k as u8,
                        Cell::Nodata => NODATA,
                        Cell::Cloudy if x % 4 == 1 && y % 4 == 1 => CLOUDY_DOT,
                        Cell::Cloudy => CLOUDY,
                        Cell::Edge if (x + y) % 4 == 0 => EDGE,
                        Cell::Edge => NODATA,
                    };
                    px[(r * s + y) * w + c * s + x] = v;
                }
            }
        }
        (w, h, px)
    }

    /// The legend of this map (see [`legend`]).
    pub fn legend(&self) -> Value {
        legend(&self.classes)
    }
}

/// The file name of the map in a product.
pub const FILE: &str = "classification.png";
/// The key of the map's asset in `item.json`.
pub const ASSET_KEY: &str = "classification_map";

/// The map's STAC asset for a classifier with `classes`, legend included.
pub fn asset(classes: &[String]) -> super::stac::Asset {
    super::stac::Asset::classification_map(format!("./{FILE}"), legend(classes))
}

/// The legend as STAC classification extension v1.0.0 `classification:classes`: one
/// entry per class, then cloudy, edge and nodata.
pub fn legend(class_names: &[String]) -> Value {
    {
        let hex = |c: [u8; 3]| format!("{:02X}{:02X}{:02X}", c[0], c[1], c[2]);
        let mut classes: Vec<Value> = class_names
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let code = BEN19_PALETTE
                    .iter()
                    .find(|(n, _, _)| n == name)
                    .map(|(_, code, _)| format!(" (colour of CLC {code})"))
                    .unwrap_or_default();
                json!({
                    "value": k,
                    "name": name,
                    "description": format!("top label: {name}{code}"),
                    "color-hint": hex(class_rgb(name)),
                })
            })
            .collect();
        for (value, name, description, rgb) in [
            (
                CLOUDY,
                "cloudy",
                "patch too cloudy to classify (fill)",
                CLOUDY_RGB,
            ),
            (
                CLOUDY_DOT,
                "cloudy",
                "patch too cloudy to classify (dots)",
                CLOUDY_DOT_RGB,
            ),
            (
                EDGE,
                "edge",
                "partial patch at the image border, not classified (hatching over transparency)",
                EDGE_RGB,
            ),
        ] {
            classes.push(json!({
                "value": value, "name": name, "description": description, "color-hint": hex(rgb),
            }));
        }
        classes.push(json!({
            "value": NODATA,
            "name": "nodata",
            "description": "patch touching nodata (transparent)",
        }));
        Value::Array(classes)
    }
}

/// Writes `map` as an indexed PNG with a transparent nodata entry.
///
/// # Errors
/// [`ProductError::Invalid`] for an inconsistent map; [`ProductError::Io`] /
/// [`ProductError::Png`] when writing fails.
pub fn write_classmap(path: &Path, map: &ClassMap) -> Result<(), ProductError> {
    map.check()?;
    let (w, h, px) = map.render();
    let (palette, trns) = map.palette();
    let png_err = |source| ProductError::Png {
        path: path.to_path_buf(),
        source,
    };
    let (w32, h32) = match (u32::try_from(w), u32::try_from(h)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Err(ProductError::invalid("class map too large for PNG")),
    };
    let file = std::fs::File::create(path).map_err(|e| ProductError::io(path, e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w32, h32);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(palette);
    enc.set_trns(trns);
    let mut writer = enc.write_header().map_err(png_err)?;
    writer.write_image_data(&px).map_err(png_err)?;
    writer.finish().map_err(png_err)
}

/// The map of a classifier run: each `ok` patch shows its highest score.
pub fn from_classification(c: &crate::pipeline::classify::Classification) -> ClassMap {
    use crate::pipeline::classify::PatchStatus;
    let mut cells = vec![Cell::Nodata; c.cols * c.rows];
    for p in &c.patches {
        let cell = match (p.status, &p.scores) {
            (PatchStatus::Ok, Some(s)) => top(s).map(Cell::Class).unwrap_or(Cell::Nodata),
            (PatchStatus::Ok, None) | (PatchStatus::Nodata | PatchStatus::Saturated, _) => {
                Cell::Nodata
            }
            (PatchStatus::Cloudy, _) => Cell::Cloudy,
            (PatchStatus::Edge, _) => Cell::Edge,
        };
        if p.row < c.rows && p.col < c.cols {
            cells[p.row * c.cols + p.col] = cell;
        }
    }
    ClassMap {
        cols: c.cols,
        rows: c.rows,
        cells,
        classes: c.classes.clone(),
    }
}

/// The index of the highest score (the first on ties; NaN never wins).
pub fn top(scores: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &s) in scores.iter().enumerate() {
        if s.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ClassMap {
        ClassMap {
            cols: 2,
            rows: 2,
            cells: vec![Cell::Class(1), Cell::Cloudy, Cell::Edge, Cell::Nodata],
            classes: BEN19_PALETTE
                .iter()
                .map(|(n, _, _)| n.to_string())
                .collect(),
        }
    }

    #[test]
    fn palette_is_the_clc_legend_and_distinct() {
        let mut seen: Vec<[u8; 3]> = BEN19_PALETTE.iter().map(|(_, _, c)| *c).collect();
        seen.extend([CLOUDY_RGB, CLOUDY_DOT_RGB, EDGE_RGB]);
        let n = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), n, "colours must be distinct");
        assert_eq!(class_rgb("Coniferous forest"), [0, 166, 0]);
        assert_eq!(class_rgb("Urban fabric"), [230, 0, 77]);
        assert_eq!(class_rgb("not a class"), UNKNOWN_RGB);
    }

    #[test]
    fn renders_styles_per_status() {
        let m = map();
        let (w, h, px) = m.render();
        let s = cell_size(2, 2);
        assert_eq!((w, h), (2 * s, 2 * s));
        assert!(px[..s].iter().all(|&v| v == 1));
        let cloudy: Vec<u8> = (0..s).map(|y| px[y * w + s + 1]).collect();
        assert!(cloudy.contains(&CLOUDY_DOT) && cloudy.contains(&CLOUDY));
        let edge: Vec<u8> = (0..s).map(|x| px[s * w + x]).collect();
        assert!(edge.contains(&EDGE) && edge.contains(&NODATA));
        assert_eq!(px[(2 * s - 1) * w + 2 * s - 1], NODATA);
        let legend = m.legend();
        assert_eq!(legend.as_array().unwrap().len(), 19 + 4);
        assert_eq!(legend[9]["color-hint"], "00A600");
    }

    #[test]
    fn top_skips_nan_and_prefers_the_first_tie() {
        assert_eq!(top(&[0.1, f32::NAN, 0.7, 0.7]), Some(2));
        assert_eq!(top(&[f32::NAN]), None);
    }

    #[test]
    fn rejects_bad_maps() {
        let mut m = map();
        m.cells.pop();
        assert!(m.check().is_err());
        let mut m = map();
        m.cells[0] = Cell::Class(40);
        assert!(m.check().is_err());
    }
}
