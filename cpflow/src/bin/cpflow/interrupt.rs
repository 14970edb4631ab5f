//! Ctrl-C (SIGINT) and SIGTERM during `cpflow train` and `cpflow vae`: the first one pauses
//! the run after the training step in progress and writes its checkpoint (`--resume`
//! continues it); a second one ends the process at once.

use anyhow::{Context, Result, anyhow};
use cpflow::observer::{Control, FnObserver, Moment, TrainObserver};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit status after a second interrupt (128 + SIGINT, what a shell reports for Ctrl-C).
const ABRUPT_EXIT: i32 = 130;

/// The flag that the first SIGINT or SIGTERM sets.
pub struct Interrupt {
    flag: Arc<AtomicBool>,
}

impl Interrupt {
    /// Replaces the default handling of SIGINT and SIGTERM for the rest of the process.
    pub fn install() -> Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM] {
            // Registered first, so that it is armed only once the first signal set the flag.
            signal_hook::flag::register_conditional_shutdown(signal, ABRUPT_EXIT, flag.clone())
                .context("installing the interrupt handler")?;
            signal_hook::flag::register(signal, flag.clone())
                .context("installing the interrupt handler")?;
        }
        // Said when it happens (a signal handler cannot log): a step or an evaluation can take
        // a while.
        let seen = flag.clone();
        std::thread::Builder::new()
            .name("interrupt-watch".into())
            .spawn(move || {
                while !seen.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                tracing::warn!(
                    "interrupted: saving the run after the step in progress; interrupt again \
                     to quit now"
                );
            })
            .context("starting the interrupt watcher")?;
        Ok(Interrupt { flag })
    }

    /// The flag itself (for trainers that take one, like the image trainer's).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// `result`, or, for a run that an interrupt paused ([`cpflow::CpflowError::Interrupted`]),
    /// that error with the command that continues the run (`resume`).
    pub fn with_resume_hint<T>(
        result: cpflow::Result<T>,
        resume: impl FnOnce() -> String,
    ) -> Result<T> {
        match result {
            Err(e @ cpflow::CpflowError::Interrupted { .. }) => {
                Err(anyhow!("{e}; continue it with `{}`", resume()))
            }
            r => Ok(r?),
        }
    }

    /// An observer (called after every step) that pauses the run once the flag is set.
    pub fn observer(&self) -> Box<dyn TrainObserver> {
        let flag = self.flag.clone();
        Box::new(FnObserver::new(1, move |_: &cpflow::Trainer, moment| {
            if moment == Moment::Periodic && flag.load(Ordering::Relaxed) {
                return Ok(Control::Pause);
            }
            Ok(Control::Continue)
        }))
    }
}
