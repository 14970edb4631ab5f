//! The ActNorm data-dependent initialisation of an f32 network on raw inputs far from 0.
//!
//! `Icnn2`'s first ActNorm standardises `W₀x + b₀`, which for inputs around `1e4` sits around
//! `1e4·Σᵢ W₀ⱼᵢ` with a spread of about `‖W₀ⱼ‖`. Its statistics used to be candle's f32
//! reductions, whose running sums over 65,536 rows reach `~1e9`, where an f32 ulp is 64: the
//! mean drifted by a large part of the spread, the standard deviation by tens of percent, and
//! nothing reported it. They are now accumulated on the host in f64 (`batch_statistics.rs`),
//! so the f32 network's statistics are the f64 network's to the f32 rounding of its own
//! pre-activations and of the stored results.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use icnn::{Icnn2, Icnn2Config};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::common::flat;

/// The f64 values of the variable `name` of `varmap`.
fn var(varmap: &VarMap, name: &str) -> Vec<f64> {
    let data = varmap.data().lock().unwrap();
    flat(&data[name].as_tensor().to_dtype(DType::F64).unwrap())
}

/// An `Icnn2` of `dtype` whose weights are those of an f32 one (drawn with a fixed seed), so
/// that the f32 and f64 networks differ only in their arithmetic.
fn network(dtype: DType, config: &Icnn2Config, f32_weights: Option<&VarMap>) -> (Icnn2, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let net = Icnn2::new(vb.pp("icnn"), config, &mut StdRng::seed_from_u64(5)).unwrap();
    if let Some(source) = f32_weights {
        let source = source.data().lock().unwrap();
        for (name, v) in varmap.data().lock().unwrap().iter() {
            v.set(&source[name].as_tensor().to_dtype(dtype).unwrap())
                .unwrap();
        }
    }
    (net, varmap)
}

/// The audit's pattern on an icnn network: 65,536 rows of spread 1 around `1e4`.
#[test]
fn f32_icnn2_first_actnorm_on_inputs_around_1e4_matches_f64() {
    let (n, d) = (65_536, 4);
    let config = Icnn2Config {
        dim: d,
        width: 16,
        depth: 2,
        ..Default::default()
    };
    let mut rng = StdRng::seed_from_u64(17);
    // Rounded to f32 once, so that both networks see the same values.
    let data: Vec<f64> = (0..n * d)
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            f64::from((1e4 + z) as f32)
        })
        .collect();
    let max_abs_x = data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let x64 = Tensor::from_vec(data, (n, d), &Device::Cpu).unwrap();
    let x32 = x64.to_dtype(DType::F32).unwrap();
    let (net32, vm32) = network(DType::F32, &config, None);
    let (net64, vm64) = network(DType::F64, &config, Some(&vm32));
    net32.initialize(&x32).unwrap();
    net64.initialize(&x64).unwrap();

    // The ActNorm stores b = −mean and logs = −ln(std + 1e-6).
    let stats = |vm: &VarMap| {
        let mean: Vec<f64> = var(vm, "icnn.actnorm0.b").iter().map(|b| -b).collect();
        let std: Vec<f64> = var(vm, "icnn.actnorm0.logs")
            .iter()
            .map(|l| (-l).exp() - 1e-6)
            .collect();
        (mean, std)
    };
    let ((m32, s32), (m64, s64)) = (stats(&vm32), stats(&vm64));
    let (w, b) = (
        var(&vm32, "icnn.Wzs.0.weight"),
        var(&vm32, "icnn.Wzs.0.bias"),
    );
    let u = f64::from(f32::EPSILON) / 2.0;
    let ulp = |v: f64| 2f64.powi(v.abs().log2().floor() as i32 - 23);
    for j in 0..config.width {
        // The f32 pre-activation of a row, Σᵢ wᵢxᵢ + b (d products, d additions), is the
        // exact one within γ_{d+1}·(Σ|wᵢ||xᵢ| + |b|) ≤ (d + 2)·u·(Σ|wᵢ|·max|x| + |b|), u =
        // 2⁻²⁴, whatever the summation order (about 3 f32 ulps of the pre-activation). The
        // mean of the rows' errors is bounded by it, and so is the change of the standard
        // deviation (‖centred(p + e)‖ − ‖centred(p)‖ ≤ ‖e‖, in RMS units); the stored
        // results add half an ulp of the mean and the f32 rounding of ln and exp on the
        // std (≲ 1e-6 relative).
        let row = &w[j * d..(j + 1) * d];
        let rows_err = (d as f64 + 2.0)
            * u
            * (row.iter().map(|v| v.abs()).sum::<f64>() * max_abs_x + b[j].abs());
        let mean_tol = rows_err + ulp(m64[j]) / 2.0;
        assert!(
            (m32[j] - m64[j]).abs() <= mean_tol,
            "unit {j}: f32 mean {} vs f64 {} (spread {}, tolerance {mean_tol:e})",
            m32[j],
            m64[j],
            s64[j]
        );
        let std_tol = rows_err + 1e-6 * s64[j];
        assert!(
            (s32[j] - s64[j]).abs() <= std_tol,
            "unit {j}: f32 std {} vs f64 {} (tolerance {std_tol:e})",
            s32[j],
            s64[j]
        );
        // The bound is small against the spread (so the check is not vacuous): ≲ 1 %.
        assert!(
            rows_err < 0.02 * s64[j],
            "unit {j}: {rows_err:e} vs {}",
            s64[j]
        );
    }
}
