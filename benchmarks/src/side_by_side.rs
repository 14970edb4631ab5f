//! The side-by-side comparison with the authors' PyTorch code: the rows both sides report,
//! their ratios, and the Markdown table of `docs/results/side-by-side-cpu.md`.
//!
//! The reference rows are the JSON objects `ref_tabular.py` prints (one per dimension and
//! pre-training length), extended by `benchmarks/scripts/ref_peak_memory.py` with the peak
//! resident memory of the train steps on CPU. Our rows ([`Measurement`]) are written by the
//! `side_by_side` binary with the same field names, so both parse into the same struct.

use serde::{Deserialize, Serialize};

/// One measurement of one side at one dimension and training state. Field names follow
/// `ref_tabular.py`'s JSON; fields a side does not report are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Data dimension.
    pub d: usize,
    /// Untimed training steps before the timed ones (0 = "init").
    #[serde(default)]
    pub pretrain_steps: usize,
    /// Median seconds of one train step (batch 1,024).
    pub train_step_s_median: f64,
    /// Mean CG iterations per system during the timed steps.
    #[serde(default)]
    pub cg_iters_mean: Option<f64>,
    /// Exact (dense log-det) evaluation, seconds per 1,000 points.
    pub exact_eval_s_per_1000: f64,
    /// Mean exact NLL of the evaluation points.
    #[serde(default)]
    pub exact_nll: Option<f64>,
    /// SLQ evaluation, seconds per 1,000 points.
    pub slq_eval_s_per_1000: f64,
    /// Mean SLQ NLL of the evaluation points.
    #[serde(default)]
    pub slq_nll: Option<f64>,
    /// Seconds to invert 1,024 prior samples.
    pub invert_1024_s: f64,
    /// `max |f(x) − z|` of that inversion.
    pub invert_max_err: f64,
    /// Peak resident memory of the train steps above the resident memory before them (MiB):
    /// `VmHWM` after `/proc/self/clear_refs` reset, minus `VmRSS` at the reset.
    #[serde(default)]
    pub peak_train_rss_mib: Option<f64>,
    /// Peak live heap bytes of the train steps above the live bytes before them (MiB; ours
    /// only, from a counting global allocator).
    #[serde(default)]
    pub peak_train_alloc_mib: Option<f64>,
    /// Peak device memory of the timed train steps (MiB; CUDA runs): the reference's
    /// `torch.cuda.max_memory_allocated()` (`ref_tabular.py`'s `peak_train_mib`), ours the
    /// high-water mark of CUDA's memory pool ([`crate::device_memory`]).
    #[serde(default, alias = "peak_train_mib")]
    pub peak_train_device_mib: Option<f64>,
    /// Process CPU seconds per wall second in each timed phase (ours only; see
    /// [`crate::CpuWatch`]): about 1 means a phase ran on one core.
    #[serde(default)]
    pub cores_used: Option<CoresUsed>,
}

/// Cores kept busy (process CPU seconds per wall second) in each timed phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CoresUsed {
    /// The timed train steps.
    pub train: f64,
    /// The exact evaluation.
    pub exact_eval: f64,
    /// The SLQ evaluation.
    pub slq_eval: f64,
    /// The inversion.
    pub invert: f64,
}

/// Our and their measurement of the same configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// The authors' PyTorch code.
    pub theirs: Measurement,
    /// This workspace.
    pub ours: Measurement,
    /// `/proc/loadavg` (1-minute) before the reference run and after ours.
    pub load: [f64; 2],
}

/// Speed-ups (theirs / ours: above 1 means we are faster) and accuracy / memory ratios.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratios {
    /// Train step time.
    pub train_step: f64,
    /// Exact evaluation time.
    pub exact_eval: f64,
    /// SLQ evaluation time.
    pub slq_eval: f64,
    /// Inversion time.
    pub invert: f64,
    /// Their inversion max error over ours (above 1: ours is more accurate).
    pub invert_err: f64,
    /// Their peak train memory over ours (ours: allocator count when present, else RSS).
    pub memory: Option<f64>,
}

/// `theirs / ours`; NaN when either side has no measurement (zero, negative or not finite:
/// e.g. the reference side of an `--ours-only` run).
fn ratio(theirs: f64, ours: f64) -> f64 {
    if ours > 0.0 && theirs > 0.0 && ours.is_finite() && theirs.is_finite() {
        theirs / ours
    } else {
        f64::NAN
    }
}

