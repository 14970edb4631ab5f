//! Refusing, before a point is drawn, toy or image-density data that cannot fit in the memory
//! this process may use. `data.n_train = 1000000000000` asked for 16 TB in one allocation and
//! aborted the process ("memory allocation of 16000000000000 bytes failed", exit 134); below
//! the machine's memory but above what is left, it ran silently for minutes first.

use anyhow::{Result, bail};

use super::{MemoryLimit, size_in_words};

/// Bytes per drawn value that the data hold at once, at least: the host rows (f64), which
/// every command keeps until its tensors are built. `cpflow train` then builds a tensor of
/// every split (another 4 or 8 bytes per value on the CPU, `model.float`) before the rows
/// go, which its own check of a new run counts, with the model (`check_new_flow_memory` in
/// `commands/train/data_checks.rs`); the toys' samplers of `moons` and `circles` keep a
/// second copy of a split while they draw it, which is not counted, so that this check stays
/// a bound for every command and device (passing it does not promise the data fit; failing
/// it means they cannot).
pub(crate) const DATA_BYTES_PER_VALUE: f64 = 8.0;

/// Refuses drawn data of `parts` — each a key that sets a number of points (`data.n_train`)
/// and that number — of `dim` values per point, whose f64 values
/// ([`DATA_BYTES_PER_VALUE`]) would exceed `limit` (`None`: unknown, nothing is refused).
/// `what` names the data (`"the 8gaussians points"`). The message names the keys, their
/// numbers, the bytes and the limit, as [`super::check_training_memory`]'s does.
pub(crate) fn check_drawn_data_memory(
    what: &str,
    parts: &[(&str, usize)],
    dim: usize,
    limit: Option<MemoryLimit>,
) -> Result<()> {
    let Some(limit) = limit else {
        return Ok(());
    };
    // In f64: 10¹⁹ points of 2 values overflow a usize count of bytes.
    let points: f64 = parts.iter().map(|&(_, n)| n as f64).sum();
    let need = points * dim as f64 * DATA_BYTES_PER_VALUE;
    if need > limit.bytes {
        let counts: Vec<String> = parts.iter().map(|(k, n)| format!("{k} = {n}")).collect();
        let keys: Vec<&str> = parts
            .iter()
            .filter(|&&(_, n)| n as f64 * dim as f64 * DATA_BYTES_PER_VALUE > limit.bytes / 10.0)
            .map(|&(k, _)| k)
            .collect();
        bail!(
            "{what} ({}: {points:.3e} points of {dim} f64 values) need at least {} of memory \
             before any training, more than {limit}: lower {}",
            counts.join(", "),
            size_in_words(need),
            if keys.is_empty() {
                parts.iter().map(|&(k, _)| k).collect::<Vec<_>>().join(", ")
            } else {
                keys.join(", ")
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::LimitSource;
    use super::*;

    /// 10⁶ points of 2 f64 values are 16 MB: they pass a 16 MB limit, one point more does not,
    /// and the refusal names every count, the bytes, the limit and the key to lower (the
    /// large one only); unknown memory refuses nothing; counts past `usize`'s bytes do not
    /// overflow.
    #[test]
    fn refuses_exactly_the_points_that_cannot_fit() {
        let check = |n_train: usize, limit: Option<MemoryLimit>| {
            check_drawn_data_memory(
                "the 8gaussians points",
                &[
                    ("data.n_train", n_train),
                    ("data.n_val", 0),
                    ("data.n_test", 0),
                ],
                2,
                limit,
            )
        };
        check(1_000_000, Some(MemoryLimit::machine(16e6))).unwrap();
        let err = check(1_000_001, Some(MemoryLimit::machine(16e6)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the 8gaussians points (data.n_train = 1000001, data.n_val = 0")
                && err.contains("need at least 16 MB of memory")
                && err.contains("more than this machine's 16 MB: lower data.n_train"),
            "{err}"
        );
        assert!(!err.contains("lower data.n_train, data.n_val"), "{err}");
        check(usize::MAX, None).unwrap();
        let limit = MemoryLimit {
            bytes: 8e9,
            source: LimitSource::AddressSpace,
        };
        let err = check(usize::MAX, Some(limit)).unwrap_err().to_string();
        assert!(
            err.contains("need at least 295147905179.4 GB")
                && err.contains("the 8.0 GB this process may use (its address-space limit"),
            "{err}"
        );
    }
}
