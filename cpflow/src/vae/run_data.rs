//! The checks [`super::run_vae_on`] makes on data held in memory before it builds anything:
//! the data are well formed ([`VaeData::check`]), every split holds images (an empty
//! validation split scored a "−ELBO" of 0 every epoch, an empty test split failed only after
//! training), and the data are those of the configuration's dataset: a run directory is read
//! back ([`super::load_vae`], `cpflow eval`) with the likelihood and image size of
//! `config.data.dataset`, so other data trained a model that could not be loaded. Then
//! [`training_subset`] cuts the training split to `config.data.n_train` images.

use std::borrow::Cow;

use super::config::VaeConfig;
use super::data::{VaeData, VaeSplit};
use crate::error::{CpflowError, Result};

/// Refuse data that [`super::run_vae_on`] cannot train, validate, score and save a loadable
/// model from (see the module documentation).
pub(super) fn check_run_data(config: &VaeConfig, data: &VaeData) -> Result<()> {
    data.check()?;
    for s in [VaeSplit::Train, VaeSplit::Val, VaeSplit::Test] {
        if data.split(s).n == 0 {
            return Err(CpflowError::InvalidInput(format!(
                "{}: the {s} split has no images (a run trains on the training split, \
                 validates every epoch on the validation split and scores the test split)",
                data.name
            )));
        }
    }
    let ds = config.data.dataset;
    let (h, w) = ds.image_size();
    if (data.likelihood, data.height, data.width) != (ds.likelihood(), h, w) {
        return Err(CpflowError::InvalidInput(format!(
            "the data are {}×{} images with the {} likelihood, but data.dataset = {ds} \
             has {h}×{w} images with the {} likelihood: the run's files are read back as \
             {ds}'s model; set data.dataset to the dataset of these images",
            data.height,
            data.width,
            data.likelihood,
            ds.likelihood()
        )));
    }
    Ok(())
}

/// `data` with its training split cut to its first `config.data.n_train` images (borrowed
/// as it is without a cap, or with one the split does not exceed: a warning then says every
/// image is used). Validation and test images are kept.
pub(super) fn training_subset<'a>(config: &VaeConfig, data: &'a VaeData) -> Cow<'a, VaeData> {
    let Some(n) = config.data.n_train else {
        return Cow::Borrowed(data);
    };
    if n >= data.train.n {
        if n > data.train.n {
            tracing::warn!(
                n_train = n,
                available = data.train.n,
                "data.n_train is larger than the training split: every training image is used"
            );
        }
        return Cow::Borrowed(data);
    }
    tracing::info!(
        "training on the first {n} of the {} training images (data.n_train)",
        data.train.n
    );
    Cow::Owned(VaeData {
        name: data.name,
        likelihood: data.likelihood,
        height: data.height,
        width: data.width,
        train: data.train.head(n),
        val: data.val.clone(),
        test: data.test.clone(),
        dynamic_binarization: data.dynamic_binarization,
    })
}
