//! Preemption: SIGTERM (a scheduler's "you are being evicted") and SIGINT (Ctrl-C) ask the
//! run to stop; [`crate::Trainer::fit`] finishes the current step, writes a checkpoint and
//! returns [`crate::TrainError::Interrupted`]. A second signal exits the process at once.
//!
//! The handlers come from `signal-hook` (its `flag` module: an async-signal-safe store to an
//! [`AtomicBool`] that the loop polls between steps). They are opt-in, installed by the
//! program ([`install_stop_signals`]), never by the library on its own: a library that
//! grabs process-wide signals would surprise its host.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::error::{Result, TrainError};

/// Exit status of a process that got a second SIGTERM / SIGINT while stopping: 128 + the
/// number of SIGINT, as a shell reports a process killed by Ctrl-C.
pub const SECOND_SIGNAL_EXIT_CODE: i32 = 130;

/// Install SIGTERM and SIGINT handlers: the first signal sets the returned flag (give it to
/// [`crate::Trainer::set_stop_flag`]); a second one, while the flag is set, exits the
/// process at once with [`SECOND_SIGNAL_EXIT_CODE`].
pub fn install_stop_signals() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        // Order matters: the conditional exit is checked before the flag is set, so the
        // first signal only sets it and the second one exits.
        flag::register_conditional_shutdown(signal, SECOND_SIGNAL_EXIT_CODE, Arc::clone(&stop))
            .and_then(|_| flag::register(signal, Arc::clone(&stop)))
            .map_err(|source| TrainError::Signals { signal, source })?;
    }
    Ok(stop)
}
