//! `[data]` keys that the source does not read: the fractions of a file's split on a toy, the
//! numbers of drawn points on a file, either on a benchmark (MAF's split). They were accepted
//! and ignored without a word (`data.val_fraction = 0.5` on `8gaussians` trained as if unset).

use super::{DataSection, DataSource};

/// One sentence per key of `section` that `source` does not read and that differs from its
/// default (a key left at its default says nothing, and a run directory's `config.toml`,
/// which writes every key, warns only where the run's own configuration did).
pub(crate) fn inert_data_keys(section: &DataSection, source: &DataSource) -> Vec<String> {
    let d = DataSection::default();
    let fractions = [
        ("data.val_fraction", section.val_fraction, d.val_fraction),
        ("data.test_fraction", section.test_fraction, d.test_fraction),
    ];
    let counts = [
        ("data.n_train", section.n_train, d.n_train),
        ("data.n_val", section.n_val, d.n_val),
        ("data.n_test", section.n_test, d.n_test),
    ];
    let changed_fractions = || {
        fractions
            .iter()
            .filter(|f| f.1 != f.2)
            .map(|&(k, v, _)| (k, format!("{v:?}")))
    };
    let changed_counts = || {
        counts
            .iter()
            .filter(|c| c.1 != c.2)
            .map(|&(k, v, _)| (k, v.to_string()))
    };
    let (keys, why): (Vec<(&str, String)>, String) = match source {
        DataSource::Toy(_) | DataSource::Image(_) => {
            let what = match source {
                DataSource::Toy(t) => format!("the toy `{t}`"),
                _ => "an image density".to_string(),
            };
            (
                changed_fractions().collect(),
                format!(
                    "{what} draws fresh points for each split (data.n_train, data.n_val, \
                     data.n_test); the fractions split the rows of a .npy/.csv file"
                ),
            )
        }
        DataSource::Npy(_) | DataSource::Csv(_) => (
            changed_counts().collect(),
            "a .npy/.csv file is split by data.val_fraction and data.test_fraction; the \
             numbers of points are drawn from toys and image densities"
                .to_string(),
        ),
        DataSource::Tabular(t) => (
            changed_fractions().chain(changed_counts()).collect(),
            format!("the benchmark {t} keeps MAF's training, validation and test split"),
        ),
    };
    keys.into_iter()
        .map(|(k, v)| format!("{k} = {v} has no effect: {why}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::TabularDataset;
    use crate::toy::Toy;

    #[test]
    fn keys_the_source_does_not_read_are_named() {
        let toy = DataSource::Toy(Toy::EightGaussians);
        let csv = DataSource::Csv("rows.csv".into());
        let defaults = DataSection::default();
        for s in [&toy, &csv, &DataSource::Tabular(TabularDataset::Power)] {
            assert!(inert_data_keys(&defaults, s).is_empty(), "{s:?}");
        }
        let section = DataSection {
            val_fraction: 0.3,
            n_train: 500,
            ..DataSection::default()
        };
        let on_toy = inert_data_keys(&section, &toy);
        assert_eq!(on_toy.len(), 1, "{on_toy:?}");
        assert!(
            on_toy[0].starts_with("data.val_fraction = 0.3 has no effect: the toy `8gaussians`"),
            "{on_toy:?}"
        );
        let on_csv = inert_data_keys(&section, &csv);
        assert_eq!(on_csv.len(), 1, "{on_csv:?}");
        assert!(
            on_csv[0].starts_with("data.n_train = 500 has no effect: a .npy/.csv file"),
            "{on_csv:?}"
        );
        let on_power = inert_data_keys(&section, &DataSource::Tabular(TabularDataset::Power));
        assert_eq!(on_power.len(), 2, "{on_power:?}");
        assert!(on_power[1].contains("keeps MAF's"), "{on_power:?}");
    }
}
