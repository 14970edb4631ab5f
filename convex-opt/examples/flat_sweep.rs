//! A seeded sweep of the flat L-BFGS inversion ([`invert_lbfgs_flat`]): strongly convex
//! potentials with closed-form gradients, targets over many magnitudes, `f32` and `f64`, the
//! default tolerances and an `f64` relative tolerance of `1e-12`.
//!
//! ```text
//! cargo build --release -p convex-opt --example flat_sweep
//! target/release/examples/flat_sweep [--runs N] [--seed S] [--line-search hz|mt] [--records FILE]
//! ```
//!
//! Run `k` (of `N`, default 3,000) draws its batch from the seed `S + k` (default `S = 0`);
//! its potential is `k mod 5` (`FAMILIES`) and its setting `(k / 5) mod 3` (`SETTINGS`). The
//! summary gives, per setting, the runs whose samples all converged, the samples that did,
//! and quantiles of each run's largest residual `max_i ‖∇Φ(x_i) − y_i‖∞` (as reported) and
//! of that residual over its tolerance. `--records FILE` writes one tab-separated line per
//! run (index, family, setting, shape, convergence, residuals, terminations, iterations,
//! evaluations, fallbacks and an FNV-1a hash of the bits of `x`), so that two builds can be
//! compared run by run. `all_converged` is the run's stopping test, every sample within its
//! own tolerance, at the returned point: 1 exactly when the run stopped on it.
//!
//! Records written before this format have a `run_test_met` column after
//! `max_residual_over_tolerance`: whether the largest residual was within the smallest
//! tolerance, `max_i ‖∇Φ(x_i) − y_i‖∞ ≤ min_i tolerance_i`, the run's stopping test until it
//! became every sample's own tolerance. It is gone (no longer any solver's rule); compare such
//! records with the other columns (`cut -f 1-8,10-` of an older file), and an older build's
//! own test with its `run_test_met`.

use std::fmt::Write as _;
use std::io::Write as _;

use candle_core::{DType, Device, Tensor};
use convex_opt::{
    BatchedPotential, ConvexOptError, FlatLbfgsParams, FnPotential, InversionOptions,
    InversionResult, LineSearch, QuadraticPotential, invert_lbfgs_flat,
};
use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// The potentials, all `μ`-strongly convex for some `μ > 0`.
const FAMILIES: [&str; 5] = [
    "quartic",   // Σ x⁴/4 + x²/2
    "softplus",  // Σ softplus(x) + μ x²/2, μ ∈ [0.01, 1]
    "logcosh",   // Σ log cosh(x) + μ x²/2, μ ∈ [0.01, 1]
    "quadratic", // ½ xᵀAx, A = BBᵀ/d + μI
    "coupled",   // Σ x⁴/4 + ½ xᵀAx
];

