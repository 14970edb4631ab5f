//! The machine's memory, and refusing before anything is built a model that cannot fit in it.

use anyhow::{Result, bail};
use candle_core::{DType, Device};

/// This machine's memory in bytes (`MemTotal` of `/proc/meminfo`; `None` elsewhere).
pub(crate) fn total_memory() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

/// Copies of the parameters that training keeps: the weights, their gradients and the
/// optimiser's two moments (Adam's or Adamax's).
const TRAINING_COPIES: f64 = 4.0;

/// Refuse to train, on the CPU, a model whose weights — `parts`, each a parameter count and
/// its float type — with their gradients and the optimiser's two moments alone would exceed
/// `total` bytes of memory (`None`: unknown, nothing is refused). `model` names the model and
/// `what_to_lower` the settings that size it. Without this a model of 3·10⁹ parameters
/// (below [`icnn::MAX_MODEL_PARAMETERS`]) was built until the system killed the process,
/// with no message. Activations and data come on top: passing this check does not promise
/// the run fits, failing it means it cannot.
pub(crate) fn check_training_memory(
    model: &str,
    parts: &[(usize, DType)],
    device: &Device,
    total: Option<f64>,
    what_to_lower: &str,
) -> Result<()> {
    let Some(total) = total.filter(|_| device.is_cpu()) else {
        return Ok(());
    };
    let parameters = parts.iter().fold(0usize, |n, p| n.saturating_add(p.0));
    let weights: f64 = parts
        .iter()
        .map(|&(n, dtype)| n as f64 * dtype.size_in_bytes() as f64)
        .sum();
    let need = weights * TRAINING_COPIES;
    if need > total {
        bail!(
            "{model} has {parameters} parameters ({:.1e}, {:.1} GB of weights): training it \
             needs at least {:.1} GB for the weights, their gradients and the optimiser's two \
             moments, more than this machine's {:.1} GB: lower {what_to_lower}",
            parameters as f64,
            weights / 1e9,
            need / 1e9,
            total / 1e9
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The boundary: four copies of the weights at the machine's memory pass, one parameter
    /// more is refused with the numbers; unknown memory refuses nothing.
    #[test]
    fn refuses_exactly_what_cannot_fit() {
        let cpu = Device::Cpu;
        let check = |n: usize, dtype: DType, total: Option<f64>| {
            check_training_memory("the flow", &[(n, dtype)], &cpu, total, "model.depth")
        };
        // 10⁶ f64 parameters: 32 MB in four copies.
        check(1_000_000, DType::F64, Some(32e6)).unwrap();
        let err = check(1_000_001, DType::F64, Some(32e6))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the flow has 1000001 parameters")
                && err.contains("needs at least 0.0 GB")
                && err.contains("lower model.depth"),
            "{err}"
        );
        // f32 needs half.
        check(2_000_000, DType::F32, Some(32e6)).unwrap();
        assert!(check(2_000_001, DType::F32, Some(32e6)).is_err());
        check(usize::MAX, DType::F64, None).unwrap();
        // Parts of different types add their bytes: 10⁶ f64 (8 MB) + 10⁶ f32 (4 MB), × 4.
        let parts = [(1_000_000, DType::F64), (1_000_000, DType::F32)];
        check_training_memory("the VAE", &parts, &cpu, Some(48e6), "x").unwrap();
        let err = check_training_memory("the VAE", &parts, &cpu, Some(47.9e6), "x").unwrap_err();
        assert!(
            err.to_string().contains("the VAE has 2000000 parameters"),
            "{err}"
        );
        // This machine, if it says: a model of 2³¹ f64 parameters needs 68.7 GB.
        if let Some(total) = total_memory() {
            assert!(total > 1e8, "{total} bytes");
            let need = (1u64 << 31) as f64 * 32.0;
            assert_eq!(
                check(1 << 31, DType::F64, Some(total)).is_err(),
                total < need
            );
        }
    }
}
