//! The message of a configuration that does not deserialise: the key once, serde's reason,
//! and for a key that takes one of several forms (an enum), the forms it takes. The three
//! configurations have a table each: [`FORMS`] (`cpflow train`'s flows), [`VAE_FORMS`]
//! (`cpflow vae`) and [`IMAGE_FORMS`] (`cpflow train` of an image flow).
//!
//! Before: `--set train.lr_schedule=3` said "invalid configuration at `train.lr_schedule`:
//! invalid type: unit variant, expected string only" and then "in `train.lr_schedule`"
//! (toml's error repeats the key), and `=cosine` "expected struct variant": neither said what
//! a schedule is written as. The VAE's `--set model.network_float=16` still said only that
//! (its reader and the image flow's did not list the forms).

/// Enum-valued keys of one configuration and their forms, as TOML writes them.
pub(crate) type Forms = &'static [(&'static str, &'static str)];

/// The keys of a flow's configuration (`cpflow train`) that take one of several forms, and
/// the forms, as TOML writes them (checked to deserialise, and to be all the forms, by the
/// tests).
pub(crate) const FORMS: Forms = &[
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

/// The enum-valued keys of a VAE's configuration (`cpflow vae`, [`crate::vae::VaeConfig`]).
pub(crate) const VAE_FORMS: Forms = &[
    (
        "data.dataset",
        "\"frey-faces\", \"caltech101\", \"mnist\" or \"omniglot\"",
    ),
    ("model.posterior", "\"gaussian\" or \"cp-flow\""),
    ("model.network_float", "\"f32\" or \"f64\""),
    ("model.posterior_float", "\"f32\" or \"f64\""),
    ("train.cg.preconditioner", "\"none\" or \"mean-hessian\""),
];

/// The enum-valued keys of an image flow's configuration (`cpflow train` with a
/// `data.dataset`, [`crate::image::ImageExperimentConfig`]).
pub(crate) const IMAGE_FORMS: Forms = &[
    ("data.dataset", "\"mnist\" or \"cifar10\""),
    (
        "model.arch",
        "\"conv_icnn\", \"conv_icnn2\" or \"conv_icnn3\"",
    ),
    ("model.activation", "\"softplus\" or \"gaussian_softplus\""),
    ("model.float", "\"f32\" or \"f64\""),
    (
        "train.surrogate.preconditioner",
        "\"none\" or \"mean-hessian\"",
    ),
];

/// The forms of `key` in `table` (exactly that key, not one that holds it: no key of a
/// table holds another, as the tests check), for the messages that name them.
pub(crate) fn forms_of_key(table: Forms, key: &str) -> &'static str {
    forms_of(table, key)
        .filter(|(k, _)| *k == key)
        .map_or("", |(_, forms)| forms)
}

