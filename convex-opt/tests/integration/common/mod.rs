//! Shared test helpers: the adapter that makes an `icnn` network a `BatchedPotential`, random
//! networks and random batches. (Also included by the benchmark via `#[path]`.)
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use convex_opt::{
    BatchedLbfgsParams, BatchedPotential, ConvexOptError, FlatLbfgsParams, InversionOptions,
    InversionResult, NewtonCgParams, SecondOrderModel, invert_lbfgs_batched, invert_lbfgs_flat,
    invert_newton_cg,
};
use icnn::{ConvexPotential, Icnn2, Icnn2Config, Icnn3, Icnn3Config};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// `Φ(x) = scale·F(x) + α/2‖x‖²` for an ICNN `F`: a CP-Flow block's potential with
/// `scale = softplus(w₁)` and `α = softplus(w₀)`. All tensors are detached (a solver needs no
/// parameter gradients); `second_order` linearises once and serves every HVP from the cache.
pub struct IcnnPotential<N> {
    pub net: N,
    pub scale: f64,
    pub alpha: f64,
}

fn icnn_err(e: icnn::IcnnError) -> ConvexOptError {
    ConvexOptError::potential(e)
}

impl<N: ConvexPotential> BatchedPotential for IcnnPotential<N> {
    fn value_and_gradient(&self, x: &Tensor) -> Result<(Tensor, Tensor), ConvexOptError> {
        let (v, g) = self.net.value_and_gradient(x).map_err(icnn_err)?;
        let v = ((v.detach() * self.scale)? + (x.sqr()?.sum(1)? * (0.5 * self.alpha))?)?;
        let g = ((g.detach() * self.scale)? + (x * self.alpha)?)?;
        Ok((v, g))
    }

    fn value(&self, x: &Tensor) -> Result<Tensor, ConvexOptError> {
        let v = self.net.potential(x).map_err(icnn_err)?.detach();
        Ok(((v * self.scale)? + (x.sqr()?.sum(1)? * (0.5 * self.alpha))?)?)
    }

    fn hvp(&self, x: &Tensor, v: &Tensor) -> Result<Tensor, ConvexOptError> {
        let lin = self.net.linearize(x).map_err(icnn_err)?.detach();
        Ok(((lin.hvp(v).map_err(icnn_err)? * self.scale)? + (v * self.alpha)?)?)
    }

    fn second_order(&self, x: &Tensor) -> Result<SecondOrderModel<'_>, ConvexOptError> {
        let lin = self.net.linearize(x).map_err(icnn_err)?.detach();
        let value = ((lin.potential() * self.scale)? + (x.sqr()?.sum(1)? * (0.5 * self.alpha))?)?;
        let gradient = ((lin.gradient() * self.scale)? + (x * self.alpha)?)?;
        let (scale, alpha) = (self.scale, self.alpha);
        Ok(SecondOrderModel::new(
            value,
            gradient,
            Box::new(move |v: &Tensor| {
                Ok(((lin.hvp(v).map_err(icnn_err)? * scale)? + (v * alpha)?)?)
            }),
        ))
    }
}

/// A `(n, d)` batch of standard normals (host RNG, fixed seed).
pub fn normal_batch(n: usize, d: usize, dtype: DType, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f64> = (0..n * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    Tensor::from_vec(v, (n, d), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// A random `Icnn2` potential with its ActNorm initialised on a standard-normal batch.
pub fn icnn2_potential(
    d: usize,
    width: usize,
    depth: usize,
    dtype: DType,
    seed: u64,
    scale: f64,
    alpha: f64,
) -> IcnnPotential<Icnn2> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let config = Icnn2Config {
        dim: d,
        width,
        depth,
        ..Default::default()
    };
    let net = Icnn2::new(vb.pp("icnn"), &config, &mut StdRng::seed_from_u64(seed)).unwrap();
    net.potential(&normal_batch(256, d, dtype, seed + 1))
        .unwrap();
    IcnnPotential { net, scale, alpha }
}

/// A random `Icnn3` potential with its ActNorm initialised on a standard-normal batch.
pub fn icnn3_potential(
    d: usize,
    width: usize,
    depth: usize,
    dtype: DType,
    seed: u64,
    scale: f64,
    alpha: f64,
) -> IcnnPotential<Icnn3> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let config = Icnn3Config {
        dim: d,
        width,
        depth,
        ..Default::default()
    };
    let net = Icnn3::new(vb.pp("icnn"), &config, &mut StdRng::seed_from_u64(seed)).unwrap();
    net.potential(&normal_batch(256, d, dtype, seed + 1))
        .unwrap();
    IcnnPotential { net, scale, alpha }
}

/// `max_i ‖∇Φ(x_i) − y_i‖∞` recomputed independently of the solvers (in f64 when the
/// potential is f64), on the host so that a NaN entry makes its row's residual NaN (candle's
/// `max` skips NaN).
pub fn residuals<P: BatchedPotential>(pot: &P, x: &Tensor, y: &Tensor) -> Vec<f64> {
    let (_, g) = pot.value_and_gradient(x).unwrap();
    let r = (g - y)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    r.iter()
        .map(|row| {
            row.iter().fold(0.0f64, |m, v| {
                if v.is_nan() || m.is_nan() {
                    f64::NAN
                } else {
                    m.max(v.abs())
                }
            })
        })
        .collect()
}

/// `max |a − b|` over all entries.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// The three solvers with their default parameters on `∇Φ(x) = y`, named `flat`, `batched`
/// and `newton`.
pub fn solve_all<P: BatchedPotential>(
    pot: &P,
    y: &Tensor,
    opts: &InversionOptions,
) -> Vec<(&'static str, InversionResult)> {
    vec![
        (
            "flat",
            invert_lbfgs_flat(pot, y, opts, &FlatLbfgsParams::default()).unwrap(),
        ),
        (
            "batched",
            invert_lbfgs_batched(pot, y, opts, &BatchedLbfgsParams::default()).unwrap(),
        ),
        (
            "newton",
            invert_newton_cg(pot, y, opts, &NewtonCgParams::default()).unwrap(),
        ),
    ]
}
