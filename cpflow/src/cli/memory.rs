//! The memory this process may use, and refusing before anything is built a model that
//! cannot fit in it.

use anyhow::{Result, bail};
use candle_core::{DType, Device};

mod data_memory;
mod limit;

pub(crate) use data_memory::{DATA_BYTES_PER_VALUE, check_drawn_data_memory};

#[cfg(test)]
pub(crate) use limit::LimitSource;
pub(crate) use limit::{MemoryLimit, memory_limit};

/// Copies of the weights that any training keeps: the weights, their gradients and the
/// optimiser's two moments (Adam's or Adamax's).
pub(crate) const OPTIMISER_COPIES: f64 = 4.0;

/// Copies of the weights at the peak of a dense flow's training step, at least: the
/// optimiser's four, and the step's working copies. Measured: 19 to 25 copies of peak RSS in
/// the runs of `FLOW_MEASURED_PEAKS` whose weights dominate (6 to 21 million parameters,
/// batches of 16 or 128 rows: one row chunk). heaptrack of the 21-million-parameter run (f64,
/// system allocator) puts the heap's peak at 15 copies, inside the step's backward pass: the
/// weights, Adam's two moments, the prepared weights with the three intermediates their graph
/// keeps, their host copy (`icnn::HostWeights`), its gradient leaf, the leaf's gradient with
/// candle's two transient copies, and the activations; mimalloc's per-thread pages add the
/// rest. Steps of several row chunks share these copies (one set of host weights, one pass
/// through the preparation per step).
pub(crate) const FLOW_STEP_WEIGHT_COPIES: f64 = 12.0;

/// Values per hidden unit and row that a dense flow's training step keeps, at least: the
/// forward pass's `z`, `s'`, `s''` and pre-activations, the reverse recursion's `∂F/∂z` and
/// `δ` (`icnn`'s host primal arrays), for every block at once. Measured: 6.5 (Icnn3, f64) to
/// 8.6 (Icnn2, f32) values per unit and row from the batch-size slopes.
pub(crate) const FLOW_STEP_UNIT_VALUES: f64 = 6.0;

/// A lower bound on the activation bytes of a dense flow's training step with
/// `hidden_units` units per row (all blocks; [`crate::FlowConfig::total_hidden_units`];
/// `None`: 0) on batches of `batch` rows in `dtype`, for [`check_training_memory`] with
/// [`FLOW_STEP_WEIGHT_COPIES`].
pub(crate) fn flow_training_memory(hidden_units: Option<usize>, batch: usize, dtype: DType) -> f64 {
    activation_bytes(FLOW_STEP_UNIT_VALUES, hidden_units, batch, dtype)
}

/// Copies of the weights at the peak of an image flow's training step, at least: the
/// weights, their gradients, Adam's two moments, the evaluation copy (which holds the weight
/// average, EMA), the prepared weights, their concatenation into the one vector the surrogate
/// differentiates and its host copy (`icnn::HostWeights`), and the Winograd transform of
/// the 3×3 kernels (`icnn`'s links of 32 channels or more keep each kernel transformed,
/// 36/9 = 4 values per kernel value, for the forward and the adjoint pass alike): 12, each
/// seen at the heap's peak by heaptrack. Measured (heaptrack, and peak RSS against batch
/// size): 30 (width 1,024) to 41 (width 256) copies on MNIST `conv_icnn` flows, when
/// candle's backward through the weight preparation held several more; since the fused
/// preparation (`icnn`'s `scaled_kernel`), 17 at the heap's peak at width 1,024, in the
/// optimiser step (the clipped gradients and Adam's temporaries on top of the 12).
pub(crate) const IMAGE_STEP_WEIGHT_COPIES: f64 = 12.0;

/// Values per hidden unit and image that an image flow's training step keeps, at least (the
/// host forward caches, the CG tangents and the adjoint's arrays of every block at once).
/// Measured: 33 to 34 values per unit and image (f32 and f64 alike, in bytes per value) from
/// the batch-size slopes of MNIST `conv_icnn` flows of width 256 and 512, about 32 for
/// `conv_icnn2` and 13 for `conv_icnn3` (width 256, batch 16, less the process's 0.26 GB and
/// 40 weight copies).
pub(crate) const IMAGE_STEP_UNIT_VALUES: f64 = 10.0;

