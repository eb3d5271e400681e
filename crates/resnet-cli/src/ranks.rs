//! Data-parallel training under `mpirun` (the `mpi` feature): which rank this process is,
//! and running `train` with MPI initialized around it.
//!
//! Rank 0 prints what a single process prints; ranks > 0 print only warnings and errors
//! (prefixed with their rank) and write nothing. An error on any rank aborts the whole MPI
//! job, so that no rank waits forever for the others.

use std::process::ExitCode;
use std::sync::Arc;

use trainer::distributed::Communicator;

/// This process's rank as the MPI launcher announces it (Open MPI, MPICH/Hydra, PMIx,
/// Slurm); 0 when not started by a launcher. Read before MPI is initialized, to set up
/// logging.
pub fn rank_from_env() -> usize {
    [
        "OMPI_COMM_WORLD_RANK",
        "PMI_RANK",
        "PMIX_RANK",
        "SLURM_PROCID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
    .unwrap_or(0)
}

/// Runs `train` with the ranks this process belongs to: with the `mpi` feature and under an
/// MPI launcher, MPI is initialized first and finalized after; otherwise one process
/// (`None`).
pub fn with_ranks(
    train: impl FnOnce(Option<Arc<dyn Communicator>>) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    #[cfg(feature = "mpi")]
    if trainer::distributed::mpi::launched_by_mpirun() {
        use trainer::distributed::mpi::MpiCommunicator;
        let Some((guard, comm)) = MpiCommunicator::init() else {
            anyhow::bail!(
                "could not initialize MPI with MPI_THREAD_SERIALIZED support (is the MPI \
                 library the one this binary was built against?)"
            );
        };
        let comm: Arc<dyn Communicator> = Arc::new(comm);
        let result = train(Some(Arc::clone(&comm)));
        if comm.size() > 1 {
            if let Err(e) = &result {
                eprintln!("rank {}: error: {e:#}", comm.rank());
                eprintln!("rank {}: aborting the MPI job", comm.rank());
                comm.abort(1);
            }
        }
        drop(guard);
        return result;
    }
    train(None)
}
