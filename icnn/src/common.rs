//! Pieces shared by the architectures: config validation and the common trait impls.

use crate::error::{IcnnError, Result};

pub(crate) fn check_positive(name: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(IcnnError::InvalidConfig(format!(
            "{name} must be at least 1"
        )));
    }
    Ok(())
}

/// Implements `ConvexPotential` and the ActNorm-init helpers for an architecture holding a
/// `net: Network` field.
macro_rules! impl_unconditional {
    ($ty:ty) => {
        impl $crate::traits::ConvexPotential for $ty {
            fn potential(&self, x: &candle_core::Tensor) -> $crate::Result<candle_core::Tensor> {
                self.net.potential(x, None)
            }

            fn linearize(&self, x: &candle_core::Tensor) -> $crate::Result<$crate::Linearization> {
                self.net.linearize(x, None, true)
            }

            fn dim(&self) -> usize {
                self.net.dim
            }

            fn value_and_gradient(
                &self,
                x: &candle_core::Tensor,
            ) -> $crate::Result<(candle_core::Tensor, candle_core::Tensor)> {
                let lin = self.net.linearize(x, None, false)?;
                Ok((lin.potential(), lin.gradient()))
            }
        }

        impl $ty {
            /// Whether the ActNorm data-dependent initialisation has run (the
            /// `initialized` flag variable saved with the parameters is non-zero).
            pub fn is_initialized(&self) -> $crate::Result<bool> {
                self.net.is_initialized()
            }

            /// Sets the `initialized` flag without touching the ActNorm parameters (use it
            /// after loading weights that were trained elsewhere and lack the flag).
            pub fn mark_initialized(&self) -> $crate::Result<()> {
                self.net.set_initialized(true)
            }

            /// Runs the data-dependent ActNorm initialisation on the batch `x` now (even if
            /// it already ran) and sets the flag. Otherwise it runs automatically on the
            /// first `potential`/`linearize` call.
            pub fn initialize(&self, x: &candle_core::Tensor) -> $crate::Result<()> {
                self.net.initialize(x, None)
            }
        }
    };
}

pub(crate) use impl_unconditional;
