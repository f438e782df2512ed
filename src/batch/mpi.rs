//! MPI sharding for `s2edge batch` (cargo feature `mpi-batch`; the same `mpi` crate and
//! Open MPI as the trainer): rank `r` of `n` is worker `r` of `n` (inside a Slurm array
//! task, `task·n + r` of `count·n`). After its share every rank reports how many of its
//! granules failed; all wait at a barrier, then rank 0 alone merges the ledgers and
//! writes the collection, so it sees every worker's finished ledger.

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::BatchError;

/// The MPI world of this process; MPI is finalised when it drops.
pub struct World {
    /// Kept alive for the whole run: dropping it finalises MPI.
    _universe: Universe,
    world: SimpleCommunicator,
}

impl World {
    /// Initialises MPI.
    ///
    /// # Errors
    /// [`BatchError::Shard`] when MPI was already initialised or fails to start.
    pub fn init() -> Result<World, BatchError> {
        let universe = mpi::initialize()
            .ok_or_else(|| BatchError::Shard("MPI could not be initialised".into()))?;
        let world = universe.world();
        Ok(World {
            _universe: universe,
            world,
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        usize::try_from(self.world.rank()).unwrap_or(0)
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        usize::try_from(self.world.size()).unwrap_or(1)
    }

    /// Sums `local` over all ranks; every rank returns the total. Also a barrier: no rank
    /// returns before every rank has called it.
    pub fn sum(&self, local: u64) -> u64 {
        let mut total = 0u64;
        self.world
            .all_reduce_into(&local, &mut total, SystemOperation::sum());
        total
    }

    /// Waits for every rank.
    pub fn barrier(&self) {
        self.world.barrier();
    }
}
