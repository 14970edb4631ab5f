//! Data sources of the CLI: a built-in toy, an image density, one of MAF's tabular benchmarks
//! (POWER, GAS, HEPMASS, MINIBOONE, BSDS300), or a `.npy` / `.csv` file.

use crate::FlowRng;
use crate::NllEstimate;
use crate::datasets::{GaussianBaseline, Split, TabularDataset, load_tabular};
use crate::toy::{ImageDensity, Toy};
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};

use crate::cli::memory::{check_drawn_data_memory, memory_limit};
use crate::cli::run_config::DataSection;

mod column_scale;
mod inert_keys;
mod rows;
pub use rows::Rows;

/// Where the data come from.
#[derive(Debug)]
pub enum DataSource {
    /// A named toy density.
    Toy(Toy),
    /// A density built from an image.
    Image(Box<ImageDensity>),
    /// One of MAF's tabular benchmarks, read from the data root with MAF's preprocessing and
    /// its own training / validation / test split.
    Tabular(TabularDataset),
    /// A `.npy` array of shape (n, d) (or (n,) for d = 1).
    Npy(PathBuf),
    /// A `.csv` file of numbers, one sample per line (fields separated by `,`, `;`, tabs or
    /// spaces), after an optional header line of column names; lines starting with `#` are
    /// comments (`numpy.savetxt`'s `header=`), skipped anywhere.
    Csv(PathBuf),
}

