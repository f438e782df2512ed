//! The ingest daemon (`s2edge serve`): the only module that knows tokio.
//!
//! Granules dropped into `[paths] ingest` are noticed (inotify plus a periodic rescan),
//! taken only once complete by the readiness rule, claimed by an atomic rename into
//! `[paths] work`, processed by the inference worker thread, published atomically, and
//! recorded in a SQLite ledger so that a restart resumes exactly where it stopped.
//!
//! # Layout
//!
//! | module | role |
//! | --- | --- |
//! | [`ingest`] | readiness rules (marker, manifest, quiet, zip check) and the inotify watcher |
//! | [`claim`] | the claim rename (the arbiter between instances) and input disposal |
//! | [`ledger`] | the SQLite ledger (sync; used from `spawn_blocking` and by the CLI) |
//! | [`service`] | the dispatcher loop, SIGHUP reloads, the model watcher task |
//! | [`job`] | one granule's attempts, retries with backoff, success or quarantine |
//! | [`worker`] | the OS thread that owns the models and runs the pipeline |
//! | [`models`] | model hot swap: validation before swapping in |
//! | [`quarantine`] | moving bad inputs aside with a `reason.txt`, and back |
//! | [`admin`] | `s2edge ledger list/show/requeue/purge` |
//! | [`http`], [`metrics`], [`health`] | `/metrics`, `/healthz`, `/livez`, `/readyz` |
//! | [`signals`], [`systemd`] | SIGTERM/SIGHUP, sd_notify |
//! | [`error`] | `DaemonError`, `LedgerError`, `AdminError` |
//!
//! Invariants: nothing CPU- or file-heavy runs on the async threads (the worker thread
//! or `spawn_blocking` does it); every channel is bounded and at most `max_in_flight`
//! granules are claimed, so a backlog waits on disk; a bad granule never stops the
//! daemon.

pub mod admin;
pub mod claim;
pub mod error;
pub mod health;
pub mod http;
pub mod ingest;
pub mod job;
pub mod ledger;
pub mod metrics;
pub mod models;
pub mod quarantine;
pub mod service;
pub mod signals;
pub mod systemd;
pub mod worker;

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;

pub use error::{AdminError, DaemonError, LedgerError};

use crate::config::Settings;
use crate::model::init_runtime;
use crate::pipeline::process::ProcessOptions;
use crate::product::publish::sweep_stale;

use health::{Health, Status};
use ledger::Ledger;
use metrics::Metrics;
use service::Dispatcher;

/// How long open HTTP connections may delay the exit once draining is done.
const HTTP_DRAIN: Duration = Duration::from_secs(2);

/// How long systemd is asked to wait while models load (a TensorRT engine build can
/// take minutes).
const MODEL_LOAD_EXTENSION: Duration = Duration::from_secs(600);

/// Runs `f` on the blocking pool.
///
/// # Errors
/// [`DaemonError::Panicked`] when `f` panicked.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DaemonError::Panicked(e.to_string()))
}

/// Creates the daemon's directories and checks that claims can be renames.
///
/// # Errors
/// [`DaemonError::Io`] for a directory that cannot be created;
/// [`DaemonError::CrossDevice`] when `work` and `ingest` are on different file systems.
pub fn prepare_dirs(settings: &Settings) -> Result<(), DaemonError> {
    let p = &settings.paths;
    for dir in [
        &p.ingest,
        &p.work,
        &p.output,
        &p.quarantine,
        &p.archive,
        &p.state,
    ] {
        std::fs::create_dir_all(dir).map_err(|e| DaemonError::io(dir, e))?;
    }
    use std::os::unix::fs::MetadataExt;
    let dev = |d: &Path| {
        std::fs::metadata(d)
            .map(|m| m.dev())
            .map_err(|e| DaemonError::io(d, e))
    };
    if dev(&p.ingest)? != dev(&p.work)? {
        return Err(DaemonError::CrossDevice {
            ingest: p.ingest.clone(),
            work: p.work.clone(),
        });
    }
    Ok(())
}

