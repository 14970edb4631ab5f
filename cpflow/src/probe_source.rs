//! Where the CG surrogate takes its Rademacher probes: a random stream, or the streams of a
//! batch's row chunks (so that a batch run as one pass draws the probes its chunks would).
//!
//! The trainer gives each row chunk of a batch its own probe stream, seeded from the
//! trainer's RNG in chunk order, so the CPU can run the chunks in parallel and the estimate
//! depends on the chunk size alone, never on the thread count. On a GPU the chunks would run
//! one after the other as four times as many small kernels; there the batch runs as one pass
//! and [`ChunkProbes`] hands it, for each block, the probes of every chunk's stream placed on
//! that chunk's rows: the same probes, so the same estimate as the chunked step.

use candle_core::Tensor;
use rand::Rng;

use crate::error::{CpflowError, Result};
use crate::rng::FlowRng;

/// A source of unit-variance Rademacher probes (±1).
pub(crate) trait ProbeSource {
    /// `(n, d)` probes on `like`'s device and dtype.
    fn rademacher(&mut self, n: usize, d: usize, like: &Tensor) -> Result<Tensor>;
}

impl<R: Rng + ?Sized> ProbeSource for R {
    fn rademacher(&mut self, n: usize, d: usize, like: &Tensor) -> Result<Tensor> {
        crate::block::rademacher(n, d, like, self)
    }
}

/// The probes of a batch of rows split into chunks of `chunk_rows`, chunk `i` drawing from
/// `FlowRng::seed_from_u64(seeds[i])` (module docs). A request for `n = rows · p` probe rows
/// (`p` probes per row, row-major as the composed surrogate asks) gives chunk `i`'s
/// `rowsᵢ · p` rows from its stream, in chunk order: what each chunk's own pass would draw.
pub(crate) struct ChunkProbes {
    streams: Vec<FlowRng>,
    rows: Vec<usize>,
}

impl ChunkProbes {
    /// Streams for `n` rows in chunks of `chunk_rows` (the last may be shorter), one seed per
    /// chunk.
    pub(crate) fn new(seeds: &[u64], n: usize, chunk_rows: usize) -> Result<Self> {
        let chunk_rows = chunk_rows.max(1);
        let chunks = n.div_ceil(chunk_rows);
        if seeds.len() != chunks {
            return Err(CpflowError::InvalidInput(format!(
                "{} probe seeds for {chunks} chunks of {chunk_rows} rows",
                seeds.len()
            )));
        }
        let rows = (0..chunks)
            .map(|i| chunk_rows.min(n - i * chunk_rows))
            .collect();
        let streams = seeds.iter().map(|&s| FlowRng::seed_from_u64(s)).collect();
        Ok(Self { streams, rows })
    }
}

impl ProbeSource for ChunkProbes {
    fn rademacher(&mut self, n: usize, d: usize, like: &Tensor) -> Result<Tensor> {
        let total: usize = self.rows.iter().sum();
        if total == 0 || !n.is_multiple_of(total) {
            return Err(CpflowError::InvalidInput(format!(
                "{n} probe rows asked of a batch of {total} rows"
            )));
        }
        let per_row = n / total;
        let parts = self
            .streams
            .iter_mut()
            .zip(&self.rows)
            .map(|(rng, &r)| crate::block::rademacher(r * per_row, d, like, rng))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    /// The batch's probes are the chunks' own draws, stacked: for one probe per row and for
    /// several (row-major), over two requests (two blocks), with a short last chunk.
    #[test]
    fn batch_probes_are_the_chunks_draws() {
        let like = Tensor::zeros((1, 1), DType::F64, &Device::Cpu).unwrap();
        let (n, chunk, d) = (10, 4, 3);
        let seeds = [11u64, 12, 13];
        let mut batch = ChunkProbes::new(&seeds, n, chunk).unwrap();
        let mut own: Vec<FlowRng> = seeds.iter().map(|&s| FlowRng::seed_from_u64(s)).collect();
        for p in [1usize, 2] {
            let got = batch.rademacher(n * p, d, &like).unwrap();
            let want: Vec<Tensor> = own
                .iter_mut()
                .zip([4usize, 4, 2])
                .map(|(r, rows)| crate::block::rademacher(rows * p, d, &like, r).unwrap())
                .collect();
            let want = Tensor::cat(&want, 0).unwrap();
            assert_eq!(
                got.to_vec2::<f64>().unwrap(),
                want.to_vec2::<f64>().unwrap()
            );
        }
        assert!(batch.rademacher(7, d, &like).is_err());
        assert!(ChunkProbes::new(&seeds, 13, chunk).is_err());
    }
}