impl Pair {
    /// Our peak train memory as compared: device memory when both sides report it (CUDA
    /// runs), else the allocator count when present, else RSS.
    pub fn our_memory_mib(&self) -> Option<f64> {
        if self.device_memory() {
            return self.ours.peak_train_device_mib;
        }
        self.ours
            .peak_train_alloc_mib
            .or(self.ours.peak_train_rss_mib)
    }

    /// Their peak train memory as compared (device memory when both sides report it).
    pub fn their_memory_mib(&self) -> Option<f64> {
        if self.device_memory() {
            return self.theirs.peak_train_device_mib;
        }
        self.theirs.peak_train_rss_mib
    }

    /// Whether both sides report device memory (a GPU run): then memory compares device
    /// peaks.
    fn device_memory(&self) -> bool {
        self.ours.peak_train_device_mib.is_some() && self.theirs.peak_train_device_mib.is_some()
    }

    /// Ratios of this pair.
    ///
    /// ```
    /// use benchmarks::side_by_side::{Measurement, Pair};
    /// let theirs = Measurement { train_step_s_median: 0.3, ..Default::default() };
    /// let ours = Measurement { train_step_s_median: 0.1, ..Default::default() };
    /// let r = Pair { theirs, ours, load: [0.0, 0.0] }.ratios();
    /// assert!((r.train_step - 3.0).abs() < 1e-12);
    /// ```
    pub fn ratios(&self) -> Ratios {
        let (t, o) = (&self.theirs, &self.ours);
        Ratios {
            train_step: ratio(t.train_step_s_median, o.train_step_s_median),
            exact_eval: ratio(t.exact_eval_s_per_1000, o.exact_eval_s_per_1000),
            slq_eval: ratio(t.slq_eval_s_per_1000, o.slq_eval_s_per_1000),
            invert: ratio(t.invert_1024_s, o.invert_1024_s),
            invert_err: ratio(t.invert_max_err, o.invert_max_err),
            memory: match (self.their_memory_mib(), self.our_memory_mib()) {
                (Some(a), Some(b)) => Some(ratio(a, b)),
                _ => None,
            },
        }
    }
}

/// Acceptance targets of issue 13 (d ≥ 43): speed-ups and the inversion error ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Targets {
    /// Train step speed-up.
    pub train_step: f64,
    /// Exact evaluation speed-up.
    pub exact_eval: f64,
    /// SLQ evaluation speed-up.
    pub slq_eval: f64,
    /// Inversion speed-up.
    pub invert: f64,
    /// Inversion error ratio.
    pub invert_err: f64,
    /// Smallest dimension the targets apply to.
    pub min_dim: usize,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            train_step: 2.0,
            exact_eval: 3.0,
            slq_eval: 2.0,
            invert: 2.0,
            invert_err: 10.0,
            min_dim: 43,
        }
    }
}

impl Targets {
    /// Issue 14's targets on a GPU, for every d of the run (6, 43 and 63): train step,
    /// exact evaluation and inversion ≥ 3× faster, inversion error ≥ 10× smaller, peak
    /// memory no higher. SLQ evaluation has no target there (0: never missed unless
    /// unmeasured).
    pub fn gpu() -> Self {
        Self {
            train_step: 3.0,
            exact_eval: 3.0,
            slq_eval: 0.0,
            invert: 3.0,
            invert_err: 10.0,
            min_dim: 0,
        }
    }

    /// The targets a pair misses (names), empty when all are met or the dimension is below
    /// `min_dim`. Memory must be below theirs (ratio > 1) when both sides report it.
    pub fn missed(&self, pair: &Pair) -> Vec<&'static str> {
        if pair.ours.d < self.min_dim {
            return Vec::new();
        }
        let r = pair.ratios();
        let mut out = Vec::new();
        let checks = [
            ("train step", r.train_step, self.train_step),
            ("exact eval", r.exact_eval, self.exact_eval),
            ("SLQ eval", r.slq_eval, self.slq_eval),
            ("inversion", r.invert, self.invert),
            ("inversion error", r.invert_err, self.invert_err),
        ];
        for (name, got, want) in checks {
            // NaN (a missing or zero measurement) counts as missed.
            if got.is_nan() || got < want {
                out.push(name);
            }
        }
        if let Some(m) = r.memory
            && (m.is_nan() || m <= 1.0)
        {
            out.push("memory");
        }
        out
    }
}

