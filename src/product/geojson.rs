//! RFC 7946 GeoJSON in WGS84 lon/lat from the granule's UTM map coordinates
//! (`labels.geojson`, the STAC Item footprint).
//!
//! Invariants of every geometry built here:
//! - coordinates are `[longitude, latitude]` in degrees, longitudes in [−180, 180];
//! - exterior rings are closed and counter-clockwise (RFC 7946 §3.1.6);
//! - a ring that crosses the antimeridian is split there into a `MultiPolygon`
//!   (RFC 7946 §3.1.9), so no edge spans more than 180° of longitude;
//! - edges are densified before reprojection (UTM straight lines are curves in lon/lat).
//!
//! UTM → WGS84 uses `proj4rs` (a pure-Rust PROJ port; its `utm` is the extended
//! transverse Mercator of Poder/Engsager, accurate to well under a millimetre across a
//! zone), not the `utm` crate: that one's inverse is a truncated series accurate to only
//! ~1e-5°, short of the 1e-6° agreement with GDAL that the tests ask for.

use std::io::Write;
use std::path::Path;

use proj4rs::adaptors::transform_vertex_2d;
use proj4rs::Proj;
use serde_json::{json, Map, Value};

use super::ProductError;
use crate::granule::GeoRef;

/// Points inserted per polygon edge (the vertex itself included) by [`map_polygon`].
/// Over a 110 km Sentinel-2 tile edge the UTM→lon/lat curvature is a few metres at
/// most between such points; for a 1.2 km classification patch one point per edge
/// already suffices (see [`map_polygon_with`]).
pub const DENSIFY: usize = 8;

/// A reusable UTM (WGS84) → geographic lon/lat transformation for one EPSG code.
pub struct UtmToLonLat {
    epsg: u32,
    src: Proj,
    dst: Proj,
}

impl std::fmt::Debug for UtmToLonLat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtmToLonLat")
            .field("epsg", &self.epsg)
            .finish()
    }
}

impl UtmToLonLat {
    /// The transformation from `EPSG:<epsg>` to WGS84 lon/lat.
    ///
    /// # Errors
    /// [`ProductError::Geo`] unless `epsg` is a WGS84 UTM zone: 32601–32660 (north) or
    /// 32701–32760 (south).
    pub fn new(epsg: u32) -> Result<Self, ProductError> {
        let (zone, south) = match epsg {
            32601..=32660 => (epsg - 32600, ""),
            32701..=32760 => (epsg - 32700, " +south"),
            _ => {
                return Err(ProductError::Geo {
                    reason: format!(
                        "EPSG:{epsg} is not a WGS84 UTM zone (326xx/327xx); cannot reproject to lon/lat"
                    ),
                })
            }
        };
        let geo = |e: proj4rs::errors::Error| ProductError::Geo {
            reason: format!("EPSG:{epsg}: {e}"),
        };
        let src = Proj::from_proj_string(&format!(
            "+proj=utm +zone={zone}{south} +datum=WGS84 +units=m +no_defs"
        ))
        .map_err(geo)?;
        let dst = Proj::from_proj_string("+proj=longlat +datum=WGS84 +no_defs").map_err(geo)?;
        Ok(UtmToLonLat { epsg, src, dst })
    }

    /// The EPSG code this transforms from.
    pub fn epsg(&self) -> u32 {
        self.epsg
    }

    /// `(longitude, latitude)` in degrees of map point (`x`, `y`), longitude in
    /// [−180, 180].
    ///
    /// # Errors
    /// [`ProductError::Geo`] for non-finite input or when the inverse projection fails.
    pub fn apply(&self, x: f64, y: f64) -> Result<(f64, f64), ProductError> {
        if !x.is_finite() || !y.is_finite() {
            return Err(ProductError::Geo {
                reason: format!("EPSG:{}: non-finite point ({x}, {y})", self.epsg),
            });
        }
        let (lam, phi) =
            transform_vertex_2d(&self.src, &self.dst, (x, y)).map_err(|e| ProductError::Geo {
                reason: format!("EPSG:{}: cannot reproject ({x}, {y}): {e}", self.epsg),
            })?;
        Ok((normalise_lon(lam.to_degrees()), phi.to_degrees()))
    }
}

