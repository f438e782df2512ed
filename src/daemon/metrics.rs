//! Prometheus metrics, hand-rolled text exposition (format 0.0.4): counters, gauges and
//! histograms keyed by name and label set, rendered on each `/metrics` scrape.
//!
//! Inference follows Triton's conventions: per model and version (and the execution
//! provider as a label), a count of inferences (samples), of executions (batches), of
//! failures, and a histogram of batch latency, fed by the [`crate::model::observe`] hook
//! that every batch passes through. Per granule: a duration histogram per stage, bytes
//! read (the input) and written (the product); the queue depth is a gauge.
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
    (
        "s2edge_inference_count_total",
        Kind::Counter,
        "Inferences (samples, summed over batches) by model, version and execution provider (Triton nv_inference_count).",
    ),
    (
        "s2edge_inference_exec_count_total",
        Kind::Counter,
        "Batch executions by model, version and execution provider (Triton nv_inference_exec_count).",
    ),
    (
        "s2edge_inference_failures_total",
        Kind::Counter,
        "Batches that failed, by model, version and execution provider.",
    ),
    (
        "s2edge_inference_batch_seconds",
        Kind::Histogram,
        "Latency of one inference batch (the ONNX Runtime call), by model, version and execution provider.",
    ),
    (
        "s2edge_read_bytes_total",
        Kind::Counter,
        "Bytes of the granule inputs processed (their files on disk).",
    ),
    (
        "s2edge_written_bytes_total",
        Kind::Counter,
        "Bytes of the products published.",
    ),
];

/// Histogram bucket upper bounds, seconds (a tile takes seconds to minutes).
const BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Bucket upper bounds of one inference batch, seconds (milliseconds on a GPU, seconds
/// for a ResNet50 batch on a small CPU).
const BATCH_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn buckets(name: &str) -> &'static [f64] {
    if name == "s2edge_inference_batch_seconds" {
        BATCH_BUCKETS
    } else {
        BUCKETS
    }
}

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
            let bounds = buckets(name);
            if h.counts.is_empty() {
                h.counts = vec![0; bounds.len()];
            }
            for (i, b) in bounds.iter().enumerate() {
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
                for (b, c) in buckets(name).iter().zip(&h.counts) {
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

impl Metrics {
    /// Counts the bytes of a processed granule's input (`input`, a file or directory)
    /// and of its published product directory.
    pub fn record_io(&self, input: &std::path::Path, product: &std::path::Path) {
        self.add("s2edge_read_bytes_total", &[], tree_size(input) as f64);
        self.add("s2edge_written_bytes_total", &[], tree_size(product) as f64);
    }
}

/// The size of a file, or of every file under a directory (symlinks not followed).
pub fn tree_size(path: &std::path::Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| tree_size(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

impl crate::model::observe::InferenceObserver for Metrics {
    fn batch_done(&self, e: &crate::model::observe::BatchEvent<'_>) {
        let version = e.version.to_string();
        let provider = e.provider.to_string();
        let l = [
            ("model", e.model),
            ("version", version.as_str()),
            ("provider", provider.as_str()),
        ];
        self.add("s2edge_inference_count_total", &l, e.size as f64);
        self.inc("s2edge_inference_exec_count_total", &l);
        // Added even when 0, so the series exists from the first batch on.
        self.add(
            "s2edge_inference_failures_total",
            &l,
            if e.ok { 0.0 } else { 1.0 },
        );
        self.observe("s2edge_inference_batch_seconds", &l, e.seconds);
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

    #[test]
    fn inference_batches_are_counted_per_model_version_and_provider() {
        use crate::model::observe::{BatchEvent, InferenceObserver};
        use crate::model::ExecutionProvider;
        let m = Metrics::default();
        let e = |size, seconds, ok| BatchEvent {
            model: "resnet50-ben19",
            version: 1,
            provider: ExecutionProvider::Cpu,
            size,
            seconds,
            ok,
        };
        m.batch_done(&e(16, 0.004, true));
        m.batch_done(&e(8, 0.2, false));
        let text = m.render();
        let l = "model=\"resnet50-ben19\",version=\"1\",provider=\"cpu\"";
        for line in [
            format!("s2edge_inference_count_total{{{l}}} 24\n"),
            format!("s2edge_inference_exec_count_total{{{l}}} 2\n"),
            format!("s2edge_inference_failures_total{{{l}}} 1\n"),
            format!("s2edge_inference_batch_seconds_bucket{{{l},le=\"0.005\"}} 1\n"),
            format!("s2edge_inference_batch_seconds_bucket{{{l},le=\"0.25\"}} 2\n"),
            format!("s2edge_inference_batch_seconds_count{{{l}}} 2\n"),
        ] {
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn io_bytes_sum_the_files_of_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("sub/b"), [0u8; 5]).unwrap();
        let m = Metrics::default();
        m.record_io(&dir.path().join("a"), dir.path());
        let text = m.render();
        assert!(text.contains("s2edge_read_bytes_total 10\n"), "{text}");
        assert!(text.contains("s2edge_written_bytes_total 15\n"), "{text}");
    }
}