fn state(m: &Measurement) -> String {
    if m.pretrain_steps == 0 {
        "init".to_string()
    } else {
        format!("{} steps", m.pretrain_steps)
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
}

/// A ratio as `2.50×` (`digits` decimals), or `–` when it is NaN (a side without a
/// measurement).
fn times(r: f64, digits: usize) -> String {
    if r.is_nan() {
        "–".to_string()
    } else {
        format!("{r:.digits$}×")
    }
}

/// A measured value with `digits` decimals (`exp`: in scientific notation), or `–` when it
/// is not positive (not measured).
fn measured(v: f64, digits: usize, exp: bool) -> String {
    match (v > 0.0, exp) {
        (false, _) => "–".to_string(),
        (true, false) => format!("{v:.digits$}"),
        (true, true) => format!("{v:.digits$e}"),
    }
}

/// The Markdown table: one row per pair, speed-ups first, then the raw numbers.
///
/// ```
/// use benchmarks::side_by_side::{Measurement, Pair, markdown_table};
/// let m = Measurement { d: 6, train_step_s_median: 0.1, exact_eval_s_per_1000: 0.1,
///     slq_eval_s_per_1000: 0.1, invert_1024_s: 0.1, invert_max_err: 1e-4, ..Default::default() };
/// let t = markdown_table(&[Pair { theirs: m.clone(), ours: m, load: [1.0, 1.0] }]);
/// assert!(t.contains("| 6 | init | 1.00×"));
/// ```
pub fn markdown_table(pairs: &[Pair]) -> String {
    let mut s = String::new();
    s.push_str(
        "| d | state | train step (CG its ours / theirs) | exact eval | SLQ eval | \
         invert 1,024 (max err ours vs theirs) | peak train memory MiB ours / theirs | load |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|\n");
    for p in pairs {
        let r = p.ratios();
        let (o, t) = (&p.ours, &p.theirs);
        s.push_str(&format!(
            "| {} | {} | {} ({} / {}) | {} | {} | {} ({} vs {}) | {} / {} ({}) | {:.1}→{:.1} |\n",
            o.d,
            state(o),
            times(r.train_step, 2),
            opt(o.cg_iters_mean, 1),
            opt(t.cg_iters_mean, 1),
            times(r.exact_eval, 2),
            times(r.slq_eval, 2),
            times(r.invert, 2),
            measured(o.invert_max_err, 1, true),
            measured(t.invert_max_err, 1, true),
            opt(p.our_memory_mib(), 1),
            opt(p.their_memory_mib(), 1),
            times(r.memory.unwrap_or(f64::NAN), 1),
            p.load[0],
            p.load[1],
        ));
    }
    s.push_str("\nRaw seconds (ours / theirs):\n\n");
    s.push_str(
        "| d | state | train step | exact eval / 1000 | SLQ eval / 1000 | invert 1,024 | \
         exact NLL | SLQ NLL |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|\n");
    for p in pairs {
        let (o, t) = (&p.ours, &p.theirs);
        s.push_str(&format!(
            "| {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {} / {} | {} / {} |\n",
            o.d,
            state(o),
            measured(o.train_step_s_median, 4, false),
            measured(t.train_step_s_median, 4, false),
            measured(o.exact_eval_s_per_1000, 4, false),
            measured(t.exact_eval_s_per_1000, 4, false),
            measured(o.slq_eval_s_per_1000, 4, false),
            measured(t.slq_eval_s_per_1000, 4, false),
            measured(o.invert_1024_s, 4, false),
            measured(t.invert_1024_s, 4, false),
            opt(o.exact_nll, 3),
            opt(t.exact_nll, 3),
            opt(o.slq_nll, 3),
            opt(t.slq_nll, 3),
        ));
    }
    if pairs.iter().any(|p| p.ours.cores_used.is_some()) {
        s.push_str(
            "\nCores used by ours (process CPU seconds per wall second; about 1: one core \
             worked, the others waited):\n\n",
        );
        s.push_str("| d | state | train step | exact eval | SLQ eval | invert |\n");
        s.push_str("|---|---|---|---|---|---|\n");
        for p in pairs {
            let o = &p.ours;
            let c = o.cores_used.unwrap_or_default();
            let f = |v: f64| match o.cores_used {
                Some(_) => format!("{v:.2}"),
                None => "–".to_string(),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                o.d,
                state(o),
                f(c.train),
                f(c.exact_eval),
                f(c.slq_eval),
                f(c.invert)
            ));
        }
    }
    s
}

