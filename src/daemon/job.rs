//! One claimed granule's life: attempts on the worker, retries with exponential
//! backoff for transient errors, then `done` (input deleted or archived, `on_publish`
//! run) or quarantine with the reason.
//!
//! Each job task holds a semaphore permit (the `max_in_flight` bound) and runs in the
//! dispatcher's `JoinSet`, which the shutdown drains. A shutdown during a backoff
//! abandons the wait; the input stays claimed in `work` and the next start resumes it.
//! Ledger writes and file moves run on the blocking pool.
//!
//! Supervision:
//! - an error of the daemon's own inside a job (a busy ledger, a failed quarantine move)
//!   is retried with backoff, with `/healthz` degraded (`jobs`) until a job finishes
//!   again, never left wedged in `work` until a restart;
//! - before the first attempt the input's tree is checked ([`tree::check_contained`]):
//!   a link, FIFO, device or hard-linked file is quarantined before anything is opened;
//! - a full output disk (`ENOSPC`, `EDQUOT`) is not the granule's fault: the attempt is
//!   taken back, intake pauses (`/healthz` failing, `disk`), and the job retries until
//!   space returns;
//! - attempts cut off by a crash count as `crashes` (see [`super::ledger`]), quarantined
//!   only past [`CRASH_LIMIT`];
//! - `s2edge ledger requeue` on a granule in backoff (the row turns `queued`) ends the
//!   wait at once, with its attempts reset.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{oneshot, watch, Notify, OwnedSemaphorePermit};

use crate::config::Settings;
use crate::granule::{tree, GranuleId};
use crate::pipeline::process::ProcessReport;

use super::claim::{dispose, Claimed};
use super::error::DaemonError;
use super::health::{Health, Status};
use super::ledger::{GranuleState, Ledger};
use super::metrics::Metrics;
use super::quarantine::{quarantine, Reason};
use super::worker::{model_labels, Job, Request, WorkerHandle};
use super::{blocking, systemd};

/// Attempts cut off by the daemon stopping (SIGKILL, OOM kill, power cut) after which a
/// granule is quarantined as the likely cause.
pub const CRASH_LIMIT: u32 = 8;

/// How often a waiting job looks for an operator's `ledger requeue`.
const REQUEUE_POLL: Duration = Duration::from_secs(1);

/// What every job task shares.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The current configuration (replaced on SIGHUP).
    pub settings: watch::Receiver<Arc<Settings>>,
    /// The ledger.
    pub ledger: Arc<Ledger>,
    /// The inference worker.
    pub worker: WorkerHandle,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `/healthz`.
    pub health: Arc<Health>,
    /// Flips to `true` on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// Wakes the dispatcher when a slot frees up.
    pub wake: Arc<Notify>,
    /// Ids of the granules a job task holds (so the dispatcher can tell a requeued
    /// row nobody works on from one in flight).
    pub running: Arc<Mutex<HashSet<String>>>,
    /// Set while the output disk is full: the dispatcher claims nothing new.
    pub disk_full: Arc<AtomicBool>,
}

impl Ctx {
    /// The configuration now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.borrow().clone()
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether an error message is a full disk or exhausted quota (not the granule's fault).
pub fn is_disk_full(message: &str) -> bool {
    message.contains("os error 28")
        || message.contains("os error 122")
        || message.contains("No space left on device")
        || message.contains("Disk quota exceeded")
}

/// The wait before retry number `attempt` (1-based): `base · 2^(attempt−1)`, at most
/// `max`.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
    base.saturating_mul(factor).min(max)
}

/// Sleeps `delay` unless a shutdown comes first; returns whether the full delay passed.
pub async fn wait_or_shutdown(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.changed() => false,
    }
}

/// Runs one claimed granule to its end (or until a shutdown); see the module docs.
pub async fn run(ctx: Ctx, id: GranuleId, claimed: Claimed, permit: OwnedSemaphorePermit) {
    use tracing::Instrument;
    let idstr = id.to_string();
    // Every log line of this granule's job carries its id.
    let span = tracing::info_span!("granule", id = %idstr);
    ctx.running().insert(idstr.clone());
    let mut shutdown = ctx.shutdown.clone();
    let mut round = 0u32;
    loop {
        match run_inner(&ctx, &id, &claimed)
            .instrument(span.clone())
            .await
        {
            Ok(()) => break,
            Err(DaemonError::WorkerGone(why)) => {
                // The service is going down (serve exits non-zero); the input stays
                // claimed and the next start resumes it.
                tracing::error!(granule = %idstr, reason = %why, "job stopped: the worker is gone");
                break;
            }
            Err(e) => {
                round += 1;
                let settings = ctx.settings();
                let delay = backoff(
                    round,
                    settings.service.retry_backoff,
                    settings.service.retry_backoff_max,
                );
                tracing::error!(granule = %idstr, error = %e, retry_in = ?delay, "job failed on the daemon's side; retrying");
                ctx.metrics.inc("s2edge_job_errors_total", &[]);
                ctx.health
                    .raise("jobs", Status::Degraded, format!("{idstr}: {e} (retrying)"));
                if !wait_or_shutdown(delay, &mut shutdown).await {
                    break;
                }
            }
        }
    }
    ctx.running().remove(&idstr);
    drop(permit);
    ctx.wake.notify_one();
}

