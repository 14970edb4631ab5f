//! Property tests of the tabular flow over random small architectures (every built-in
//! potential a `FlowConfig` takes, with and without ActNorm, 1–3 blocks, d ≤ 5, f64), each
//! against a reference computed here: the change of variables with a finite-difference
//! Jacobian, the forward map composed from the public layers, closed forms (Hutchinson's
//! off-diagonal term, the surrogate's value, ActNorm statistics), per-row and permuted
//! evaluation, saved and f32 copies of the model. Fixed seeds, no failure persistence.
//! `cargo test -p cpflow --test integration prop_flow`.

#[path = "prop_flow_common/mod.rs"]
mod common;

use candle_core::{DType, Device, Tensor};
use common::fd::*;
use common::refs::*;
use common::*;
use cpflow::{
    CgPreconditioner, FloatType, Flow, FlowRng, InverseParams, InverseSolver, Layer, SlqConfig,
    SurrogateParams,
};
use proptest::prelude::*;

/// `|a − b| ≤ tol`, as a proptest assertion naming `what`.
macro_rules! assert_close {
    ($a:expr, $b:expr, $tol:expr, $($what:tt)+) => {{
        let (a, b, tol): (f64, f64, f64) = ($a, $b, $tol);
        prop_assert!((a - b).abs() <= tol, "{}: {a} vs {b} (|Δ| = {:e} > tol {tol:e})",
            format!($($what)+), (a - b).abs());
    }};
}

proptest! {
    #![proptest_config(fixed_config(48, 0x0c9f_1001))]

    /// `log_prob(x) = log N(f(x)) + log|det ∂f/∂x|` with `f` composed from the public layers
    /// and its Jacobian by finite differences (determinant by LU, positive: every layer
    /// preserves orientation), at points 0.1, 1, 4 and 30 data spreads around the data. The
    /// flow's `transform` gives the same `z`.
    ///
    /// Tolerances: `z` from the host kernels vs candle's ops, the same sums in another
    /// order: 1e-12 relative to `max(1, |z|∞)` (a few hundred ulps). The FD log-det
    /// (five-point stencil, `FD_STEP`) has a truncation error `∝ h⁴` that strongly bent maps
    /// make visible (measured up to 3e-6 with plain central differences at h = 1e-5, where
    /// `J` has singular values from 0.8 to 1,100; the error shrank as h², so the flow was
    /// right): its size is estimated from the same log-det at `2h`, whose error is 16 times
    /// larger, so `|ld(h) − ld(2h)|` bounds the error at `h` with a margin of 15. Rounding:
    /// `f` is off by `ε ≤ 64·u·max(1, |z|∞)`, each Jacobian entry by `1.5·ε/h`, the log-det
    /// by at most `d·‖J⁻¹‖₂` times that (`‖J⁻¹‖₂ = 1/σ_min` of the FD Jacobian); plus 1e-8.
    /// Any missing term (an ActNorm's `Σ log s`, a block's log-det) is ≥ 1e-3.
    #[test]
    fn log_prob_is_the_change_of_variables_of_the_forward_map(
        spec in flow_spec(1..=5),
        scale in prop_oneof![Just(0.1), Just(1.0), Just(4.0), Just(30.0)],
    ) {
        let mut case = build(&spec, true);
        let x = case.points(3, scale);
        let ctx = case.ctx(3);
        let flow = &case.flow;
        let lp = log_prob(flow, &x, ctx.as_ref());
        let (z_ref, _) = forward_layers(flow, &x, ctx.as_ref());
        let (z, ld) = transform(flow, &x, ctx.as_ref());
        let (z_ref, z, ld) = (rows(&z_ref), rows(&z), vec1(&ld));
        let map = |p: &Tensor, c: Option<&Tensor>| forward_layers(flow, p, c).0;
        let jac = fd_jacobians(&x, ctx.as_ref(), map);
        let jac2 = fd_jacobians_with_step(&x, ctx.as_ref(), 2.0 * FD_STEP, map);
        let log_var = flow.prior().log_var;
        for b in 0..3 {
            let zmax = z_ref[b].iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (i, (a, r)) in z[b].iter().zip(&z_ref[b]).enumerate() {
                assert_close!(*a, *r, 1e-12 * zmax, "z[{b}][{i}]");
            }
            let (sign, ld_fd) = sign_logdet(&jac[b]);
            prop_assert!(sign > 0.0, "row {b}: det J < 0: {}", jac[b]);
            let sigma_min = jac[b].clone().singular_values().min();
            let rounding = spec.dim as f64 * 1.5 * 64.0 * U64 * zmax / (FD_STEP * sigma_min);
            let tol = 1e-8 + rounding + (sign_logdet(&jac2[b]).1 - ld_fd).abs();
            let prior = log_normal(&z_ref[b], log_var);
            assert_close!(lp[b], prior + ld_fd, tol, "row {b}: log p vs log N + FD log det");
            // transform's log-det is the same sum.
            assert_close!(ld[b], ld_fd, tol, "row {b}: transform log det vs FD");
        }
    }
}

