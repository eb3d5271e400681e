//! The [`Communicator`] over the system MPI library (the `mpi` feature; rsmpi over Open MPI
//! or MPICH).
//!
//! Every collective runs on `MPI_COMM_WORLD` from the thread that calls it; MPI is
//! initialized with `MPI_THREAD_SERIALIZED` (the training loop calls MPI from one thread at a
//! time; the kernels' worker threads never do).

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives as _, Root as _};
use mpi::Threading;

use super::Communicator;

/// Keeps MPI initialized: `MPI_Finalize` runs when it is dropped (at the end of `main`).
pub struct MpiGuard {
    _universe: Universe,
}

impl std::fmt::Debug for MpiGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MpiGuard")
    }
}

/// `MPI_COMM_WORLD` as a [`Communicator`].
#[derive(Debug, Clone)]
pub struct MpiCommunicator {
    rank: usize,
    size: usize,
    host: String,
    library: String,
}

/// Whether this process was started by an MPI launcher (`mpirun`/`mpiexec`/`srun`): the
/// variables Open MPI, MPICH/Hydra, PMIx and Slurm set for each rank.
pub fn launched_by_mpirun() -> bool {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_RANK",
        "MPI_LOCALNRANKS",
        "SLURM_PROCID",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

impl MpiCommunicator {
    /// Initializes MPI (once per process) and returns the world communicator with the guard
    /// that finalizes MPI when dropped. `None` if MPI was already initialized or the library
    /// does not give at least serialized thread support.
    pub fn init() -> Option<(MpiGuard, MpiCommunicator)> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)?;
        if threading < Threading::Serialized {
            tracing::error!("the MPI library gives only {threading:?} thread support");
            return None;
        }
        let world = universe.world();
        let comm = MpiCommunicator {
            rank: world.rank() as usize,
            size: world.size() as usize,
            host: mpi::environment::processor_name().unwrap_or_else(|_| "?".into()),
            library: mpi::environment::library_version()
                .ok()
                .and_then(|v| {
                    // "Open MPI v4.1.4, package: ..., ident: ..." → "Open MPI v4.1.4".
                    let first = v.lines().next()?;
                    Some(first.split(',').next()?.trim().to_string())
                })
                .unwrap_or_else(|| "MPI".into()),
        };
        Some((
            MpiGuard {
                _universe: universe,
            },
            comm,
        ))
    }

    fn world() -> SimpleCommunicator {
        SimpleCommunicator::world()
    }
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) {
        let send = buf.to_vec();
        Self::world().all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        let send = buf.to_vec();
        Self::world().all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    fn broadcast_bytes(&self, buf: &mut Vec<u8>) {
        let world = Self::world();
        let root = world.process_at_rank(0);
        let mut len = buf.len() as u64;
        root.broadcast_into(&mut len);
        buf.resize(len as usize, 0);
        // MPI counts are 32-bit: send in pieces of at most 1 GiB.
        for piece in buf.chunks_mut(1 << 30) {
            root.broadcast_into(piece);
        }
    }

    fn abort(&self, code: i32) -> ! {
        Self::world().abort(code)
    }

    fn describe(&self) -> String {
        format!(
            "{} ranks over {} (this is rank {} on {})",
            self.size, self.library, self.rank, self.host
        )
    }
}
