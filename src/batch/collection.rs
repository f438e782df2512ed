//! `collection.json`: the STAC 1.0.0 Collection of a batch output directory.
//!
//! It links every product Item (`rel = "item"`, `./<id>/item.json`) and every model Item
//! under `models/` (`rel = "derived_from"`), and its extent is the union of the Items'
//! `bbox` (the whole longitude range when an Item crosses the antimeridian) and the
//! range of their `datetime`. It is written atomically (temp file, fsync, rename), so a
//! reader never sees a half-written collection.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::BatchError;

/// The collection's file name under `--out`.
pub const FILE: &str = "collection.json";

/// Builds and writes `<out>/collection.json` for the product Items `items`
/// (`(id, path of item.json)`).
///
/// # Errors
/// [`BatchError::Item`] when an Item is missing or malformed; [`BatchError::Io`].
pub fn write_collection(
    out: &Path,
    id: &str,
    items: &[(String, PathBuf)],
) -> Result<PathBuf, BatchError> {
    let mut bbox: Option<[f64; 4]> = None;
    let mut times: Vec<String> = Vec::new();
    let mut links = vec![
        json!({"rel": "root", "href": format!("./{FILE}"), "type": "application/json"}),
        json!({"rel": "self", "href": format!("./{FILE}"), "type": "application/json"}),
    ];
    for (item_id, path) in items {
        let bad = |reason: String| BatchError::Item {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let item: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let b: Vec<f64> = item["bbox"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let [w, s, e, n] = b[..] else {
            return Err(bad("no 4-number bbox".into()));
        };
        let (w, e) = if w > e { (-180.0, 180.0) } else { (w, e) };
        bbox = Some(match bbox {
            None => [w, s, e, n],
            Some([a, b2, c, d]) => [a.min(w), b2.min(s), c.max(e), d.max(n)],
        });
        if let Some(t) = item["properties"]["datetime"].as_str() {
            times.push(t.to_string());
        }
        links.push(json!({
            "rel": "item",
            "href": format!("./{item_id}/item.json"),
            "type": "application/geo+json",
            "title": item_id,
        }));
    }
    let models = out.join(crate::model::stac::MODELS_DIR);
    if let Ok(rd) = std::fs::read_dir(&models) {
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        for n in names {
            links.push(json!({
                "rel": "derived_from",
                "href": format!("./{}/{n}", crate::model::stac::MODELS_DIR),
                "type": "application/json",
                "title": format!("model Item {}", n.trim_end_matches(".json")),
            }));
        }
    }
    // RFC 3339 UTC stamps with the same layout sort as time.
    times.sort();
    let interval = json!([[times.first(), times.last()]]);
    let bbox = bbox.unwrap_or([-180.0, -90.0, 180.0, 90.0]);
    let collection = json!({
        "type": "Collection",
        "stac_version": crate::product::stac::STAC_VERSION,
        "stac_extensions": [],
        "id": id,
        "title": format!("s2edge products: {id}"),
        "description": format!(
            "{} Sentinel-2 products (land-cover classification and super-resolution) made by s2edge {} in one batch",
            items.len(),
            env!("CARGO_PKG_VERSION")
        ),
        "license": "proprietary",
        "extent": {
            "spatial": { "bbox": [bbox] },
            "temporal": { "interval": interval },
        },
        "links": links,
    });
    let path = out.join(FILE);
    let mut tmp = tempfile::NamedTempFile::new_in(out).map_err(|e| BatchError::io(out, e))?;
    let text = serde_json::to_string_pretty(&collection).unwrap_or_else(|_| "{}".into());
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.write_all(b"\n"))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| BatchError::io(&path, e))?;
    tmp.persist(&path)
        .map_err(|e| BatchError::io(&path, e.error))?;
    Ok(path)
}
