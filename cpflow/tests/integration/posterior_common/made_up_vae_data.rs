//! VAE data made up in place, for the VAE tests that run without the datasets on disk.

use cpflow::vae::{VaeData, VaeDatasetName, VaeImages, VaeLikelihood};

/// Static binary 28×28 images made up in place (as Caltech 101 Silhouettes): image `k` has
/// the pixels where `row + column + k` is a multiple of 3.
pub fn made_up_images(ks: &[usize]) -> VaeImages {
    VaeImages {
        n: ks.len(),
        pixels: ks
            .iter()
            .flat_map(|k| (0..784).map(move |i| u8::from((i / 28 + i % 28 + k) % 3 == 0)))
            .collect(),
    }
}

/// Caltech-101-like static binary data of [`made_up_images`]: images 0–3 for training, 1
/// and 2 for validation, `test` for the test split.
pub fn made_up_caltech_data(test: &[usize]) -> VaeData {
    VaeData {
        name: VaeDatasetName::Caltech101,
        likelihood: VaeLikelihood::Bernoulli,
        height: 28,
        width: 28,
        train: made_up_images(&[0, 1, 2, 3]),
        val: made_up_images(&[1, 2]),
        test: made_up_images(test),
        dynamic_binarization: false,
    }
}
