//! CG convergence over a training call: the metrics window and the rate-limited warning when CG stopped at its iteration cap.
//!
//! The surrogate gradient of a system whose CG stopped early is still usable (the reference
//! stops at `m2` iterations too), so this is a warning, never an error. It is given the first
//! time a step of the call leaves systems unconverged, then at most once per logging point
//! (`train.log_every`, validations, the end) with what happened since the previous one. The
//! image trainer keeps the same tally with the same periods, the VAE trainer too (warning at
//! most once per epoch); the three warnings are one text ([`Unconverged::text`]) told what
//! differs by a [`CgWarningContext`].

use candle_core::DType;

use crate::block::CgReport;
use crate::config::SurrogateParams;
use crate::surrogate_cg::resolvable_tolerance;

/// Counts of CG systems that met their tolerance, kept by [`super::Trainer`]'s loop (and by
/// the image and VAE trainers', for their warnings only, in the contexts of
/// `image/train/run/cg_warning.rs` and `vae/cg_warning.rs`).
#[derive(Clone, Debug, Default)]
pub(crate) struct CgTally {
    /// Systems and converged systems since the last metrics record.
    window: (usize, usize),
    /// Whether the call's first warning was given.
    warned: bool,
    /// Unconverged steps not warned about yet.
    pending: Option<Unconverged>,
}

/// Steps that left CG systems unconverged (1-based steps, as `metrics.jsonl` counts).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Unconverged {
    /// Number of such steps.
    pub steps: usize,
    /// The first and last of them.
    pub first_step: usize,
    pub last_step: usize,
    /// Unconverged systems and all systems of those steps.
    pub unconverged: usize,
    pub systems: usize,
    /// Of the unconverged systems, those whose CG broke down (not positive definite or not
    /// finite, rather than stopped at the cap).
    pub broken: usize,
    /// Whether this is the call's first warning.
    pub first: bool,
}

impl CgTally {
    /// Adds the report of (1-based) step `step`; returns the warning to give now (the call's
    /// first step with unconverged systems), the others wait for [`CgTally::flush`].
    pub fn record(&mut self, step: usize, cg: &CgReport) -> Option<Unconverged> {
        let systems = cg.iterations.len();
        let converged = cg.converged.min(systems);
        self.window.0 += systems;
        self.window.1 += converged;
        if converged == systems {
            return None;
        }
        let unconverged = systems - converged;
        let p = self.pending.get_or_insert(Unconverged {
            steps: 0,
            first_step: step,
            last_step: step,
            unconverged: 0,
            systems: 0,
            broken: 0,
            first: !self.warned,
        });
        p.steps += 1;
        p.last_step = step;
        p.unconverged += unconverged;
        p.systems += systems;
        p.broken += cg.breakdown.min(unconverged);
        if self.warned {
            None
        } else {
            self.warned = true;
            self.pending.take()
        }
    }

    /// At a logging point: the unconverged steps since the last warning, if any.
    pub fn flush(&mut self) -> Option<Unconverged> {
        self.pending.take()
    }

    /// The fraction of the window's systems that converged (`None` without systems), and a
    /// new window.
    pub fn take_window(&mut self) -> Option<f64> {
        let (s, c) = std::mem::take(&mut self.window);
        fraction(s, c)
    }
}

/// `v` as written in a configuration: plain for 0 and moderate magnitudes, else `1e-14`.
pub(crate) fn number(v: f64) -> String {
    if v == 0.0 || (1e-3..1e4).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

fn fraction(systems: usize, converged: usize) -> Option<f64> {
    (systems > 0).then(|| converged as f64 / systems as f64)
}

/// What differs between the trainers' CG warnings: what CG solved for, in which float type,
/// where its settings are, where the cap comes from without `cg_max_iters`, and how often
/// later warnings come.
/// The flow trainer's is [`CgWarningContext::flow`]; the image and VAE trainers build their
/// own.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CgWarningContext<'a> {
    /// What CG solved for ("the surrogate gradient").
    pub subject: &'a str,
    /// Whose Jacobian is not positive definite when CG breaks down ("the block's").
    pub jacobian_of: &'a str,
    /// A sentence on what to check after a breakdown, if any.
    pub breakdown_advice: Option<&'a str>,
    /// The configuration table of the CG settings ("train.surrogate").
    pub table: &'a str,
    /// The iteration cap when `cg_max_iters` is unset, and what it is ("the dimension").
    pub default_cap: (usize, &'a str),
    /// What a later warning waits for ("log period (train.log_every)").
    pub period: &'a str,
    /// The float type CG ran in (f32 or f64): below its [`resolvable_tolerance`] the
    /// warning says that more iterations may not help.
    pub dtype: DType,
}

impl CgWarningContext<'static> {
    /// The flow trainer's (`cpflow train`): settings under `train.surrogate`, the flow of
    /// dimension `dim` in `dtype`, later warnings at logging points.
    pub fn flow(dim: usize, dtype: DType) -> Self {
        CgWarningContext {
            subject: "the surrogate gradient",
            jacobian_of: "the block's",
            breakdown_advice: Some(
                "The flow does not check convexity: a custom potential's products must be \
                 those of a convex function (check them with icnn::check_derivatives)",
            ),
            table: "train.surrogate",
            default_cap: (dim, "the dimension"),
            period: "log period (train.log_every)",
            dtype,
        }
    }
}