/// `(longitude, latitude)` in degrees of the UTM point (`x`, `y`) of `EPSG:<epsg>`.
///
/// # Errors
/// As [`UtmToLonLat::new`] and [`UtmToLonLat::apply`].
pub fn utm_to_lonlat(epsg: u32, x: f64, y: f64) -> Result<(f64, f64), ProductError> {
    UtmToLonLat::new(epsg)?.apply(x, y)
}

/// The GeoJSON geometry of a map-coordinate ring of `EPSG:<epsg>`, densified with
/// [`DENSIFY`] points per edge: a `Polygon`, or a `MultiPolygon` when it crosses the
/// antimeridian.
///
/// # Errors
/// As [`map_polygon_with`].
pub fn map_polygon(epsg: u32, ring: &[(f64, f64)]) -> Result<Value, ProductError> {
    map_polygon_with(&UtmToLonLat::new(epsg)?, ring, DENSIFY)
}

/// [`map_polygon`] with a reused transformation and `densify` points per edge (≥ 1).
///
/// The ring may be given closed or open, in either orientation.
///
/// # Errors
/// [`ProductError::Invalid`] for fewer than 3 distinct vertices; [`ProductError::Geo`]
/// when a vertex cannot be reprojected or the ring spans more than 360° of longitude.
pub fn map_polygon_with(
    reproject: &UtmToLonLat,
    ring: &[(f64, f64)],
    densify: usize,
) -> Result<Value, ProductError> {
    let mut ring = ring.to_vec();
    if ring.len() > 1 && ring.first() == ring.last() {
        ring.pop();
    }
    if ring.len() < 3 {
        return Err(ProductError::invalid(format!(
            "a polygon needs at least 3 distinct vertices, got {}",
            ring.len()
        )));
    }
    let densify = densify.max(1);
    let mut lonlat = Vec::with_capacity(ring.len() * densify);
    for (i, &(x0, y0)) in ring.iter().enumerate() {
        let (x1, y1) = ring[(i + 1) % ring.len()];
        for k in 0..densify {
            let t = k as f64 / densify as f64;
            lonlat.push(reproject.apply(x0 + t * (x1 - x0), y0 + t * (y1 - y0))?);
        }
    }
    lonlat_polygon(lonlat)
}

