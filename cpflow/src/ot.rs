//! The optimal-transport experiment (paper Fig. 4, reference `train_ot.py`,
//! `docs/reference/cpflow-reference.md` §4.3).
//!
//! Data `x ~ N(m, C)` in `d` dimensions (random mean `m ~ N(0, I)`, `C ~ Wishart(d + 1, I)`,
//! seeded; or the paper's fixed 2-D target). One CP-Flow block `f = ∇Φ` (no ActNorm, prior
//! `N(0, I)`) is trained by maximum likelihood with the **exact** log-determinant. Brenier's
//! theorem makes the gradient of a convex potential pushing `N(m, C)` onto `N(0, I)` the
//! optimal map, so as the KL goes to 0 the transport cost `E‖x − f(x)‖²` must approach the
//! closed form `W₂² = ‖m‖² + tr(C + I − 2 C^{½})`. Before it has converged the cost is no
//! estimate of `W₂²` (a short run's is far below it): [`W2Bounds`] bounds `W₂²` by the cost
//! and the KL (Talagrand's inequality) and says whether the map has converged.
//!
//! The KL is estimated on held-out data as `mean(log p(x) − log q(x))` with the true Gaussian
//! log-density `p` and the model's exact `q`: unbiased for `KL(p‖q)` and, unlike
//! `NLL − H(p)`, with a variance that vanishes as `q → p`.
//!
//! The paper's run is `run_ot_experiment(&OtConfig::reference(d), …)` (minutes per
//! dimension); a shrunk one:
//!
//! ```
//! use cpflow::candle::Device;
//! use cpflow::ot::{OtConfig, run_ot_experiment};
//! # fn main() -> Result<(), cpflow::ot::OtError> {
//! // The reference settings, shrunk: a width-8 ICNN, 256 training points, 10 steps.
//! let mut cfg = OtConfig::reference(2);
//! (cfg.n_train, cfg.n_test, cfg.n_eval_curve, cfg.eval_every) = (256, 128, 64, 5);
//! cfg.train.max_iterations = 10;
//! cfg.train.batch_size = 64;
//! cfg.train.lr_schedule = cpflow::LrSchedule::Cosine { t_max: 10 };
//! if let cpflow::PotentialConfig::Icnn3(c) = &mut cfg.potential {
//!     (c.width, c.depth) = (8, 2);
//! }
//! let (_flow, report) = run_ot_experiment(&cfg, &Device::Cpu, Default::default())?;
//! assert_eq!(report.dim, 2);
//! assert!(report.w2_squared > 0.0 && report.transport_cost.is_finite() && report.kl.is_finite());
//! # Ok(())
//! # }
//! ```

mod config;
mod convergence;
mod report;
mod run;
#[cfg(test)]
mod tests;

pub use config::{OtConfig, OtError, OtTarget};
pub use convergence::{W2_BOUND_TOLERANCE, W2Bounds};
pub use report::{OtRecord, OtReport, ot_table_markdown, write_ot_figures};
pub use run::{forward_map, run_ot_experiment, transport_cost};
