//! Inference workers: OS threads that own their sessions and serve batched requests.
//!
//! ONNX Runtime's `Session::run` takes `&mut self`, so sessions are not shared: each worker
//! thread loads its own [`LoadedModel`] and keeps it for its whole life. Requests come in
//! through one bounded `sync_channel` (a full queue blocks the submitter: backpressure, not
//! memory growth); each carries its input arrays and a `sync_channel(1)` for the reply.
//!
//! Invariants:
//! - the only lock is around the shared request *receiver*, held while an idle worker
//!   waits for the next request, never during inference;
//! - every request gets exactly one reply, or its reply channel is dropped (the submitter
//!   sees a disconnected channel). A run error goes back as `Err`; a panic inside a run is
//!   caught, reported to that request as an error, and the worker reloads its model
//!   before serving again (the old session's state is not trusted after a panic);
//! - dropping the pool closes the queue, lets the workers finish what they hold, and joins
//!   them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ndarray::{Array4, ArrayD};

use super::error::ModelError;
use super::precision::GraphChoice;
use super::provider::ProviderReport;
use super::session::LoadedModel;

/// One batch: the model's inputs by name, normalised, `[N, C, H, W]`.
pub type Batch = Vec<(String, Array4<f32>)>;
/// The model's outputs by name, in manifest order.
pub type Outputs = Vec<(String, ArrayD<f32>)>;
/// Where a request's answer arrives.
pub type Reply = Receiver<Result<Outputs, ModelError>>;

struct Request {
    inputs: Batch,
    reply: SyncSender<Result<Outputs, ModelError>>,
}

/// A fixed set of inference worker threads serving one model.
pub struct InferencePool {
    /// `None` once shutdown began; dropping it is what tells the workers to stop.
    queue: Option<SyncSender<Request>>,
    workers: Vec<JoinHandle<()>>,
    label: String,
    provider: ProviderReport,
    graph: Option<GraphChoice>,
}

/// What a worker reports once its model loaded: label, provider, graph.
type Ready = Result<(String, ProviderReport, GraphChoice), ModelError>;

impl InferencePool {
    /// Starts `n_workers` threads (at least one), each loading its own model with
    /// `loader`, behind a queue of `queue_depth` pending requests. Returns once every
    /// worker has loaded its model.
    ///
    /// # Errors
    /// The first worker's load error (the other workers are stopped and joined), or
    /// [`ModelError::Inference`] if a loader panicked or a thread could not be spawned.
    pub fn spawn<F>(
        n_workers: usize,
        loader: F,
        queue_depth: usize,
    ) -> Result<InferencePool, ModelError>
    where
        F: Fn() -> Result<LoadedModel, ModelError> + Send + Sync + 'static,
    {
        let n_workers = n_workers.max(1);
        let loader = Arc::new(loader);
        let (queue, requests) = sync_channel::<Request>(queue_depth);
        let requests = Arc::new(Mutex::new(requests));
        let (ready_tx, ready_rx) = sync_channel::<Ready>(n_workers);
        let mut pool = InferencePool {
            queue: Some(queue),
            workers: Vec::with_capacity(n_workers),
            label: String::new(),
            provider: ProviderReport {
                used: super::provider::ExecutionProvider::Cpu,
                failures: Vec::new(),
            },
            graph: None,
        };
        for i in 0..n_workers {
            let loader = Arc::clone(&loader);
            let requests = Arc::clone(&requests);
            let ready = ready_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("s2edge-infer-{i}"))
                .spawn(move || worker_main(i, &*loader, &requests, ready))
                .map_err(|e| ModelError::Inference {
                    model: "inference pool".into(),
                    reason: format!("cannot spawn worker thread {i}: {e}"),
                })?;
            pool.workers.push(handle);
        }
        drop(ready_tx);
        for _ in 0..n_workers {
            match ready_rx.recv() {
                Ok(Ok((label, report, graph))) => {
                    pool.label = label;
                    pool.provider = report;
                    pool.graph = Some(graph);
                }
                // Dropping `pool` closes the queue and joins the workers that did start.
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(ModelError::Inference {
                        model: "inference pool".into(),
                        reason: "a worker exited before reporting its model load".into(),
                    })
                }
            }
        }
        tracing::info!(model = %pool.label, workers = n_workers, queue_depth, provider = %pool.provider.used, "inference pool ready");
        Ok(pool)
    }

    /// The served model, `name@version`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The execution provider the workers run on (as reported by the last worker to load).
    pub fn provider(&self) -> &ProviderReport {
        &self.provider
    }

    /// The graph the workers loaded (as reported by the last worker to load); `None` only
    /// for a pool without workers, which `spawn` never returns.
    pub fn graph(&self) -> Option<&GraphChoice> {
        self.graph.as_ref()
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Queues a batch; blocks while the queue is full. The answer arrives on the returned
    /// receiver.
    ///
    /// # Errors
    /// [`ModelError::Inference`] when the pool is shutting down or every worker has exited.
    pub fn submit(&self, inputs: Batch) -> Result<Reply, ModelError> {
        let closed = || ModelError::Inference {
            model: self.label.clone(),
            reason: "the inference pool is shut down".into(),
        };
        let queue = self.queue.as_ref().ok_or_else(closed)?;
        let (reply, answer) = sync_channel(1);
        queue
            .send(Request { inputs, reply })
            .map_err(|_| closed())?;
        Ok(answer)
    }

    /// Submits a batch and waits for its answer.
    ///
    /// # Errors
    /// As [`InferencePool::submit`], the run's own error, or [`ModelError::Inference`]
    /// when the worker exited without answering.
    pub fn run(&self, inputs: Batch) -> Result<Outputs, ModelError> {
        self.submit(inputs)?
            .recv()
            .map_err(|_| ModelError::Inference {
                model: self.label.clone(),
                reason: "the inference worker exited without answering".into(),
            })?
    }
}