/// A lower bound on the activation bytes of an image flow's training step with
/// `hidden_units` units per image (all blocks; [`crate::image::ImageFlowConfig::total_hidden_units`];
/// `None`: 0) on batches of `batch` images in `dtype`, for [`check_training_memory`] with
/// [`IMAGE_STEP_WEIGHT_COPIES`].
pub(crate) fn image_training_memory(
    hidden_units: Option<usize>,
    batch: usize,
    dtype: DType,
) -> f64 {
    activation_bytes(IMAGE_STEP_UNIT_VALUES, hidden_units, batch, dtype)
}

/// Values per hidden unit and image that a VAE's training step keeps, at least (each gated
/// layer's pre-activations, gate and output, and their gradients in the backward pass;
/// units: [`crate::vae::VaeArchitecture::hidden_units`]). Measured from the batch-size slopes
/// of peak RSS (`VAE_MEASURED_PEAKS`): 2.7 (Gaussian posterior) and 3.7 (CP-Flow) values
/// per unit and image on Frey Faces at half the reference width in f32, 5.1 at the reference
/// width in f64.
pub(crate) const VAE_STEP_UNIT_VALUES: f64 = 2.0;

/// A lower bound on the activation bytes of a VAE's training step with `hidden_units` units
/// per image on batches of `batch` images in the networks' `dtype`, for
/// [`check_training_memory`] with [`OPTIMISER_COPIES`].
pub(crate) fn vae_training_memory(hidden_units: usize, batch: usize, dtype: DType) -> f64 {
    activation_bytes(VAE_STEP_UNIT_VALUES, Some(hidden_units), batch, dtype)
}

/// `values` values of `dtype` per hidden unit and row, over `batch` rows (`None` units: 0).
fn activation_bytes(values: f64, hidden_units: Option<usize>, batch: usize, dtype: DType) -> f64 {
    hidden_units.map_or(0.0, |u| {
        values * u as f64 * batch as f64 * dtype.size_in_bytes() as f64
    })
}

/// `bytes` as GB with one decimal, or as MB below 0.1 GB (a model of 3.5 million f64
/// weights has "28 MB of weights", not "0.0 GB").
pub(crate) fn size_in_words(bytes: f64) -> String {
    if bytes < 0.1e9 {
        format!("{:.0} MB", bytes / 1e6)
    } else {
        format!("{:.1} GB", bytes / 1e9)
    }
}

/// Refuse to train, on the CPU, a model whose weights — `parts`, each a parameter count and
/// its float type — in `copies` copies, with `activations` bytes on top, would exceed
/// the memory this process may use, `limit` ([`memory_limit`]; `None`: unknown, nothing is
/// refused; the refusal names the limit). `copies` is at least
/// [`OPTIMISER_COPIES`]; `activations` is a lower bound for the model's kind (0 where none
/// is known). `model` names the model and `what_to_lower` the settings that size it. Without
/// this a model of 3·10⁹ parameters (below [`icnn::MAX_MODEL_PARAMETERS`]) was built until
/// the system killed the process, with no message. Passing this check does not promise the
/// run fits; failing it means it cannot.
pub(crate) fn check_training_memory(
    model: &str,
    parts: &[(usize, DType)],
    copies: f64,
    activations: f64,
    device: &Device,
    limit: Option<MemoryLimit>,
    what_to_lower: &str,
) -> Result<()> {
    let besides = BesidesWeights {
        activations,
        data: 0.0,
    };
    check_training_memory_with(model, parts, copies, besides, device, limit, what_to_lower)
}

/// The bytes a training step needs besides the copies of the weights.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BesidesWeights {
    /// The activations of a batch (a lower bound; 0 where none is known).
    pub activations: f64,
    /// The data held while training starts (0 where the data were counted elsewhere).
    pub data: f64,
}