proptest! {
    #![proptest_config(fixed_config(32, 0x0c9f_1002))]

    /// Sampling inverts the forward map: every sample converges and `f(x) = z` for the prior
    /// draw `z` it came from (`f` composed from the public layers). `sample_and_log_prob`
    /// returns the same points and exactly `log_prob` of them.
    ///
    /// Tolerance: each block's inversion stops at a residual `r_k = ∇Φ_k(x_k) − y_k` with
    /// `‖r_k‖∞ ≤ 1e-9` (the f64 default), and to first order `f(x) − z = Σ_k A_k r_k` with
    /// `A_k` the Jacobian of the layers after block `k`, so `‖f(x) − z‖∞ ≤ 1e-9·Σ_k
    /// ‖A_k‖∞` ([`inversion_error_bound`], from FD Jacobians: these amplify by up to a few
    /// hundred here). Twice that bound (FD error of `A_k`, second-order terms) plus
    /// 1e-12·max(1, |z|∞) for rounding.
    #[test]
    fn sampling_inverts_the_forward_map(
        spec in flow_spec(1..=5),
        solver in prop_oneof![
            Just(InverseSolver::NewtonCg),
            Just(InverseSolver::LbfgsBatched),
            Just(InverseSolver::LbfgsFlat),
        ],
        n in 1usize..=6,
        seed in any::<u64>(),
    ) {
        let mut case = build(&spec, true);
        let ctx = case.ctx(n);
        let flow = &case.flow;
        let params = InverseParams { solver, ..Default::default() };
        let (s, z) = sample(flow, ctx.as_ref(), n, &params, seed);
        prop_assert!(s.report.all_converged(), "unconverged: {:?}", s.report.converged);
        let (fx, _) = forward_layers(flow, &s.x, ctx.as_ref());
        let bound = inversion_error_bound(flow, &s.x, ctx.as_ref(), 1e-9);
        let (fx, z) = (rows(&fx), rows(&z));
        for b in 0..n {
            let zmax = z[b].iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for i in 0..spec.dim {
                let tol = 2.0 * bound[b] + 1e-12 * zmax;
                assert_close!(fx[b][i], z[b][i], tol, "f(x)[{b}][{i}] vs z");
            }
        }
        let lp = log_prob(flow, &s.x, ctx.as_ref());
        if ctx.is_none() {
            let mut rng = FlowRng::seed_from_u64(seed);
            let (s2, lp2) = flow.sample_and_log_prob_with(n, &params, &mut rng).unwrap();
            prop_assert_eq!(rows(&s2.x), rows(&s.x));
            prop_assert_eq!(vec1(&lp2), lp);
        }
    }
}

