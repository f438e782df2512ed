//! The dispatcher: scans the ingest directory (on inotify pokes, debounced, and every
//! `rescan_interval`), claims complete inputs while a slot is free, and starts one job
//! task per claim. Also the model watcher task and SIGHUP reloads.
//!
//! Backpressure: a slot (semaphore permit) is taken *before* a claim, so when
//! `max_in_flight` granules are in flight nothing more is claimed: the backlog waits on
//! disk in the ingest directory, never in memory. Inputs found in `work` at startup are
//! resumed first.
//!
//! Supervision: job tasks run in a `JoinSet` (a panicking job is reported, its slot
//! freed); intake pauses while the output disk is full or the ledger file was deleted
//! under the daemon; each loop turn pings the systemd watchdog only while the worker
//! thread is alive too ([`systemd::service_ping`]). At startup [`Dispatcher::recover`]
//! reconciles the ledger's unfinished rows with `work/` and `quarantine/`.
//!
//! SIGHUP: the new options and the models they need change together. When the model
//! selection, the models directory or a `[runtime]` key the sessions are built with
//! (providers, threads, memory pattern) changed, the new set is loaded and tested first
//! and handed to the worker with the options in one message; while it cannot load (a
//! model not yet installed) the running configuration stays, `/healthz` says why, and
//! the reload is retried.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Settings;
use crate::granule::GranuleId;
use crate::model::ThreadPool;
use crate::pipeline::process::ProcessOptions;

use super::claim::{claim, dispose, ClaimOutcome, Claimed};
use super::error::DaemonError;
use super::health::Status;
use super::ingest::{is_entry_name, scan, Candidate, Rules, Tracker, Verdict};
use super::job::{self, quarantine_blocking, Ctx};
use super::ledger::{GranuleState, Ledger};
use super::models::{load_validated, ModelWatch};
use super::quarantine::{quarantine, Reason, REASON_FILE};
use super::signals::Request as Signal;
use super::worker::{model_labels, models_in_use, Request};
use super::{blocking, systemd};

/// How long pokes are collected before a scan: a copy fires many events at once.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Waits for the first poke, then keeps absorbing pokes until `window` passes without
/// one (bounded at 10 windows, so a continuous trickle cannot starve the scan). Returns
/// `false` when the channel is closed.
pub async fn debounce(rx: &mut mpsc::Receiver<()>, window: Duration) -> bool {
    if rx.recv().await.is_none() {
        return false;
    }
    let deadline = Instant::now() + window * 10;
    loop {
        let wait = tokio::time::sleep(window);
        tokio::select! {
            p = rx.recv() => if p.is_none() { return false },
            _ = wait => return true,
        }
        if Instant::now() >= deadline {
            return true;
        }
    }
}

fn rules(s: &Settings) -> Rules {
    Rules {
        ready: s.ingest.ready,
        quiet_period: s.ingest.quiet_period,
        incomplete_timeout: s.ingest.incomplete_timeout,
        verify_checksums: s.ingest.verify_checksums,
    }
}

/// What the claim step decided for one ready input.
enum Taken {
    Job(GranuleId, Claimed),
    Duplicate(String),
    Skipped,
    Quarantined(String),
}

/// The dispatcher's state.
pub struct Dispatcher {
    /// Shared with the jobs.
    pub ctx: Ctx,
    /// Publishes configuration changes.
    pub settings_tx: watch::Sender<Arc<Settings>>,
    /// The `--config` file, reread on SIGHUP.
    pub config_file: Option<PathBuf>,
    /// The `max_in_flight` slots.
    pub slots: Arc<Semaphore>,
    /// The job tasks; the shutdown drains them.
    pub jobs: JoinSet<()>,
    /// Per-entry readiness memory.
    pub tracker: Arc<Mutex<Tracker>>,
    /// Claimed inputs found in `work` at startup (or requeued while nobody held them).
    pub resume: VecDeque<Claimed>,
    /// A reloaded configuration waiting for its models to load.
    pub pending: Option<Settings>,
}

