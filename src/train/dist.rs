//! MPI data parallelism, Horovod style: identical initial weights (rank 0 broadcasts),
//! gradients averaged with one `allreduce(SUM)` per step and divided by the world size,
//! then every rank takes the same optimiser step, so weights stay bit-identical.
//!
//! Invariants:
//! - every collective here is called by all ranks in the same order; a rank that fails
//!   locally still takes part in [`Dist::agree`], so the world never hangs on a rank that
//!   left (all ranks return the error, rank 0 reports it, all exit cleanly);
//! - SIGTERM only sets a flag; ranks agree on stopping through the per-step all-reduce
//!   (one extra slot in the gradient buffer), so all stop at the same step and rank 0
//!   checkpoints a consistent state.

use std::sync::atomic::{AtomicBool, Ordering};

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::TrainError;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the SIGTERM/SIGINT handler that requests a checkpoint-and-stop.
pub fn install_stop_handler() {
    let handler = on_sigterm as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// Writes one progress line to stderr in a single `write` (lines of ranks sharing
/// mpirun's stderr then do not interleave mid-line).
pub fn log_line(line: &str) {
    use std::io::Write;
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    // Progress output is best effort: a closed stderr must not stop training.
    let _ = std::io::stderr().lock().write_all(buf.as_bytes());
}

/// Whether this process was asked to stop.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// The MPI world of this run (a single rank when started without `mpirun`).
pub struct Dist {
    _universe: Universe,
    world: SimpleCommunicator,
    /// This process's rank.
    pub rank: usize,
    /// The number of ranks.
    pub size: usize,
}

impl std::fmt::Debug for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dist {{ rank: {}, size: {} }}", self.rank, self.size)
    }
}

impl Dist {
    /// Initialises MPI.
    ///
    /// # Errors
    /// [`TrainError::Mpi`] when MPI was already initialised in this process.
    pub fn init() -> Result<Dist, TrainError> {
        let universe = mpi::initialize()
            .ok_or_else(|| TrainError::Mpi("MPI is already initialised in this process".into()))?;
        let world = universe.world();
        let rank = usize::try_from(world.rank()).unwrap_or(0);
        let size = usize::try_from(world.size()).unwrap_or(1).max(1);
        Ok(Dist {
            _universe: universe,
            world,
            rank,
            size,
        })
    }

    /// Whether this is rank 0 (the only rank that writes checkpoints, logs and exports).
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Element-wise sum over all ranks, in place.
    pub fn allreduce_sum(&self, buf: &mut [f32]) {
        if self.size == 1 {
            return;
        }
        let mut out = vec![0f32; buf.len()];
        self.world
            .all_reduce_into(&buf[..], &mut out[..], SystemOperation::sum());
        buf.copy_from_slice(&out);
    }

    /// Element-wise mean over all ranks, in place (sum, then divide by the size).
    pub fn allreduce_mean(&self, buf: &mut [f32]) {
        if self.size == 1 {
            return;
        }
        self.allreduce_sum(buf);
        let n = self.size as f32;
        for v in buf.iter_mut() {
            *v /= n;
        }
    }

    /// Rank 0's `buf` on every rank (all ranks pass buffers of the same length).
    pub fn broadcast(&self, buf: &mut [f32]) {
        if self.size == 1 {
            return;
        }
        self.world.process_at_rank(0).broadcast_into(buf);
    }

    /// Whether any rank passed `true`.
    pub fn any(&self, flag: bool) -> bool {
        if self.size == 1 {
            return flag;
        }
        let mine = i32::from(flag);
        let mut out = 0i32;
        self.world
            .all_reduce_into(&mine, &mut out, SystemOperation::max());
        out != 0
    }

    /// Collective success check: every rank passes its local result; if any rank failed,
    /// every rank gets an error (the failing rank its own, the others
    /// [`TrainError::Remote`] with the lowest failing rank's message), so all ranks can
    /// exit together instead of hanging in the next collective.
    ///
    /// # Errors
    /// As described.
    pub fn agree<T>(&self, local: Result<T, TrainError>) -> Result<T, TrainError> {
        if self.size == 1 {
            return local;
        }
        let me = match &local {
            Ok(_) => i32::MAX,
            Err(_) => self.rank as i32,
        };
        let mut first = 0i32;
        self.world
            .all_reduce_into(&me, &mut first, SystemOperation::min());
        if first == i32::MAX {
            return local;
        }
        // The first failing rank broadcasts its message: length, then bytes.
        let root = self.world.process_at_rank(first);
        let mut msg: Vec<u8> = match &local {
            Err(e) if self.rank as i32 == first => e.to_string().into_bytes(),
            _ => Vec::new(),
        };
        let mut len = msg.len() as u64;
        root.broadcast_into(&mut len);
        msg.resize(len as usize, 0);
        root.broadcast_into(&mut msg[..]);
        match local {
            Err(e) if self.rank as i32 == first => Err(e),
            _ => Err(TrainError::Remote {
                rank: first as usize,
                reason: String::from_utf8_lossy(&msg).into_owned(),
            }),
        }
    }

    /// Waits for every rank.
    pub fn barrier(&self) {
        if self.size > 1 {
            self.world.barrier();
        }
    }
}