proptest! {
    #![proptest_config(fixed_config(32, 0x0c9f_1003))]

    /// In one dimension SLQ is exact: a Rademacher probe is ±1, one Lanczos step gives
    /// `T = vᵀHv/vᵀv = H`, and `‖v‖² log T = log H`. So `log_prob_slq` equals `log_prob` to
    /// rounding (1e-12 relative: a handful of operations on O(1)–O(10) values), every probe
    /// gives the same estimate (standard error 0, or NaN with one probe); also for 300 rows,
    /// two SLQ chunks with their own probe streams.
    #[test]
    fn slq_is_exact_in_one_dimension(
        spec in flow_spec(1..=1),
        probes in 1usize..=4,
        steps in 1usize..=3,
        n in prop_oneof![Just(4usize), Just(300)],
        seed in any::<u64>(),
    ) {
        let mut case = build(&spec, true);
        let x = case.points(n, 1.5);
        let ctx = case.ctx(n);
        let flow = &case.flow;
        let exact = log_prob(flow, &x, ctx.as_ref());
        let est = slq(flow, &x, ctx.as_ref(), &SlqConfig { probes, steps }, seed);
        for (b, (e, s)) in exact.iter().zip(vec1(&est.log_prob)).enumerate() {
            assert_close!(s, *e, 1e-12 * (1.0 + e.abs()), "row {b}: SLQ vs exact in 1-d");
            let se = est.std_err[b];
            if probes == 1 {
                prop_assert!(se.is_nan(), "row {b}: one probe, std_err {se}");
            } else {
                prop_assert!(se.abs() <= 1e-12 * (1.0 + e.abs()), "row {b}: std_err {se}");
            }
        }
    }

    /// With full Krylov (`steps ≥ d`) the Gauss quadrature is exact for each probe, so
    /// the only error of `log_prob_slq` is Hutchinson's off-diagonal term, bounded per block
    /// by `Σ_{i≠j} |log H|_{ij}` (computed here from central-difference Jacobians and
    /// nalgebra's eigendecomposition). Tolerance on top of the bound: the FD Jacobians' error
    /// (≈ 1e-10 relative per entry, see the first property) moves `log H` by ≲ 1e-8, the
    /// Lanczos rounding by less: 1e-6.
    #[test]
    fn full_krylov_slq_is_off_by_at_most_the_hutchinson_term(
        spec in flow_spec(2..=5),
        probes in 1usize..=3,
        extra_steps in 0usize..=2,
        seed in any::<u64>(),
    ) {
        let mut case = build(&spec, true);
        let x = case.points(3, 1.5);
        let ctx = case.ctx(3);
        let flow = &case.flow;
        let exact = log_prob(flow, &x, ctx.as_ref());
        let cfg = SlqConfig { probes, steps: spec.dim + extra_steps };
        let est = vec1(&slq(flow, &x, ctx.as_ref(), &cfg, seed).log_prob);
        let bound = hutchinson_bound(flow, &x, ctx.as_ref());
        for b in 0..3 {
            assert_close!(est[b], exact[b], bound[b] + 1e-6, "row {b}: SLQ vs exact");
        }
    }
}