impl Dispatcher {
    /// Lists `work` at startup: inputs of `done` granules are disposed of (a crash came
    /// between the ledger write and the disposal), the others re-queued.
    ///
    /// # Errors
    /// [`DaemonError::Io`] when `work` cannot be listed; ledger errors.
    pub fn recover(settings: &Settings, ledger: &Ledger) -> Result<VecDeque<Claimed>, DaemonError> {
        let work = &settings.paths.work;
        let mut out = VecDeque::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(work)
            .map_err(|e| DaemonError::io(work, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(is_entry_name))
            .map(|e| e.path())
            .collect();
        entries.sort();
        for input in entries {
            let claimed = Claimed::in_work(input.clone());
            let Ok(id) = GranuleId::from_path(&input) else {
                out.push_back(claimed);
                continue;
            };
            match ledger.get(id.as_str())? {
                Some(row) if row.state == GranuleState::Done => {
                    tracing::info!(granule = %id, "input of a done granule left in work; disposing of it");
                    if let Err(e) =
                        dispose(&claimed, settings.ingest.after, &settings.paths.archive)
                    {
                        tracing::warn!(granule = %id, error = %e, "could not dispose of the input");
                    }
                }
                _ => {
                    let crashes = ledger.resume(id.as_str(), &input)?;
                    tracing::info!(granule = %id, crashes, "resuming a granule claimed before the restart");
                    out.push_back(claimed);
                }
            }
        }
        Self::reconcile(settings, ledger)?;
        Ok(out)
    }

    /// Rows the ledger calls unfinished whose input is no longer in `work`: a crash
    /// between the quarantine move and its ledger write (the input is in `quarantine/`:
    /// recorded so), or an input removed by hand (recorded as lost). Afterwards every
    /// unfinished row has its input in `work`.
    ///
    /// # Errors
    /// Ledger errors.
    pub fn reconcile(settings: &Settings, ledger: &Ledger) -> Result<(), DaemonError> {
        for row in ledger.unfinished()? {
            let Some(work_path) = &row.work_path else {
                continue;
            };
            if std::fs::symlink_metadata(work_path).is_ok() {
                continue;
            }
            let reason = settings.paths.quarantine.join(&row.id).join(REASON_FILE);
            if let Ok(text) = std::fs::read_to_string(&reason) {
                let error = text
                    .lines()
                    .find_map(|l| l.strip_prefix("error: "))
                    .unwrap_or("see reason.txt")
                    .to_string();
                tracing::warn!(granule = %row.id, "found in quarantine at startup; recording it");
                ledger.quarantined(&row.id, &row.source, &error)?;
            } else {
                let why = format!(
                    "the input vanished from {} before the granule finished",
                    work_path.display()
                );
                tracing::error!(granule = %row.id, reason = %why, "unfinished granule without its input");
                ledger.lost(&row.id, &why)?;
            }
        }
        Ok(())
    }

    /// Runs until a shutdown signal; returns when the dispatcher stops taking work.
    pub async fn run(
        &mut self,
        mut pokes: mpsc::Receiver<()>,
        mut signals: mpsc::Receiver<Signal>,
    ) {
        let mut pokes_open = true;
        let ping = systemd::watchdog_period().unwrap_or(Duration::from_secs(3600));
        loop {
            self.round().await;
            systemd::service_ping();
            let rescan = self.ctx.settings().ingest.rescan_interval;
            tokio::select! {
                sig = signals.recv() => match sig {
                    Some(Signal::Reload) => self.reload().await,
                    Some(Signal::Shutdown) | None => return,
                },
                open = debounce(&mut pokes, DEBOUNCE), if pokes_open => pokes_open = open,
                Some(ended) = self.jobs.join_next(), if !self.jobs.is_empty() => {
                    if let Err(e) = ended {
                        tracing::error!(error = %e, "a job task panicked; its input stays claimed and is retried");
                        self.ctx.health.raise("jobs", Status::Degraded, format!("a job task panicked: {e}"));
                        self.requeue_orphans().await;
                    }
                },
                _ = tokio::time::sleep(rescan) => {},
                _ = tokio::time::sleep(ping) => {},
                _ = self.ctx.wake.notified() => {},
            }
        }
    }

    /// The job tasks, for the shutdown to drain.
    pub fn take_jobs(&mut self) -> JoinSet<()> {
        std::mem::take(&mut self.jobs)
    }

    /// Queues again the rows that are `queued` with their input in `work` but held by
    /// no job (a job task that panicked, or `s2edge ledger requeue` on one nobody
    /// works on).
    async fn requeue_orphans(&mut self) {
        let l = self.ctx.ledger.clone();
        let Ok(Ok(rows)) = blocking(move || l.unfinished()).await else {
            return;
        };
        let running = self
            .ctx
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for row in rows {
            let Some(work_path) = row.work_path else {
                continue;
            };
            let queued = self.resume.iter().any(|c| c.input == work_path);
            if row.state == GranuleState::Queued
                && !running.contains(&row.id)
                && !queued
                && work_path.exists()
            {
                tracing::info!(granule = %row.id, "queued in the ledger but held by no job; resuming it");
                self.resume.push_back(Claimed::in_work(work_path));
            }
        }
    }

    fn in_flight(&self) -> usize {
        let max = self.ctx.settings().service.max_in_flight;
        max.saturating_sub(self.slots.available_permits())
    }

    fn start_job(
        &mut self,
        id: GranuleId,
        claimed: Claimed,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let ctx = self.ctx.clone();
        // Marked running now, so `requeue_orphans` never doubles a job just started.
        ctx.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
        self.jobs.spawn(job::run(ctx, id, claimed, permit));
    }

    /// Whether intake must pause, raising or clearing the health problems that say why.
    fn intake_paused(&self) -> bool {
        if !self.ctx.ledger.file_intact() {
            self.ctx.health.raise(
                "ledger",
                Status::Failing,
                format!(
                    "{} was deleted or replaced under the running daemon: intake stopped \
                     (restart the service once the ledger is restored)",
                    self.ctx.ledger.path().display()
                ),
            );
            return true;
        }
        self.ctx.disk_full.load(Ordering::SeqCst)
    }

    /// One scan-and-claim round.
    async fn round(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.apply(pending).await;
        }
        if self.intake_paused() {
            self.publish_gauges(0).await;
            return;
        }
        self.requeue_orphans().await;
        let settings = self.ctx.settings();
        while !self.resume.is_empty() {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            let Some(claimed) = self.resume.pop_front() else {
                break;
            };
            match GranuleId::from_path(&claimed.input) {
                Ok(id) => self.start_job(id, claimed, permit),
                Err(e) => {
                    let name = claimed
                        .input
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let r = quarantine_blocking(
                        &self.ctx.ledger,
                        settings.paths.quarantine.clone(),
                        name,
                        claimed,
                        e.to_string(),
                        0,
                    );
                    if let Err(e) = r.await {
                        tracing::error!(error = %e, "quarantine failed");
                    }
                }
            }
        }
        let tracker = self.tracker.clone();
        let (dir, r, now) = (
            settings.paths.ingest.clone(),
            rules(&settings),
            Instant::now(),
        );
        // Checksums are only verified for as many entries as could be claimed now.
        let budget = self.slots.available_permits();
        let verdicts = match blocking(move || {
            let mut t = tracker.lock().unwrap_or_else(|p| p.into_inner());
            scan(&dir, &mut t, &r, now, budget)
        })
        .await
        {
            Ok(Ok(v)) => {
                self.ctx.health.clear("ingest");
                v
            }
            Ok(Err(e)) => {
                self.ctx.health.raise(
                    "ingest",
                    Status::Failing,
                    format!("{}: {e}", settings.paths.ingest.display()),
                );
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "scan failed");
                return;
            }
        };
        let mut waiting = 0usize;
        for (cand, verdict) in verdicts {
            match verdict {
                Verdict::Wait(why) => {
                    tracing::debug!(entry = %cand.path.display(), %why, "not complete yet")
                }
                Verdict::Ready { ready_at } => {
                    let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                        waiting += 1;
                        continue;
                    };
                    match self.take(&settings, cand.clone(), ready_at).await {
                        Ok(Taken::Job(id, claimed)) => {
                            self.forget(&cand);
                            self.start_job(id, claimed, permit);
                        }
                        Ok(Taken::Duplicate(id)) => {
                            self.forget(&cand);
                            tracing::info!(granule = %id, "duplicate delivery of a done granule (same models); not reprocessed");
                            self.ctx
                                .metrics
                                .inc("s2edge_granules_total", &[("outcome", "duplicate")]);
                        }
                        Ok(Taken::Quarantined(id)) => {
                            self.forget(&cand);
                            self.ctx
                                .metrics
                                .inc("s2edge_granules_total", &[("outcome", "quarantined")]);
                            tracing::error!(granule = %id, "quarantined: no usable granule id");
                        }
                        Ok(Taken::Skipped) => {}
                        Err(e) => {
                            tracing::error!(entry = %cand.path.display(), error = %e, "claim failed")
                        }
                    }
                }
                Verdict::Expired(why) | Verdict::Refused(why) => {
                    let work = settings.paths.work.clone();
                    let c = cand.clone();
                    match blocking(move || claim(&c, &work)).await {
                        Ok(Ok(ClaimOutcome::Claimed(claimed))) => {
                            self.forget(&cand);
                            let name = GranuleId::from_path(&cand.path)
                                .map(|i| i.to_string())
                                .unwrap_or_else(|_| cand.name());
                            tracing::error!(granule = %name, reason = %why, "quarantined before processing");
                            let q = settings.paths.quarantine.clone();
                            if let Err(e) =
                                quarantine_blocking(&self.ctx.ledger, q, name, claimed, why, 0)
                                    .await
                            {
                                tracing::error!(error = %e, "quarantine failed");
                            }
                            self.ctx
                                .metrics
                                .inc("s2edge_granules_total", &[("outcome", "quarantined")]);
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::error!(entry = %cand.path.display(), error = %e, "claim failed")
                        }
                        Err(e) => tracing::error!(error = %e, "claim failed"),
                    }
                }
            }
        }
        self.publish_gauges(waiting).await;
    }

    async fn publish_gauges(&self, waiting: usize) {
        self.ctx
            .metrics
            .set("s2edge_queue_depth", &[], waiting as f64);
        let in_flight = self.in_flight();
        self.ctx
            .metrics
            .set("s2edge_in_flight", &[], in_flight as f64);
        self.ctx.health.set_in_flight(in_flight);
        let l = self.ctx.ledger.clone();
        if let Ok(Ok(counts)) = blocking(move || l.counts()).await {
            for (state, n) in counts {
                self.ctx
                    .metrics
                    .set("s2edge_granules", &[("state", state.as_str())], n as f64);
            }
        }
        if in_flight == 0 {
            systemd::status(&format!("idle; {waiting} waiting"));
        }
    }

    fn forget(&self, c: &Candidate) {
        self.tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(&c.path);
    }

    /// Claims `cand` and decides what it is: a job, a duplicate delivery, or a bad id.
    async fn take(
        &self,
        settings: &Arc<Settings>,
        cand: Candidate,
        ready_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Taken, DaemonError> {
        let (s, ledger) = (settings.clone(), self.ctx.ledger.clone());
        let labels = model_labels(&self.ctx.health.models());
        let taken = blocking(move || -> Result<Taken, DaemonError> {
            let claimed = match claim(&cand, &s.paths.work).map_err(|e| DaemonError::io(&cand.path, e))? {
                ClaimOutcome::Claimed(c) => c,
                ClaimOutcome::Lost => return Ok(Taken::Skipped),
                ClaimOutcome::Occupied => {
                    tracing::debug!(entry = %cand.path.display(), "an input of that name is still in work; waiting");
                    return Ok(Taken::Skipped);
                }
            };
            let id = match GranuleId::from_path(&claimed.input) {
                Ok(id) => id,
                Err(e) => {
                    let name = cand.name();
                    let reason = Reason {
                        error: e.to_string(),
                        attempts: 0,
                        at: chrono::Utc::now(),
                        source: claimed.source.clone(),
                    };
                    quarantine(&s.paths.quarantine, &name, &claimed.input, claimed.marker.as_deref(), &reason)
                        .map_err(|e| DaemonError::io(&claimed.input, e))?;
                    ledger.quarantined(&name, &claimed.source, &reason.error)?;
                    return Ok(Taken::Quarantined(name));
                }
            };
            if let Some(row) = ledger.get(id.as_str())? {
                let same = row.models == labels;
                if row.state == GranuleState::Done && (same || !s.models.reprocess_on_model_change) {
                    ledger.duplicate(id.as_str())?;
                    if let Err(e) = dispose(&claimed, s.ingest.after, &s.paths.archive) {
                        tracing::warn!(granule = %id, error = %e, "could not dispose of a duplicate input");
                    }
                    return Ok(Taken::Duplicate(id.to_string()));
                }
            }
            ledger.claimed(id.as_str(), &claimed.source, &claimed.input, ready_at)?;
            Ok(Taken::Job(id, claimed))
        })
        .await??;
        Ok(taken)
    }

    /// Hands `new` to the worker with the models it selects: loaded first when the
    /// selection changed, so options and models change in one message. While the models
    /// cannot load, the running configuration stays and `new` is retried next round.
    async fn apply(&mut self, new: Settings) {
        let old = self.ctx.settings();
        let selection = |s: &Settings| s.model_selection().ok().map(|m| format!("{m:?}"));
        // Sessions are built with the [runtime] keys (providers, threads, memory pattern):
        // a change of those rebuilds them as a model change does.
        let sessions_changed = new.runtime.provider_options() != old.runtime.provider_options();
        if sessions_changed {
            tracing::info!("[runtime] session keys changed: loading the models again with them");
        }
        let models = if selection(&new) != selection(&old)
            || new.paths.models != old.paths.models
            || sessions_changed
        {
            let s = new.clone();
            match blocking(move || load_validated(&s)).await {
                Ok(Ok(set)) => Some(Box::new(set)),
                Ok(Err(e)) => {
                    let why = super::worker::error_chain(&e);
                    tracing::warn!(reason = %why, "reload waits for its models; the running configuration stays");
                    self.ctx.health.raise(
                        "config",
                        Status::Degraded,
                        format!("reload waits for its models: {why}"),
                    );
                    self.pending = Some(new);
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "model loading failed");
                    self.pending = Some(new);
                    return;
                }
            }
        } else {
            None
        };
        if let Some(set) = &models {
            self.ctx.health.set_models(models_in_use(set));
        }
        let options = ProcessOptions::from_settings(&new);
        if let Err(e) = self
            .ctx
            .worker
            .submit(Request::Configure { models, options })
            .await
        {
            tracing::error!(error = %e, "could not pass the new options to the worker");
            return;
        }
        self.ctx.health.clear("config");
        let _ = self.settings_tx.send(Arc::new(new));
        tracing::info!("configuration reloaded");
    }

    /// SIGHUP: reload and validate the configuration; keep the old one on failure; see
    /// the module docs for how models follow.
    async fn reload(&mut self) {
        systemd::reloading();
        let old = self.ctx.settings();
        let file = self.config_file.clone();
        let loaded =
            blocking(move || Settings::load(file.as_deref()).and_then(|s| s.validate().map(|_| s)))
                .await;
        match loaded {
            Ok(Ok(mut new)) => {
                let json = |v: &crate::config::PathsConfig| serde_json::to_value(v).ok();
                if json(&new.paths) != json(&old.paths) || new.http.listen != old.http.listen {
                    tracing::warn!(
                        "[paths] and [http] changes need a restart; keeping the running ones"
                    );
                    new.paths = old.paths.clone();
                    new.http = old.http.clone();
                }
                if new.service.max_in_flight != old.service.max_in_flight
                    || new.runtime.onnxruntime != old.runtime.onnxruntime
                {
                    tracing::warn!("max_in_flight and runtime.onnxruntime changes need a restart");
                    new.service.max_in_flight = old.service.max_in_flight;
                }
                // A shared pool belongs to the loaded runtime: new sessions keep using it,
                // so the running configuration keeps the keys that describe it.
                if new.runtime.thread_pool != old.runtime.thread_pool
                    || new.runtime.arena != old.runtime.arena
                    || new.runtime.arena_initial_chunk != old.runtime.arena_initial_chunk
                    || (old.runtime.thread_pool == ThreadPool::Shared
                        && (new.runtime.intra_threads != old.runtime.intra_threads
                            || new.runtime.spinning != old.runtime.spinning))
                {
                    tracing::warn!(
                        "runtime.thread_pool and runtime.arena changes, and intra_threads or \
                         spinning changes of a shared pool, need a restart; the loaded pool \
                         and arena stay"
                    );
                    new.runtime.thread_pool = old.runtime.thread_pool;
                    new.runtime.arena = old.runtime.arena;
                    new.runtime.arena_initial_chunk = old.runtime.arena_initial_chunk;
                    if old.runtime.thread_pool == ThreadPool::Shared {
                        new.runtime.intra_threads = old.runtime.intra_threads;
                        new.runtime.spinning = old.runtime.spinning;
                    }
                }
                self.pending = None;
                self.apply(new).await;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reload refused; keeping the running configuration");
                self.ctx
                    .health
                    .raise("config", Status::Degraded, format!("reload refused: {e}"));
            }
            Err(e) => tracing::error!(error = %e, "reload failed"),
        }
        systemd::ready("reloaded");
    }
}