/// Waits `delay`, ending early on shutdown (returns `false`) or when an operator
/// requeued the granule (its row turned `queued`; returns `true`).
async fn wait_backoff(
    ctx: &Ctx,
    id: &str,
    delay: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return true;
        }
        let step = (deadline - now).min(REQUEUE_POLL);
        if !wait_or_shutdown(step, shutdown).await {
            return false;
        }
        let (l, i) = (ctx.ledger.clone(), id.to_string());
        if let Ok(Ok(Some(row))) = blocking(move || l.get(&i)).await {
            if row.state == GranuleState::Queued {
                tracing::info!(granule = %id, "requeued by the operator; retrying now");
                return true;
            }
        }
    }
}

async fn run_inner(ctx: &Ctx, id: &GranuleId, claimed: &Claimed) -> Result<(), DaemonError> {
    let idstr = id.to_string();
    let ledger = ctx.ledger.clone();
    let row = {
        let (l, i) = (ledger.clone(), idstr.clone());
        blocking(move || l.get(&i)).await??
    };
    let ready_at = row.as_ref().and_then(|r| r.ready_at);
    let crashes = row.as_ref().map_or(0, |r| r.crashes);
    let claimed_at = std::time::Instant::now();
    let mut shutdown = ctx.shutdown.clone();
    if crashes >= CRASH_LIMIT {
        let settings = ctx.settings();
        let why = format!(
            "gave up: the daemon stopped or crashed during {crashes} attempts on this granule \
             (crash limit {CRASH_LIMIT})"
        );
        return to_quarantine(ctx, &settings, id, claimed, why, crashes).await;
    }
    // Nothing of the input is opened before its tree is known to be its own.
    let input = claimed.input.clone();
    if let Err(e) = blocking(move || tree::check_contained(&input)).await? {
        let settings = ctx.settings();
        return to_quarantine(ctx, &settings, id, claimed, e.to_string(), 0).await;
    }
    loop {
        let settings = ctx.settings();
        let attempt = {
            let (l, i) = (ledger.clone(), idstr.clone());
            blocking(move || l.start(&i)).await??
        };
        if let (1, Some(t)) = (attempt, ready_at) {
            let latency = (Utc::now() - t).num_milliseconds().max(0) as f64 / 1e3;
            ctx.metrics
                .observe("s2edge_ready_to_start_seconds", &[], latency);
        }
        tracing::info!(granule = %idstr, attempt, "processing");
        systemd::status(&format!("processing {idstr}"));
        let (tx, rx) = oneshot::channel();
        ctx.worker
            .submit(Request::Process(Job {
                id: id.clone(),
                input: claimed.input.clone(),
                out_dir: settings.paths.output.clone(),
                reply: tx,
            }))
            .await?;
        let result = rx
            .await
            .map_err(|_| DaemonError::WorkerGone("no reply to a job".into()))?;
        match result {
            Ok(report) => {
                tracing::info!(
                    granule = %idstr,
                    product = %report.product.display(),
                    seconds = claimed_at.elapsed().as_secs_f64(),
                    "published"
                );
                ctx.metrics.observe(
                    "s2edge_granule_seconds",
                    &[],
                    claimed_at.elapsed().as_secs_f64(),
                );
                if ctx.disk_full.swap(false, Ordering::SeqCst) {
                    tracing::info!("output disk has space again; intake resumes");
                    ctx.health.clear("disk");
                    ctx.wake.notify_one();
                }
                return finish(ctx, &settings, id, claimed, report).await;
            }
            Err(f) if is_disk_full(&f.message) => {
                let delay = settings.service.retry_backoff;
                tracing::warn!(granule = %idstr, error = %f.message, retry_in = ?delay, "output disk full: intake paused; the attempt does not count");
                ctx.disk_full.store(true, Ordering::SeqCst);
                ctx.health.raise(
                    "disk",
                    Status::Failing,
                    format!("paused: disk full ({})", f.message),
                );
                let (l, i, m) = (ledger.clone(), idstr.clone(), f.message.clone());
                blocking(move || l.refund(&i, &m)).await??;
                if !wait_backoff(ctx, &idstr, delay, &mut shutdown).await {
                    tracing::info!(granule = %idstr, "shutdown while the disk is full; it stays claimed");
                    return Ok(());
                }
            }
            Err(f) if f.transient && attempt <= settings.service.retry_limit => {
                let delay = backoff(
                    attempt,
                    settings.service.retry_backoff,
                    settings.service.retry_backoff_max,
                );
                tracing::warn!(granule = %idstr, attempt, error = %f.message, retry_in = ?delay, "transient failure; will retry");
                ctx.metrics
                    .inc("s2edge_granules_total", &[("outcome", "retried")]);
                let (l, i, m) = (ledger.clone(), idstr.clone(), f.message.clone());
                blocking(move || l.failed(&i, &m)).await??;
                if !wait_backoff(ctx, &idstr, delay, &mut shutdown).await {
                    tracing::info!(granule = %idstr, "shutdown during backoff; it stays claimed");
                    return Ok(());
                }
            }
            Err(f) => {
                let why = if f.transient {
                    format!(
                        "{} (transient, but {} retries are exhausted)",
                        f.message, settings.service.retry_limit
                    )
                } else {
                    f.message
                };
                return to_quarantine(ctx, &settings, id, claimed, why, attempt).await;
            }
        }
    }
}