proptest! {
    #![proptest_config(fixed_config(32, 0x0c9f_1004))]

    /// In one dimension the CG surrogate's parameter gradient is the exact NLL gradient:
    /// with `v = ±1` and `u = H⁻¹v` (one CG step solves a 1×1 system), `∂S = u ∂H v =
    /// ∂H/H = ∂ log H`. Both the host-kernel path (one probe) and the composed path (several
    /// probes). Tolerance: the same derivative through two op orders, ≈ 1e-14 relative;
    /// 1e-9 of the largest gradient entry (plus 1e-9) is far below any missing term.
    #[test]
    fn surrogate_gradient_is_exact_in_one_dimension(
        spec in flow_spec(1..=1),
        probes in 1usize..=3,
        n in 2usize..=6,
        seed in any::<u64>(),
    ) {
        let mut case = build(&spec, true);
        let x = case.points(n, 1.5);
        let ctx = case.ctx(n);
        let flow = &case.flow;
        let params = SurrogateParams { probes, cg_atol: 1e-14, ..Default::default() };
        let sur = grads_by_name(flow, &surrogate_loss(flow, &x, ctx.as_ref(), &params, seed));
        let exact = grads_by_name(flow, &exact_nll_loss(flow, &x, ctx.as_ref()));
        let scale = exact.values().flatten().fold(1.0f64, |m, g| m.max(g.abs()));
        let mut names: Vec<&String> = sur.keys().chain(exact.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let (a, b) = (sur.get(name), exact.get(name));
            let len = a.or(b).map_or(0, Vec::len);
            for k in 0..len {
                let ga = a.map_or(0.0, |g| g[k]);
                let gb = b.map_or(0.0, |g| g[k]);
                assert_close!(ga, gb, 1e-9 * scale, "{name}[{k}]: surrogate vs exact gradient");
            }
        }
    }

    /// For any d the surrogate's parameter gradient is that of the loss it stands for: with
    /// probes `v = 𝟙` (an RNG of all-one bits) and CG solved tightly (with or without the
    /// mean-Hessian preconditioner), it equals the gradient of [`frozen_surrogate`] with
    /// `u_k = H_k⁻¹𝟙` frozen (`H_k` from FD Jacobians), taken here by a five-point difference
    /// in random parameter entries ([`param_derivative`], step 1e-4·max(1, |θ|)). Both the
    /// host-kernel path (one probe) and the composed path (two). Tolerance: the inner
    /// differences' rounding (≈ 1e-12 relative) amplified by `1/h` and `u`'s FD error
    /// (≈ 1e-10·κ relative) give ≲ 1e-7 relative: 1e-6·(1 + |fd|), plus the outer
    /// difference's own error bound (truncation and rounding, [`param_derivative`]); a gradient that misses a block's
    /// `∂H` or the path through the block inputs is off by O(1).
    #[test]
    fn surrogate_gradient_with_fixed_probes_matches_finite_differences(
        spec in flow_spec(2..=4),
        probes in 1usize..=2,
        preconditioned in any::<bool>(),
        picks in proptest::collection::vec(any::<u64>(), 4),
    ) {
        let mut case = build(&spec, true);
        let x = case.points(4, 1.5);
        let ctx = case.ctx(4);
        let flow = &case.flow;
        let params = SurrogateParams {
            probes,
            cg_atol: 1e-12,
            cg_max_iters: Some(4 * spec.dim),
            preconditioner: if preconditioned {
                CgPreconditioner::MeanHessian
            } else {
                CgPreconditioner::None
            },
            ..Default::default()
        };
        let loss = match &ctx {
            Some(c) => flow.surrogate_loss_given(&x, c, &params, &mut AllOnes),
            None => flow.surrogate_loss(&x, &params, &mut AllOnes),
        }
        .unwrap();
        prop_assert_eq!(loss.cg.converged, loss.cg.iterations.len(), "CG did not converge");
        let grads = grads_by_name(flow, &loss.loss);
        // u_k = H_k⁻¹𝟙 at the current parameters, per block and row.
        let (_, inputs) = forward_layers(flow, &x, ctx.as_ref());
        let us: Vec<Vec<Vec<f64>>> = flow
            .blocks()
            .zip(&inputs)
            .map(|(blk, h)| {
                fd_jacobians(h, ctx.as_ref(), |p, c| blk.forward(p, c).unwrap().detach())
                    .into_iter()
                    .map(|j| {
                        let ones = nalgebra::DVector::from_element(spec.dim, 1.0);
                        j.lu().solve(&ones).unwrap().iter().copied().collect()
                    })
                    .collect()
            })
            .collect();
        // The reference at the current parameters is the surrogate's value (`S = 𝟙ᵀH u =
        // 𝟙ᵀ𝟙`), to the FD error of `H u` (≈ 1e-10 relative; 1e-8 leaves a margin).
        let g0 = frozen_surrogate(flow, &x, ctx.as_ref(), &us);
        let value = loss.loss.to_scalar::<f64>().unwrap();
        assert_close!(value, g0, 1e-8 * (1.0 + g0.abs()), "surrogate value vs reference");
        for (name, var, at) in pick_entries(flow, &picks) {
            let (fd, err) = param_derivative(&var, at, 1e-4, || {
                frozen_surrogate(flow, &x, ctx.as_ref(), &us)
            });
            let g = grads.get(&name).map_or(0.0, |g| g[at]);
            let tol = 1e-6 * (1.0 + fd.abs()) + err;
            assert_close!(g, fd, tol, "{name}[{at}]: surrogate gradient vs FD");
        }
    }

    /// The surrogate's value is not an NLL: with CG solved tightly each block contributes
    /// `S = (Hu)ᵀv = vᵀv = d`, so the loss is `−mean(log N(z)) − Σ ActNorm log-dets −
    /// blocks·d` (log N at `z` from the public layers, ActNorm log-dets from their weights).
    /// Tolerance: CG stops at `‖Hu − v‖ ≤ 1e-12`, so `|S − d| ≤ √d·1e-12` per block; the
    /// rest is rounding of O(10–100) sums: 1e-9·(1 + |loss|).
    #[test]
    fn surrogate_value_is_the_prior_term_minus_d_per_block(
        spec in flow_spec(1..=5),
        probes in 1usize..=3,
        n in 1usize..=5,
        seed in any::<u64>(),
    ) {
        let mut case = build(&spec, true);
        let x = case.points(n, 1.5);
        let ctx = case.ctx(n);
        let flow = &case.flow;
        let params = SurrogateParams {
            probes,
            cg_atol: 1e-12,
            cg_max_iters: Some(4 * spec.dim),
            ..Default::default()
        };
        let loss = surrogate_loss(flow, &x, ctx.as_ref(), &params, seed).to_scalar::<f64>().unwrap();
        let (z, _) = forward_layers(flow, &x, ctx.as_ref());
        let log_var = flow.prior().log_var;
        let prior = rows(&z).iter().map(|r| log_normal(r, log_var)).sum::<f64>() / n as f64;
        let want = -prior - actnorm_logdets(flow) - (spec.blocks * spec.dim) as f64;
        assert_close!(loss, want, 1e-9 * (1.0 + want.abs()), "surrogate loss");
    }

    /// The gradient of `exact_nll_loss` (trace identity, host inverse) matches central
    /// differences of `−mean(log_prob)` (the evaluation pass, another code path) in random
    /// parameter entries ([`param_derivative`], step 1e-4·max(1, |θ|)): 1e-6·(1 + |fd|) plus
    /// the difference's own error bound (truncation and rounding).
    #[test]
    fn exact_nll_gradient_matches_finite_differences(
        spec in flow_spec(1..=4),
        picks in proptest::collection::vec(any::<u64>(), 6),
    ) {
        let mut case = build(&spec, true);
        let x = case.points(4, 1.5);
        let ctx = case.ctx(4);
        let flow = &case.flow;
        let grads = grads_by_name(flow, &exact_nll_loss(flow, &x, ctx.as_ref()));
        let nll = |f: &Flow| -> f64 {
            let lp = log_prob(f, &x, ctx.as_ref());
            -lp.iter().sum::<f64>() / lp.len() as f64
        };
        for (name, var, at) in pick_entries(flow, &picks) {
            let (fd, err) = param_derivative(&var, at, 1e-4, || nll(flow));
            let g = grads.get(&name).map_or(0.0, |g| g[at]);
            let tol = 1e-6 * (1.0 + fd.abs()) + err;
            assert_close!(g, fd, tol, "{name}[{at}]: gradient vs FD");
        }
    }
}

