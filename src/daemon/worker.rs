//! The inference worker: a dedicated OS thread that owns the models and runs
//! [`process_granule`] — the very pipeline `s2edge process` runs — for jobs arriving on a
//! bounded channel. Reading, inference and product writing all happen off the async
//! threads. Each model of the [`ModelSet`] is put behind its own pool of
//! `[runtime] inference_workers` threads ([`PooledSet::from_set`]), so the strip loop
//! prepares the next batch while a worker runs the current one, as in `s2edge process`.
//!
//! When the next job arrives while one runs (the pipeline's progress callbacks look), its
//! granule is opened and the reader thread of its first window started at once
//! ([`open_reads`]), so decoding its first strip overlaps this granule's inference.
//!
//! Model swaps arrive on the same channel as jobs, so a swap happens between granules,
//! never during one (a job opened ahead is opened with the models that run it). A panic inside the pipeline is caught and reported as a permanent
//! failure of that granule; the thread carries on. While idle the thread wakes every
//! watchdog half-period to ping systemd, so `WatchdogSec` proves this loop is alive;
//! while busy, the pipeline's per-batch progress callback pings it.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::granule::{GranuleId, GranuleSource};
use crate::model::session::LoadedModel;
use crate::model::set::ModelSet;
use crate::pipeline::pooled::PooledSet;
use crate::pipeline::process::{
    open_reads, plan_reads, process_opened, Input, ProcessOptions, ProcessReport, Progress, Reads,
};
use crate::pipeline::PipelineError;

use super::error::DaemonError;
use super::health::{Health, ModelInUse};
use super::metrics::Metrics;
use super::systemd;

/// Why a job failed.
#[derive(Debug, Clone)]
pub struct JobFailure {
    /// Whether a retry may succeed.
    pub transient: bool,
    /// The error with its chain.
    pub message: String,
}

/// One granule to process.
#[derive(Debug)]
pub struct Job {
    /// Its id.
    pub id: GranuleId,
    /// The claimed input in `work`.
    pub input: PathBuf,
    /// `[paths] output`.
    pub out_dir: PathBuf,
    /// Where the result goes.
    pub reply: oneshot::Sender<Result<ProcessReport, JobFailure>>,
}

/// A message to the worker.
#[derive(Debug)]
pub enum Request {
    /// Process a granule.
    Process(Job),
    /// Swap in new models and/or options (between granules).
    Configure {
        /// New models; `None` keeps the current ones.
        models: Option<Box<ModelSet>>,
        /// The options from now on.
        options: ProcessOptions,
    },
}

/// The sending side; cloneable.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    tx: SyncSender<Request>,
}

impl WorkerHandle {
    /// Sends `req`, waiting (off the async threads) when the channel is full.
    ///
    /// # Errors
    /// [`DaemonError::WorkerGone`] when the worker thread has exited.
    pub async fn submit(&self, req: Request) -> Result<(), DaemonError> {
        match self.tx.try_send(req) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => {
                Err(DaemonError::WorkerGone("channel closed".into()))
            }
            Err(TrySendError::Full(req)) => {
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || tx.send(req))
                    .await
                    .map_err(|e| DaemonError::WorkerGone(e.to_string()))?
                    .map_err(|_| DaemonError::WorkerGone("channel closed".into()))
            }
        }
    }
}

/// The error and its causes, joined with `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The models of `set` as `/healthz` and the metrics show them.
pub fn models_in_use(set: &ModelSet) -> Vec<ModelInUse> {
    let roles: [(&str, &Option<LoadedModel>); 3] = [
        ("classifier", &set.classifier),
        ("superres_2x", &set.superres_2x),
        ("superres_6x", &set.superres_6x),
    ];
    roles
        .into_iter()
        .filter_map(|(role, m)| {
            m.as_ref().map(|m| ModelInUse {
                role: role.to_string(),
                model: m.label(),
                provider: m.provider.to_string(),
                sha256: m.spec.onnx_sha256.clone(),
                precision: m.graph.precision.to_string(),
            })
        })
        .collect()
}

