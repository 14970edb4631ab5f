//! What `cpflow train` checks and says of its data: a new run's memory with the data's
//! tensors, why a run has no test rows, and what its validation numbers were computed on.

use anyhow::Result;
use candle_core::{DType, Device};

use crate::FlowConfig;
use crate::cli::data::{DataSource, LoadedData};
use crate::cli::memory::{
    BesidesWeights, DATA_BYTES_PER_VALUE, FLOW_STEP_WEIGHT_COPIES, check_training_memory_with,
    flow_training_memory, memory_limit,
};
use crate::cli::run_config::{DataSection, RunConfig};

/// Why a run has no test rows, named by the key that sets them: `data.n_test` for toys and
/// images, `data.test_fraction` for files (also when a fraction above 0 rounds to no row).
pub(super) fn why_no_test_rows(section: &DataSection, data: &LoadedData) -> String {
    match data.source {
        DataSource::Npy(_) | DataSource::Csv(_) if section.test_fraction > 0.0 => format!(
            "data.test_fraction = {} of the {} rows of {} rounds to 0; raise it for a test score",
            section.test_fraction,
            data.n_train() + data.n_val() + data.n_test(),
            section.source
        ),
        DataSource::Npy(_) | DataSource::Csv(_) => "data.test_fraction = 0".into(),
        DataSource::Tabular(_) => format!("the test split of `{}` is empty", section.source),
        DataSource::Toy(_) | DataSource::Image(_) => format!("data.n_test = {}", section.n_test),
    }
}

/// A new run's memory, checked before the data become tensors: the weights of the flow of
/// `flow_config` and a training step's arrays, plus the data's tensors (every split, in the
/// model's float type) beside the host rows they are made from ([`DATA_BYTES_PER_VALUE`],
/// still held then). The data alone were checked when they were drawn
/// (`cli::memory::data_memory`).
pub(super) fn check_new_flow_memory(
    flow_config: &FlowConfig,
    cfg: &RunConfig,
    data: &LoadedData,
    dtype: DType,
    device: &Device,
) -> Result<()> {
    let Some(n) = flow_config.parameter_count() else {
        return Ok(());
    };
    let batch = cfg.train.batch_size.min(data.n_train());
    let units = flow_config.total_hidden_units();
    let values = (data.n_train() + data.n_val() + data.n_test()) as f64 * data.dim as f64;
    let data_bytes = values * (dtype.size_in_bytes() as f64 + DATA_BYTES_PER_VALUE);
    let besides = BesidesWeights {
        activations: flow_training_memory(units, batch, dtype),
        data: data_bytes,
    };
    check_training_memory_with(
        "the flow",
        &[(n, dtype)],
        FLOW_STEP_WEIGHT_COPIES,
        besides,
        device,
        memory_limit(),
        "model.depth, model.width, model.blocks, train.batch_size or the data's size",
    )
}

/// What `report.json`'s validation numbers were computed on, by the kind of data.
pub(super) fn validation_label(source: &DataSource) -> &'static str {
    match source {
        DataSource::Toy(_) | DataSource::Image(_) => {
            "validation (fresh draws from the density, apart from the training and test draws)"
        }
        DataSource::Tabular(_) => "validation (MAF's split: rows of the training data)",
        DataSource::Npy(_) | DataSource::Csv(_) => {
            "validation (rows held out of the shuffled file, apart from the training and test rows)"
        }
    }
}