/// The forms of the key at `path` or of the key that holds it (`train.lr_schedule.cosine`:
/// those of `train.lr_schedule`), if it takes several.
fn forms_of(table: Forms, path: &str) -> Option<(&'static str, &'static str)> {
    table.iter().copied().find(|(key, _)| {
        path == *key
            || path
                .strip_prefix(key)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The error of a flow's configuration that `serde_path_to_error` could not deserialise:
/// "invalid configuration at `KEY`: REASON", the key said once (toml's own message adds "in
/// `KEY`"), and the forms of an enum-valued key when the reason is about its form.
pub(super) fn config_error(e: serde_path_to_error::Error<toml::de::Error>) -> anyhow::Error {
    error_with_forms("configuration", FORMS, e)
}

/// [`config_error`] for a VAE's configuration ("invalid VAE configuration at …").
pub(crate) fn vae_config_error(e: serde_path_to_error::Error<toml::de::Error>) -> anyhow::Error {
    error_with_forms("VAE configuration", VAE_FORMS, e)
}

/// [`config_error`] for an image flow's configuration ("invalid image configuration at …").
pub(crate) fn image_config_error(e: serde_path_to_error::Error<toml::de::Error>) -> anyhow::Error {
    error_with_forms("image configuration", IMAGE_FORMS, e)
}

/// "invalid `what` at `KEY`: REASON", with the forms of `table` that the key takes.
fn error_with_forms(
    what: &str,
    table: Forms,
    e: serde_path_to_error::Error<toml::de::Error>,
) -> anyhow::Error {
    let path = e.path().to_string();
    let inner = e.into_inner();
    anyhow::anyhow!("{}", message(what, table, &path, inner.message()))
}

/// The message for a `reason` (toml's message, without its location) at `path`.
fn message(what: &str, table: Forms, path: &str, reason: &str) -> String {
    let reason = reason.trim_end();
    let about_form = ["variant", "invalid type", "expected string"]
        .iter()
        .any(|w| reason.contains(w));
    match forms_of(table, path) {
        Some((key, forms)) if about_form => {
            format!("invalid {what} at `{path}`: {reason}; {key} is one of {forms}")
        }
        _ => format!("invalid {what} at `{path}`: {reason}"),
    }
}

/// The drift check of a table of forms, for the tests of each configuration's reader.
#[cfg(test)]
pub(crate) mod form_checks {
    use super::Forms;

    /// Reads one configuration with `key = value` set: `Err` with the message if refused.
    pub(crate) type Reader = fn(&str, &str) -> Result<(), String>;

    /// The variant names in `forms`: the quoted strings and the first key of each inline
    /// table, outside nested tables (`"constant", { step = { … } }`: constant, step).
    fn listed_names(forms: &str) -> Vec<String> {
        let (mut names, mut depth, mut rest) = (Vec::new(), 0usize, forms);
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            match c {
                '"' if depth == 0 => {
                    let end = rest.find('"').unwrap();
                    names.push(rest[..end].to_string());
                    rest = &rest[end + 1..];
                }
                '{' => {
                    if depth == 0 {
                        let name = rest.trim_start().split([' ', '=']).next().unwrap();
                        names.push(name.to_string());
                    }
                    depth += 1;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        names
    }

    /// The names serde's "unknown variant `x`, expected one of `a`, `b`" lists.
    fn expected_names(message: &str) -> Vec<String> {
        let (_, expected) = message.split_once("expected").unwrap();
        let expected = expected.split(';').next().unwrap();
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    /// Example values of every form of `table`: the quoted forms as they are, the inline
    /// tables with N and G replaced by numbers.
    pub(crate) fn examples(forms: &str) -> Vec<String> {
        let mut out = Vec::new();
        let (mut depth, mut start) = (0usize, None);
        for (i, c) in forms.char_indices() {
            match c {
                '{' => {
                    if depth == 0 {
                        start = Some(i);
                    }
                    depth += 1;
                }
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        let form = &forms[start.unwrap()..=i];
                        out.push(form.replace("= N", "= 3").replace("= G", "= 0.5"));
                    }
                }
                _ => {}
            }
        }
        out.extend(
            listed_names(forms)
                .into_iter()
                .filter(|n| forms.contains(&format!("\"{n}\"")))
                .map(|n| format!("\"{n}\"")),
        );
        out
    }

    /// Every form that `table` lists is accepted by `read`, and the names serde lists for an
    /// unknown value are exactly the listed ones (a variant added to a type, and not to the
    /// list, fails here); the refusal of a wrong type names the key once and says its
    /// forms.
    pub(crate) fn check_forms(what: &str, table: Forms, read: Reader) {
        for (key, forms) in table {
            let values = examples(forms);
            assert_eq!(values.len(), listed_names(forms).len(), "{key}: {values:?}");
            for v in &values {
                read(key, v).unwrap_or_else(|e| panic!("{key} = {v}: {e}"));
            }
            let e = read(key, "\"no_such_form\"").unwrap_err();
            let (mut serde, mut listed) = (expected_names(&e), listed_names(forms));
            serde.sort();
            listed.sort();
            assert_eq!(serde, listed, "{key}: {e}");
            let e = read(key, "3").unwrap_err();
            assert_eq!(
                e,
                format!(
                    "invalid {what} at `{key}`: invalid type: unit variant, expected string \
                     only; {key} is one of {forms}"
                ),
                "{key}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::form_checks::{Reader, check_forms, examples};
    use super::*;
    use crate::cli::run_config::{Overrides, resolve, resolve_image};
    use std::path::PathBuf;

    fn resolve_err(set: &str) -> String {
        let ov = Overrides {
            set: vec![set.to_string()],
            ..Overrides::default()
        };
        format!("{:#}", resolve(None, &ov).unwrap_err())
    }

    /// A flow's configuration (the defaults) with `key = value`.
    fn flow_with(key: &str, value: &str) -> Result<(), String> {
        let ov = Overrides {
            set: vec![format!("{key}={value}")],
            ..Overrides::default()
        };
        // `custom` needs a [model.custom] table only when the flow is built.
        resolve(None, &ov).map(drop).map_err(|e| format!("{e:#}"))
    }

    /// A new configuration file holding `text` (the readers take files; one per call, as
    /// tests on other threads write theirs at the same time).
    fn config_file(text: &str) -> PathBuf {
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cpflow-forms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("image-{call}.toml"));
        std::fs::write(&file, text).unwrap();
        file
    }

    /// An image flow's configuration (MNIST, the defaults, one step) with `key = value`.
    fn image_with(key: &str, value: &str) -> Result<(), String> {
        let file = config_file(
            "[data]\ndataset = \"mnist\"\nroot = \"data\"\n[train]\nmax_iterations = 1\n",
        );
        let ov = Overrides {
            set: vec![format!("{key}={value}")],
            ..Overrides::default()
        };
        let read = resolve_image(&file, &ov);
        std::fs::remove_file(&file).unwrap();
        read.map(drop).map_err(|e| format!("{e:#}"))
    }

    /// Every form listed deserialises, and they are all the forms (the lists cannot drift
    /// from the types). The VAE's are checked by its reader's tests (`cli::commands::vae`).
    #[test]
    fn every_listed_form_is_accepted_and_all_forms_are_listed() {
        let flow: Reader = flow_with;
        let image: Reader = image_with;
        check_forms("configuration", FORMS, flow);
        check_forms("image configuration", IMAGE_FORMS, image);
        // The examples cover the inline tables of a schedule.
        assert_eq!(
            examples(forms_of_key(FORMS, "train.lr_schedule")),
            [
                "{ step = { step_size = 3, gamma = 0.5 } }",
                "{ cosine = { t_max = 3 } }",
                "\"constant\"",
                "\"plateau\"",
            ]
        );
        assert_eq!(forms_of_key(FORMS, "no.such.key"), "");
        // Exactly the key: not the forms of the key that holds it.
        assert_eq!(forms_of_key(FORMS, "train.lr_schedule.cosine"), "");
    }

    /// No key of a table holds another (`forms_of` finds the first key that is the path or
    /// holds it, and `forms_of_key` keeps only an exact match of that).
    #[test]
    fn no_key_of_a_table_holds_another() {
        for table in [FORMS, VAE_FORMS, IMAGE_FORMS] {
            for (key, _) in table {
                for (other, _) in table {
                    let held = other
                        .strip_prefix(key)
                        .is_some_and(|rest| rest.starts_with('.'));
                    assert!(!held, "{key} holds {other}");
                }
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
        // The image flow's: it said only serde's reason.
        let err = image_with("model.arch", "conv").unwrap_err();
        assert_eq!(
            err,
            "invalid image configuration at `model.arch`: unknown variant `conv`, expected \
             one of `conv_icnn`, `conv_icnn2`, `conv_icnn3`; model.arch is one of \
             \"conv_icnn\", \"conv_icnn2\" or \"conv_icnn3\""
        );
    }
}
