//! Ctrl-C (SIGINT) and SIGTERM during `cpflow train` and `cpflow vae` (and `cpflow sample`,
//! which stops between chunks and removes its unfinished file): the first one pauses
//! the run after the training step in progress and writes its checkpoint (`--resume`
//! continues it); once training has ended (the commands say so with
//! [`Interrupt::end_training`] or the trainers' `training_ended` flag) it stops the
//! evaluation that follows at its next chunk or phase instead, the trained run saved. A
//! second one ends the process at once, unless it comes within [`DUPLICATE_WINDOW`] of the
//! first: that is the same interrupt delivered twice (GNU `timeout` signals the command, then
//! its whole process group), which used to end a run without saving it.

use crate::observer::{Control, FnObserver, Moment, TrainObserver};
use anyhow::{Context, Result, anyhow};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

/// Exit status after a second interrupt (128 + SIGINT, what a shell reports for Ctrl-C).
const ABRUPT_EXIT: i32 = 130;

/// A signal this soon after the first is taken for the same interrupt delivered twice, not
/// for a second one (a person reads "interrupt again to quit now" before pressing again).
pub const DUPLICATE_WINDOW: Duration = Duration::from_millis(200);

/// What a SIGINT or SIGTERM does.
#[derive(Debug, PartialEq, Eq)]
enum SignalAction {
    /// The first: set the flag (pause the run, or stop its evaluation).
    Pause,
    /// The first delivered again (within the window): nothing.
    Ignore,
    /// A second interrupt: end the process at once.
    Quit,
}

/// The decision for a signal at `now` (ns on a monotonic clock, > 0), `first` holding the time
/// of the first signal (0: none yet). Async-signal-safe: atomics only.
fn on_signal(first: &AtomicU64, now: u64, window: u64) -> SignalAction {
    match first.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => SignalAction::Pause,
        Err(then) if now.saturating_sub(then) > window => SignalAction::Quit,
        Err(_) => SignalAction::Ignore,
    }
}

/// The notice that the first interrupt logs (what the command does next), logged once by
/// whichever thread sees the flag first.
struct Notice {
    /// A command's own message; `None`: a training run's (which depends on `training_ended`).
    message: Option<&'static str>,
    training_ended: Arc<AtomicBool>,
    /// Run once: a caller that comes while another logs waits until the line is written, so
    /// that the notice precedes what the caller logs next (the command's error).
    said: Once,
}

impl Notice {
    /// Logs the notice, unless it has been logged.
    fn say(&self) {
        self.said.call_once(|| {
            if let Some(m) = self.message {
                tracing::warn!("{m}");
            } else if self.training_ended.load(Ordering::Relaxed) {
                tracing::warn!(
                    "interrupted after training, whose results are saved: stopping the \
                     evaluation at its next chunk or phase; interrupt again to quit now"
                );
            } else {
                tracing::warn!(
                    "interrupted: saving the run after the training step in progress; \
                     interrupt again to quit now"
                );
            }
        });
    }
}

/// The flag that the first SIGINT or SIGTERM sets, and whether training has ended. Its
/// notice is logged by a watcher thread soon after the signal, or at the latest by the first
/// [`Interrupt::is_set`] (or [`Interrupt::observer`] step) that sees the flag, or when the
/// `Interrupt` is dropped (commands whose library code reads [`Interrupt::flag`] itself).
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    training_ended: Arc<AtomicBool>,
    notice: Arc<Notice>,
}

impl Interrupt {
    /// Replaces the default handling of SIGINT and SIGTERM for the rest of the process.
    pub fn install() -> Result<Self> {
        Self::install_inner(None)
    }

    /// [`Interrupt::install`] for a command that is not a training run: `message` is what the
    /// first interrupt logs (what the command does next).
    pub fn install_with_message(message: &'static str) -> Result<Self> {
        Self::install_inner(Some(message))
    }

    fn install_inner(message: Option<&'static str>) -> Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let flag = Arc::new(AtomicBool::new(false));
        // When the first signal came (ns since `base`, + 1; 0: none yet).
        let first = Arc::new(AtomicU64::new(0));
        let base = Instant::now();
        let window = u64::try_from(DUPLICATE_WINDOW.as_nanos()).unwrap_or(u64::MAX);
        for signal in [SIGINT, SIGTERM] {
            let (flag, first) = (flag.clone(), first.clone());
            let action = move || {
                let now = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1;
                match on_signal(&first, now, window) {
                    SignalAction::Pause => flag.store(true, Ordering::SeqCst),
                    SignalAction::Quit => signal_hook::low_level::exit(ABRUPT_EXIT),
                    SignalAction::Ignore => {}
                }
            };
            // SAFETY: the action is async-signal-safe: it reads the monotonic clock
            // (`clock_gettime`), uses atomics, and ends the process with `_exit`.
            unsafe { signal_hook::low_level::register(signal, action) }
                .context("installing the interrupt handler")?;
        }
        // Said when it happens (a signal handler cannot log): a step or an evaluation can take
        // a while. The watcher polls; whoever sees the flag first (it, `is_set`, the observer,
        // the drop) says it, once ([`Notice`]), so that a command that stops at once still
        // logs it before its error.
        let training_ended = Arc::new(AtomicBool::new(false));
        let notice = Arc::new(Notice {
            message,
            training_ended: training_ended.clone(),
            said: Once::new(),
        });
        let (seen, watcher_notice) = (flag.clone(), notice.clone());
        std::thread::Builder::new()
            .name("interrupt-watch".into())
            .spawn(move || {
                while !seen.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                watcher_notice.say();
            })
            .context("starting the interrupt watcher")?;
        Ok(Interrupt {
            flag,
            training_ended,
            notice,
        })
    }