proptest! {
    #![proptest_config(fixed_config(24, 0x0c9f_1005))]

    /// Rows are independent: `log_prob` and `transform` of a batch equal those of each row
    /// alone and follow a permutation of the rows. Not bit for bit: the matrix products of
    /// a one-row batch take other kernels (another summation order) than a batch's, so a
    /// row alone differs by a few ulps, grown by the layers after: 1e-12·(1 + |v|), 1,000s
    /// of ulps yet far below any mix-up of rows (O(1)).
    #[test]
    fn a_batch_is_scored_row_by_row(
        spec in flow_spec(1..=5),
        n in 2usize..=24,
        perm_seed in any::<u64>(),
    ) {
        let mut case = build(&spec, true);
        let x = case.points(n, 1.5);
        let ctx = case.ctx(n);
        let flow = &case.flow;
        let lp = log_prob(flow, &x, ctx.as_ref());
        let (z, ld) = transform(flow, &x, ctx.as_ref());
        let (z, ld) = (rows(&z), vec1(&ld));
        let tol = |v: f64| 1e-12 * (1.0 + v.abs());
        for b in 0..n {
            let cb = ctx.as_ref().map(|c| row(c, b));
            let alone = log_prob(flow, &row(&x, b), cb.as_ref())[0];
            assert_close!(alone, lp[b], tol(lp[b]), "row {b}: log p alone");
            let (zb, ldb) = transform(flow, &row(&x, b), cb.as_ref());
            for (i, (a, e)) in rows(&zb)[0].iter().zip(&z[b]).enumerate() {
                assert_close!(*a, *e, tol(*e), "row {b}: z[{i}] alone");
            }
            assert_close!(vec1(&ldb)[0], ld[b], tol(ld[b]), "row {b}: log det alone");
        }
        let mut perm: Vec<usize> = (0..n).collect();
        use rand::seq::SliceRandom;
        perm.shuffle(&mut FlowRng::seed_from_u64(perm_seed));
        let xp = permuted(&x, &perm);
        let cp = ctx.as_ref().map(|c| permuted(c, &perm));
        let lpp = log_prob(flow, &xp, cp.as_ref());
        for (k, &b) in perm.iter().enumerate() {
            assert_close!(lpp[k], lp[b], tol(lp[b]), "row {k}: permuted (row {b})");
        }
    }
}