/// Records success: ledger, metrics, input disposal, `on_publish`.
async fn finish(
    ctx: &Ctx,
    settings: &Settings,
    id: &GranuleId,
    claimed: &Claimed,
    report: ProcessReport,
) -> Result<(), DaemonError> {
    {
        // Walks the input and the product: file I/O, off the async threads.
        let (m, input, product) = (
            ctx.metrics.clone(),
            claimed.input.clone(),
            report.product.clone(),
        );
        blocking(move || m.record_io(&input, &product)).await?;
    }
    let m = &ctx.metrics;
    for (stage, secs) in &report.timings {
        m.observe("s2edge_stage_seconds", &[("stage", stage)], *secs);
    }
    for (status, n) in &report.patches {
        m.add("s2edge_patches_total", &[("status", status)], *n as f64);
    }
    m.add(
        "s2edge_superres_pixels_total",
        &[],
        report.superres_pixels as f64,
    );
    m.inc("s2edge_granules_total", &[("outcome", "done")]);
    let mut models = report.models.clone();
    models.sort();
    // The ledger's copy of the versions is what re-delivery compares with the models
    // in use; prefer the worker's labels when the report lists none (no stage ran).
    if models.is_empty() {
        models = model_labels(&ctx.health.models());
    }
    let (l, i, p) = (ctx.ledger.clone(), id.to_string(), report.product.clone());
    blocking(move || l.done(&i, &p, &models)).await??;
    let (c, after, archive) = (
        claimed.clone(),
        settings.ingest.after,
        settings.paths.archive.clone(),
    );
    if let Err(e) = blocking(move || dispose(&c, after, &archive)).await? {
        // The product is safe; the input lingers in work and is disposed at the next start.
        tracing::warn!(granule = %id, error = %e, "could not dispose of the input");
    }
    ctx.health.clear("jobs");
    run_on_publish(ctx, &settings.service.on_publish, &report.product).await;
    systemd::status("idle");
    Ok(())
}