/// [`check_training_memory`] with the data counted too, and named in the refusal.
pub(crate) fn check_training_memory_with(
    model: &str,
    parts: &[(usize, DType)],
    copies: f64,
    besides: BesidesWeights,
    device: &Device,
    limit: Option<MemoryLimit>,
    what_to_lower: &str,
) -> Result<()> {
    let BesidesWeights { activations, data } = besides;
    let Some(limit) = limit.filter(|_| device.is_cpu()) else {
        return Ok(());
    };
    let parameters = parts.iter().fold(0usize, |n, p| n.saturating_add(p.0));
    let weights: f64 = parts
        .iter()
        .map(|&(n, dtype)| n as f64 * dtype.size_in_bytes() as f64)
        .sum();
    let need = weights * copies + activations + data;
    if need > limit.bytes {
        let kept = if copies > OPTIMISER_COPIES {
            "the weights, their gradients, the optimiser's two moments and a training step's \
             working copies"
        } else {
            "the weights, their gradients and the optimiser's two moments"
        };
        let batch = if activations > 0.0 {
            format!(
                " and {} for the activations of a batch",
                size_in_words(activations)
            )
        } else {
            String::new()
        };
        let batch = if data > 0.0 {
            format!("{batch} and {} for the data", size_in_words(data))
        } else {
            batch
        };
        bail!(
            "{model} has {parameters} parameters ({:.1e}, {} of weights): training it \
             needs at least {}: {} for {copies} copies of the weights ({kept}){batch}; \
             more than {limit}: lower {what_to_lower}",
            parameters as f64,
            size_in_words(weights),
            size_in_words(need),
            size_in_words(weights * copies),
        );
    }
    Ok(())
}

/// Peak RSS of `cpflow train --iters 3` (release, 2 threads; GB) on this project's CPU
/// machine, with what sizes it: parameters, bytes per value, blocks, batch, width and depth
/// (Icnn2 on 12,000 rows of d = 48 or Icnn3 on the 2-D toy; exact validation and test NLL
/// at the end). The lower bound of [`FLOW_STEP_WEIGHT_COPIES`] and
/// [`FLOW_STEP_UNIT_VALUES`] is below each (1.4× to 6.4× below). Measured with the build that
/// shares the host weights among the row chunks of a step (before it, the runs of 1,024 rows
/// and more peaked up to 1.5× higher). The fused weight preparation (`icnn`'s
/// `scaled_kernel`) lowered the run of 13 million parameters at batch 16 from 1.292 to 1.080
/// GB, where the bound is 1.7× below it, and left the others within 2% (those checked:
/// width 2,048 at batch 1,024, width 512); the table keeps the earlier build's numbers.
#[cfg(test)]
pub(crate) const FLOW_MEASURED_PEAKS: [(f64, usize, usize, usize, usize, usize, usize); 14] = [
    (0.122, 70_388, 4, 1, 1024, 64, 10),
    (0.551, 2_625_780, 4, 1, 1024, 512, 10),
    (0.880, 3_088_628, 4, 1, 1024, 256, 40),
    (0.937, 1_511_668, 4, 1, 4096, 256, 20),
    (0.530, 1_347_668, 4, 1, 1024, 256, 20),
    (0.931, 4_534_812, 4, 3, 1024, 256, 20),
    (0.829, 1_511_668, 8, 1, 1024, 256, 20),
    (0.525, 1_511_668, 4, 1, 1024, 256, 20),
    (0.933, 2_536_202, 8, 1, 128, 512, 20),
    (1.846, 2_536_202, 8, 1, 2048, 512, 20),
    (1.318, 7_608_607, 8, 3, 128, 512, 20),
    (3.602, 20_631_050, 8, 1, 128, 1024, 40),
    (0.973, 6_327_306, 8, 1, 16, 2048, 4),
    (1.292, 13_009_140, 4, 1, 16, 2048, 4),
];