proptest! {
    #![proptest_config(fixed_config(3, 0x0c9f_1006))]

    /// The exact pass evaluates a large batch in row chunks (2,752 / d rows each, in
    /// parallel): a batch of more than one chunk scores the rows on both sides of a chunk
    /// boundary as they score alone.
    #[test]
    fn rows_across_a_chunk_boundary_are_scored_alone(
        spec in flow_spec(4..=5),
    ) {
        let mut case = build(&spec, true);
        let chunk = 2752 / spec.dim;
        let n = chunk + 5;
        let x = case.points(n, 1.5);
        let ctx = case.ctx(n);
        let flow = &case.flow;
        let lp = log_prob(flow, &x, ctx.as_ref());
        for b in [0, chunk - 2, chunk - 1, chunk, chunk + 1, n - 1] {
            let cb = ctx.as_ref().map(|c| row(c, b));
            let alone = log_prob(flow, &row(&x, b), cb.as_ref())[0];
            // As in `a_batch_is_scored_row_by_row`.
            assert_close!(alone, lp[b], 1e-12 * (1.0 + lp[b].abs()), "row {b}: chunked vs alone");
        }
    }
}

proptest! {
    #![proptest_config(fixed_config(16, 0x0c9f_1007))]

    /// A saved model loads with the same configuration, bit-identical weights (init flags
    /// included) and bit-identical log-densities; so does `load_best` of a weights-only file
    /// (no best weights: the current ones) and an in-memory `try_clone`.
    #[test]
    fn a_saved_model_loads_bit_identical(spec in flow_spec(1..=5)) {
        let mut case = build(&spec, true);
        let x = case.points(5, 1.5);
        let ctx = case.ctx(5);
        let flow = &case.flow;
        let dir = scratch_dir("save");
        let path = dir.join("model.safetensors");
        flow.save(&path).unwrap();
        let loaded = Flow::load(&path, &Device::Cpu).unwrap();
        let best = Flow::load_best(&path, &Device::Cpu).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let clone = flow.try_clone().unwrap();
        let lp = log_prob(flow, &x, ctx.as_ref());
        let weights = |f: &Flow| -> Vec<(String, Vec<f64>)> {
            f.weight_tensors()
                .into_iter()
                .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f64>().unwrap()))
                .collect()
        };
        for other in [&loaded, &best, &clone] {
            prop_assert_eq!(other.config(), flow.config());
            prop_assert_eq!(weights(other), weights(flow));
            prop_assert_eq!(log_prob(other, &x, ctx.as_ref()), lp.clone());
        }
    }

    /// An f32 copy of a model (same weights, rounded to f32; the f64 model given the same
    /// rounded weights and inputs) gives the f64 log-densities to f32 accuracy. Tolerance:
    /// the f32 rounding (6e-8 relative) of each op, grown by the network's depth and the
    /// Jacobians' conditioning in the log-det: measured at most 1.8e-6·(1 + |log p|) over
    /// 400 random models, so 2e-5·(1 + |log p|) (≈ 300 f32 ulps) leaves a factor 10.
    #[test]
    fn an_f32_model_agrees_with_f64_to_f32_accuracy(spec in flow_spec(1..=5)) {
        let mut case = build(&spec, true);
        let x = round_to_f32(&case.points(5, 1.5));
        let ctx = case.ctx(5).map(|c| round_to_f32(&c));
        let f64_flow = &case.flow;
        let f32_flow = Flow::new(spec.config(FloatType::F32), &Device::Cpu).unwrap();
        let rounded: std::collections::HashMap<String, Tensor> = f64_flow
            .weight_tensors()
            .into_iter()
            .map(|(k, t)| (k, round_to_f32(&t)))
            .collect();
        f32_flow.set_weights(&rounded, "").unwrap();
        f64_flow.set_weights(&rounded, "").unwrap();
        prop_assert_eq!(f32_flow.dtype(), DType::F32);
        let x32 = x.to_dtype(DType::F32).unwrap();
        let c32 = ctx.as_ref().map(|c| c.to_dtype(DType::F32).unwrap());
        let lp64 = log_prob(f64_flow, &x, ctx.as_ref());
        let lp32 = log_prob(&f32_flow, &x32, c32.as_ref());
        for (b, (a, e)) in lp32.iter().zip(&lp64).enumerate() {
            assert_close!(*a, *e, 2e-5 * (1.0 + e.abs()), "row {b}: f32 vs f64 log p");
        }
    }
}

