//! Parsers of `cargo xtask` argument values: the compute device, the training budget and the
//! download mirror.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use candle_core::Device;

use crate::registry::Mirror;

/// The candle device named on the command line (`cpu`, `cuda` or `cuda:N`).
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match name.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .with_context(|| format!("bad device {name:?}: use cpu, cuda or cuda:N"))?,
        None => bail!("unknown device {name:?}: use cpu, cuda or cuda:N"),
    };
    cpflow::open_cuda_device(ordinal).with_context(|| {
        format!("cannot open CUDA device {ordinal} (build with `--features cuda`?)")
    })
}

/// A training budget of `minutes` (finite, above 0, and small enough for a [`Duration`]).
pub fn budget_from_minutes(minutes: f64) -> Result<Duration> {
    anyhow::ensure!(
        minutes.is_finite() && minutes > 0.0,
        "--minutes must be positive"
    );
    Duration::try_from_secs_f64(minutes * 60.0)
        .map_err(|_| anyhow::anyhow!("--minutes {minutes:e} is too large"))
}

/// The `--mirror` value ([`Mirror::parse`]: a base URL, or a local directory as a path or
/// `file://` URL): none when not given or empty (`CPFLOW_DATA_MIRROR=` set to the empty string
/// means no mirror, not a mirror at the empty URL). A value that cannot be a mirror (another
/// URL scheme, a path that is not a directory) is refused before anything is downloaded.
pub fn mirror_base(arg: Option<&str>) -> Result<Option<Mirror>> {
    arg.map(str::trim)
        .filter(|m| !m.is_empty())
        .map(Mirror::parse)
        .transpose()
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_tabular::parse_datasets;

    #[test]
    fn an_empty_mirror_means_no_mirror() {
        // `CPFLOW_DATA_MIRROR=` (set but empty) used to make every URL `/maf/data.tar.gz`.
        assert_eq!(mirror_base(Some("")).unwrap(), None);
        assert_eq!(mirror_base(Some("  ")).unwrap(), None);
        assert_eq!(mirror_base(None).unwrap(), None);
        assert_eq!(
            mirror_base(Some(" http://127.0.0.1:9/m ")).unwrap(),
            Some(Mirror::Url("http://127.0.0.1:9/m".into()))
        );
        assert!(mirror_base(Some("/no/such/mirror/dir")).is_err());
    }

    #[test]
    fn bad_device_and_bad_dataset_are_errors() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        assert!(parse_device("tpu").is_err());
        assert!(parse_datasets("power,imagenet").is_err());
        assert!(parse_datasets("").is_err());
    }
}
