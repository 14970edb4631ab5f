//! A dataset that a run did not run or did not finish, with why ([`SkipReason`]): the
//! message and the report's lists are made from the reason, and callers tell the outcomes
//! apart by it, never by the message's text.

use serde::{Deserialize, Serialize};

/// Why a dataset is listed as not run (or not finished).
///
/// In the reports' JSON it is the field `reason`, in snake case (`"not_on_disk"`, …); the
/// fields `dataset` and `message` keep their values, so readers of older reports read the
/// new ones as before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Its files are not on disk: the message names where they were looked for and the
    /// `cargo xtask download` command.
    NotOnDisk,
    /// On disk, but an interrupt came before it started: nothing was trained.
    NotStarted,
    /// Its run was paused by an interrupt, checkpointed (`--resume` continues it).
    Interrupted,
    /// Found, but its run failed (data that cannot be read, a training error).
    Failed,
}

/// What the message of a dataset that did not start ([`SkipReason::NotStarted`]) says after
/// its name.
const NOT_STARTED: &str = "not started (the run was interrupted before it)";

/// A dataset that was not run, or not finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkippedDataset {
    /// Dataset name.
    pub dataset: String,
    /// Why: what callers match on.
    pub reason: SkipReason,
    /// Why, in words, and how to get it (shown to the user and written to the report).
    pub message: String,
}

impl SkippedDataset {
    /// A dataset whose files are not on disk; `message` says where they were looked for and
    /// how to download them.
    pub fn not_on_disk(dataset: &str, message: String) -> Self {
        Self {
            dataset: dataset.to_string(),
            reason: SkipReason::NotOnDisk,
            message,
        }
    }

    /// A dataset on disk that an interrupt kept from starting.
    pub fn not_started(dataset: &str) -> Self {
        Self {
            dataset: dataset.to_string(),
            reason: SkipReason::NotStarted,
            message: format!("{dataset}: {NOT_STARTED}"),
        }
    }

    /// A dataset whose run an interrupt paused, checkpointed, with the interrupt's `error`.
    pub fn interrupted(dataset: &str, error: &anyhow::Error) -> Self {
        Self {
            dataset: dataset.to_string(),
            reason: SkipReason::Interrupted,
            message: format!("{dataset}: {error:#}"),
        }
    }

    /// A dataset whose run failed with `error`.
    pub fn failed(dataset: &str, error: &anyhow::Error) -> Self {
        Self {
            dataset: dataset.to_string(),
            reason: SkipReason::Failed,
            message: format!("{dataset}: failed: {error:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON keeps the fields and values that older reports had, and adds `reason`: a
    /// reader of the old form reads it unchanged, and it reads back whole.
    #[test]
    fn the_json_keeps_the_old_fields() {
        #[derive(Deserialize)]
        struct OldForm {
            dataset: String,
            message: String,
        }
        let k = SkippedDataset::not_started("gas");
        let text = serde_json::to_string(&k).unwrap();
        assert_eq!(
            text,
            r#"{"dataset":"gas","reason":"not_started","message":"gas: not started (the run was interrupted before it)"}"#
        );
        let old: OldForm = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (old.dataset.as_str(), old.message),
            ("gas", k.message.clone())
        );
        assert_eq!(serde_json::from_str::<SkippedDataset>(&text).unwrap(), k);
        let failed = SkippedDataset::failed("power", &anyhow::anyhow!("no"));
        assert_eq!(failed.message, "power: failed: no");
        assert!(
            serde_json::to_string(&failed)
                .unwrap()
                .contains(r#""reason":"failed""#)
        );
    }
}