/// Runs `[service] on_publish` (no shell); a failure is logged and counted, the product
/// stays published.
async fn run_on_publish(ctx: &Ctx, command: &[String], product: &std::path::Path) {
    let Some((prog, args)) = command.split_first() else {
        return;
    };
    let product = product.display().to_string();
    let prog = prog.replace("{product}", &product);
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{product}", &product))
        .collect();
    let shown = format!("{prog} {}", args.join(" "));
    let result = blocking(move || std::process::Command::new(&prog).args(&args).status()).await;
    let failure = match result {
        Ok(Ok(s)) if s.success() => None,
        Ok(Ok(s)) => Some(format!("exited with {s}")),
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    match failure {
        None => ctx.health.clear("on_publish"),
        Some(why) => {
            tracing::warn!(command = %shown, error = %why, "on_publish failed; the product is published regardless");
            ctx.metrics.inc("s2edge_on_publish_failures_total", &[]);
            ctx.health
                .raise("on_publish", Status::Degraded, format!("`{shown}` {why}"));
        }
    }
}

/// Moves a claimed input to quarantine and records it.
pub async fn to_quarantine(
    ctx: &Ctx,
    settings: &Settings,
    id: &GranuleId,
    claimed: &Claimed,
    why: String,
    attempts: u32,
) -> Result<(), DaemonError> {
    tracing::error!(granule = %id, attempts, reason = %why, "quarantined");
    quarantine_blocking(
        &ctx.ledger,
        settings.paths.quarantine.clone(),
        id.to_string(),
        claimed.clone(),
        why,
        attempts,
    )
    .await?;
    ctx.metrics
        .inc("s2edge_granules_total", &[("outcome", "quarantined")]);
    ctx.health.clear("jobs");
    systemd::status("idle");
    Ok(())
}

/// Quarantines `claimed` under `name` and records it in the ledger (blocking pool).
///
/// # Errors
/// [`DaemonError::Io`] when the move fails (the input then stays in `work`), or a
/// ledger error.
pub async fn quarantine_blocking(
    ledger: &Arc<Ledger>,
    root: PathBuf,
    name: String,
    claimed: Claimed,
    why: String,
    attempts: u32,
) -> Result<(), DaemonError> {
    let ledger = ledger.clone();
    blocking(move || {
        let reason = Reason {
            error: why.clone(),
            attempts,
            at: Utc::now(),
            source: claimed.source.clone(),
        };
        quarantine(
            &root,
            &name,
            &claimed.input,
            claimed.marker.as_deref(),
            &reason,
        )
        .map_err(|e| DaemonError::io(&claimed.input, e))?;
        ledger.quarantined(&name, &claimed.source, &why)?;
        Ok(())
    })
    .await?
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (b, m) = (Duration::from_secs(30), Duration::from_secs(600));
        let got: Vec<u64> = (1..=7).map(|a| backoff(a, b, m).as_secs()).collect();
        assert_eq!(got, vec![30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(backoff(200, b, m), m);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_wait_runs_its_full_delay_unless_shut_down() {
        let (tx, mut rx) = watch::channel(false);
        let start = tokio::time::Instant::now();
        let delay = backoff(3, Duration::from_secs(30), Duration::from_secs(600));
        assert!(wait_or_shutdown(delay, &mut rx).await);
        assert_eq!(start.elapsed(), Duration::from_secs(120));
        // A shutdown 10 s into the next wait ends it there.
        let start = tokio::time::Instant::now();
        let waiter =
            tokio::spawn(async move { wait_or_shutdown(Duration::from_secs(240), &mut rx).await });
        tokio::time::sleep(Duration::from_secs(10)).await;
        tx.send(true).unwrap();
        assert!(!waiter.await.unwrap());
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[test]
    fn disk_full_is_recognised_in_error_chains() {
        assert!(is_disk_full(
            "writing out/.g.tmp-1-0/superres.tif: No space left on device (os error 28)"
        ));
        assert!(is_disk_full("x: Disk quota exceeded (os error 122)"));
        assert!(!is_disk_full("x: Permission denied (os error 13)"));
    }

    /// `s2edge ledger requeue` on a granule waiting out a long backoff used to reset the
    /// row only; the waiting job now sees it and retries within a second.
    #[tokio::test]
    async fn a_requeue_ends_a_backoff_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::open_in(dir.path()).unwrap());
        ledger
            .claimed("g", Path::new("/in/g"), Path::new("/work/g"), None)
            .unwrap();
        ledger.start("g").unwrap();
        ledger.failed("g", "transient").unwrap();
        let settings = Settings::load(None).unwrap();
        let (worker, _thread) = super::super::worker::spawn(
            crate::model::set::ModelSet::default(),
            crate::pipeline::process::ProcessOptions::from_settings(&settings),
            1,
            Arc::new(Health::default()),
            Arc::new(Metrics::default()),
        )
        .unwrap();
        let (_stx, srx) = watch::channel(Arc::new(settings));
        let (_dtx, shutdown) = watch::channel(false);
        let ctx = Ctx {
            settings: srx,
            ledger: ledger.clone(),
            worker,
            metrics: Arc::new(Metrics::default()),
            health: Arc::new(Health::default()),
            shutdown,
            wake: Arc::new(Notify::new()),
            running: Arc::default(),
            disk_full: Arc::default(),
        };
        let t = std::time::Instant::now();
        let waiter = {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let mut sd = ctx.shutdown.clone();
                wait_backoff(&ctx, "g", Duration::from_secs(600), &mut sd).await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let l = ledger.clone();
        blocking(move || l.requeue("g", Some(Path::new("/work/g"))))
            .await
            .unwrap()
            .unwrap();
        assert!(waiter.await.unwrap(), "the wait must end as a retry");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(ledger.start("g").unwrap(), 1, "attempts start over");
    }
}