    /// Whether an interrupt came (then its notice has been logged when this returns).
    pub fn is_set(&self) -> bool {
        let set = self.flag.load(Ordering::Relaxed);
        if set {
            self.notice.say();
        }
        set
    }

    /// Says that training has ended: what follows is evaluation (the watcher's message).
    pub fn end_training(&self) {
        self.training_ended.store(true, Ordering::Relaxed);
    }

    /// The shared "training has ended" state, for trainers that set it themselves (the image
    /// and VAE trainers' `training_ended` option).
    pub fn training_ended(&self) -> Arc<AtomicBool> {
        self.training_ended.clone()
    }

    /// The flag itself (for trainers that take one, like the image trainer's).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// `result`, or, for a run that an interrupt paused ([`crate::CpflowError::Interrupted`]),
    /// that error with the command that continues the run (`resume`); for a run interrupted
    /// after training ([`crate::CpflowError::EvaluationInterrupted`]), with the same command,
    /// which evaluates the finished run again.
    pub fn with_resume_hint<T>(
        result: crate::Result<T>,
        resume: impl FnOnce() -> String,
    ) -> Result<T> {
        match result {
            Err(e @ crate::CpflowError::Interrupted { .. }) => {
                Err(anyhow!("{e}; continue it with `{}`", resume()))
            }
            Err(e @ crate::CpflowError::EvaluationInterrupted { .. }) => Err(anyhow!(
                "{e}; the run is trained: `{}` evaluates it and writes report.json",
                resume()
            )),
            r => Ok(r?),
        }
    }

    /// An observer (called after every step) that pauses the run once the flag is set.
    pub fn observer(&self) -> Box<dyn TrainObserver> {
        let (flag, notice) = (self.flag.clone(), self.notice.clone());
        Box::new(FnObserver::new(1, move |_: &crate::Trainer, moment| {
            if moment == Moment::Periodic && flag.load(Ordering::Relaxed) {
                notice.say();
                return Ok(Control::Pause);
            }
            Ok(Control::Continue)
        }))
    }
}

impl Drop for Interrupt {
    /// A command whose library code read the flag (and stopped) returns before the watcher
    /// may have looked: the notice is logged now, before the command's error is printed.
    fn drop(&mut self) {
        if self.flag.load(Ordering::Relaxed) {
            self.notice.say();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `Interrupt` whose flag is `set` (no handler installed), and its notice.
    fn unhooked(set: bool) -> (Interrupt, Arc<Notice>) {
        let notice = Arc::new(Notice {
            message: Some("test notice"),
            training_ended: Arc::new(AtomicBool::new(false)),
            said: Once::new(),
        });
        let interrupt = Interrupt {
            flag: Arc::new(AtomicBool::new(set)),
            training_ended: notice.training_ended.clone(),
            notice: notice.clone(),
        };
        (interrupt, notice)
    }

    /// The notice is said by the first `is_set` that sees the flag (a command that stops at
    /// once exited before the watcher thread logged it), else when the `Interrupt` drops;
    /// never without an interrupt.
    #[test]
    fn the_notice_is_said_by_whoever_sees_the_flag_first() {
        let (quiet, notice) = unhooked(false);
        assert!(!quiet.is_set());
        drop(quiet);
        assert!(!notice.said.is_completed());

        let (interrupted, notice) = unhooked(true);
        assert!(!notice.said.is_completed());
        assert!(interrupted.is_set());
        assert!(notice.said.is_completed());

        let (interrupted, notice) = unhooked(true);
        drop(interrupted);
        assert!(notice.said.is_completed());
    }

    /// The first signal pauses; the same one delivered again within the window (GNU
    /// `timeout`: the command, then its process group) is ignored, however often; a signal
    /// after the window quits. (The old handler quit on any second delivery.)
    #[test]
    fn a_duplicate_delivery_is_not_a_second_interrupt() {
        let ms = 1_000_000u64;
        let window = u64::try_from(DUPLICATE_WINDOW.as_nanos()).unwrap();
        let first = AtomicU64::new(0);
        assert_eq!(on_signal(&first, 5 * ms, window), SignalAction::Pause);
        assert_eq!(on_signal(&first, 5 * ms, window), SignalAction::Ignore);
        assert_eq!(
            on_signal(&first, 5 * ms + window, window),
            SignalAction::Ignore
        );
        assert_eq!(
            on_signal(&first, 5 * ms + window + 1, window),
            SignalAction::Quit
        );
        assert_eq!(on_signal(&first, 900 * ms, window), SignalAction::Quit);
    }
}
