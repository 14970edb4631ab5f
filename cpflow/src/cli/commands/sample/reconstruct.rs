//! `cpflow sample --reconstruct` on a VAE: test images next to their reconstructions (the
//! pixel means of `p(x | z)` for one posterior sample `z ~ q(z | x)` each).

use crate::FlowRng;
use crate::vae::{Vae, VaeConfig, VaeSplit, load_vae_data, make_batch};
use anyhow::{Result, bail};
use candle_core::{DType, Tensor};

use super::{IMAGE_SAMPLE_CHUNK, draw_image_chunks, image_target};
use crate::cli::{SampleArgs, VaePixels};

/// With `--grid R×C` (`R` even): the first `R/2 · C` test images in rows 1, 3, … and their
/// reconstructions in the row below each; without it, the reconstructions of the first `-n`
/// test images as rows. Writes `--output`; returns the number of images written and what
/// they are.
pub(super) fn reconstruct(a: &SampleArgs, vae: &Vae, cfg: &VaeConfig) -> Result<(usize, String)> {
    if a.temperature.is_some() || a.pixels == Some(VaePixels::Draw) {
        bail!(
            "--temperature and --pixels draw apply to prior samples: --reconstruct decodes \
             posterior samples of test images into pixel means"
        );
    }
    let data = load_vae_data(cfg.data.dataset, &cfg.data.root, cfg.data.seed)?;
    let test = data.test.n;
    // `cols`: the grid's columns (a grid row of images above a row of reconstructions).
    let (pairs, cols) = match a.grid {
        Some((r, c)) if r % 2 == 0 => (r / 2 * c, Some(c)),
        Some((r, _)) => bail!(
            "--reconstruct with --grid needs an even number of rows (test images above their \
             reconstructions), got {r}"
        ),
        None => (a.n, None),
    };
    if pairs > test {
        bail!(
            "--reconstruct asks for {pairs} test images; the {} test split has {test}",
            cfg.data.dataset
        );
    }
    let (h, w) = vae.image_hw();
    let n = if cols.is_some() { 2 * pairs } else { pairs };
    let mut target = image_target(a, h * w, n)?;
    let mut rng = FlowRng::seed_from_u64(a.dev.seed.unwrap_or(0));
    // A grid is drawn a grid row (`cols` pairs) at a time: the originals, then their
    // reconstructions; rows are streamed a chunk of reconstructions at a time.
    let chunk = cols.map_or(IMAGE_SAMPLE_CHUNK, |c| 2 * c);
    let mut next = 0;
    draw_image_chunks(a, n, &mut target, chunk, |len| {
        let count = if cols.is_some() { len / 2 } else { len };
        let idx: Vec<usize> = (next..next + count).collect();
        next += count;
        let batch = make_batch(vae, &data, VaeSplit::Test, &idx, &mut rng)?;
        let recon = vae.reconstructed_means(&batch, &mut rng)?;
        Ok(if cols.is_some() {
            Tensor::cat(&[batch.x.to_dtype(DType::F64)?, recon], 0)?
        } else {
            recon
        })
    })?;
    target.finish(&a.output, |x| Ok(x.clone()))?;
    let what = format!(
        "reconstructions of the first {pairs} {} test images{}",
        cfg.data.dataset,
        if cols.is_some() {
            " (above: the images)"
        } else {
            ""
        }
    );
    Ok((n, what))
}
