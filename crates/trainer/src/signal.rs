//! Graceful stop on Ctrl-C / SIGTERM: the first signal asks the training loop to finish its
//! step, write a checkpoint and return; a second one exits at once (status 130).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{Result, TrainError};

static FLAG: OnceLock<std::result::Result<Arc<AtomicBool>, String>> = OnceLock::new();

/// Installs the process-wide handler (once; later calls return the same flag) and returns
/// the flag it sets. Pass it to [`crate::TrainOptions::stop`].
pub fn install_stop_handler() -> Result<Arc<AtomicBool>> {
    let installed = FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&flag);
        ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond interrupt: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupt received: finishing the current step and writing a checkpoint \
                 (interrupt again to exit at once)"
            );
        })
        .map(|()| flag)
        .map_err(|e| e.to_string())
    });
    installed
        .clone()
        .map_err(|reason| TrainError::Signal { reason })
}
