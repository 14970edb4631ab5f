//! The trainer's progress bar: an `indicatif` bar with feature `progress`, a no-op without it
//! (so a library build without the feature does not pull in `indicatif` and its terminal
//! dependencies).

/// A progress bar over `total` steps; hidden when `enabled` is false or when the crate is
/// built without the `progress` feature.
pub(crate) struct Progress {
    #[cfg(feature = "progress")]
    bar: indicatif::ProgressBar,
}

#[cfg_attr(not(feature = "progress"), allow(unused_variables))]
impl Progress {
    /// A bar over `total` steps, drawn on stderr when `enabled`.
    pub(crate) fn new(total: u64, enabled: bool) -> Self {
        #[cfg(feature = "progress")]
        {
            let bar = if enabled {
                indicatif::ProgressBar::new(total)
            } else {
                indicatif::ProgressBar::hidden()
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            ) {
                bar.set_style(style);
            }
            Self { bar }
        }
        #[cfg(not(feature = "progress"))]
        Self {}
    }

    /// Moves the bar to step `pos`.
    pub(crate) fn set_position(&self, pos: u64) {
        #[cfg(feature = "progress")]
        self.bar.set_position(pos);
    }

    /// Replaces the text shown after the bar.
    pub(crate) fn set_message(&self, msg: impl Into<String>) {
        #[cfg(feature = "progress")]
        self.bar.set_message(msg.into());
    }

    /// Removes the bar from the terminal.
    pub(crate) fn finish_and_clear(&self) {
        #[cfg(feature = "progress")]
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn hidden_bar_accepts_every_call() {
        let p = Progress::new(10, false);
        p.set_position(3);
        p.set_message(format!("loss {:.3}", 1.5));
        p.finish_and_clear();
    }
}
