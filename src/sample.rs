//! A small synthetic Sentinel-2 granule for demos and tests (`s2edge sample DIR`).
//!
//! Real imagery cannot ship with the project, so the sample is drawn: a 12 × 12 km
//! scene (1200² px at 10 m) in UTM zone 33N, georeferenced like a real tile, with
//! fields (crops, bare soil, grassland), a forest, a river and a lake, and a town with a
//! street grid. Every class has a plausible Sentinel-2 L2A surface-reflectance spectrum
//! in all 12 bands; the 20 m and 60 m bands are block means of the same 10 m scene, so
//! the bands agree the way a real sensor's do. A corner is nodata, like the edge of a
//! real tile's swath. It is written as a per-band GeoTIFF folder (COGs) with a STAC Item
//! declaring processing baseline 05.10 and the −1000 offsets, so the demo exercises
//! radiometric harmonisation too. Everything is deterministic.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::granule::{Band, GeoRef, GeoTransform, NODATA_DN};
use crate::product::cog::{write_cog, CogBand};
use crate::product::ProductError;
use crate::raster::Raster;

/// Size of the sample on the 10 m grid.
pub const SAMPLE_SIZE: usize = 1200;
/// The sample's granule id (its folder name).
pub const SAMPLE_ID: &str = "S2A_MSIL2A_20250615T100031_N0510_R122_T33UUP_SAMPLE";

/// Land-cover classes drawn in the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cover {
    Water,
    Forest,
    Crop,
    Bare,
    Grass,
    Roof,
    Road,
    Nodata,
}

/// Surface reflectance per class, bands in [`Band::PRODUCT`] order
/// (B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12); values after typical
/// Sentinel-2 L2A library spectra.
fn spectrum(c: Cover) -> [f32; 12] {
    match c {
        Cover::Water => [
            0.060, 0.050, 0.045, 0.025, 0.020, 0.012, 0.010, 0.009, 0.008, 0.006, 0.003, 0.002,
        ],
        Cover::Forest => [
            0.020, 0.022, 0.045, 0.022, 0.070, 0.230, 0.290, 0.310, 0.320, 0.300, 0.150, 0.070,
        ],
        Cover::Crop => [
            0.030, 0.035, 0.070, 0.035, 0.110, 0.300, 0.380, 0.410, 0.420, 0.390, 0.200, 0.095,
        ],
        Cover::Bare => [
            0.080, 0.095, 0.125, 0.160, 0.190, 0.210, 0.230, 0.250, 0.260, 0.270, 0.330, 0.280,
        ],
        Cover::Grass => [
            0.035, 0.040, 0.075, 0.055, 0.120, 0.250, 0.300, 0.320, 0.330, 0.310, 0.230, 0.130,
        ],
        Cover::Roof => [
            0.120, 0.130, 0.140, 0.150, 0.170, 0.180, 0.190, 0.200, 0.205, 0.200, 0.230, 0.210,
        ],
        Cover::Road => [
            0.080, 0.085, 0.090, 0.095, 0.100, 0.105, 0.110, 0.115, 0.118, 0.115, 0.130, 0.120,
        ],
        Cover::Nodata => [0.0; 12],
    }
}