impl Drop for InferencePool {
    fn drop(&mut self) {
        // Closing the queue ends each worker's receive loop once the queue is drained.
        self.queue.take();
        for (i, handle) in self.workers.drain(..).enumerate() {
            if handle.join().is_err() {
                tracing::error!(worker = i, "inference worker thread panicked outside a run");
            }
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into())
}

/// Loads a model, catching a panicking loader.
fn load_guarded(
    i: usize,
    loader: &(dyn Fn() -> Result<LoadedModel, ModelError> + Send + Sync),
) -> Result<LoadedModel, ModelError> {
    catch_unwind(AssertUnwindSafe(loader)).unwrap_or_else(|payload| {
        Err(ModelError::Inference {
            model: "inference pool".into(),
            reason: format!(
                "worker {i}: model loader panicked: {}",
                panic_message(&*payload)
            ),
        })
    })
}

fn worker_main(
    i: usize,
    loader: &(dyn Fn() -> Result<LoadedModel, ModelError> + Send + Sync),
    requests: &Mutex<Receiver<Request>>,
    ready: SyncSender<Ready>,
) {
    let mut model = match load_guarded(i, loader) {
        Ok(m) => {
            let _ = ready.send(Ok((m.label(), m.provider_report.clone(), m.graph.clone())));
            m
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    drop(ready);
    loop {
        // The guard is a temporary of this statement: released before the run.
        let next = requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .recv();
        let Ok(Request { inputs, reply }) = next else {
            return; // queue closed: shutdown
        };
        let label = model.label();
        let result = catch_unwind(AssertUnwindSafe(|| model.run(inputs)));
        let answer = match result {
            Ok(r) => r,
            Err(payload) => {
                let reason = format!(
                    "worker {i} panicked during inference: {}",
                    panic_message(&*payload)
                );
                tracing::error!(model = %label, %reason, "reloading the model");
                // Answer first so the submitter is not kept waiting on the reload.
                let _ = reply.send(Err(ModelError::Inference {
                    model: label.clone(),
                    reason,
                }));
                match load_guarded(i, loader) {
                    Ok(m) => model = m,
                    Err(e) => {
                        tracing::error!(model = %label, error = %e, worker = i, "reload failed; worker exits");
                        return;
                    }
                }
                continue;
            }
        };
        // The submitter may have given up; that is not the worker's problem.
        let _ = reply.send(answer);
    }
}
