//! Property tests (fixed seeds): the solvers invert `Φ = s·F + α/2‖x‖²` for random small ICNNs
//! `F` (Icnn2/Icnn3, both activations, f64): points mapped forward and inverted come back, and
//! targets inverted and mapped forward are met, within the reported tolerance.

use crate::closed_form::{EPS, case_rng, fixed_config};
use crate::common::{IcnnPotential, residuals, solve_all};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use convex_opt::{BatchedPotential, InversionOptions, InversionResult, Termination};
use icnn::{ActivationKind, ConvexPotential, Icnn2, Icnn2Config, Icnn3, Icnn3Config};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

fn normal(n: usize, d: usize, scale: f64, rng: &mut StdRng) -> Tensor {
    let v: Vec<f64> = (0..n * d)
        .map(|_| scale * Distribution::<f64>::sample(&StandardNormal, rng))
        .collect();
    Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
}

/// A network of either architecture (the adapter needs a sized `ConvexPotential`).
struct AnyNet(Box<dyn ConvexPotential>);

impl ConvexPotential for AnyNet {
    fn potential(&self, x: &Tensor) -> icnn::Result<Tensor> {
        self.0.potential(x)
    }
    fn linearize(&self, x: &Tensor) -> icnn::Result<icnn::Linearization> {
        self.0.linearize(x)
    }
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn value_and_gradient(&self, x: &Tensor) -> icnn::Result<(Tensor, Tensor)> {
        self.0.value_and_gradient(x)
    }
}

/// A random network with its ActNorms initialised on a standard-normal batch.
fn network(
    icnn3: bool,
    d: usize,
    width: usize,
    depth: usize,
    gaussian: bool,
    rng: &mut StdRng,
) -> AnyNet {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let activation = if gaussian {
        ActivationKind::GaussianSoftplus
    } else {
        ActivationKind::Softplus
    };
    let net: Box<dyn ConvexPotential> = if icnn3 {
        let cfg = Icnn3Config {
            dim: d,
            width: 2 * width.div_ceil(2),
            depth,
            activation,
            ..Default::default()
        };
        Box::new(Icnn3::new(vb.pp("icnn"), &cfg, rng).unwrap())
    } else {
        let cfg = Icnn2Config {
            dim: d,
            width,
            depth,
            activation,
            ..Default::default()
        };
        Box::new(Icnn2::new(vb.pp("icnn"), &cfg, rng).unwrap())
    };
    net.potential(&normal(64, d, 1.0, rng)).unwrap();
    AnyNet(net)
}

/// Report honesty (reported residual = recomputed, flags = residual ≤ tolerance), the target
/// met on converged rows, and — where the preimage `x_star` is known — `‖x − x*‖∞ ≤ ‖x − x*‖₂
/// ≤ √d·R/α`: `F` is convex, so `∇²Φ ⪰ αI` and `∇Φ` is α-strongly monotone, with `R` the
/// residual bound (tolerance plus rounding).
fn check(
    name: &str,
    pot: &IcnnPotential<AnyNet>,
    y: &Tensor,
    res: &InversionResult,
    x_star: Option<&Tensor>,
) -> Result<(), TestCaseError> {
    let (n, d) = y.dims2().unwrap();
    let r = residuals(pot, &res.x, y);
    let y_inf: Vec<f64> = y.abs().unwrap().max(1).unwrap().to_vec1::<f64>().unwrap();
    let xs = res.x.to_vec2::<f64>().unwrap();
    let stars = x_star.map(|t| t.to_vec2::<f64>().unwrap());
    for i in 0..n {
        // The recomputation evaluates another batch (all rows, not the solver's subsets): the
        // gradients' sums of a few dozen terms of magnitude ≲ |y| + s·|∇F| agree to ~1e-14.
        let slack = 1e3 * EPS * (1.0 + y_inf[i] + pot.scale);
        prop_assert!(
            (r[i] - res.residual_inf[i]).abs() <= slack,
            "{name}: row {i} reports {:e}, recomputed {:e}",
            res.residual_inf[i],
            r[i]
        );
        prop_assert_eq!(res.converged[i], res.residual_inf[i] <= res.tolerance[i]);
        prop_assert_eq!(
            res.converged[i],
            res.termination[i] == Termination::Converged
        );
        if !res.converged[i] {
            continue;
        }
        prop_assert!(
            r[i] <= res.tolerance[i] + slack,
            "{name}: row {i} misses its target"
        );
        if let Some(stars) = &stars {
            let bound = (d as f64).sqrt() * (res.tolerance[i] + slack) / pot.alpha;
            let err = xs[i]
                .iter()
                .zip(&stars[i])
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            prop_assert!(
                err <= bound,
                "{name}: row {i} |x − x*|∞ = {err:e} > {bound:e}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(fixed_config(40, 0x1C_0001))]

    #[test]
    fn prop_icnn_potential_round_trips(
        icnn3 in any::<bool>(),
        gaussian in any::<bool>(),
        d in 1usize..=4,
        width in 2usize..=8,
        depth in 1usize..=3,
        n in 1usize..=4,
        seed in any::<u64>(),
        log_scale in -0.5f64..=1.0,
        log_alpha in -1.5f64..=0.0,
        log_x in -2.0f64..=1.0,
    ) {
        let mut rng = case_rng(seed);
        let net = network(icnn3, d, width, depth, gaussian, &mut rng);
        let pot = IcnnPotential {
            net,
            scale: 10f64.powf(log_scale),
            alpha: 10f64.powf(log_alpha),
        };
        // Forward then back: y = ∇Φ(x*) for known points x*.
        let x_star = normal(n, d, 10f64.powf(log_x), &mut rng);
        let (_, y) = pot.value_and_gradient(&x_star).unwrap();
        for (name, res) in solve_all(&pot, &y, &InversionOptions::default()) {
            check(name, &pot, &y, &res, Some(&x_star))?;
            if name != "flat" {
                prop_assert!(res.all_converged(), "{name}: {}", res);
            }
        }
        // Back then forward: random targets are met.
        let y = normal(n, d, 10f64.powf(log_x), &mut rng);
        for (name, res) in solve_all(&pot, &y, &InversionOptions::default()) {
            check(name, &pot, &y, &res, None)?;
            if name != "flat" {
                prop_assert!(res.all_converged(), "{name}: {}", res);
            }
        }
    }
}