/// Peak RSS of `cpflow train --config configs/mnist-cpu.toml --iters 3` (release, 2
/// threads; GB; 16 validation and test images, 2 at width 1,024) on this project's CPU machine, with what sizes
/// it: parameters, bytes per value, hidden units per image
/// ([`crate::image::ImageFlowConfig::total_hidden_units`]) and batch. `conv_icnn` of width 64
/// to 1,024, depth 2 or 4, one or two blocks per scale, f32 or f64; `conv_icnn3` and
/// `conv_icnn2` of width 256 (the last two). The lower bound of [`IMAGE_STEP_WEIGHT_COPIES`]
/// and [`IMAGE_STEP_UNIT_VALUES`] is below each (1.7× to 4.0× below). Measured with the
/// build that keeps the weight average in the evaluation flow's variables, keeps one kernel
/// gradient per wide layer and prepares each kernel with its ActNorm scale in one op with a
/// detached backward (before it, up to 1.5× higher: 2.89 GB at width 512, 7.62 GB at width
/// 1,024).
#[cfg(test)]
pub(crate) const IMAGE_MEASURED_PEAKS: [(f64, usize, usize, usize, usize); 10] = [
    (1.902, 14_364_722, 4, 1_053_696, 4),
    (1.671, 3_643_442, 4, 526_848, 16),
    (2.816, 3_643_442, 4, 526_848, 32),
    (3.145, 10_727_474, 4, 1_053_696, 16),
    (2.779, 7_286_882, 4, 1_053_696, 16),
    (1.411, 247_346, 4, 131_712, 64),
    (3.150, 3_643_442, 8, 526_848, 16),
    (5.082, 57_040_946, 4, 2_107_392, 2),
    (0.922, 992_117, 4, 526_848, 16),
    (1.434, 2_756_786, 4, 526_848, 16),
];