/// A deterministic hash of integer coordinates to [0, 1).
fn hash01(x: i64, y: i64, salt: u64) -> f32 {
    let mut h = (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ salt.wrapping_mul(0x1656_67B1_9E37_79F9);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    (h >> 40) as f32 / (1u64 << 24) as f32
}

fn cover_at(x: usize, y: usize) -> Cover {
    let (xf, yf) = (x as f32, y as f32);
    let n = SAMPLE_SIZE as f32;
    if xf + (n - yf) < 150.0 {
        return Cover::Nodata;
    }
    let river = 600.0 + 150.0 * (xf / 180.0).sin();
    if (yf - river).abs() < 22.0 || (xf - 260.0).powi(2) + (yf - 930.0).powi(2) < 110.0f32.powi(2) {
        return Cover::Water;
    }
    if (780..1120).contains(&x) && (140..460).contains(&y) {
        return if x % 40 < 6 || y % 40 < 6 {
            Cover::Road
        } else {
            Cover::Roof
        };
    }
    if x < 520 && y < 480 {
        return Cover::Forest;
    }
    // Field parcels of 100 × 60 px.
    match (hash01((x / 100) as i64, (y / 60) as i64, 7) * 3.0) as u32 {
        0 => Cover::Crop,
        1 => Cover::Bare,
        _ => Cover::Grass,
    }
}

/// The sample's 10 m grid: UTM 33N, inside tile 33UUP.
pub fn sample_grid() -> GeoRef {
    GeoRef {
        epsg: 32633,
        transform: GeoTransform {
            origin_x: 399_960.0 + 24_000.0,
            origin_y: 5_400_000.0 - 36_000.0,
            pixel_width: 10.0,
            pixel_height: -10.0,
        },
        width: SAMPLE_SIZE,
        height: SAMPLE_SIZE,
    }
}

/// Writes the sample granule into `dir/<SAMPLE_ID>/` and returns that folder.
///
/// # Errors
/// [`ProductError`] when a file cannot be written.
pub fn write_sample(dir: &Path) -> Result<PathBuf, ProductError> {
    let folder = dir.join(SAMPLE_ID);
    std::fs::create_dir_all(&folder).map_err(|e| ProductError::io(&folder, e))?;
    let n = SAMPLE_SIZE;
    let covers: Vec<Cover> = (0..n * n).map(|i| cover_at(i % n, i / n)).collect();
    let grid10 = sample_grid();
    let offset = 1000.0f32; // baseline ≥ 04.00: DN = reflectance × 10000 + 1000
    for (k, &band) in Band::PRODUCT.iter().enumerate() {
        // Reflectance on the 10 m grid with parcel- and pixel-level texture.
        let refl: Vec<f32> = (0..n * n)
            .map(|i| {
                let (x, y) = (i % n, i / n);
                let c = covers[i];
                if c == Cover::Nodata {
                    return f32::NAN;
                }
                let parcel = hash01((x / 100) as i64, (y / 60) as i64, 11) - 0.5;
                let pixel = hash01(x as i64, y as i64, 13 + k as u64) - 0.5;
                spectrum(c)[k] * (1.0 + 0.15 * parcel + 0.06 * pixel)
            })
            .collect();
        let f = band.resolution().factor();
        let (w, h) = (n.div_ceil(f), n.div_ceil(f));
        let mut dn = Raster::filled(w, h, NODATA_DN);
        for by in 0..h {
            for bx in 0..w {
                let mut sum = 0.0f32;
                let mut cnt = 0usize;
                let mut any_nodata = false;
                for y in by * f..((by + 1) * f).min(n) {
                    for x in bx * f..((bx + 1) * f).min(n) {
                        let v = refl[y * n + x];
                        if v.is_nan() {
                            any_nodata = true;
                        } else {
                            sum += v;
                            cnt += 1;
                        }
                    }
                }
                if !any_nodata && cnt > 0 {
                    let v = (sum / cnt as f32 * 10_000.0 + offset).round();
                    *dn.get_mut(bx, by) = v.clamp(1.0, 65_534.0) as u16;
                }
            }
        }
        let georef = GeoRef {
            transform: grid10.transform.coarsened(f),
            width: w,
            height: h,
            ..grid10
        };
        let path = folder.join(format!("{}.tif", band.name()));
        write_cog(
            &path,
            &georef,
            &[CogBand {
                description: band.name(),
                data: &dn,
            }],
            Some(0.0),
        )?;
    }
    write_stac_item(&folder, &grid10)?;
    Ok(folder)
}

fn write_stac_item(folder: &Path, grid: &GeoRef) -> Result<(), ProductError> {
    let mut assets = serde_json::Map::new();
    for band in Band::PRODUCT {
        assets.insert(
            band.name().to_string(),
            json!({
                "href": format!("./{}.tif", band.name()),
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}],
            }),
        );
    }
    let (x0, y0, x1, y1) = grid.bounds();
    let item = json!({
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
        ],
        "id": SAMPLE_ID,
        "geometry": null,
        "properties": {
            "datetime": "2025-06-15T10:00:31Z",
            "platform": "sentinel-2a",
            "constellation": "sentinel-2",
            "s2:processing_baseline": "05.10",
            "s2:product_type": "S2MSI2A",
            "s2:mgrs_tile": "33UUP",
            "proj:code": format!("EPSG:{}", grid.epsg),
            "proj:bbox": [x0, y0, x1, y1],
            "description": "Synthetic sample granule written by `s2edge sample`; not real imagery."
        },
        "links": [],
        "assets": assets,
    });
    let path = folder.join("item.json");
    let text = serde_json::to_string_pretty(&item).map_err(|e| ProductError::Invalid {
        reason: format!("sample STAC item: {e}"),
    })?;
    std::fs::write(&path, text).map_err(|e| ProductError::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cover_class_is_drawn() {
        let mut seen = std::collections::HashSet::new();
        for y in (0..SAMPLE_SIZE).step_by(5) {
            for x in (0..SAMPLE_SIZE).step_by(5) {
                seen.insert(format!("{:?}", cover_at(x, y)));
            }
        }
        assert_eq!(seen.len(), 8, "{seen:?}");
    }

    #[test]
    fn vegetation_has_a_red_edge_and_water_does_not() {
        let ndvi = |c| {
            let s = spectrum(c);
            (s[7] - s[3]) / (s[7] + s[3])
        };
        assert!(ndvi(Cover::Forest) > 0.7);
        assert!(ndvi(Cover::Crop) > 0.7);
        assert!(ndvi(Cover::Water) < 0.0);
        assert!(ndvi(Cover::Roof) < 0.2);
    }
}