/// Parses the JSON `ref_tabular.py --out` writes (a list of rows) or the JSON lines it
/// prints (one object per line).
pub fn parse_reference_rows(text: &str) -> serde_json::Result<Vec<Measurement>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed);
    }
    // Concatenated objects (pretty-printed or one per line) ...
    let stream: serde_json::Result<Vec<Measurement>> = serde_json::Deserializer::from_str(trimmed)
        .into_iter()
        .collect();
    if let Ok(rows) = stream {
        return Ok(rows);
    }
    // ... or printed JSON lines among other output.
    trimmed
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(serde_json::from_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row as `ref_tabular.py` writes it (numbers fabricated), with the wrapper's field.
    const REF_ROW: &str = r#"{"d": 43, "pretrain_steps": 200, "train_step_s_median": 0.2,
        "train_step_s_min": 0.19, "cg_iters_mean": 9.0, "peak_train_mib": null,
        "exact_eval_s_per_1000": 0.3, "exact_nll": 40.5, "slq_eval_s_per_1000": 0.12,
        "slq_nll": 40.9, "invert_1024_s": 0.5, "invert_max_err": 0.004, "torch": "2.9.0",
        "gpu": "cpu", "peak_train_rss_mib": 120.0}"#;

    fn ours() -> Measurement {
        Measurement {
            d: 43,
            pretrain_steps: 200,
            train_step_s_median: 0.1,
            cg_iters_mean: Some(8.0),
            // 0.3 / 0.075 = 4 (0.3 / 0.1 rounds to just below the 3× target).
            exact_eval_s_per_1000: 0.075,
            exact_nll: Some(40.4),
            slq_eval_s_per_1000: 0.04,
            slq_nll: Some(40.8),
            invert_1024_s: 0.25,
            invert_max_err: 1e-4,
            peak_train_rss_mib: Some(50.0),
            peak_train_alloc_mib: Some(40.0),
            peak_train_device_mib: None,
            cores_used: Some(CoresUsed {
                train: 1.9,
                exact_eval: 1.8,
                slq_eval: 1.95,
                invert: 1.05,
            }),
        }
    }

    #[test]
    fn parses_reference_list_and_lines() {
        let list = parse_reference_rows(&format!("[{REF_ROW}]")).unwrap();
        let line = REF_ROW.replace('\n', " ");
        let lines = parse_reference_rows(&format!("noise\n{line}\n{line}\n")).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(lines.len(), 2);
        assert_eq!(list[0], lines[0]);
        assert_eq!(list[0].d, 43);
        assert_eq!(list[0].cg_iters_mean, Some(9.0));
        assert_eq!(list[0].peak_train_rss_mib, Some(120.0));
        assert_eq!(list[0].peak_train_alloc_mib, None);
    }

    #[test]
    fn ratios_are_theirs_over_ours() {
        let theirs = parse_reference_rows(REF_ROW).unwrap().remove(0);
        let p = Pair {
            theirs,
            ours: ours(),
            load: [0.5, 0.7],
        };
        let r = p.ratios();
        assert!((r.train_step - 2.0).abs() < 1e-12);
        assert!((r.exact_eval - 4.0).abs() < 1e-12);
        assert!((r.slq_eval - 3.0).abs() < 1e-12);
        assert!((r.invert - 2.0).abs() < 1e-12);
        assert!((r.invert_err - 40.0).abs() < 1e-9);
        // Memory uses our allocator count (40), not our RSS (50).
        assert!((r.memory.unwrap() - 3.0).abs() < 1e-12);
        assert!(Targets::default().missed(&p).is_empty());
    }

    #[test]
    fn missed_targets_are_named() {
        let theirs = parse_reference_rows(REF_ROW).unwrap().remove(0);
        let mut o = ours();
        o.train_step_s_median = 0.15; // 1.33×
        o.invert_max_err = 1e-3; // 4× more accurate only
        o.peak_train_alloc_mib = Some(200.0);
        o.slq_eval_s_per_1000 = 0.0; // no measurement → NaN → missed
        let p = Pair {
            theirs: theirs.clone(),
            ours: o.clone(),
            load: [0.0, 0.0],
        };
        assert_eq!(
            Targets::default().missed(&p),
            vec!["train step", "SLQ eval", "inversion error", "memory"]
        );
        // Below min_dim nothing is checked.
        o.d = 6;
        let p = Pair {
            theirs,
            ours: o,
            load: [0.0, 0.0],
        };
        assert!(Targets::default().missed(&p).is_empty());
    }

    /// A CUDA run compares device peaks (`ref_tabular.py`'s `peak_train_mib`, our pool's
    /// high-water mark), not host memory, and checks issue 14's targets at every d.
    #[test]
    fn gpu_pairs_compare_device_memory_and_gpu_targets() {
        let row = REF_ROW.replace(r#""peak_train_mib": null"#, r#""peak_train_mib": 140.0"#);
        let theirs = parse_reference_rows(&row).unwrap().remove(0);
        assert_eq!(theirs.peak_train_device_mib, Some(140.0));
        let mut o = ours();
        o.peak_train_device_mib = Some(70.0);
        o.d = 6;
        let p = Pair {
            theirs: theirs.clone(),
            ours: o.clone(),
            load: [0.0, 0.0],
        };
        assert_eq!(p.our_memory_mib(), Some(70.0));
        assert_eq!(p.their_memory_mib(), Some(140.0));
        assert!((p.ratios().memory.unwrap() - 2.0).abs() < 1e-12);
        // 0.2 / 0.1 = 2× train step and 0.5 / 0.25 = 2× inversion miss the GPU's 3× at d = 6
        // (the CPU targets skip d = 6 and ask 2×); SLQ has no GPU target.
        assert_eq!(Targets::gpu().missed(&p), vec!["train step", "inversion"]);
        assert!(Targets::default().missed(&p).is_empty());
        // Higher device memory than theirs is missed.
        o.peak_train_device_mib = Some(150.0);
        o.train_step_s_median = 0.05;
        o.invert_1024_s = 0.1;
        let p = Pair {
            theirs,
            ours: o,
            load: [0.0, 0.0],
        };
        assert_eq!(Targets::gpu().missed(&p), vec!["memory"]);
    }

    #[test]
    fn table_lists_ratios_and_raw_numbers() {
        let theirs = parse_reference_rows(REF_ROW).unwrap().remove(0);
        let mut o = ours();
        o.peak_train_alloc_mib = None;
        let t = markdown_table(&[Pair {
            theirs,
            ours: o,
            load: [0.5, 0.7],
        }]);
        assert!(
            t.contains(
                "| 43 | 200 steps | 2.00× (8.0 / 9.0) | 4.00× | 3.00× | 2.00× (1.0e-4 vs 4.0e-3) \
                 | 50.0 / 120.0 (2.4×) | 0.5→0.7 |"
            ),
            "{t}"
        );
        assert!(t.contains("| 43 | 200 steps | 0.1000 / 0.2000 |"), "{t}");
        assert!(t.contains("40.400 / 40.500"), "{t}");
        assert!(
            t.contains("| 43 | 200 steps | 1.90 | 1.80 | 1.95 | 1.05 |"),
            "{t}"
        );
        // Rows from before the field (none measured): no cores table.
        let mut old = ours();
        old.cores_used = None;
        let plain: Measurement = serde_json::from_str(REF_ROW).unwrap();
        assert_eq!(plain.cores_used, None);
        let t = markdown_table(&[Pair {
            theirs: plain,
            ours: old,
            load: [0.5, 0.7],
        }]);
        assert!(!t.contains("Cores used"), "{t}");
    }

    /// An `--ours-only` pair (the reference side all defaults) shows `–`, not `0.00×`.
    #[test]
    fn table_shows_dashes_without_a_reference() {
        let p = Pair {
            theirs: Measurement::default(),
            ours: ours(),
            load: [0.5, 0.7],
        };
        assert!(p.ratios().train_step.is_nan());
        let t = markdown_table(&[p]);
        assert!(
            t.contains("| 43 | 200 steps | – (8.0 / –) | – | – | – (1.0e-4 vs –) | 40.0 / – (–) |"),
            "{t}"
        );
        assert!(
            t.contains("| 43 | 200 steps | 0.1000 / – | 0.0750 / – |"),
            "{t}"
        );
    }
}