proptest! {
    #![proptest_config(fixed_config(32, 0x0c9f_1008))]

    /// After `initialize(x)` each ActNorm of a tabular flow maps its input over the batch
    /// to `(h − m) ⊙ c` with `m` the feature means, `s` the biased standard deviations and
    /// `c = 1/(s + 1e-6) + 1e-3` (closed form, statistics computed here): its outputs have
    /// mean 0 and standard deviation `s·c` (1 up to the 1e-6 and 1e-3 offsets), its log-det
    /// is `Σ log c`, and the flow's `z` (the last ActNorm's output) is standardised. Data
    /// with feature spreads 1e-3…1e3 and offsets up to ±1e3.
    ///
    /// Tolerances: the mean's rounding is at most `n·u·max|h|`, multiplied by `c` in the
    /// output: `4·n·u·c·max|h| + 1e-14·|y|` per entry and for the output mean; the
    /// spread 1e-12 relative (two-pass sums of O(1) values); the log-det 1e-12·(1 + |Σ log
    /// c|); `z` from the host kernels vs the public layers 1e-12·max(1, |z|) plus the last
    /// ActNorm's rounding term (its input, computed in another op order, times `c`).
    #[test]
    fn actnorm_initialisation_standardises_every_feature(
        spec in flow_spec(1..=5),
        n in 2usize..=32,
        log_spreads in proptest::collection::vec(-3.0f64..3.0, 5),
        offsets in proptest::collection::vec(-1e3f64..1e3, 5),
    ) {
        let spec = FlowSpec { actnorm: true, ..spec };
        let d = spec.dim;
        let flow = Flow::new(spec.config(FloatType::F64), &Device::Cpu).unwrap();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(spec.seed);
        let spreads: Vec<f64> = log_spreads[..d].iter().map(|l| 10f64.powf(*l)).collect();
        let x = randn(&mut rng, n, d, 1.0)
            .broadcast_mul(&Tensor::from_vec(spreads, (1, d), &Device::Cpu).unwrap())
            .unwrap()
            .broadcast_add(&Tensor::from_vec(offsets[..d].to_vec(), (1, d), &Device::Cpu).unwrap())
            .unwrap();
        let ctx = flow.context_dim().map(|c| randn(&mut rng, n, c, 1.0));
        match &ctx {
            Some(c) => flow.initialize_given(&x, c).unwrap(),
            None => flow.initialize(&x).unwrap(),
        }
        prop_assert!(flow.is_initialized().unwrap());
        let tol_rounding = 4.0 * n as f64 * U64;
        // Per feature, `c·max|h|` of the last ActNorm: its rounding scale.
        let mut last_scale = vec![0.0; d];
        let mut h = x.clone();
        for (i, l) in flow.layers().iter().enumerate() {
            h = match l {
                Layer::ActNorm(a) => {
                    let hs = rows(&h);
                    let stats = column_stats(&hs);
                    let (y, ld) = a.forward(&h).unwrap();
                    let ys = rows(&y);
                    let ystats = column_stats(&ys);
                    let mut want_ld = 0.0;
                    for (j, &(m, s)) in stats.iter().enumerate() {
                        let c = 1.0 / (s + 1e-6) + 1e-3;
                        want_ld += c.ln();
                        let hmax = hs.iter().fold(0.0f64, |acc, r| acc.max(r[j].abs()));
                        let tol = tol_rounding * c * hmax;
                        last_scale[j] = c * hmax;
                        for (r, (yr, hr)) in ys.iter().zip(&hs).enumerate() {
                            let want = (hr[j] - m) * c;
                            assert_close!(yr[j], want, tol + 1e-14 * want.abs(), "layer {i} y[{r}][{j}]");
                        }
                        let (ym, ys_) = ystats[j];
                        assert_close!(ym, 0.0, tol, "layer {i} feature {j}: output mean");
                        assert_close!(ys_, s * c, 1e-12 * s * c + tol, "layer {i} feature {j}: output std");
                    }
                    let ld = ld.to_scalar::<f64>().unwrap();
                    assert_close!(ld, want_ld, 1e-12 * (1.0 + want_ld.abs()), "layer {i}: log det");
                    y
                }
                Layer::Cpf(b) => b.forward(&h, ctx.as_ref()).unwrap(),
            }
            .detach();
        }
        let (z, _) = transform(&flow, &x, ctx.as_ref());
        for (r, (zr, hr)) in rows(&z).iter().zip(rows(&h)).enumerate() {
            for (j, (a, e)) in zr.iter().zip(&hr).enumerate() {
                let tol = 1e-12 * e.abs().max(1.0) + tol_rounding * last_scale[j];
                assert_close!(*a, *e, tol, "z[{r}][{j}] vs the layers");
            }
        }
    }
}
