//! Prometheus metrics, hand-rolled text exposition (format 0.0.4): counters, gauges and
//! histograms keyed by name and label set, rendered on each `/metrics` scrape.
//!
//! A std `Mutex` guards the values: every update is a short, non-async critical
//! section, and it is never held across an `.await`. Every metric the daemon uses is
//! declared in [`CATALOGUE`] with its type and help, so a typo cannot invent a series.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Set to the current value.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// Every metric: (name, kind, help).
pub const CATALOGUE: &[(&str, Kind, &str)] = &[
    (
        "s2edge_granules",
        Kind::Gauge,
        "Granules in the ledger by state.",
    ),
    (
        "s2edge_queue_depth",
        Kind::Gauge,
        "Complete inputs waiting in the ingest directory for a free slot.",
    ),
    (
        "s2edge_in_flight",
        Kind::Gauge,
        "Granules claimed and being processed or retried.",
    ),
    (
        "s2edge_granules_total",
        Kind::Counter,
        "Granules finished, by outcome (done, quarantined, duplicate, retried).",
    ),
    (
        "s2edge_stage_seconds",
        Kind::Histogram,
        "Duration of each pipeline stage.",
    ),
    (
        "s2edge_granule_seconds",
        Kind::Histogram,
        "Duration of a whole granule, claim to publish.",
    ),
    (
        "s2edge_ready_to_start_seconds",
        Kind::Histogram,
        "Latency from an input becoming ready to its processing starting.",
    ),
    (
        "s2edge_patches_total",
        Kind::Counter,
        "Classifier patches by status.",
    ),
    (
        "s2edge_superres_pixels_total",
        Kind::Counter,
        "Output pixels super-resolved (10 m grid x bands).",
    ),
    (
        "s2edge_on_publish_failures_total",
        Kind::Counter,
        "on_publish commands that failed.",
    ),
    (
        "s2edge_model_rejected_total",
        Kind::Counter,
        "Model versions refused (sha256, I/O check or test inference).",
    ),
    (
        "s2edge_model_swaps_total",
        Kind::Counter,
        "Model sets swapped in while running.",
    ),
    (
        "s2edge_model_info",
        Kind::Gauge,
        "Models in use (value 1), with role, version and execution provider.",
    ),
    (
        "s2edge_build_info",
        Kind::Gauge,
        "s2edge and ONNX Runtime versions (value 1).",
    ),
];

/// Histogram bucket upper bounds, seconds (a tile takes seconds to minutes).
const BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Values {
    scalars: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

/// The daemon's metrics; see the module docs.
#[derive(Debug, Default)]
pub struct Metrics {
    values: Mutex<Values>,
}

fn labels(l: &[(&str, &str)]) -> Labels {
    l.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn known(name: &'static str) -> &'static str {
    debug_assert!(
        CATALOGUE.iter().any(|(n, _, _)| *n == name),
        "metric {name} is not in CATALOGUE"
    );
    name
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Values)) {
        // A poisoned lock only means a panic mid-update of a number: keep counting.
        let mut v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut v);
    }

    /// Adds `v` to a counter.
    pub fn add(&self, name: &'static str, l: &[(&str, &str)], v: f64) {
        self.with(|m| *m.scalars.entry((known(name), labels(l))).or_default() += v);
    }

    /// Increments a counter.
    pub fn inc(&self, name: &'static str, l: &[(&str, &str)]) {
        self.add(name, l, 1.0);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, l: &[(&str, &str)], v: f64) {
        self.with(|m| {
            m.scalars.insert((known(name), labels(l)), v);
        });
    }

    /// Removes every series of `name` (info gauges whose labels change).
    pub fn clear(&self, name: &'static str) {
        self.with(|m| m.scalars.retain(|(n, _), _| *n != name));
    }

    /// Records one observation in a histogram.
    pub fn observe(&self, name: &'static str, l: &[(&str, &str)], v: f64) {
        self.with(|m| {
            let h = m.histograms.entry((known(name), labels(l))).or_default();
            if h.counts.is_empty() {
                h.counts = vec![0; BUCKETS.len()];
            }
            for (i, b) in BUCKETS.iter().enumerate() {
                if v <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += v;
            h.count += 1;
        });
    }

    /// The text exposition of every series.
    pub fn render(&self) -> String {
        let v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, kind, help) in CATALOGUE {
            let kind_s = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind_s}");
            for ((n, l), val) in v.scalars.iter().filter(|((n, _), _)| n == name) {
                let _ = writeln!(out, "{n}{} {val}", fmt_labels(l, None));
            }
            for ((n, l), h) in v.histograms.iter().filter(|((n, _), _)| n == name) {
                for (b, c) in BUCKETS.iter().zip(&h.counts) {
                    let _ = writeln!(out, "{n}_bucket{} {c}", fmt_labels(l, Some(&b.to_string())));
                }
                let _ = writeln!(out, "{n}_bucket{} {}", fmt_labels(l, Some("+Inf")), h.count);
                let _ = writeln!(out, "{n}_sum{} {}", fmt_labels(l, None), h.sum);
                let _ = writeln!(out, "{n}_count{} {}", fmt_labels(l, None), h.count);
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn fmt_labels(l: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_buckets() {
        let m = Metrics::default();
        m.inc("s2edge_granules_total", &[("outcome", "done")]);
        m.inc("s2edge_granules_total", &[("outcome", "done")]);
        m.set("s2edge_model_info", &[("model", "a\"b")], 1.0);
        m.observe("s2edge_stage_seconds", &[("stage", "read")], 0.3);
        m.observe("s2edge_stage_seconds", &[("stage", "read")], 3.0);
        let text = m.render();
        assert!(
            text.contains("s2edge_granules_total{outcome=\"done\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("s2edge_model_info{model=\"a\\\"b\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("s2edge_stage_seconds_bucket{stage=\"read\",le=\"0.25\"} 0\n"));
        assert!(text.contains("s2edge_stage_seconds_bucket{stage=\"read\",le=\"0.5\"} 1\n"));
        assert!(text.contains("s2edge_stage_seconds_bucket{stage=\"read\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("s2edge_stage_seconds_count{stage=\"read\"} 2\n"));
        assert!(text.contains("# TYPE s2edge_stage_seconds histogram\n"));
        m.clear("s2edge_model_info");
        assert!(!m.render().contains("s2edge_model_info{"));
    }
}
