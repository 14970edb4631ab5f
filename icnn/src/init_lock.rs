//! The lock that makes a network's lazy ActNorm initialisation happen once.
//!
//! The networks take `&self` and are `Send + Sync`, and they initialise their ActNorms from
//! the batch of their first `potential`/`linearize` call. Checking the `initialized` flag and
//! then initialising were two steps: two threads making their first calls at once both saw
//! the flag unset and both initialised, each from its own batch, so the network ended up
//! normalised by whichever wrote last and a thread's first output could be that of a network
//! that no longer existed (measured: 195 of 200 trials with two threads on a fresh `Icnn3`).
//!
//! [`InitLock::ensure`] computes the statistics without the lock and writes them under it,
//! after checking the flag again: the first thread to get there writes, the others drop
//! theirs. The lock is never held across the statistics' forward pass, which may run matrix
//! products on rayon's pool: a pool thread waiting inside such a product may pick up another
//! task that makes a first call on the same network, and had it held the lock across the
//! pass, that call would wait for the lock on the thread holding it, for ever.

use std::sync::{Arc, Mutex, PoisonError};

use crate::error::Result;

/// Serialises the writes of a network's ActNorm initialisations. Clones share the lock, as
/// they share the parameters (a cloned `Tensor` is the same storage).
#[derive(Debug, Clone, Default)]
pub(crate) struct InitLock(Arc<Mutex<()>>);

impl InitLock {
    /// Runs `write` under the lock (an explicit `initialize`: its writes do not interleave
    /// with those of an initialisation on another thread).
    pub(crate) fn write<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        // A panic in an earlier write leaves no state of the lock's own to repair: the flag,
        // written last, says whether that initialisation finished.
        let _guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        write()
    }

    /// Initialises unless `is_initialized` says it has been: `statistics` (the forward pass
    /// on this call's batch) runs without the lock, then, under it, `write` stores them if
    /// the flag is still unset. Of threads making first calls at once, exactly one writes and
    /// every one of them returns after that write, so that each computes with the network
    /// as it stays. The path of every call after the first (flag set) costs what it did.
    pub(crate) fn ensure<S>(
        &self,
        is_initialized: impl Fn() -> Result<bool>,
        statistics: impl FnOnce() -> Result<S>,
        write: impl FnOnce(S) -> Result<()>,
    ) -> Result<()> {
        if is_initialized()? {
            return Ok(());
        }
        let stats = statistics()?;
        self.write(|| {
            if is_initialized()? {
                Ok(())
            } else {
                write(stats)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Of several threads that find the flag unset at once, each computes statistics and
    /// exactly one writes; all return after the write.
    #[test]
    fn one_of_racing_threads_writes() {
        for _ in 0..50 {
            let lock = InitLock::default();
            let flag = AtomicBool::new(false);
            let writes = AtomicUsize::new(0);
            let go = Barrier::new(4);
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        go.wait();
                        lock.ensure(
                            || Ok(flag.load(Ordering::SeqCst)),
                            || Ok(()),
                            |()| {
                                writes.fetch_add(1, Ordering::SeqCst);
                                std::thread::yield_now();
                                flag.store(true, Ordering::SeqCst);
                                Ok(())
                            },
                        )
                        .unwrap();
                        assert!(flag.load(Ordering::SeqCst));
                    });
                }
            });
            assert_eq!(writes.load(Ordering::SeqCst), 1);
        }
    }

    /// An unusable batch (statistics fail) writes nothing and the next call tries again; a
    /// poisoned lock (a panic while writing) does not block later calls.
    #[test]
    fn a_failed_or_panicked_initialisation_is_retried() {
        let lock = InitLock::default();
        let failed = lock.ensure(
            || Ok(false),
            || -> Result<()> {
                Err(crate::IcnnError::Initialization {
                    layer: "input".into(),
                    reason: "bad batch".into(),
                })
            },
            |()| panic!("nothing to write"),
        );
        assert!(failed.is_err());
        let shared = lock.clone();
        let panicked = std::thread::spawn(move || shared.write(|| -> Result<()> { panic!() }))
            .join()
            .is_err();
        assert!(panicked);
        let wrote = AtomicBool::new(false);
        lock.ensure(
            || Ok(false),
            || Ok(()),
            |()| {
                wrote.store(true, Ordering::SeqCst);
                Ok(())
            },
        )
        .unwrap();
        assert!(wrote.load(Ordering::SeqCst));
    }
}