/// Peak RSS of `cpflow vae --epochs 1` (release, 2 threads; GB; importance sampling with 10
/// samples on 2 test images) on this project's CPU machine, with what sizes it: the
/// encoder's and decoder's parameters and their bytes per value, the posterior's parameters
/// (f64), hidden units per image ([`crate::vae::VaeArchitecture::hidden_units`]) and batch.
/// `configs/vae-frey-cpu.toml` at batch 100, 400 and 1,565 (the whole training split), with
/// the CP-Flow and the Gaussian posterior; `configs/vae-frey.toml` (the reference width, f64)
/// at batch 100 and 400; `configs/vae-caltech-cpu.toml` at batch 400 and 4,100 (the whole
/// split). The lower bound of [`OPTIMISER_COPIES`] and [`VAE_STEP_UNIT_VALUES`] is below each:
/// 1.4× to 2.4× below on Frey Faces, 2.8× to 5.1× on Caltech (where the CP-Flow posterior's
/// f64 arrays, which this bound leaves out, weigh more against the small Bernoulli networks;
/// `cpflow vae`'s check adds them, `crate::vae::posterior_memory`).
#[cfg(test)]
pub(crate) const VAE_MEASURED_PEAKS: [(f64, usize, usize, usize, usize, usize); 10] = [
    (0.644, 1_049_824, 4, 452_122, 186_176, 100),
    (1.275, 1_049_824, 4, 452_122, 186_176, 400),
    (4.523, 1_049_824, 4, 452_122, 186_176, 1565),
    (0.331, 1_049_824, 4, 0, 186_176, 100),
    (3.268, 1_049_824, 4, 0, 186_176, 1565),
    (0.992, 2_764_480, 8, 452_122, 228_736, 100),
    (3.798, 2_764_480, 8, 452_122, 228_736, 400),
    (1.175, 1_294_257, 4, 452_122, 60_624, 400),
    (9.099, 1_294_257, 4, 452_122, 60_624, 4100),
    (5.595, 1_294_257, 4, 0, 60_624, 4100),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The boundary: four copies of the weights at the machine's memory pass, one parameter
    /// more is refused with the numbers and the limit; unknown memory refuses nothing.
    #[test]
    fn refuses_exactly_what_cannot_fit() {
        let cpu = Device::Cpu;
        let check = |n: usize, dtype: DType, total: Option<f64>| {
            check_training_memory(
                "the flow",
                &[(n, dtype)],
                OPTIMISER_COPIES,
                0.0,
                &cpu,
                total.map(MemoryLimit::machine),
                "model.depth",
            )
        };
        // 10⁶ f64 parameters: 32 MB in four copies.
        check(1_000_000, DType::F64, Some(32e6)).unwrap();
        let err = check(1_000_001, DType::F64, Some(32e6))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the flow has 1000001 parameters")
                && err.contains("needs at least 32 MB")
                && err.contains("more than this machine's 32 MB: lower model.depth"),
            "{err}"
        );
        // f32 needs half.
        check(2_000_000, DType::F32, Some(32e6)).unwrap();
        assert!(check(2_000_001, DType::F32, Some(32e6)).is_err());
        check(usize::MAX, DType::F64, None).unwrap();
        // Parts of different types add their bytes: 10⁶ f64 (8 MB) + 10⁶ f32 (4 MB), × 4.
        let parts = [(1_000_000, DType::F64), (1_000_000, DType::F32)];
        let vae = |total: f64| {
            check_training_memory(
                "the VAE",
                &parts,
                OPTIMISER_COPIES,
                0.0,
                &cpu,
                Some(MemoryLimit::machine(total)),
                "x",
            )
        };
        vae(48e6).unwrap();
        let err = vae(47.9e6).unwrap_err();
        assert!(
            err.to_string().contains("the VAE has 2000000 parameters"),
            "{err}"
        );
        // This process, if it says: a model of 2³¹ f64 parameters needs 68.7 GB.
        if let Some(limit) = memory_limit() {
            let total = limit.bytes;
            assert!(total > 1e8, "{total} bytes");
            let need = (1u64 << 31) as f64 * 32.0;
            assert_eq!(
                check(1 << 31, DType::F64, Some(total)).is_err(),
                total < need
            );
        }
    }

    /// A refusal under a cgroup's or an address-space limit names that limit, not the
    /// machine; the arithmetic is the same whatever the limit.
    #[test]
    fn refusals_name_the_limit() {
        let check = |bytes: f64, source: LimitSource| {
            check_training_memory(
                "the flow",
                &[(1_000_000, DType::F64)],
                OPTIMISER_COPIES,
                0.0,
                &Device::Cpu,
                Some(MemoryLimit { bytes, source }),
                "model.depth",
            )
        };
        for (source, named) in [
            (LimitSource::CgroupMemoryMax, "(its cgroup's memory.max)"),
            (
                LimitSource::CgroupLimitInBytes,
                "(its cgroup's memory.limit_in_bytes)",
            ),
            (
                LimitSource::AddressSpace,
                "(its address-space limit, ulimit -v)",
            ),
        ] {
            check(32e6, source).unwrap();
            let err = check(31.9e6, source).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "more than the 32 MB this process may use {named}: lower model.depth"
                )) && !err.contains("machine"),
                "{err}"
            );
        }
    }

    #[test]
    fn sizes_below_a_tenth_of_a_gigabyte_are_in_megabytes() {
        assert_eq!(size_in_words(28.2e6), "28 MB");
        assert_eq!(size_in_words(0.0999e9), "100 MB");
        assert_eq!(size_in_words(0.1e9), "0.1 GB");
        assert_eq!(size_in_words(25.3e9), "25.3 GB");
    }

    /// The dense flow's bound: activations add to the weight copies, are named in the
    /// message, and the sum is refused exactly above the machine's memory.
    #[test]
    fn activations_add_to_the_weights() {
        let cpu = Device::Cpu;
        // 10⁶ f32 weights in 12 copies (48 MB) and 10³ units × 10³ rows × 6 values (24 MB).
        let act = flow_training_memory(Some(1000), 1000, DType::F32);
        assert_eq!(act, 24e6);
        assert_eq!(flow_training_memory(None, 1000, DType::F32), 0.0);
        let check = |total: f64| {
            check_training_memory(
                "the flow",
                &[(1_000_000, DType::F32)],
                FLOW_STEP_WEIGHT_COPIES,
                act,
                &cpu,
                Some(MemoryLimit::machine(total)),
                "model.width",
            )
        };
        check(72e6).unwrap();
        let err = check(71.9e6).unwrap_err().to_string();
        assert!(
            err.contains("12 copies of the weights")
                && err.contains("24 MB for the activations of a batch")
                && err.contains("lower model.width"),
            "{err}"
        );
    }

    /// The data held when training starts add to the weights and activations, and the
    /// refusal names them (a toy of 10⁸ points passed the check of the weights and the
    /// activations alone, then aborted building its tensors under `ulimit -v`).
    #[test]
    fn data_add_to_the_weights_and_are_named() {
        let besides = BesidesWeights {
            activations: 24e6,
            data: 3.2e9,
        };
        let check = |total: f64| {
            check_training_memory_with(
                "the flow",
                &[(1_000_000, DType::F32)],
                FLOW_STEP_WEIGHT_COPIES,
                besides,
                &Device::Cpu,
                Some(MemoryLimit::machine(total)),
                "the data's size",
            )
        };
        check(3.272e9).unwrap();
        let err = check(3.271e9).unwrap_err().to_string();
        assert!(
            err.contains("needs at least 3.3 GB")
                && err.contains("24 MB for the activations of a batch and 3.2 GB for the data")
                && err.contains("lower the data's size"),
            "{err}"
        );
    }

    fn dtype_of(bytes: usize) -> DType {
        if bytes == 4 { DType::F32 } else { DType::F64 }
    }

    /// [`check_training_memory`] of the weights `parts` in `copies` copies with `activations`
    /// bytes, on a CPU machine of the given total memory.
    fn bound_check(
        parts: Vec<(usize, DType)>,
        copies: f64,
        activations: f64,
    ) -> impl Fn(f64) -> anyhow::Result<()> {
        move |total| {
            check_training_memory(
                "the model",
                &parts,
                copies,
                activations,
                &Device::Cpu,
                Some(MemoryLimit::machine(total)),
                "model.width",
            )
        }
    }

    /// The image bound is a bound: every measured image run passes on a machine of exactly
    /// its peak memory and is refused on one of 1/4.6 of it.
    #[test]
    fn image_bound_is_below_every_measured_peak() {
        for (gb, params, bytes, units, batch) in IMAGE_MEASURED_PEAKS {
            let dtype = dtype_of(bytes);
            let activations = image_training_memory(Some(units), batch, dtype);
            let check = bound_check(vec![(params, dtype)], IMAGE_STEP_WEIGHT_COPIES, activations);
            let peak = gb * 1e9;
            assert!(
                check(peak).is_ok(),
                "{params} parameters, batch {batch}: refused at its measured peak"
            );
            // Not toothless: every run is refused on a machine of 1/4.6 of its peak.
            assert!(
                check(peak / 4.6).is_err(),
                "{params} parameters, batch {batch}: passes at 1/4.6 of its peak"
            );
        }
    }

    /// The VAE bound is a bound: every measured run passes on a machine of exactly its peak
    /// memory and is refused on one of 1/5.2 of it.
    #[test]
    fn vae_bound_is_below_every_measured_peak() {
        for (gb, networks, bytes, posterior, units, batch) in VAE_MEASURED_PEAKS {
            let dtype = dtype_of(bytes);
            let check = bound_check(
                vec![(networks, dtype), (posterior, DType::F64)],
                OPTIMISER_COPIES,
                vae_training_memory(units, batch, dtype),
            );
            let peak = gb * 1e9;
            assert!(
                check(peak).is_ok(),
                "{networks} + {posterior}, batch {batch}"
            );
            assert!(
                check(peak / 5.2).is_err(),
                "{networks} + {posterior}, batch {batch}: passes at 1/5.2 of its peak"
            );
        }
    }

    /// The bound is a bound: the check passes every measured run on a machine of exactly its
    /// peak memory (it would refuse runs that fit otherwise), and refuses, on a machine of
    /// 1/2.1 of their peak, the six runs whose weights (over 5 million parameters) or batch
    /// (over 2,000 rows) dominate (it would refuse nothing otherwise).
    #[test]
    fn flow_bound_is_below_every_measured_peak() {
        for (gb, params, bytes, blocks, batch, width, depth) in FLOW_MEASURED_PEAKS {
            let dtype = dtype_of(bytes);
            let activations = flow_training_memory(Some(blocks * width * depth), batch, dtype);
            let check = bound_check(vec![(params, dtype)], FLOW_STEP_WEIGHT_COPIES, activations);
            let peak = gb * 1e9;
            assert!(
                check(peak).is_ok(),
                "{params} parameters, batch {batch}: refused at its measured peak"
            );
            if params > 5_000_000 || batch > 2000 {
                assert!(
                    check(peak / 2.1).is_err(),
                    "{params} parameters, batch {batch}: passes at 1/2.1 of its peak"
                );
            }
        }
    }
}
