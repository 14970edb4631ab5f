//! The message of a configuration that does not deserialise: the key once, serde's reason,
//! and for a key that takes one of several forms (an enum), the forms it takes.
//!
//! Before: `--set train.lr_schedule=3` said "invalid configuration at `train.lr_schedule`:
//! invalid type: unit variant, expected string only" and then "in `train.lr_schedule`"
//! (toml's error repeats the key), and `=cosine` "expected struct variant": neither said what
//! a schedule is written as.

/// The keys that take one of several forms, and the forms, as TOML writes them (checked to
/// deserialise by the tests).
const FORMS: &[(&str, &str)] = &[
    (
        "train.lr_schedule",
        "\"constant\", \"plateau\", { step = { step_size = N, gamma = G } } or \
         { cosine = { t_max = N } }",
    ),
    (
        "train.val_estimator",
        "\"exact\" or { slq = { probes = N, steps = N } }",
    ),
    ("train.objective", "\"cg_surrogate\" or \"exact_nll\""),
    (
        "train.surrogate.preconditioner",
        "\"none\" or \"mean-hessian\"",
    ),
    (
        "model.arch",
        "\"icnn\", \"icnn2\", \"icnn3\", \"dense_icnn2\" or \"custom\"",
    ),
    ("model.activation", "\"softplus\" or \"gaussian_softplus\""),
    ("model.layout", "\"toy\", \"tabular\" or \"single\""),
    ("model.float", "\"f32\" or \"f64\""),
];

/// The forms of the key at `path` or of the key that holds it (`train.lr_schedule.cosine`:
/// those of `train.lr_schedule`), if it takes several.
fn forms_of(path: &str) -> Option<(&'static str, &'static str)> {
    FORMS.iter().copied().find(|(key, _)| {
        path == *key
            || path
                .strip_prefix(key)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The error of a configuration that `serde_path_to_error` could not deserialise:
/// "invalid configuration at `KEY`: REASON", the key said once (toml's own message adds "in
/// `KEY`"), and the forms of an enum-valued key when the reason is about its form.
pub(super) fn config_error(e: serde_path_to_error::Error<toml::de::Error>) -> anyhow::Error {
    let path = e.path().to_string();
    let inner = e.into_inner();
    anyhow::anyhow!("{}", message(&path, inner.message()))
}

/// The message for a `reason` (toml's message, without its location) at `path`.
fn message(path: &str, reason: &str) -> String {
    let reason = reason.trim_end();
    let about_form = ["variant", "invalid type", "expected string"]
        .iter()
        .any(|w| reason.contains(w));
    match forms_of(path) {
        Some((key, forms)) if about_form => {
            format!("invalid configuration at `{path}`: {reason}; {key} is one of {forms}")
        }
        _ => format!("invalid configuration at `{path}`: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::run_config::{Overrides, resolve};

    fn resolve_err(set: &str) -> String {
        let ov = Overrides {
            set: vec![set.to_string()],
            ..Overrides::default()
        };
        format!("{:#}", resolve(None, &ov).unwrap_err())
    }

    /// Every form listed deserialises (the list cannot drift from the types).
    #[test]
    fn every_listed_form_is_accepted() {
        let examples: &[(&str, &[&str])] = &[
            (
                "train.lr_schedule",
                &[
                    "\"constant\"",
                    "\"plateau\"",
                    "{ step = { step_size = 5, gamma = 0.5 } }",
                    "{ cosine = { t_max = 7 } }",
                ],
            ),
            (
                "train.val_estimator",
                &["\"exact\"", "{ slq = { probes = 2, steps = 3 } }"],
            ),
            ("train.objective", &["\"cg_surrogate\"", "\"exact_nll\""]),
            (
                "train.surrogate.preconditioner",
                &["\"none\"", "\"mean-hessian\""],
            ),
            (
                "model.arch",
                &[
                    "\"icnn\"",
                    "\"icnn2\"",
                    "\"icnn3\"",
                    "\"dense_icnn2\"",
                    "\"custom\"",
                ],
            ),
            (
                "model.activation",
                &["\"softplus\"", "\"gaussian_softplus\""],
            ),
            ("model.layout", &["\"toy\"", "\"tabular\"", "\"single\""]),
            ("model.float", &["\"f32\"", "\"f64\""]),
        ];
        assert_eq!(examples.len(), FORMS.len());
        for ((key, forms), (k, values)) in FORMS.iter().zip(examples) {
            assert_eq!(key, k);
            for v in *values {
                assert!(forms.contains(v.split(' ').next().unwrap()), "{key}: {v}");
                let ov = Overrides {
                    set: vec![format!("{key}={v}")],
                    ..Overrides::default()
                };
                // `custom` needs a [model.custom] table only when the flow is built.
                resolve(None, &ov).unwrap_or_else(|e| panic!("{key} = {v}: {e:#}"));
            }
        }
    }

    /// The audit's cases: the message names the key once and says the valid forms.
    #[test]
    fn enum_errors_list_the_forms_and_name_the_key_once() {
        for set in [
            "train.lr_schedule=3",
            "train.lr_schedule=cosine",
            "train.lr_schedule=cosin",
            "train.lr_schedule={ cosine = 5 }",
        ] {
            let err = resolve_err(set);
            assert!(
                err.contains(
                    "train.lr_schedule is one of \"constant\", \"plateau\", { step = { \
                     step_size = N, gamma = G } } or { cosine = { t_max = N } }"
                ),
                "{set}: {err}"
            );
            assert_eq!(err.matches("train.lr_schedule").count(), 2, "{set}: {err}");
            assert!(!err.contains("in `"), "{set}: {err}");
        }
        let err = resolve_err("model.float=16");
        assert!(
            err.contains("model.float is one of \"f32\" or \"f64\""),
            "{err}"
        );
        // A key that is not an enum: its reason, the key once.
        let err = resolve_err("model.width=abc");
        assert_eq!(
            err,
            "invalid configuration at `model.width`: invalid type: string \"abc\", expected \
             usize"
        );
    }
}