impl Unconverged {
    /// Logs the warning ([`Unconverged::text`]) at `WARN`, with the steps, unconverged and
    /// all systems as fields: what the flow, image and VAE trainers emit.
    pub fn warn(&self, params: &SurrogateParams, ctx: &CgWarningContext) {
        tracing::warn!(
            steps = self.steps,
            unconverged = self.unconverged,
            systems = self.systems,
            "{}",
            self.text(params, ctx)
        );
    }

    /// The warning's text: what happened, with which settings (`params`, named as `ctx`
    /// says), and what to raise; after a breakdown, what is wrong instead.
    pub fn text(&self, params: &SurrogateParams, ctx: &CgWarningContext) -> String {
        let CgWarningContext {
            subject,
            jacobian_of,
            table,
            period,
            ..
        } = ctx;
        let what = if self.steps == 1 {
            format!("at step {}", self.first_step)
        } else {
            format!(
                "in {} steps ({} to {})",
                self.steps, self.first_step, self.last_step
            )
        };
        let later = if self.first {
            format!(". Later such steps are reported at most once per {period}")
        } else {
            String::new()
        };
        if self.broken > 0 {
            let advice = ctx
                .breakdown_advice
                .map(|a| format!(". {a}"))
                .unwrap_or_default();
            return format!(
                "CG of {subject} broke down on {} of {} systems {what} (non-positive or \
                 non-finite curvature pᵀHp): {jacobian_of} Jacobian is not positive definite \
                 there, or its Hessian-vector products are not finite{advice}; NaN weights \
                 stop training at the next non-finite loss{later}",
                self.broken, self.systems
            );
        }
        let cap = match params.cg_max_iters {
            Some(m) => format!("{table}.cg_max_iters = {m} iterations"),
            None => {
                let (cap, source) = ctx.default_cap;
                format!("{cap} iterations ({table}.cg_max_iters unset: {source})")
            }
        };
        let stopped = format!(
            "CG of {subject} left {} of {} systems unconverged {what}: it stopped after {cap} \
             above the tolerance ({table}.cg_atol = {}, cg_rtol = {})",
            self.unconverged,
            self.systems,
            number(params.cg_atol),
            number(params.cg_rtol)
        );
        let resolvable = resolvable_tolerance(ctx.dtype);
        if params.cg_atol + params.cg_rtol >= resolvable {
            return format!(
                "{stopped}. Their gradient is approximate; training goes on. Raise \
                 {table}.cg_max_iters or the tolerances{later}"
            );
        }
        // Below the float type's resolution CG judges convergence on the true residual
        // (`surrogate_cg::confirms_on_true_residual`), which rounding may keep above the
        // tolerance: more iterations need not help, larger tolerances (or f64) do.
        let (float, f64_advice) = match ctx.dtype {
            DType::F64 => ("f64", ""),
            _ => ("f32", ", or train in f64"),
        };
        format!(
            "{stopped}, which is below what {float} arithmetic resolves (cg_atol + cg_rtol < \
             {resolvable:.2e}): CG may not meet it however many iterations it runs. Their \
             gradient is approximate; training goes on. Raise {table}.cg_atol or cg_rtol to \
             {resolvable:.2e} or more{f64_advice}{later}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(systems: usize, converged: usize) -> CgReport {
        CgReport {
            iterations: vec![3; systems],
            converged,
            breakdown: 0,
        }
    }

    /// The first unconverged step warns at once, later ones wait for a logging point and are
    /// summed there; converged steps never warn; windows and totals count systems.
    #[test]
    fn warnings_are_rate_limited_and_counts_add_up() {
        let mut t = CgTally::default();
        assert_eq!(t.record(1, &report(10, 10)), None);
        assert_eq!(t.flush(), None);
        let first = t.record(2, &report(10, 7)).unwrap();
        assert_eq!((first.steps, first.first_step, first.last_step), (1, 2, 2));
        assert!(first.first);
        assert_eq!((first.unconverged, first.systems), (3, 10));
        assert_eq!(t.take_window(), Some(17.0 / 20.0));
        assert_eq!(t.flush(), None);
        assert_eq!(t.record(3, &report(10, 9)), None);
        assert_eq!(t.record(4, &report(10, 10)), None);
        assert_eq!(t.record(5, &report(10, 0)), None);
        let later = t.flush().unwrap();
        assert_eq!((later.steps, later.first_step, later.last_step), (2, 3, 5));
        assert_eq!((later.unconverged, later.systems), (11, 20));
        assert!(!later.first);
        assert_eq!(t.flush(), None);
        assert_eq!(t.take_window(), Some(19.0 / 30.0));
        assert_eq!(t.take_window(), None);
        // The exact objective: no systems, nothing to report.
        let mut e = CgTally::default();
        assert_eq!(e.record(1, &CgReport::default()), None);
        assert_eq!(e.take_window(), None);
    }

    /// The message names the step(s), the counts, the cap in force and the keys to raise.
    #[test]
    fn the_message_names_the_settings() {
        let u = Unconverged {
            steps: 1,
            first_step: 4,
            last_step: 4,
            unconverged: 5,
            systems: 16,
            broken: 0,
            first: true,
        };
        let p = SurrogateParams {
            cg_max_iters: Some(1),
            cg_atol: 1e-14,
            ..Default::default()
        };
        let m = u.text(&p, &CgWarningContext::flow(2, DType::F64));
        for part in [
            "5 of 16 systems",
            "at step 4",
            "train.surrogate.cg_max_iters = 1 iterations",
            "cg_atol = 1e-14, cg_rtol = 0)",
            "at most once per log period",
        ] {
            assert!(m.contains(part), "{part}: {m}");
        }
        let m = Unconverged {
            steps: 3,
            last_step: 9,
            first: false,
            ..u
        }
        .text(
            &SurrogateParams::default(),
            &CgWarningContext::flow(7, DType::F64),
        );
        assert!(
            m.contains("in 3 steps (4 to 9)")
                && m.contains("7 iterations")
                && m.contains("cg_atol = 0.001")
                && !m.contains("once per log period"),
            "{m}"
        );
        // A breakdown is not a cap: the message says what is wrong, not what to raise.
        let m = Unconverged { broken: 2, ..u }.text(&p, &CgWarningContext::flow(2, DType::F64));
        assert!(
            m.contains("broke down on 2 of 16 systems")
                && m.contains("icnn::check_derivatives")
                && !m.contains("Raise"),
            "{m}"
        );
    }

    /// The flow trainer's three forms of the warning, to the byte: at the cap that
    /// `cg_max_iters` sets (the call's first warning), at the dimension (a later one), and a
    /// breakdown. Their tolerances are ones f64 resolves (1e-12, 1e-3 ≥ 2.2e-13).
    #[test]
    fn the_flow_messages_are_pinned() {
        let u = Unconverged {
            steps: 1,
            first_step: 4,
            last_step: 4,
            unconverged: 5,
            systems: 16,
            broken: 0,
            first: true,
        };
        let p = SurrogateParams {
            cg_max_iters: Some(1),
            cg_atol: 1e-12,
            ..Default::default()
        };
        assert_eq!(
            u.text(&p, &CgWarningContext::flow(2, DType::F64)),
            "CG of the surrogate gradient left 5 of 16 systems unconverged at step 4: it \
             stopped after train.surrogate.cg_max_iters = 1 iterations above the tolerance \
             (train.surrogate.cg_atol = 1e-12, cg_rtol = 0). Their gradient is approximate; \
             training goes on. Raise train.surrogate.cg_max_iters or the tolerances. Later \
             such steps are reported at most once per log period (train.log_every)"
        );
        let later = Unconverged {
            steps: 3,
            last_step: 9,
            first: false,
            ..u
        };
        assert_eq!(
            later.text(
                &SurrogateParams::default(),
                &CgWarningContext::flow(7, DType::F64)
            ),
            "CG of the surrogate gradient left 5 of 16 systems unconverged in 3 steps (4 to \
             9): it stopped after 7 iterations (train.surrogate.cg_max_iters unset: the \
             dimension) above the tolerance (train.surrogate.cg_atol = 0.001, cg_rtol = 0). \
             Their gradient is approximate; training goes on. Raise \
             train.surrogate.cg_max_iters or the tolerances"
        );
        assert_eq!(
            Unconverged { broken: 2, ..u }.text(&p, &CgWarningContext::flow(2, DType::F64)),
            "CG of the surrogate gradient broke down on 2 of 16 systems at step 4 \
             (non-positive or non-finite curvature pᵀHp): the block's Jacobian is not \
             positive definite there, or its Hessian-vector products are not finite. The \
             flow does not check convexity: a custom potential's products must be those of \
             a convex function (check them with icnn::check_derivatives); NaN weights stop \
             training at the next non-finite loss. Later such steps are reported at most \
             once per log period (train.log_every)"
        );
    }

    /// A tolerance below what the float type resolves (`resolvable_tolerance`: f32 1.19e-4,
    /// f64 2.2e-13) is named as such, with the threshold, instead of asking for more
    /// iterations; at the threshold and above, and for f64 at f32's unresolvable 1e-5, the
    /// text is the usual one.
    #[test]
    fn an_unresolvable_tolerance_is_named_instead_of_more_iterations() {
        let u = Unconverged {
            steps: 1,
            first_step: 4,
            last_step: 4,
            unconverged: 5,
            systems: 16,
            broken: 0,
            first: true,
        };
        let p = |cg_atol, cg_rtol| SurrogateParams {
            cg_max_iters: Some(50),
            cg_atol,
            cg_rtol,
            ..Default::default()
        };
        assert_eq!(
            u.text(&p(1e-30, 0.0), &CgWarningContext::flow(43, DType::F32)),
            "CG of the surrogate gradient left 5 of 16 systems unconverged at step 4: it \
             stopped after train.surrogate.cg_max_iters = 50 iterations above the tolerance \
             (train.surrogate.cg_atol = 1e-30, cg_rtol = 0), which is below what f32 \
             arithmetic resolves (cg_atol + cg_rtol < 1.19e-4): CG may not meet it however \
             many iterations it runs. Their gradient is approximate; training goes on. Raise \
             train.surrogate.cg_atol or cg_rtol to 1.19e-4 or more, or train in f64. Later \
             such steps are reported at most once per log period (train.log_every)"
        );
        let f64_text = Unconverged { first: false, ..u }
            .text(&p(1e-14, 1e-14), &CgWarningContext::flow(43, DType::F64));
        assert!(
            f64_text.ends_with(
                "(train.surrogate.cg_atol = 1e-14, cg_rtol = 1e-14), which is below what f64 \
                 arithmetic resolves (cg_atol + cg_rtol < 2.22e-13): CG may not meet it \
                 however many iterations it runs. Their gradient is approximate; training goes \
                 on. Raise train.surrogate.cg_atol or cg_rtol to 2.22e-13 or more"
            ),
            "{f64_text}"
        );
        let usual = |params: &SurrogateParams, dtype| {
            let m = u.text(params, &CgWarningContext::flow(43, dtype));
            m.contains("Raise train.surrogate.cg_max_iters or the tolerances")
                && !m.contains("resolves")
        };
        // Sums at the threshold are resolved: the confirmation and the text use one number.
        let f32_threshold = resolvable_tolerance(DType::F32);
        assert!(usual(&p(f32_threshold, 0.0), DType::F32));
        assert!(!usual(&p(0.99 * f32_threshold, 0.0), DType::F32));
        assert!(usual(&p(1e-5, 0.0), DType::F64));
        assert!(usual(&SurrogateParams::default(), DType::F32));
        assert!(usual(&p(0.0, 1e-3), DType::F32));
    }

    /// Broken-down systems are counted among the unconverged ones of the warning.
    #[test]
    fn breakdowns_are_counted() {
        let mut t = CgTally::default();
        let mut cg = report(8, 5);
        cg.breakdown = 3;
        let w = t.record(1, &cg).unwrap();
        assert_eq!((w.unconverged, w.broken), (3, 3));
    }
}