/// `(label, dtype, absolute tolerance, relative tolerance)`; `None` is the dtype's default.
type Setting = (&'static str, DType, Option<f64>, Option<f64>);

/// The tolerance settings.
const SETTINGS: [Setting; 3] = [
    ("f32 default", DType::F32, None, None),
    ("f64 default", DType::F64, None, None),
    ("f64 rel 1e-12", DType::F64, None, Some(1e-12)),
];

/// Command-line options.
struct Args {
    runs: usize,
    seed: u64,
    line_search: LineSearch,
    records: Option<String>,
}

/// The `--help` text.
const USAGE: &str = "\
usage: flat_sweep [--runs N] [--seed S] [--line-search hz|mt] [--records FILE]

A seeded sweep of convex_opt::invert_lbfgs_flat: run k (of N, default 3000) draws its batch
from the seed S + k (default S = 0). --line-search: Hager-Zhang (hz, the default) or
More-Thuente (mt). --records FILE: one tab-separated line per run (all_converged is the
run's stopping test, every sample within its own tolerance, at the returned point).";

/// The options, or `None` for `--help`.
fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        runs: 3000,
        seed: 0,
        line_search: LineSearch::HagerZhang,
        records: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runs" => args.runs = value.parse().map_err(|e| format!("--runs: {e}"))?,
            "--seed" => args.seed = value.parse().map_err(|e| format!("--seed: {e}"))?,
            "--line-search" => {
                args.line_search = match value.as_str() {
                    "hz" => LineSearch::HagerZhang,
                    "mt" => LineSearch::MoreThuente,
                    other => return Err(format!("--line-search: hz or mt, not {other}")),
                }
            }
            "--records" => args.records = Some(value),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(Some(args))
}

/// `softplus(x) = max(x, 0) + log(1 + e^{−|x|})`, without overflow.
fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// `log cosh(x) = |x| + log(1 + e^{−2|x|}) − log 2`, without overflow.
fn log_cosh(x: &Tensor) -> candle_core::Result<Tensor> {
    let a = x.abs()?;
    (&a + ((&a * -2.0)?.exp()? + 1.0)?.log()?)? - std::f64::consts::LN_2
}

/// A random symmetric positive definite `A = BBᵀ/d + μI`, `μ = 10^U(−2, 0)`.
fn random_spd(rng: &mut StdRng, d: usize) -> DMatrix<f64> {
    let b: DMatrix<f64> = DMatrix::from_fn(d, d, |_, _| StandardNormal.sample(rng));
    let mu = 10f64.powf(rng.random_range(-2.0..0.0));
    &b * b.transpose() / d as f64 + DMatrix::identity(d, d) * mu
}

/// The potential of `family` for dimension `d` (its random constants from `rng`).
fn potential(
    family: usize,
    d: usize,
    dtype: DType,
    rng: &mut StdRng,
) -> Result<Box<dyn BatchedPotential>, ConvexOptError> {
    let mu = 10f64.powf(rng.random_range(-2.0..0.0));
    Ok(match family {
        0 => Box::new(FnPotential::new(|x: &Tensor| {
            let v = ((x.powf(4.0)?.sum(1)? * 0.25)? + (x.sqr()?.sum(1)? * 0.5)?)?;
            Ok((v, (x.powf(3.0)? + x)?))
        })),
        1 => Box::new(FnPotential::new(move |x: &Tensor| {
            let v = (softplus(x)?.sum(1)? + (x.sqr()?.sum(1)? * (0.5 * mu))?)?;
            let sigmoid = ((x.neg()?.exp()? + 1.0)?.recip())?;
            Ok((v, (sigmoid + (x * mu)?)?))
        })),
        2 => Box::new(FnPotential::new(move |x: &Tensor| {
            let v = (log_cosh(x)?.sum(1)? + (x.sqr()?.sum(1)? * (0.5 * mu))?)?;
            Ok((v, (x.tanh()? + (x * mu)?)?))
        })),
        3 => Box::new(QuadraticPotential::new(
            &random_spd(rng, d),
            None,
            dtype,
            &Device::Cpu,
        )?),
        _ => {
            let a = random_spd(rng, d);
            let a = Tensor::from_slice(a.as_slice(), (d, d), &Device::Cpu)?.to_dtype(dtype)?;
            Box::new(FnPotential::new(move |x: &Tensor| {
                let ax = x.matmul(&a)?; // A is symmetric: (x A)_i = (A x_i)ᵀ.
                let v = ((x.powf(4.0)?.sum(1)? * 0.25)? + ((&ax * x)?.sum(1)? * 0.5)?)?;
                Ok((v, (x.powf(3.0)? + ax)?))
            }))
        }
    })
}

/// Targets `(n, d)`: each row a standard normal times `10^U(−8, 6)`; one entry in ten is 0
/// and one in ten is `±1e-8`.
fn targets(rng: &mut StdRng, n: usize, d: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(n * d);
    for _ in 0..n {
        let scale = 10f64.powf(rng.random_range(-8.0..6.0));
        for _ in 0..d {
            let u: f64 = rng.random();
            let z: f64 = StandardNormal.sample(rng);
            y.push(if u < 0.1 {
                0.0
            } else if u < 0.2 {
                1e-8f64.copysign(z)
            } else {
                z * scale
            });
        }
    }
    y
}

/// FNV-1a over the bits of `x` (as `f64`; `f32` widens exactly).
fn hash_bits(x: &Tensor) -> Result<u64, ConvexOptError> {
    let v = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok(v.iter()
        .flat_map(|f| f.to_bits().to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        }))
}

/// One run's outcome.
struct Run {
    setting: usize,
    all_converged: bool,
    converged_rows: usize,
    rows: usize,
    residual: f64,
    ratio: f64,
}