/// Model versions (`name@version`), sorted: what the ledger compares for re-delivery.
pub fn model_labels(models: &[ModelInUse]) -> Vec<String> {
    let mut v: Vec<String> = models.iter().map(|m| m.model.clone()).collect();
    v.sort();
    v
}

fn publish_models(set: &ModelSet, health: &Health, metrics: &Metrics) {
    let models = models_in_use(set);
    metrics.clear("s2edge_model_info");
    for m in &models {
        let (name, version) = m.model.split_once('@').unwrap_or((&m.model, ""));
        metrics.set(
            "s2edge_model_info",
            &[
                ("role", &m.role),
                ("model", name),
                ("version", version),
                ("provider", &m.provider),
                ("precision", &m.precision),
            ],
            1.0,
        );
    }
    health.set_models(models);
}

/// Pings the watchdog at most once per period from the pipeline's progress callbacks,
/// and on each callback looks whether the next job has arrived: if it has, its granule is
/// opened at once ([`LookAhead`]).
struct WatchdogProgress<'a> {
    period: Option<Duration>,
    last: Instant,
    look_ahead: LookAhead<'a>,
}

impl WatchdogProgress<'_> {
    fn tick(&mut self) {
        if let Some(p) = self.period {
            if self.last.elapsed() >= p {
                systemd::watchdog();
                self.last = Instant::now();
            }
        }
        self.look_ahead.poll();
    }
}

/// The request after the current job, taken off the channel as soon as it arrives, and,
/// when it is a job, its granule opened ahead with what the current models read (a
/// swap cannot come between: it would be that next request). Its reader then decodes the
/// first strip while the current granule is inferred.
struct LookAhead<'a> {
    rx: &'a Receiver<Request>,
    next: &'a mut Option<Request>,
    ahead: &'a mut Option<(PathBuf, Result<Opened, PipelineError>)>,
    reads: &'a Reads,
    options: &'a ProcessOptions,
}

impl LookAhead<'_> {
    fn poll(&mut self) {
        if self.next.is_some() {
            return;
        }
        let Ok(r) = self.rx.try_recv() else {
            return;
        };
        if let Request::Process(j) = &r {
            tracing::info!(next = %j.id, "next granule opened ahead: its first strip is decoded during this one's inference");
            // A panic while opening it belongs to that job, not to the current one.
            let opened = std::panic::catch_unwind(AssertUnwindSafe(|| {
                open_job(&j.input, self.reads, self.options)
            }))
            .unwrap_or_else(|panic| {
                Err(PipelineError::Options(format!(
                    "internal error (panic) while opening: {}",
                    panic_text(&*panic)
                )))
            });
            *self.ahead = Some((j.input.clone(), opened));
        }
        *self.next = Some(r);
    }
}

impl Progress for WatchdogProgress<'_> {
    fn start(&mut self, stage: &str, total: usize) {
        tracing::debug!(stage, total, "stage started");
        self.tick();
    }
    fn update(&mut self, _done: usize) {
        self.tick();
    }
    fn finish(&mut self) {
        self.tick();
    }
}

