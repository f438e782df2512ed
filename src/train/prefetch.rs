//! A bounded prefetch pool: `workers` threads decode samples ahead of the training step,
//! with at most `depth` samples in flight or waiting, handed out in the order they were
//! asked for.
//!
//! Invariants: memory is bounded by `depth` decoded samples (a new index is submitted only
//! when one is taken); the output order is the schedule's order whatever thread finished
//! first, so a run is reproducible; dropping the pool closes the job channel and joins the
//! workers.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The loader a worker runs on one sample index.
pub type Loader<T> = Arc<dyn Fn(usize) -> T + Send + Sync>;

/// See the module docs.
pub struct Prefetcher<T: Send + 'static> {
    jobs: Option<SyncSender<(u64, usize)>>,
    results: Receiver<(u64, usize, T)>,
    waiting: BTreeMap<u64, (usize, T)>,
    schedule: Box<dyn Iterator<Item = usize> + Send>,
    submitted: u64,
    taken: u64,
    workers: Vec<JoinHandle<()>>,
}

impl<T: Send + 'static> Prefetcher<T> {
    /// Starts `workers` threads (at least 1) running `load` on the indices of `schedule`,
    /// keeping `depth` (at least 1) samples in flight.
    pub fn new(
        workers: usize,
        depth: usize,
        schedule: Box<dyn Iterator<Item = usize> + Send>,
        load: Loader<T>,
    ) -> Prefetcher<T> {
        let depth = depth.max(1);
        let (jtx, jrx) = sync_channel::<(u64, usize)>(depth);
        let (rtx, rrx) = sync_channel::<(u64, usize, T)>(depth);
        let jrx = Arc::new(Mutex::new(jrx));
        let handles = (0..workers.max(1))
            .map(|_| {
                let jrx = Arc::clone(&jrx);
                let rtx = rtx.clone();
                let load = Arc::clone(&load);
                std::thread::spawn(move || loop {
                    // The lock is held only to take one job, never while loading.
                    let job = match jrx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, idx)) = job else { return };
                    if rtx.send((seq, idx, load(idx))).is_err() {
                        return;
                    }
                })
            })
            .collect();
        let mut p = Prefetcher {
            jobs: Some(jtx),
            results: rrx,
            waiting: BTreeMap::new(),
            schedule,
            submitted: 0,
            taken: 0,
            workers: handles,
        };
        for _ in 0..depth {
            if !p.submit_next() {
                break;
            }
        }
        p
    }

    fn submit_next(&mut self) -> bool {
        let Some(idx) = self.schedule.next() else {
            return false;
        };
        match &self.jobs {
            Some(tx) if tx.send((self.submitted, idx)).is_ok() => {
                self.submitted += 1;
                true
            }
            _ => false,
        }
    }

    /// The next sample of the schedule (its index and the loader's result), or `None`
    /// when the schedule is exhausted (or every worker died).
    pub fn next_sample(&mut self) -> Option<(usize, T)> {
        if self.taken == self.submitted {
            return None;
        }
        loop {
            if let Some(v) = self.waiting.remove(&self.taken) {
                self.taken += 1;
                self.submit_next();
                return Some(v);
            }
            let (seq, idx, v) = self.results.recv().ok()?;
            self.waiting.insert(seq, (idx, v));
        }
    }
}

impl<T: Send + 'static> Iterator for Prefetcher<T> {
    type Item = (usize, T);

    fn next(&mut self) -> Option<(usize, T)> {
        self.next_sample()
    }
}

impl<T: Send + 'static> Drop for Prefetcher<T> {
    fn drop(&mut self) {
        self.jobs = None;
        // Unblock workers waiting to hand over a result.
        while self.results.try_recv().is_ok() {}
        for h in self.workers.drain(..) {
            // Drain again: a worker may have finished one more sample meanwhile.
            while !h.is_finished() {
                while self.results.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn ordered_bounded_and_complete() {
        let live = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (l, p) = (Arc::clone(&live), Arc::clone(&peak));
        let load: Loader<usize> = Arc::new(move |i| {
            let now = l.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            // Later indices finish first: the output must still be in order.
            std::thread::sleep(std::time::Duration::from_millis((20 - i as u64 % 20) / 4));
            i * 10
        });
        let pf = Prefetcher::new(3, 4, Box::new(0..50), load);
        let mut got = Vec::new();
        for (i, v) in pf {
            live.fetch_sub(1, Ordering::SeqCst);
            got.push((i, v));
        }
        assert_eq!(got, (0..50).map(|i| (i, i * 10)).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 4 + 1, "{peak:?}");
    }

    #[test]
    fn dropping_early_joins_the_workers() {
        let load: Loader<usize> = Arc::new(|i| i);
        let mut pf = Prefetcher::new(2, 2, Box::new(0..1_000_000), load);
        assert_eq!(pf.next_sample(), Some((0, 0)));
        drop(pf);
    }
}
