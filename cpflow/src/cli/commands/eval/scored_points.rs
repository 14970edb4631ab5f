//! Which points `cpflow eval` scored on a vector flow, for its JSON line (`split`, `scored`,
//! `draw_seed`) and for its message about points without a finite log-density: the run's
//! test split and fresh draws of a toy both printed `"data":"8gaussians","points":10000`.

use crate::cli::data::DataSource;
use crate::cli::run_config::DataSection;

/// Which points were scored.
#[derive(Clone, Debug, PartialEq)]
pub enum ScoredPoints {
    /// The test split of the run's own data (no `--data`): for a toy or an image density the
    /// test draws of the run's `data.seed` (after its training draws), for a file its
    /// held-out test rows, for a benchmark MAF's test split.
    RunTest {
        /// A description of the split, by the kind of data.
        what: String,
    },
    /// Fresh draws of a toy or an image density named by `--data`, from `seed`.
    Draws {
        /// The seed of the draws.
        seed: u64,
    },
    /// Every row of a `.npy` / `.csv` file named by `--data`, in file order.
    File,
    /// The test split of a tabular benchmark named by `--data`.
    BenchmarkTest,
}

impl ScoredPoints {
    /// The run's own test split of `section` (its saved `[data]`), loaded as `source`.
    pub fn run_test(section: &DataSection, source: &DataSource) -> Self {
        let what = match source {
            DataSource::Toy(_) | DataSource::Image(_) => format!(
                "the run's test split: draws of {} from data.seed {} after the training draws \
                 (the first data.n_test = {} are the points the run's test score used)",
                section.source, section.seed, section.n_test
            ),
            DataSource::Npy(_) | DataSource::Csv(_) => format!(
                "the run's test split: the rows of {} held out of training (data.test_fraction \
                 = {} of the file shuffled with data.seed {})",
                section.source, section.test_fraction, section.seed
            ),
            DataSource::Tabular(_) => {
                format!(
                    "the run's test split: MAF's test split of {}",
                    section.source
                )
            }
        };
        ScoredPoints::RunTest { what }
    }

    /// What `--data` names: fresh draws from `seed` (a toy or an image density), every row of
    /// a file, or a benchmark's test split.
    pub fn given(source: &DataSource, seed: u64) -> Self {
        match source {
            DataSource::Toy(_) | DataSource::Image(_) => ScoredPoints::Draws { seed },
            DataSource::Npy(_) | DataSource::Csv(_) => ScoredPoints::File,
            DataSource::Tabular(_) => ScoredPoints::BenchmarkTest,
        }
    }

    /// The JSON's `split`: `test` (the run's test split, or a benchmark's), `fresh draws`
    /// or `file` (every row of a file given with `--data`).
    pub fn split(&self) -> &'static str {
        match self {
            ScoredPoints::RunTest { .. } | ScoredPoints::BenchmarkTest => "test",
            ScoredPoints::Draws { .. } => "fresh draws",
            ScoredPoints::File => "file",
        }
    }

    /// The JSON's `scored`: the `points` points of `source`, in words.
    pub fn describe(&self, source: &str, points: usize) -> String {
        match self {
            ScoredPoints::RunTest { what } => format!("{what}; {points} scored"),
            ScoredPoints::Draws { seed } => {
                format!("{points} fresh draws of {source} (seed {seed}), not the run's split")
            }
            ScoredPoints::File => format!("every row of {source} ({points})"),
            ScoredPoints::BenchmarkTest => format!("MAF's test split of {source} ({points} rows)"),
        }
    }

    /// The seed of fresh draws (the JSON's `draw_seed`), `None` for other points.
    pub fn draw_seed(&self) -> Option<u64> {
        match self {
            ScoredPoints::Draws { seed } => Some(*seed),
            _ => None,
        }
    }

    /// Where the scored point `index` (counting from 0 in the order scored) is, counted from 0
    /// as the data messages count rows: `row 1 (line 2 of f.csv; rows counted from 0)` for a
    /// CSV file given with `--data` (`csv_line`: the file line of that row, from 1), `row 1 of
    /// the test split (counted from 0)`, `point 1 of the draws (counted from 0)`.
    pub fn locate(&self, index: usize, csv_line: Option<(u64, String)>) -> String {
        match (self, csv_line) {
            (ScoredPoints::File, Some((line, file))) => {
                format!("row {index} (line {line} of {file}; rows counted from 0)")
            }
            (ScoredPoints::File, None) => format!("row {index} (counted from 0)"),
            (ScoredPoints::RunTest { .. } | ScoredPoints::BenchmarkTest, _) => {
                format!("row {index} of the test split (counted from 0)")
            }
            (ScoredPoints::Draws { .. }, _) => {
                format!("point {index} of the draws (counted from 0)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The point the non-finite message names is counted from 0, as the data messages
    /// count rows (it said "point 2" for the file's second row, row 1), with the file line
    /// of a CSV row.
    #[test]
    fn points_are_located_from_zero() {
        assert_eq!(
            ScoredPoints::File.locate(1, Some((2, "p.csv".into()))),
            "row 1 (line 2 of p.csv; rows counted from 0)"
        );
        assert_eq!(ScoredPoints::File.locate(0, None), "row 0 (counted from 0)");
        let draws = ScoredPoints::Draws { seed: 7 };
        assert_eq!(
            draws.locate(3, None),
            "point 3 of the draws (counted from 0)"
        );
        assert_eq!((draws.split(), draws.draw_seed()), ("fresh draws", Some(7)));
        assert_eq!(
            ScoredPoints::BenchmarkTest.locate(5, None),
            "row 5 of the test split (counted from 0)"
        );
    }
}