/// What a `--data` / `data.source` value names, told from the name alone (nothing is
/// read): the one rule by which [`DataSource::parse`] reads a source, a run directory keeps
/// a data file's path absolute and `eval` tells rows scored as they are from a density.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceName<'a> {
    /// The picture of an image density: a path ending in `.png`, `.jpg` or `.jpeg`, or any
    /// path after `image:`.
    Image(&'a Path),
    /// A path ending in `.npy` (any case).
    Npy(&'a Path),
    /// A path ending in `.csv` (any case).
    Csv(&'a Path),
    /// One of MAF's tabular benchmarks (`power`, `gas`, `hepmass`, `miniboone`, `bsds300`,
    /// any case).
    Tabular(TabularDataset),
    /// Anything else: a toy's name, known or not ([`DataSource::parse`] refuses an unknown
    /// one).
    Toy(&'a str),
}

impl<'a> SourceName<'a> {
    /// Classifies `source`: `image:PATH`, then the extensions `.npy`, `.csv`, `.png`, `.jpg`,
    /// `.jpeg`, then a benchmark's name, else a toy.
    pub fn of(source: &'a str) -> Self {
        if let Some(p) = source.strip_prefix("image:") {
            return SourceName::Image(Path::new(p));
        }
        let lower = source.to_ascii_lowercase();
        let path = Path::new(source);
        if lower.ends_with(".npy") {
            SourceName::Npy(path)
        } else if lower.ends_with(".csv") {
            SourceName::Csv(path)
        } else if [".png", ".jpg", ".jpeg"].iter().any(|e| lower.ends_with(e)) {
            SourceName::Image(path)
        } else if let Some(t) = TabularDataset::from_name(&lower) {
            SourceName::Tabular(t)
        } else {
            SourceName::Toy(source)
        }
    }

    /// The file the source is read from (a data file, an image density's picture); `None`
    /// for a toy or a benchmark (whose files sit under `data.root`).
    pub fn file(self) -> Option<&'a Path> {
        match self {
            SourceName::Image(p) | SourceName::Npy(p) | SourceName::Csv(p) => Some(p),
            SourceName::Tabular(_) | SourceName::Toy(_) => None,
        }
    }

    /// Whether the source names rows that are scored as they are, a `.npy`/`.csv` file or a
    /// tabular benchmark, rather than a density that points are drawn from.
    pub fn has_fixed_rows(self) -> bool {
        matches!(
            self,
            SourceName::Npy(_) | SourceName::Csv(_) | SourceName::Tabular(_)
        )
    }
}

impl DataSource {
    /// Parses a `--data` / `data.source` value as [`SourceName::of`] classifies it: a path
    /// ending in `.npy`, `.csv` or an image extension (`.png`, `.jpg`, `.jpeg`; or any path
    /// after `image:`, whose picture is read here), a tabular benchmark (`power`, `gas`,
    /// `hepmass`, `miniboone`, `bsds300`), else a toy name.
    pub fn parse(source: &str) -> Result<Self> {
        Ok(match SourceName::of(source) {
            SourceName::Image(p) => return Self::image(p),
            SourceName::Npy(p) => DataSource::Npy(p.into()),
            SourceName::Csv(p) => DataSource::Csv(p.into()),
            SourceName::Tabular(t) => DataSource::Tabular(t),
            SourceName::Toy(name) => DataSource::Toy(name.parse().with_context(|| {
                format!(
                    "`{source}` is not a data file (.npy, .csv, .png/.jpg), a tabular \
                     benchmark (power, gas, hepmass, miniboone, bsds300) or a toy"
                )
            })?),
        })
    }

    fn image(path: &Path) -> Result<Self> {
        let d = ImageDensity::from_file(path)?;
        Ok(DataSource::Image(Box::new(d)))
    }

    /// The exact log-density of one 2-D point when the source has one in closed form.
    pub fn log_density(&self, row: &[f64]) -> Option<f64> {
        match self {
            DataSource::Toy(t) if row.len() == 2 => t.log_density([row[0], row[1]]),
            DataSource::Image(d) if row.len() == 2 => Some(d.log_density([row[0], row[1]])),
            _ => None,
        }
    }
}

/// Largest `n·d²` (multiply-adds of the training covariance) for which `cpflow train` fits
/// the Gaussian baseline before training: 60,000 rows of 784 columns (3.7e10, a few seconds)
/// pass, 50,000 rows of 3,072 do not.
pub const GAUSSIAN_BASELINE_MAX_WORK: f64 = 4e10;

/// Row-major host data split into three disjoint parts: training, validation (early
/// stopping, learning-rate decay, the NLL curve) and test (scored once, after training).
#[derive(Debug)]
pub struct LoadedData {
    pub dim: usize,
    pub train: Rows,
    pub val: Rows,
    pub test: Rows,
    pub source: DataSource,
}

impl LoadedData {
    pub fn n_train(&self) -> usize {
        self.train.len() / self.dim
    }

    pub fn n_val(&self) -> usize {
        self.val.len() / self.dim
    }

    pub fn n_test(&self) -> usize {
        self.test.len() / self.dim
    }

    /// Rows of `part` as a `(n, d)` tensor. Refuses rows that `dtype` cannot resolve, and
    /// warns of those it barely does ([`column_scale::unresolved_columns`]: a column's float
    /// spacing at its largest magnitude against its standard deviation), judged on the
    /// training rows (on the test rows when there are none, as in `eval`'s). The warning is
    /// given once, with the test part (the training part without one).
    pub fn tensor(&self, part: &Rows, dtype: DType, device: &Device) -> Result<Tensor> {
        let judged = if self.train.is_empty() {
            &self.test
        } else {
            &self.train
        };
        let what = self.source_name();
        let verdict = match judged {
            Rows::F64(v) => column_scale::unresolved_columns(&what, v, self.dim, dtype),
            Rows::F32(v) => column_scale::unresolved_columns(&what, v, self.dim, dtype),
        };
        let warned_part = if self.test.is_empty() {
            &self.train
        } else {
            &self.test
        };
        match verdict {
            Some(column_scale::Verdict::Refuse(why)) => bail!("{why}"),
            Some(column_scale::Verdict::Warn(why)) if std::ptr::eq(part, warned_part) => {
                tracing::warn!("{why}")
            }
            _ => {}
        }
        let n = part.len() / self.dim;
        let t = match part {
            Rows::F64(v) => Tensor::from_slice(v, (n, self.dim), device)?,
            Rows::F32(v) => Tensor::from_slice(v, (n, self.dim), device)?,
        };
        Ok(t.to_dtype(dtype)?)
    }

    /// The data's name in messages: a file's path, a benchmark's or a toy's name.
    fn source_name(&self) -> String {
        match &self.source {
            DataSource::Npy(p) | DataSource::Csv(p) => p.display().to_string(),
            DataSource::Tabular(t) => t.to_string(),
            DataSource::Toy(t) => format!("the {t} points"),
            DataSource::Image(_) => "the image density's points".into(),
        }
    }

    /// The test part's mean NLL under the full-covariance Gaussian fitted to the training
    /// part ([`GaussianBaseline`]): the floor a flow has to beat. `None` without test rows or
    /// when no Gaussian fits (a constant column, e.g. an image's border pixels).
    pub fn test_gaussian_nll(&self) -> Option<NllEstimate> {
        if self.test.is_empty() {
            return None;
        }
        let work = self.n_train() as f64 * (self.dim as f64).powi(2);
        if work > GAUSSIAN_BASELINE_MAX_WORK {
            tracing::info!(
                "no Gaussian baseline of the data: its covariance ({} rows of {} columns) \
                 would take n·d² = {work:.1e} multiply-adds",
                self.n_train(),
                self.dim
            );
            return None;
        }
        let scored = match (&self.train, &self.test) {
            (Rows::F64(tr), Rows::F64(te)) => {
                GaussianBaseline::fit_rows(tr, self.dim).and_then(|g| g.mean_nll_rows(te))
            }
            (Rows::F32(tr), Rows::F32(te)) => {
                GaussianBaseline::fit_rows(tr, self.dim).and_then(|g| g.mean_nll_rows(te))
            }
            (tr, te) => GaussianBaseline::fit_rows(&tr.to_f64(), self.dim)
                .and_then(|g| g.mean_nll_rows(&te.to_f64())),
        };
        scored
            .inspect_err(|e| tracing::info!("no Gaussian baseline of the data: {e}"))
            .ok()
    }

    /// Monte-Carlo entropy `−mean log p(x)` of the test part, if there is one and `p` has a
    /// closed form.
    pub fn test_entropy(&self) -> Option<f64> {
        let closed_form = matches!(self.source, DataSource::Toy(_) | DataSource::Image(_));
        if !closed_form || self.test.is_empty() {
            return None;
        }
        let mut total = 0.0;
        for row in self.test.to_f64().chunks(self.dim) {
            total -= self.source.log_density(row)?;
        }
        Some(total / self.n_test().max(1) as f64)
    }
}

/// Loads the data of a `[data]` section. Points drawn from a toy or an image density that
/// cannot fit in the memory this process may use are refused before any is drawn
/// (`cli::memory::check_drawn_data_memory`). `[data]` keys the source does not read are not
/// warned of here: the command that takes the configuration does that
/// ([`warn_inert_data_keys`]), not `eval` and `plot`, which read a run's saved one.
pub fn load(section: &DataSection) -> Result<LoadedData> {
    let source = DataSource::parse(&section.source)?;
    let mut rng = FlowRng::seed_from_u64(section.seed);
    let flat = |pts: Vec<[f64; 2]>| -> Vec<f64> { pts.into_flattened() };
    if let Some(what) = drawn_points(&source) {
        check_drawn_data_memory(
            &what,
            &[
                ("data.n_train", section.n_train),
                ("data.n_val", section.n_val),
                ("data.n_test", section.n_test),
            ],
            2,
            memory_limit(),
        )?;
    }
    // Toys and images: training, test, then validation points, all fresh draws (the test
    // points are those of a run without a validation split).
    let (dim, train, val, test) = match &source {
        DataSource::Toy(t) => {
            let train = flat(t.sample(section.n_train, &mut rng));
            let test = flat(t.sample(section.n_test, &mut rng));
            let val = flat(t.sample(section.n_val, &mut rng));
            (2, Rows::F64(train), Rows::F64(val), Rows::F64(test))
        }
        DataSource::Image(d) => {
            let train = flat(d.sample(section.n_train, &mut rng));
            let test = flat(d.sample(section.n_test, &mut rng));
            let val = flat(d.sample(section.n_val, &mut rng));
            (2, Rows::F64(train), Rows::F64(val), Rows::F64(test))
        }
        DataSource::Npy(p) | DataSource::Csv(p) => {
            let (dim, rows) = match &source {
                DataSource::Npy(_) => read_npy(p)?,
                _ => read_csv(p)?,
            };
            let (train, val, test) = split_rows(
                dim,
                rows,
                section.val_fraction,
                section.test_fraction,
                &mut rng,
            )?;
            for warning in check_columns(p, dim, &train)? {
                tracing::warn!("{warning}");
            }
            (dim, Rows::F64(train), Rows::F64(val), Rows::F64(test))
        }
        DataSource::Tabular(t) => {
            let split = read_tabular(*t, &section.root)?;
            let dim = split.dim();
            let rows = |m: crate::datasets::Matrix<f32>| Rows::F32(m.into_data());
            (dim, rows(split.train), rows(split.val), rows(split.test))
        }
    };
    if train.is_empty() {
        bail!("no training data in `{}`", section.source);
    }
    Ok(LoadedData {
        dim,
        train,
        val,
        test,
        source,
    })
}

/// Warns (`tracing::warn!`, on stderr) of every `[data]` key that `source` does not read
/// ([`inert_keys::inert_data_keys`]): for the command that takes the configuration
/// (`cpflow train`, a resume included), once its data are loaded.
pub fn warn_inert_data_keys(section: &DataSection, source: &DataSource) {
    for warning in inert_keys::inert_data_keys(section, source) {
        tracing::warn!("{warning}");
    }
}

/// What names the points drawn from a toy or an image density (`None`: rows read from a
/// file or a benchmark, which are not drawn).
fn drawn_points(source: &DataSource) -> Option<String> {
    match source {
        DataSource::Toy(t) => Some(format!("the {t} points")),
        DataSource::Image(_) => Some("the image density's points".into()),
        _ => None,
    }
}

/// Data to score: every row of a `.npy`/`.csv` file, the test split of a tabular benchmark
/// (read under `root`), or `n` points of a toy/image drawn with `seed` (all in the held-out
/// part).
pub fn load_all(source: &str, root: &Path, n: usize, seed: u64) -> Result<LoadedData> {
    let src = DataSource::parse(source)?;
    let mut rng = FlowRng::seed_from_u64(seed);
    let flat = |pts: Vec<[f64; 2]>| -> Vec<f64> { pts.into_flattened() };
    if let Some(what) = drawn_points(&src) {
        check_drawn_data_memory(&what, &[("points to draw", n)], 2, memory_limit())?;
    }
    let f64_rows = |(dim, v): (usize, Vec<f64>)| (dim, Rows::F64(v));
    let (dim, test) = match &src {
        DataSource::Toy(t) => (2, Rows::F64(flat(t.sample(n, &mut rng)))),
        DataSource::Image(d) => (2, Rows::F64(flat(d.sample(n, &mut rng)))),
        DataSource::Npy(p) => f64_rows(read_npy(p)?),
        DataSource::Csv(p) => f64_rows(read_csv(p)?),
        DataSource::Tabular(t) => {
            let split = read_tabular(*t, root)?;
            (split.dim(), Rows::F32(split.test.into_data()))
        }
    };
    if test.is_empty() {
        bail!("no data in `{source}`");
    }
    Ok(LoadedData {
        dim,
        train: Rows::F64(Vec::new()),
        val: Rows::F64(Vec::new()),
        test,
        source: src,
    })
}

/// Reads a tabular benchmark under `root` with MAF's preprocessing
/// ([`crate::datasets::load_tabular`]). A missing file names the data root and the download
/// command ([`crate::datasets::download_command_into`]: `--dir` when the root is not the
/// download's default).
fn read_tabular(which: TabularDataset, root: &Path) -> Result<Split> {
    let fetch = crate::datasets::download_command_into(which.name(), root);
    match load_tabular(which, root) {
        Err(crate::datasets::DatasetError::MissingFile { path, .. }) => bail!(
            "{which}: file {}{} not found under data root {} (data.root); fetch it with \
             `{fetch}`",
            path.display(),
            crate::datasets::relative_path_note(&path),
            root.display()
        ),
        r => r.with_context(|| {
            format!(
                "loading {which} from data root {} (data.root; `{fetch}` fetches it there)",
                root.display()
            )
        }),
    }
}

/// Seeded shuffle of the rows; the last `test_fraction` is the test part, the
/// `val_fraction` before it the validation part, the rest the training part. The three are
/// disjoint, and the test rows depend only on the seed and `test_fraction`.
fn split_rows(
    dim: usize,
    rows: Vec<f64>,
    val_fraction: f64,
    test_fraction: f64,
    rng: &mut FlowRng,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    for (name, f) in [
        ("val_fraction", val_fraction),
        ("test_fraction", test_fraction),
    ] {
        if !(0.0..1.0).contains(&f) {
            bail!("data.{name} must be in [0, 1), got {f:?}");
        }
    }
    if val_fraction + test_fraction >= 1.0 {
        bail!(
            "data.val_fraction + data.test_fraction must be below 1 (got {val_fraction:?} + \
             {test_fraction:?}): nothing would be left to train on"
        );
    }
    let n = rows.len() / dim;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let n_test = ((n as f64) * test_fraction).round() as usize;
    let n_val = ((n as f64) * val_fraction).round() as usize;
    let n_train = n.saturating_sub(n_test + n_val);
    let gather = |idx: &[usize]| -> Vec<f64> {
        idx.iter()
            .flat_map(|&i| rows[i * dim..(i + 1) * dim].iter().copied())
            .collect()
    };
    Ok((
        gather(&order[..n_train]),
        gather(&order[n_train..n - n_test]),
        gather(&order[n - n_test..]),
    ))
}

/// Reads an `(n, d)` or `(n,)` numeric array (float, integer or bool dtype; C or Fortran
/// order; either byte order) with the library's reader, `crate::datasets::read_npy_file`.
pub fn read_npy(path: &Path) -> Result<(usize, Vec<f64>)> {
    let m = crate::datasets::read_npy_file(path)?;
    let d = m.cols();
    if d == 0 {
        bail!("{}: the array has no columns", path.display());
    }
    check_finite(path, &m, None)?;
    Ok((d, m.into_data()))
}

/// Reads numeric CSV rows with the library's reader, `crate::datasets::read_csv_rows`
/// (separated by `,`, `;`, tabs or spaces; `#` comment lines skipped; the first other line
/// may be a header of column names, one per column; any other non-numeric first line is an
/// error naming its line).
pub fn read_csv(path: &Path) -> Result<(usize, Vec<f64>)> {
    let rows = crate::datasets::read_csv_rows(path)?;
    check_finite(path, &rows.matrix, Some(&rows.lines))?;
    Ok((rows.matrix.cols(), rows.matrix.into_data()))
}

/// Refuses a non-finite value, naming its row and column counted from 0 (the rows of the
/// data: a CSV file's header, comments and blank lines are not rows) and, for a CSV file
/// (`lines`: the file line of each row), the file line of the row, counted from 1 as
/// editors count: "row 1 (line 3 of f.csv), column 0".
fn check_finite(
    path: &Path,
    m: &crate::datasets::Matrix<f64>,
    lines: Option<&[u64]>,
) -> Result<()> {
    if let Some((row, col, v)) = m.first_non_finite() {
        let line = lines
            .and_then(|l| l.get(row))
            .map(|line| {
                let file = path.file_name().unwrap_or(path.as_os_str());
                format!(" (line {line} of {})", file.to_string_lossy())
            })
            .unwrap_or_default();
        bail!(
            "{}: non-finite value {v} in row {row}{line}, column {col} (rows and columns \
             counted from 0)",
            path.display()
        );
    }
    Ok(())
}

/// Refuses training rows with a constant column: such data have no density (a model's NLL on
/// them goes to −∞ as it concentrates, and ActNorm's scale floor turns the first steps into
/// NLLs of 1e50), so the column must be dropped first. So is a column whose spread is far
/// below what ActNorm can scale up, with a warning when it is a little below
/// ([`column_scale::small_spread`]). Returns the warnings: those, and one for a column too
/// wide for ActNorm (below).
fn check_columns(path: &Path, dim: usize, train: &[f64]) -> Result<Vec<String>> {
    let n = train.len() / dim.max(1);
    if n < 2 {
        bail!(
            "{}: {n} training row(s) after the validation and test parts are taken \
             (data.val_fraction, data.test_fraction): a density needs at least 2",
            path.display()
        );
    }
    let mut warnings = Vec::new();
    let mut widest = (0.0f64, 0);
    // The warning of the narrowest column below column_scale::WARNED_STD, its standard
    // deviation and how many columns are below.
    let mut narrow: Option<(String, f64, usize)> = None;
    for (j, spread) in column_scale::column_spreads(train, dim)
        .into_iter()
        .enumerate()
    {
        let std = spread.std;
        if std > widest.0 {
            widest = (std, j);
        }
        let first = train[j];
        if train.iter().skip(j).step_by(dim).all(|&v| v == first) {
            bail!(
                "{}: column {j} (counted from 0) is constant ({}) in all {n} training \
                 rows; data without variation in a column have no density: drop that column",
                path.display(),
                // 1e300 was printed with all its 301 digits.
                if first == 0.0 || (1e-4..1e6).contains(&first.abs()) {
                    format!("{first}")
                } else {
                    format!("{first:e}")
                }
            );
        }
        match column_scale::small_spread(&path.display().to_string(), j, std) {
            Some(column_scale::Verdict::Refuse(why)) => bail!("{why}"),
            // One warning, of the narrowest such column, however many there are.
            Some(column_scale::Verdict::Warn(why)) if narrow.as_ref().is_none_or(|n| std < n.1) => {
                narrow = Some((why, std, narrow.as_ref().map_or(0, |n| n.2) + 1));
            }
            Some(column_scale::Verdict::Warn(_)) => {
                if let Some(n) = narrow.as_mut() {
                    n.2 += 1;
                }
            }
            None => {}
        }
    }
    if let Some((why, _, count)) = narrow {
        warnings.push(match count {
            1 => why,
            _ => format!(
                "{why} ({} more column{} of standard deviation below {:e})",
                count - 1,
                if count > 2 { "s" } else { "" },
                column_scale::WARNED_STD
            ),
        });
    }
    // ActNorm's scale is at least ACTNORM_SCALE_MIN (the reference's 0.001), so a column of
    // standard deviation s leaves it with about 1 + 0.001·s: far from the prior's 1 past
    // s ≈ 1e3, which the blocks then have to learn. Standard normal data in 2-D scaled by s,
    // `configs/toy-8gaussians-fast.toml`: test NLL 16.72 for s = 1e3 (closed form 16.66),
    // 4,805 for s = 1e6 (closed form 30.5).
    let (std, j) = widest;
    if std * crate::actnorm::ACTNORM_SCALE_MIN > 1.0 {
        warnings.push(format!(
            "{}: column {j} has standard deviation {std:.3e} in the training rows; ActNorm \
             cannot scale below {} (the reference's floor): standardise the data first",
            path.display(),
            crate::actnorm::ACTNORM_SCALE_MIN
        ));
    }
    Ok(warnings)
}

/// Writes `(n, d)` f64 rows as `.npy` or `.csv`, chosen by the extension (the tests' files;
/// `cpflow sample` streams its rows through [`crate::cli::output_files::RowsWriter`]).
#[cfg(test)]
pub fn write_rows(path: &Path, dim: usize, rows: &[f64]) -> Result<()> {
    use crate::cli::output_files::{RowType, RowValues, RowsWriter};
    let mut w = RowsWriter::create(path, dim, rows.len() / dim.max(1), RowType::F64)?;
    w.write(RowValues::F64(rows))?;
    w.finish()
}

#[cfg(test)]
mod tests;