/// The model watcher task: polls the models directory every `rescan_interval` and after
/// every configuration change; see [`super::models`].
pub async fn watch_models(ctx: Ctx) {
    let mut watch = ModelWatch::default();
    let mut settings_rx = ctx.settings.clone();
    let mut shutdown = ctx.shutdown.clone();
    // The models in use were loaded from the current listing.
    let mut first = true;
    loop {
        let settings = ctx.settings();
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(settings.ingest.rescan_interval) => {},
                r = settings_rx.changed() => {
                    if r.is_err() { return }
                    watch.reset();
                },
                _ = shutdown.changed() => return,
            }
        }
        let settings = ctx.settings();
        let in_use = ctx.health.models();
        let nothing_in_use = in_use.is_empty();
        let (s, w) = (settings.clone(), std::mem::take(&mut watch));
        let Ok((outcome, w)) = blocking(move || {
            let mut w = w;
            let o = w.poll(&s, &in_use);
            (o, w)
        })
        .await
        else {
            return;
        };
        watch = w;
        let was_first = std::mem::replace(&mut first, false);
        // A broken version already present at startup is reported like a later one: the
        // operator must learn that the directory holds a version that will never run.
        for r in &outcome.refused {
            tracing::error!(reason = %r, "model version refused; the models in use keep running");
            ctx.metrics.inc("s2edge_model_rejected_total", &[]);
            ctx.health
                .raise("models", Status::Degraded, format!("refused {r}"));
        }
        // A models directory that could not be read (or held a broken version) and is
        // fine again lifts its degradation, with or without a reload.
        if outcome.healthy && !outcome.reload {
            ctx.health.clear("models");
        }
        // The first poll only reloads when a version appeared while the models loaded.
        if !outcome.reload || (was_first && nothing_in_use) {
            continue;
        }
        systemd::status("loading new models");
        let s = settings.clone();
        match blocking(move || load_validated(&s)).await {
            Ok(Ok(set)) => {
                // Versions that verified but failed to load were passed over.
                if !set.skipped.is_empty() {
                    watch.load_failed();
                }
                for r in &set.skipped {
                    tracing::error!(reason = %r, "model version refused; the models in use keep running");
                    ctx.metrics.inc("s2edge_model_rejected_total", &[]);
                    ctx.health
                        .raise("models", Status::Degraded, format!("refused {r}"));
                }
                let labels = model_labels(&models_in_use(&set));
                if labels == model_labels(&ctx.health.models()) {
                    tracing::info!("the selected versions are already in use");
                    continue;
                }
                let set_clean = set.skipped.is_empty();
                let options = ProcessOptions::from_settings(&settings);
                let req = Request::Configure {
                    models: Some(Box::new(set)),
                    options,
                };
                if ctx.worker.submit(req).await.is_err() {
                    return;
                }
                ctx.metrics.inc("s2edge_model_swaps_total", &[]);
                if outcome.refused.is_empty() && set_clean {
                    ctx.health.clear("models");
                }
            }
            Ok(Err(e)) => {
                let why = super::worker::error_chain(&e);
                watch.load_failed();
                tracing::error!(reason = %why, "new models refused; the models in use keep running");
                ctx.metrics.inc("s2edge_model_rejected_total", &[]);
                ctx.health
                    .raise("models", Status::Degraded, format!("refused: {why}"));
            }
            Err(e) => tracing::error!(error = %e, "model loading failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn debounce_absorbs_a_burst_and_returns_after_a_quiet_window() {
        let (tx, mut rx) = mpsc::channel(4);
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            for _ in 0..5 {
                let _ = tx.try_send(());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tx
        });
        assert!(debounce(&mut rx, DEBOUNCE).await);
        // Last poke at 400 ms, then one quiet 200 ms window.
        assert_eq!(start.elapsed(), Duration::from_millis(600));
        drop(sender.await.unwrap());
        assert!(!debounce(&mut rx, DEBOUNCE).await);
    }

    #[tokio::test(start_paused = true)]
    async fn debounce_is_bounded_under_a_continuous_trickle() {
        let (tx, mut rx) = mpsc::channel(4);
        let _sender = tokio::spawn(async move {
            loop {
                let _ = tx.try_send(());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let start = Instant::now();
        assert!(debounce(&mut rx, DEBOUNCE).await);
        assert!(start.elapsed() <= DEBOUNCE * 11, "{:?}", start.elapsed());
    }
}