/// Starts the worker thread owning `models`; `capacity` bounds the channel.
///
/// # Errors
/// [`DaemonError::Start`] when the thread cannot be spawned.
pub fn spawn(
    models: ModelSet,
    options: ProcessOptions,
    capacity: usize,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> Result<(WorkerHandle, std::thread::JoinHandle<()>), DaemonError> {
    let (tx, rx) = sync_channel(capacity.max(1));
    publish_models(&models, &health, &metrics);
    let thread = std::thread::Builder::new()
        .name("s2edge-worker".into())
        .spawn(move || run(rx, models, options, health, metrics))
        .map_err(|source| DaemonError::Start {
            what: "the inference worker thread",
            source,
        })?;
    Ok((WorkerHandle { tx }, thread))
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// A granule opened for processing, ahead of its turn or at it.
type Opened = (GranuleSource, Input);

/// Opens the granule at `input` and starts reading what `reads` says.
fn open_job(
    input: &std::path::Path,
    reads: &Reads,
    options: &ProcessOptions,
) -> Result<Opened, PipelineError> {
    let source = GranuleSource::open(input)?;
    let opened = open_reads(&source, reads, options)?;
    Ok((source, opened))
}

/// The models behind their worker pools, or why they could not be started.
fn pooled(models: ModelSet, workers: usize) -> Result<PooledSet, String> {
    PooledSet::from_set(models, workers).map_err(|e| {
        let e = error_chain(&e);
        tracing::error!(error = %e, "cannot start the inference workers");
        e
    })
}

fn run(
    rx: Receiver<Request>,
    models: ModelSet,
    mut options: ProcessOptions,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) {
    let mut models = pooled(models, options.inference_workers);
    let period = systemd::watchdog_period();
    let idle_wake = period.unwrap_or(Duration::from_secs(3600));
    // The request after the current job, taken off the channel early, and that job's
    // input opened ahead (its reader already decoding its first strip).
    let mut next: Option<Request> = None;
    let mut ahead: Option<(PathBuf, Result<Opened, PipelineError>)> = None;
    loop {
        let req = match next.take() {
            Some(r) => r,
            None => match rx.recv_timeout(idle_wake) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    systemd::watchdog();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        match req {
            Request::Configure {
                models: new,
                options: o,
            } => {
                let workers_changed = o.inference_workers != options.inference_workers;
                options = o;
                if let Some(new) = new {
                    publish_models(&new, &health, &metrics);
                    tracing::info!(models = ?model_labels(&models_in_use(&new)), "models swapped in");
                    // The old pools are dropped (their threads joined) before new ones start.
                    drop(std::mem::replace(
                        &mut models,
                        Err("models are being swapped".into()),
                    ));
                    models = pooled(*new, options.inference_workers);
                } else if workers_changed {
                    tracing::warn!(
                        "inference_workers changed: it takes effect with the next model swap"
                    );
                }
            }
            Request::Process(job) => {
                // Every event of the pipeline (stage warnings, model fallbacks) carries the
                // granule it is about.
                let _span = tracing::info_span!("granule", id = %job.id).entered();
                let opened = match ahead.take() {
                    Some((input, opened)) if input == job.input => Some(opened),
                    _ => None,
                };
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let set = models.as_mut().map_err(|e| {
                        PipelineError::Model(crate::model::ModelError::Inference {
                            model: "inference workers".into(),
                            reason: e.clone(),
                        })
                    })?;
                    let reads = plan_reads(&set.models(), &options)?;
                    let (source, input) = match opened {
                        Some(o) => o?,
                        None => open_job(&job.input, &reads, &options)?,
                    };
                    let mut progress = WatchdogProgress {
                        period,
                        last: Instant::now(),
                        look_ahead: LookAhead {
                            rx: &rx,
                            next: &mut next,
                            ahead: &mut ahead,
                            reads: &reads,
                            options: &options,
                        },
                    };
                    // A job already queued is opened before this one's first strip.
                    progress.look_ahead.poll();
                    let mut m = set.models();
                    process_opened(
                        &source,
                        Some(input),
                        &mut m,
                        &options,
                        &job.out_dir,
                        &mut progress,
                    )
                }));
                let result = match result {
                    Ok(Ok(report)) => Ok(report),
                    Ok(Err(e)) => Err(JobFailure {
                        transient: e.is_transient(),
                        message: error_chain(&e),
                    }),
                    Err(panic) => {
                        let what = panic_text(&*panic);
                        tracing::error!(granule = %job.id, panic = %what, "the pipeline panicked");
                        Err(JobFailure {
                            transient: false,
                            message: format!("internal error (panic): {what}"),
                        })
                    }
                };
                systemd::watchdog();
                // The job's task may have given up (shutdown deadline): nothing to tell.
                let _ = job.reply.send(result);
            }
        }
    }
}