/// Runs the daemon until SIGTERM/SIGINT; `config_file` is reread on SIGHUP.
///
/// # Errors
/// [`DaemonError`] when it cannot start (directories, ledger, models, HTTP bind) or
/// the worker thread dies. A bad granule is never an error here.
pub fn serve(settings: Settings, config_file: Option<PathBuf>) -> Result<(), DaemonError> {
    prepare_dirs(&settings)?;
    let ledger = Arc::new(Ledger::open_in(&settings.paths.state)?);
    match sweep_stale(&settings.paths.output) {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed staging directories left by a crash"),
        Err(e) => tracing::warn!(error = %e, "could not sweep stale staging directories"),
    }
    systemd::status("loading models");
    systemd::extend_timeout(MODEL_LOAD_EXTENSION);
    let rt_info = init_runtime(
        settings.runtime.onnxruntime.as_deref(),
        settings.runtime.env_options(),
    )
    .map_err(DaemonError::Models)?;
    tracing::info!(path = %rt_info.path.display(), version = %rt_info.version, "ONNX Runtime loaded");
    let models = models::load_validated(&settings)?;
    let resume = Dispatcher::recover(&settings, &ledger)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("s2edge-async")
        .build()
        .map_err(|source| DaemonError::Start {
            what: "the async runtime",
            source,
        })?;
    let result = rt.block_on(run(
        settings,
        config_file,
        ledger,
        models,
        resume,
        rt_info.version,
    ));
    // A job still on the worker after the shutdown deadline must not hold the exit up.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn run(
    settings: Settings,
    config_file: Option<PathBuf>,
    ledger: Arc<Ledger>,
    models: crate::model::set::ModelSet,
    resume: VecDeque<claim::Claimed>,
    ort_version: String,
) -> Result<(), DaemonError> {
    let metrics = Arc::new(Metrics::default());
    // Every inference batch, on whichever thread, is counted (Triton-style metrics).
    crate::model::observe::set_observer(Some(metrics.clone()));
    let health = Arc::new(Health::default());
    metrics.set(
        "s2edge_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("onnxruntime", &ort_version),
        ],
        1.0,
    );
    let max_in_flight = settings.service.max_in_flight;
    for r in &models.skipped {
        health.raise("models", Status::Degraded, format!("refused {r}"));
    }
    let (worker, thread) = worker::spawn(
        models,
        ProcessOptions::from_settings(&settings),
        max_in_flight + 2,
        health.clone(),
        metrics.clone(),
    )?;

    let listener = tokio::net::TcpListener::bind(settings.http.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: settings.http.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| DaemonError::Bind {
        addr: settings.http.listen,
        source,
    })?;
    tracing::info!(listen = %bound, "serving /metrics, /healthz, /livez and /readyz");
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let observed = http::Observed {
        metrics: metrics.clone(),
        health: health.clone(),
    };
    let http_task = tokio::spawn(http::serve(listener, observed, shutdown_rx.clone()));

    let (sig_tx, sig_rx) = mpsc::channel(4);
    signals::spawn(sig_tx).map_err(|source| DaemonError::Start {
        what: "the signal handlers",
        source,
    })?;
    let (poke_tx, poke_rx) = mpsc::channel(1);
    let _watcher = match ingest::spawn_watcher(&settings.paths.ingest, poke_tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "inotify unavailable; relying on the periodic rescan");
            health.raise("inotify", Status::Degraded, e.to_string());
            None
        }
    };

    let (settings_tx, settings_rx) = watch::channel(Arc::new(settings.clone()));
    let ctx = job::Ctx {
        settings: settings_rx,
        ledger,
        worker,
        metrics,
        health: health.clone(),
        shutdown: shutdown_rx,
        wake: Arc::new(Notify::new()),
        running: Arc::new(Mutex::new(HashSet::new())),
        disk_full: Arc::new(AtomicBool::new(false)),
    };
    let model_task = tokio::spawn(service::watch_models(ctx.clone()));
    let mut dispatcher = Dispatcher {
        ctx,
        settings_tx,
        config_file,
        slots: Arc::new(Semaphore::new(max_in_flight)),
        jobs: JoinSet::new(),
        tracker: Arc::new(Mutex::new(ingest::Tracker::default())),
        resume,
        pending: None,
    };
    systemd::ready("ready");
    tracing::info!(ingest = %settings.paths.ingest.display(), "ready");
    let mut worker_exit = std::pin::pin!(worker_exited(thread));
    let fatal = tokio::select! {
        _ = dispatcher.run(poke_rx, sig_rx) => None,
        e = &mut worker_exit => Some(e),
    };
    if let Some(e) = &fatal {
        tracing::error!(error = %e, "the inference worker died; stopping so that the service manager restarts the daemon");
        health.raise("worker", Status::Failing, e.to_string());
        systemd::status("the inference worker died");
    }

    // Drain: no new claims; running granules get `shutdown_timeout` to finish.
    tracing::info!(timeout = ?settings.service.shutdown_timeout, "shutting down: draining");
    systemd::stopping();
    health.set_draining();
    let _ = shutdown_tx.send(true);
    let mut jobs = dispatcher.take_jobs();
    drop(dispatcher);
    let drained = tokio::time::timeout(settings.service.shutdown_timeout, async {
        while jobs.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("drained; exiting"),
        Err(_) => tracing::warn!("shutdown_timeout passed; unfinished granules stay claimed and resume at the next start"),
    }
    // Jobs still running are abandoned here: their inputs stay claimed in `work`.
    drop(jobs);
    model_task.abort();
    // The endpoint stops accepting at once; a client that never finishes its request
    // (an idle keep-alive, headers never sent) must not hold the exit up.
    match tokio::time::timeout(HTTP_DRAIN, http_task).await {
        Ok(_) => {}
        Err(_) => tracing::info!("HTTP clients still connected after {HTTP_DRAIN:?}; closing them"),
    }
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Resolves when the worker thread ends: it only ends on its own by dying (a panic
/// outside a job), since the daemon keeps its channel open while running.
async fn worker_exited(thread: std::thread::JoinHandle<()>) -> DaemonError {
    let joined = tokio::task::spawn_blocking(move || thread.join()).await;
    let why = match joined {
        Ok(Ok(())) => "the worker thread exited".to_string(),
        Ok(Err(panic)) => panic
            .downcast_ref::<&str>()
            .map(|s| format!("the worker thread panicked: {s}"))
            .or_else(|| {
                panic
                    .downcast_ref::<String>()
                    .map(|s| format!("the worker thread panicked: {s}"))
            })
            .unwrap_or_else(|| "the worker thread panicked".into()),
        Err(e) => format!("joining the worker thread: {e}"),
    };
    DaemonError::WorkerGone(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_worker_thread_is_noticed() {
        let t = std::thread::spawn(|| panic!("boom in the worker"));
        let e = tokio::time::timeout(Duration::from_secs(10), worker_exited(t))
            .await
            .unwrap();
        assert!(
            matches!(&e, DaemonError::WorkerGone(w) if w.contains("boom")),
            "{e}"
        );
    }
}
