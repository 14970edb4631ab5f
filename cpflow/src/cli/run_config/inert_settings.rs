//! `[train]` settings that a run accepts and that can have no effect in it: a plateau schedule
//! or early stopping without validations, a batch larger than the training set. They were
//! accepted without a word (`train.early_stopping = 3` with `train.val_every = 0` trained to
//! the end, as if unset).
//!
//! They are warnings, not errors: TOML cannot unset a key, so a configuration file that sets
//! `early_stopping` (`configs/tabular.toml`) could not be run with `--set train.val_every=0`
//! (a quick run without validations) if the pair were refused; a batch of the whole training
//! set is full-batch training, a choice, that the warning only makes visible.

use super::serde_messages::{FORMS, forms_of_key};
use crate::{LrSchedule, TrainConfig};

/// One sentence per setting of `train` that cannot act in a run of `n_train` training rows.
pub(crate) fn inert_train_settings(train: &TrainConfig, n_train: usize) -> Vec<String> {
    let mut out = Vec::new();
    if train.val_every == 0 {
        if train.lr_schedule == LrSchedule::Plateau {
            // The forms from the one list of them (serde_messages' FORMS), "plateau" among
            // them.
            let forms = forms_of_key(FORMS, "train.lr_schedule");
            out.push(format!(
                "train.lr_schedule = \"plateau\" has no effect with train.val_every = 0: it \
                 lowers the learning rate after validations without improvement, and none are \
                 run; set train.val_every above 0, or another schedule (train.lr_schedule is \
                 one of {forms})"
            ));
        }
        if let Some(k) = train.early_stopping {
            out.push(format!(
                "train.early_stopping = {k} has no effect with train.val_every = 0: it stops \
                 the run after {k} validations without improvement, and none are run; set \
                 train.val_every above 0 for early stopping"
            ));
        }
    }
    if train.batch_size > n_train {
        out.push(format!(
            "train.batch_size = {} is more than the {n_train} training rows: every step \
             trains on all {n_train} of them (full-batch training)",
            train.batch_size
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_act_are_named() {
        let base = TrainConfig {
            val_every: 0,
            early_stopping: None,
            lr_schedule: LrSchedule::Constant,
            batch_size: 128,
            ..TrainConfig::default()
        };
        assert!(inert_train_settings(&base, 128).is_empty());
        let plateau = TrainConfig {
            lr_schedule: LrSchedule::Plateau,
            early_stopping: Some(3),
            ..base.clone()
        };
        let w = inert_train_settings(&plateau, 1000);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with(
                "train.lr_schedule = \"plateau\" has no effect with train.val_every = 0"
            )
        );
        // The other schedules are named with the forms of the configuration errors' list,
        // not a copy of it.
        assert!(
            w[0].ends_with(&format!(
                "or another schedule (train.lr_schedule is one of {})",
                forms_of_key(FORMS, "train.lr_schedule")
            )),
            "{}",
            w[0]
        );
        assert!(
            w[1].starts_with("train.early_stopping = 3 has no effect with train.val_every = 0")
        );
        // With validations both act.
        let validated = TrainConfig {
            val_every: 100,
            ..plateau
        };
        assert!(inert_train_settings(&validated, 1000).is_empty());
        let w = inert_train_settings(&base, 100);
        assert_eq!(
            w,
            [
                "train.batch_size = 128 is more than the 100 training rows: every step trains \
              on all 100 of them (full-batch training)"
            ]
        );
    }
}
