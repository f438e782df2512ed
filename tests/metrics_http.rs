//! Operations conventions (issue 10 §4), end to end on a running `s2edge serve`:
//! Triton-style inference metrics per model, version and execution provider, stage
//! histograms, bytes read and written, the queue depth, `/livez` and `/readyz` beside
//! `/healthz`, and a Grafana dashboard that names only series `/metrics` exposes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{command, sample};
use crate::util;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path`: (status code, body), or `None` while nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

struct Serve {
    child: Child,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The value of the series `line_start` (`name{labels}`), when exposed.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_probes_and_dashboard_on_a_running_daemon() {
    if !util::runtime("metrics_probes_and_dashboard_on_a_running_daemon") {
        return;
    }
    let tmp = util::tempdir();
    let root = tmp.path();
    let port = free_port();
    let d = |n: &str| root.join(n).display().to_string();
    for n in ["ingest", "work", "out", "quarantine", "archive", "state"] {
        std::fs::create_dir_all(root.join(n)).unwrap();
    }
    let config = root.join("s2edge.toml");
    std::fs::write(
        &config,
        format!(
            "[paths]\ningest = \"{}\"\nwork = \"{}\"\noutput = \"{}\"\nquarantine = \"{}\"\n\
             archive = \"{}\"\nmodels = \"{}\"\nstate = \"{}\"\n\
             [ingest]\nready = \"marker\"\nrescan_interval = \"1s\"\nafter = \"delete\"\n\
             [models]\nclassifier = \"tiny-ben19\"\n\
             [pipeline]\nsuperres = false\n[runtime]\nintra_threads = 1\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n",
            d("ingest"),
            d("work"),
            d("out"),
            d("quarantine"),
            d("archive"),
            util::fixtures().display(),
            d("state"),
        ),
    )
    .unwrap();
    let log = root.join("daemon.log");
    let _serve = Serve {
        child: command(&[("RUST_LOG", "info")])
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !f() {
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "timed out waiting for {what}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("/livez", &|| get(port, "/livez").is_some());
    assert_eq!(get(port, "/livez").unwrap(), (200, "ok\n".to_string()));
    wait("/readyz = 200", &|| {
        get(port, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    let (_, body) = get(port, "/readyz").unwrap();
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready, serde_json::json!({"ready": true, "reasons": []}));
    assert_eq!(get(port, "/healthz").unwrap().0, 200, "/healthz stays");

    // One granule through the daemon.
    let id = "S2A_MSIL2A_20250615T100031_N0510_R122_T33UUP_METRICS";
    let input_bytes = s2edge::daemon::metrics::tree_size(&sample());
    copy_dir(&sample(), &root.join("ingest").join(id));
    std::fs::write(root.join("ingest").join(format!("{id}.ready")), b"").unwrap();
    let product = root.join("out").join(id);
    wait("the product and its metrics", &|| {
        product.join("item.json").is_file()
            && get(port, "/metrics")
                .is_some_and(|(_, m)| m.contains("s2edge_granules_total{outcome=\"done\"} 1"))
    });
    let (code, m) = get(port, "/metrics").unwrap();
    assert_eq!(code, 200);

    // Inference: one sample per classified patch, per model, version and provider.
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(product.join("labels.geojson")).unwrap())
            .unwrap();
    let ok = labels["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["properties"]["status"] == "ok")
        .count();
    let l = "{model=\"tiny-ben19\",version=\"1\",provider=\"cpu\"}";
    assert_eq!(
        value(&m, &format!("s2edge_inference_count_total{l}")),
        Some(ok as f64),
        "{m}"
    );
    let execs = value(&m, &format!("s2edge_inference_exec_count_total{l}")).unwrap();
    assert!(execs >= 1.0);
    assert_eq!(
        value(&m, &format!("s2edge_inference_batch_seconds_count{l}")),
        Some(execs)
    );
    assert_eq!(
        value(&m, &format!("s2edge_inference_failures_total{l}")),
        Some(0.0)
    );
    assert!(
        m.contains("s2edge_stage_seconds_bucket{stage=\"classify\",le=\"+Inf\"} 1"),
        "{m}"
    );
    assert_eq!(
        value(&m, "s2edge_read_bytes_total"),
        Some(input_bytes as f64)
    );
    let written = value(&m, "s2edge_written_bytes_total").unwrap();
    assert_eq!(written, s2edge::daemon::metrics::tree_size(&product) as f64);
    assert!(value(&m, "s2edge_queue_depth").is_some(), "{m}");

    // The dashboard names only series that are exposed.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(util::root().join("contrib/grafana/s2edge-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 10);
    let mut named = std::collections::BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("s2edge_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            named.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    for series in &named {
        let exposed = m.lines().any(|line| {
            !line.starts_with('#')
                && line
                    .strip_prefix(series.as_str())
                    .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        });
        assert!(
            exposed,
            "the dashboard uses {series}, which /metrics does not expose:\n{m}"
        );
    }
    for must in [
        "s2edge_inference_count_total",
        "s2edge_inference_batch_seconds_bucket",
        "s2edge_stage_seconds_bucket",
        "s2edge_read_bytes_total",
        "s2edge_written_bytes_total",
        "s2edge_queue_depth",
    ] {
        assert!(named.contains(must), "the dashboard lacks {must}");
    }
}