/// Run `k` of the sweep; returns it and its record line.
fn run(k: usize, args: &Args) -> Result<(Run, String), ConvexOptError> {
    let family = k % FAMILIES.len();
    let setting = (k / FAMILIES.len()) % SETTINGS.len();
    let (label, dtype, abs, rel) = SETTINGS[setting];
    let mut rng = StdRng::seed_from_u64(args.seed.wrapping_add(k as u64));
    let n = rng.random_range(1..=6usize);
    let d = rng.random_range(1..=4usize);
    let pot = potential(family, d, dtype, &mut rng)?;
    let y = Tensor::from_vec(targets(&mut rng, n, d), (n, d), &Device::Cpu)?.to_dtype(dtype)?;
    let mut opts = InversionOptions::default();
    if let Some(a) = abs {
        opts = opts.with_abs_tolerance(a);
    }
    if let Some(r) = rel {
        opts = opts.with_rel_tolerance(r);
    }
    let params = FlatLbfgsParams::default().with_line_search(args.line_search);
    let res: InversionResult = invert_lbfgs_flat(&pot, &y, &opts, &params)?;
    let ratio = res
        .residual_inf
        .iter()
        .zip(&res.tolerance)
        .map(|(r, t)| r / t)
        .fold(0.0, f64::max);
    let run = Run {
        setting,
        all_converged: res.all_converged(),
        converged_rows: res.converged.iter().filter(|c| **c).count(),
        rows: n,
        residual: res.max_residual(),
        ratio,
    };
    let terms: Vec<String> = res.termination.iter().map(|t| format!("{t:?}")).collect();
    let mut line = String::new();
    let _ = write!(
        line,
        "{k}\t{}\t{label}\t{n}x{d}\t{}\t{}\t{:e}\t{:e}\t{}\t{}\t{}\t{}\t{:016x}",
        FAMILIES[family],
        u8::from(run.all_converged),
        run.converged_rows,
        run.residual,
        run.ratio,
        terms.join(","),
        res.iterations[0],
        res.stats.gradient_calls,
        res.stats.line_search_fallbacks,
        hash_bits(&res.x)?,
    );
    Ok((run, line))
}

/// The `q`-quantile (nearest rank) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return Ok(());
        }
        Err(e) => return Err(format!("{e} (see --help)").into()),
    };
    let start = std::time::Instant::now();
    let mut runs = Vec::with_capacity(args.runs);
    let mut records = Vec::with_capacity(args.runs);
    for k in 0..args.runs {
        let (r, line) = run(k, &args)?;
        runs.push(r);
        records.push(line);
    }
    if let Some(path) = &args.records {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(
            f,
            "run\tfamily\tsetting\tshape\tall_converged\tconverged_rows\tmax_residual\t\
             max_residual_over_tolerance\ttermination\titerations\tgradient_calls\t\
             fallbacks\tx_hash"
        )?;
        for line in &records {
            writeln!(f, "{line}")?;
        }
    }
    println!(
        "{} runs, line search {:?}, seed {}, {:.1} s",
        args.runs,
        args.line_search,
        args.seed,
        start.elapsed().as_secs_f64()
    );
    let groups: Vec<(String, Vec<&Run>)> = SETTINGS
        .iter()
        .enumerate()
        .map(|(s, setting)| {
            let group = runs.iter().filter(|r| r.setting == s).collect();
            (setting.0.to_string(), group)
        })
        .chain([("all".to_string(), runs.iter().collect())])
        .collect();
    for (label, group) in groups {
        let mut residuals: Vec<f64> = group.iter().map(|r| r.residual).collect();
        let mut ratios: Vec<f64> = group.iter().map(|r| r.ratio).collect();
        residuals.sort_by(f64::total_cmp);
        ratios.sort_by(f64::total_cmp);
        let rows: usize = group.iter().map(|r| r.rows).sum();
        let rows_ok: usize = group.iter().map(|r| r.converged_rows).sum();
        let runs_ok = group.iter().filter(|r| r.all_converged).count();
        println!(
            "{label:>14}: runs converged {runs_ok}/{}, rows {rows_ok}/{rows}; residual \
             q50 {:.2e} q90 {:.2e} q99 {:.2e} max {:.2e}; residual/tolerance q50 {:.2e} \
             q90 {:.2e} q99 {:.2e} max {:.2e}",
            group.len(),
            quantile(&residuals, 0.5),
            quantile(&residuals, 0.9),
            quantile(&residuals, 0.99),
            quantile(&residuals, 1.0),
            quantile(&ratios, 0.5),
            quantile(&ratios, 0.9),
            quantile(&ratios, 0.99),
            quantile(&ratios, 1.0),
        );
    }
    Ok(())
}
