//! A seedable random-number generator whose state can be saved in a checkpoint.
//!
//! [`FlowRng`] is ChaCha12 (the algorithm behind `rand::rngs::StdRng`), wrapped so that its
//! exact position in the stream can be written to JSON and restored: a resumed training run
//! draws the same numbers as an uninterrupted one.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use crate::error::{CpflowError, Result};

/// Seedable, checkpointable RNG (ChaCha12). Implements [`rand::RngCore`], so every `rand`
/// method (`random`, `sample`, …) is available through [`rand::Rng`].
///
/// ```
/// use cpflow::FlowRng;
/// use cpflow::rand::Rng;
/// let mut a = FlowRng::seed_from_u64(7);
/// let mut b = FlowRng::seed_from_u64(7);
/// let xs: Vec<f64> = (0..3).map(|_| a.random()).collect();
/// assert_eq!(xs, (0..3).map(|_| b.random::<f64>()).collect::<Vec<_>>()); // same seed, same stream
/// assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
/// ```
#[derive(Clone, Debug)]
pub struct FlowRng(ChaCha12Rng);

/// The serialisable state of a [`FlowRng`].
///
/// ```
/// use cpflow::{FlowRng, RngState};
/// use cpflow::rand::RngCore;
/// # fn main() -> cpflow::Result<()> {
/// let mut rng = FlowRng::seed_from_u64(3);
/// rng.next_u64();
/// let saved: RngState = rng.state();
/// let json = serde_json::to_string(&saved)?; // as stored in a checkpoint
/// let mut resumed = FlowRng::from_state(&serde_json::from_str(&json)?)?;
/// assert_eq!(resumed.next_u64(), rng.next_u64()); // continues where it stopped
/// // A seed that is not hexadecimal is refused.
/// let bad = RngState { seed_hex: "zz".into(), ..saved };
/// assert!(matches!(FlowRng::from_state(&bad), Err(cpflow::CpflowError::RngSeed(_))));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte key, hex encoded.
    pub seed_hex: String,
    /// Stream number.
    pub stream: u64,
    /// Position in the stream, in 32-bit words (decimal string: it is a u128).
    pub word_pos: String,
}

impl FlowRng {
    /// A generator seeded from a `u64` (same convention as `StdRng::seed_from_u64`).
    pub fn seed_from_u64(seed: u64) -> Self {
        FlowRng(ChaCha12Rng::seed_from_u64(seed))
    }

    /// The exact state (key, stream, position).
    pub fn state(&self) -> RngState {
        RngState {
            seed_hex: hex::encode(self.0.get_seed()),
            stream: self.0.get_stream(),
            word_pos: self.0.get_word_pos().to_string(),
        }
    }

    /// Rebuild a generator from a saved state.
    pub fn from_state(state: &RngState) -> Result<Self> {
        let bad = |m: &str| CpflowError::Checkpoint(format!("bad RNG state: {m}"));
        let bytes = hex::decode(&state.seed_hex).map_err(CpflowError::RngSeed)?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| bad("seed must be 32 bytes"))?;
        let pos: u128 = state
            .word_pos
            .parse()
            .map_err(|_| bad("word_pos is not a u128"))?;
        let mut rng = ChaCha12Rng::from_seed(seed);
        rng.set_stream(state.stream);
        rng.set_word_pos(pos);
        Ok(FlowRng(rng))
    }
}

impl RngCore for FlowRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn state_round_trip_continues_the_stream() {
        let mut a = FlowRng::seed_from_u64(7);
        for _ in 0..13 {
            let _: u32 = a.random();
        }
        let saved = serde_json::to_string(&a.state()).unwrap();
        let mut b = FlowRng::from_state(&serde_json::from_str(&saved).unwrap()).unwrap();
        for _ in 0..100 {
            assert_eq!(a.random::<u64>(), b.random::<u64>());
        }
        // A different seed gives a different stream (the test can fail).
        let mut c = FlowRng::seed_from_u64(8);
        assert_ne!(a.random::<u64>(), c.random::<u64>());
    }
}