/// The footprint of a raster grid as a GeoJSON geometry (see [`map_polygon`]).
///
/// # Errors
/// As [`map_polygon`].
pub fn footprint(georef: &GeoRef) -> Result<Value, ProductError> {
    let (x0, y0, x1, y1) = georef.bounds();
    map_polygon(georef.epsg, &[(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
}

/// Builds the geometry from an open lon/lat ring (each longitude in [−180, 180]).
fn lonlat_polygon(ring: Vec<(f64, f64)>) -> Result<Value, ProductError> {
    // Unwrap longitudes so consecutive vertices never jump by more than 180°: the ring
    // becomes continuous, possibly reaching past ±180.
    let mut ring = ring;
    for i in 1..ring.len() {
        let prev = ring[i - 1].0;
        let mut lon = ring[i].0;
        while lon - prev > 180.0 {
            lon -= 360.0;
        }
        while lon - prev < -180.0 {
            lon += 360.0;
        }
        ring[i].0 = lon;
    }
    if signed_area(&ring) < 0.0 {
        ring.reverse();
    }
    let (min, max) = ring
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    if max - min >= 360.0 {
        return Err(ProductError::Geo {
            reason: format!("ring spans {:.1}° of longitude", max - min),
        });
    }
    let cut = if max > 180.0 {
        180.0
    } else if min < -180.0 {
        -180.0
    } else {
        return Ok(json!({"type": "Polygon", "coordinates": [closed(&ring)]}));
    };
    // Split at the cut meridian: the part on the [−180, 180] side stays, the part
    // beyond it is shifted by 360° back into range.
    let shift = if cut > 0.0 { -360.0 } else { 360.0 };
    let inside = clip(&ring, cut, cut < 0.0);
    let beyond: Vec<(f64, f64)> = clip(&ring, cut, cut > 0.0)
        .into_iter()
        .map(|(lon, lat)| (lon + shift, lat))
        .collect();
    let parts: Vec<Value> = [inside, beyond]
        .iter()
        .filter(|p| p.len() >= 3)
        .map(|p| json!([closed(p)]))
        .collect();
    Ok(json!({"type": "MultiPolygon", "coordinates": parts}))
}

/// Sutherland–Hodgman clip of `ring` to `lon <= cut` (or `lon >= cut` when
/// `keep_east`); latitudes at the cut are interpolated linearly along the edge. The
/// rings handled here (tile and patch footprints) are convex quadrilaterals densified,
/// for which the single-line clip is exact.
fn clip(ring: &[(f64, f64)], cut: f64, keep_east: bool) -> Vec<(f64, f64)> {
    let inside = |p: (f64, f64)| if keep_east { p.0 >= cut } else { p.0 <= cut };
    let mut out = Vec::with_capacity(ring.len() + 2);
    for (i, &a) in ring.iter().enumerate() {
        let b = ring[(i + 1) % ring.len()];
        if inside(a) {
            out.push(a);
        }
        if inside(a) != inside(b) {
            let t = (cut - a.0) / (b.0 - a.0);
            out.push((cut, a.1 + t * (b.1 - a.1)));
        }
    }
    out.dedup();
    out
}

/// Twice the signed area (shoelace); positive for counter-clockwise lon/lat rings.
fn signed_area(ring: &[(f64, f64)]) -> f64 {
    (0..ring.len())
        .map(|i| {
            let (a, b) = (ring[i], ring[(i + 1) % ring.len()]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum()
}

fn closed(ring: &[(f64, f64)]) -> Vec<[f64; 2]> {
    let mut v: Vec<[f64; 2]> = ring.iter().map(|&(lon, lat)| [lon, lat]).collect();
    if let Some(&first) = v.first() {
        v.push(first);
    }
    v
}

fn normalise_lon(lon: f64) -> f64 {
    if (-180.0..=180.0).contains(&lon) {
        lon
    } else {
        let l = (lon + 180.0).rem_euclid(360.0) - 180.0;
        if l == -180.0 && lon > 0.0 {
            180.0
        } else {
            l
        }
    }
}

/// The RFC 7946 bounding box `[west, south, east, north]` of a `Polygon` or
/// `MultiPolygon`. For geometries split at the antimeridian `west > east` (§5.2): the
/// box is the smallest longitude interval, possibly wrapping, that covers every part.
///
/// # Errors
/// [`ProductError::Invalid`] for other geometry types or malformed coordinates.
pub fn bbox(geometry: &Value) -> Result<[f64; 4], ProductError> {
    let bad = |why: &str| ProductError::invalid(format!("bbox: {why}"));
    let polygons: Vec<&Value> = match geometry.get("type").and_then(Value::as_str) {
        Some("Polygon") => vec![geometry
            .get("coordinates")
            .ok_or_else(|| bad("no coordinates"))?],
        Some("MultiPolygon") => geometry
            .get("coordinates")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no coordinates"))?
            .iter()
            .collect(),
        other => return Err(bad(&format!("unsupported geometry type {other:?}"))),
    };
    // Each polygon part covers a continuous longitude interval [min, max].
    let (mut south, mut north) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut intervals = Vec::new();
    for poly in polygons {
        let exterior = poly
            .as_array()
            .and_then(|rings| rings.first())
            .and_then(Value::as_array)
            .ok_or_else(|| bad("polygon without exterior ring"))?;
        let (mut w, mut e) = (f64::INFINITY, f64::NEG_INFINITY);
        for pos in exterior {
            let lon = pos
                .get(0)
                .and_then(Value::as_f64)
                .ok_or_else(|| bad("bad position"))?;
            let lat = pos
                .get(1)
                .and_then(Value::as_f64)
                .ok_or_else(|| bad("bad position"))?;
            w = w.min(lon);
            e = e.max(lon);
            south = south.min(lat);
            north = north.max(lat);
        }
        if w > e {
            return Err(bad("empty ring"));
        }
        intervals.push((w, e));
    }
    if intervals.is_empty() {
        return Err(bad("no polygons"));
    }
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f64, f64)> = Vec::new();
    for (w, e) in intervals {
        match merged.last_mut() {
            Some(last) if w <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((w, e)),
        }
    }
    // The largest uncovered gap on the circle decides the box; the wrap-around gap
    // (from the easternmost end round to the westernmost start) means a normal box.
    let (first, last) = (merged[0], merged[merged.len() - 1]);
    let mut best_gap = first.0 + 360.0 - last.1;
    let (mut west, mut east) = (first.0, last.1);
    for pair in merged.windows(2) {
        let gap = pair[1].0 - pair[0].1;
        if gap > best_gap {
            best_gap = gap;
            west = pair[1].0;
            east = pair[0].1;
        }
    }
    Ok([west, south, east, north])
}

/// A GeoJSON Feature with `geometry` and `properties`.
pub fn feature(geometry: Value, properties: Map<String, Value>) -> Value {
    json!({"type": "Feature", "geometry": geometry, "properties": properties})
}

/// Writes a FeatureCollection of `features` to `path` (compact JSON).
///
/// # Errors
/// [`ProductError::Io`] or [`ProductError::Json`] with the path.
pub fn write_feature_collection(path: &Path, features: Vec<Value>) -> Result<(), ProductError> {
    let fc = json!({"type": "FeatureCollection", "features": features});
    let file = std::fs::File::create(path).map_err(|e| ProductError::io(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    serde_json::to_writer(&mut out, &fc).map_err(|source| ProductError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    out.write_all(b"\n")
        .and_then(|()| out.flush())
        .map_err(|e| ProductError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_utm_codes() {
        for epsg in [4326, 32600, 32661, 32700, 32761, 3857] {
            assert!(matches!(
                utm_to_lonlat(epsg, 500000.0, 0.0),
                Err(ProductError::Geo { .. })
            ));
        }
    }

    #[test]
    fn central_meridian_maps_to_zone_centre() {
        // Easting 500000 lies on the central meridian: zone 33 -> 15°E, zone 1 -> 177°W.
        let (lon, lat) = utm_to_lonlat(32633, 500000.0, 0.0).unwrap();
        assert!((lon - 15.0).abs() < 1e-9 && lat.abs() < 1e-9);
        let (lon, lat) = utm_to_lonlat(32701, 500000.0, 10_000_000.0).unwrap();
        assert!((lon + 177.0).abs() < 1e-9 && lat.abs() < 1e-9);
    }

    #[test]
    fn split_ring_parts_stay_in_range_and_ccw() {
        // A square from 179°E to 179°W, given clockwise.
        let ring = vec![(179.0, 10.0), (179.0, 11.0), (-179.0, 11.0), (-179.0, 10.0)];
        let g = lonlat_polygon(ring).unwrap();
        assert_eq!(g["type"], "MultiPolygon");
        let parts = g["coordinates"].as_array().unwrap();
        assert_eq!(parts.len(), 2);
        for part in parts {
            let ring: Vec<(f64, f64)> = part[0]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
                .collect();
            assert!(ring.iter().all(|p| (-180.0..=180.0).contains(&p.0)));
            assert!(signed_area(&ring[..ring.len() - 1]) > 0.0);
        }
        assert_eq!(bbox(&g).unwrap(), [179.0, 10.0, -179.0, 11.0]);
    }

    #[test]
    fn plain_polygon_bbox_is_min_max() {
        let g = lonlat_polygon(vec![(10.0, 1.0), (12.0, 1.0), (12.0, 3.0), (10.0, 3.0)]).unwrap();
        assert_eq!(g["type"], "Polygon");
        assert_eq!(bbox(&g).unwrap(), [10.0, 1.0, 12.0, 3.0]);
        assert!(bbox(&json!({"type": "Point", "coordinates": [0, 0]})).is_err());
    }
}
