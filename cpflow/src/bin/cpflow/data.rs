//! Data sources of the CLI: a built-in toy, an image density, or a `.npy` / `.csv` file.

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use cpflow::FlowRng;
use cpflow::toy::{ImageDensity, Toy};
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};

use crate::run_config::DataSection;

/// Where the data come from.
#[derive(Debug)]
pub enum DataSource {
    /// A named toy density.
    Toy(Toy),
    /// A density built from an image.
    Image(Box<ImageDensity>),
    /// A `.npy` array of shape (n, d) (or (n,) for d = 1).
    Npy(PathBuf),
    /// A `.csv` file of numbers, one sample per line; an optional header line is skipped.
    Csv(PathBuf),
}

impl DataSource {
    /// Parses a `--data` / `data.source` value: a path ending in `.npy`, `.csv` or an image
    /// extension (`.png`, `.jpg`, `.jpeg`; or any path after `image:`), else a toy name.
    pub fn parse(source: &str) -> Result<Self> {
        let lower = source.to_ascii_lowercase();
        if let Some(p) = source.strip_prefix("image:") {
            return Self::image(Path::new(p));
        }
        if lower.ends_with(".npy") {
            return Ok(DataSource::Npy(source.into()));
        }
        if lower.ends_with(".csv") {
            return Ok(DataSource::Csv(source.into()));
        }
        if [".png", ".jpg", ".jpeg"].iter().any(|e| lower.ends_with(e)) {
            return Self::image(Path::new(source));
        }
        Ok(DataSource::Toy(source.parse()?))
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

/// Row-major host data split into a training and a held-out part.
#[derive(Debug)]
pub struct LoadedData {
    pub dim: usize,
    pub train: Vec<f64>,
    pub test: Vec<f64>,
    pub source: DataSource,
}

impl LoadedData {
    pub fn n_train(&self) -> usize {
        self.train.len() / self.dim
    }

    pub fn n_test(&self) -> usize {
        self.test.len() / self.dim
    }

    /// Rows of `part` as a `(n, d)` tensor.
    pub fn tensor(&self, part: &[f64], dtype: DType, device: &Device) -> Result<Tensor> {
        let n = part.len() / self.dim;
        Ok(Tensor::from_slice(part, (n, self.dim), device)?.to_dtype(dtype)?)
    }

    /// Monte-Carlo entropy `−mean log p(x)` of the held-out part, if `p` has a closed form.
    pub fn test_entropy(&self) -> Option<f64> {
        let mut total = 0.0;
        for row in self.test.chunks(self.dim) {
            total -= self.source.log_density(row)?;
        }
        Some(total / self.n_test().max(1) as f64)
    }
}

/// Loads the data of a `[data]` section.
pub fn load(section: &DataSection) -> Result<LoadedData> {
    let source = DataSource::parse(&section.source)?;
    let mut rng = FlowRng::seed_from_u64(section.seed);
    let flat = |pts: Vec<[f64; 2]>| -> Vec<f64> { pts.into_iter().flatten().collect() };
    let (dim, train, test) = match &source {
        DataSource::Toy(t) => {
            let train = flat(t.sample(section.n_train, &mut rng));
            let test = flat(t.sample(section.n_test, &mut rng));
            (2, train, test)
        }
        DataSource::Image(d) => {
            let train = flat(d.sample(section.n_train, &mut rng));
            let test = flat(d.sample(section.n_test, &mut rng));
            (2, train, test)
        }
        DataSource::Npy(p) | DataSource::Csv(p) => {
            let (dim, rows) = match &source {
                DataSource::Npy(_) => read_npy(p)?,
                _ => read_csv(p)?,
            };
            split_rows(dim, rows, section.test_fraction, &mut rng)?
        }
    };
    if train.is_empty() {
        bail!("no training data in `{}`", section.source);
    }
    Ok(LoadedData {
        dim,
        train,
        test,
        source,
    })
}

/// Data to score: every row of a `.npy`/`.csv` file, or `n` points of a toy/image drawn
/// with `seed` (all in the held-out part).
pub fn load_all(source: &str, n: usize, seed: u64) -> Result<LoadedData> {
    let src = DataSource::parse(source)?;
    let mut rng = FlowRng::seed_from_u64(seed);
    let flat = |pts: Vec<[f64; 2]>| -> Vec<f64> { pts.into_iter().flatten().collect() };
    let (dim, test) = match &src {
        DataSource::Toy(t) => (2, flat(t.sample(n, &mut rng))),
        DataSource::Image(d) => (2, flat(d.sample(n, &mut rng))),
        DataSource::Npy(p) => read_npy(p)?,
        DataSource::Csv(p) => read_csv(p)?,
    };
    if test.is_empty() {
        bail!("no data in `{source}`");
    }
    Ok(LoadedData {
        dim,
        train: Vec::new(),
        test,
        source: src,
    })
}

/// Seeded shuffle of the rows, then the last `test_fraction` is held out.
fn split_rows(
    dim: usize,
    rows: Vec<f64>,
    test_fraction: f64,
    rng: &mut FlowRng,
) -> Result<(usize, Vec<f64>, Vec<f64>)> {
    if !(0.0..1.0).contains(&test_fraction) {
        bail!("data.test_fraction must be in [0, 1), got {test_fraction}");
    }
    let n = rows.len() / dim;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let n_test = ((n as f64) * test_fraction).round() as usize;
    let n_train = n - n_test;
    let gather = |idx: &[usize]| -> Vec<f64> {
        idx.iter()
            .flat_map(|&i| rows[i * dim..(i + 1) * dim].iter().copied())
            .collect()
    };
    Ok((dim, gather(&order[..n_train]), gather(&order[n_train..])))
}

/// Reads an `(n, d)` or `(n,)` float array.
pub fn read_npy(path: &Path) -> Result<(usize, Vec<f64>)> {
    let t = Tensor::read_npy(path).with_context(|| format!("reading {}", path.display()))?;
    let t = t.to_dtype(DType::F64)?;
    let (n, d) = match t.dims() {
        [n] => (*n, 1),
        [n, d] => (*n, *d),
        other => bail!(
            "{}: expected a 1-D or 2-D array, got shape {other:?}",
            path.display()
        ),
    };
    let rows = t.reshape((n * d,))?.to_vec1::<f64>()?;
    check_finite(path, &rows)?;
    Ok((d, rows))
}

/// Reads numeric CSV rows (comma separated; a first line that does not parse is a header).
pub fn read_csv(path: &Path) -> Result<(usize, Vec<f64>)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    let mut dim = None;
    for (line, rec) in reader.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: line {}", path.display(), line + 1))?;
        let parsed: Result<Vec<f64>, _> = rec.iter().map(str::parse::<f64>).collect();
        let values = match parsed {
            Ok(v) => v,
            Err(_) if line == 0 => continue,
            Err(e) => bail!("{}: line {}: {e}", path.display(), line + 1),
        };
        match dim {
            None => dim = Some(values.len()),
            Some(d) if d != values.len() => bail!(
                "{}: line {} has {} columns, expected {d}",
                path.display(),
                line + 1,
                values.len()
            ),
            _ => {}
        }
        rows.extend(values);
    }
    let dim = dim.with_context(|| format!("{}: no numeric rows", path.display()))?;
    check_finite(path, &rows)?;
    Ok((dim, rows))
}

fn check_finite(path: &Path, rows: &[f64]) -> Result<()> {
    if let Some(i) = rows.iter().position(|v| !v.is_finite()) {
        bail!("{}: non-finite value at flat index {i}", path.display());
    }
    Ok(())
}

/// Writes `(n, d)` rows as `.npy` (f64) or `.csv`, chosen by the extension.
pub fn write_rows(path: &Path, dim: usize, rows: &[f64]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let lower = path.to_string_lossy().to_ascii_lowercase();
    if lower.ends_with(".npy") {
        let t = Tensor::from_slice(rows, (rows.len() / dim, dim), &Device::Cpu)?;
        t.write_npy(path)
            .with_context(|| format!("writing {}", path.display()))?;
    } else if lower.ends_with(".csv") {
        let mut out = String::with_capacity(rows.len() * 12);
        for row in rows.chunks(dim) {
            let line: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
            out.push_str(&line.join(","));
            out.push('\n');
        }
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
    } else {
        bail!("{}: output must end in .npy or .csv", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_and_csv_round_trip_and_split() {
        let dir = std::env::temp_dir().join(format!("cpflow-cli-data-{}", std::process::id()));
        let rows: Vec<f64> = (0..30).map(|i| i as f64 * 0.5 - 3.0).collect();
        for name in ["a.npy", "a.csv"] {
            let p = dir.join(name);
            write_rows(&p, 3, &rows).unwrap();
            let (d, back) = if name.ends_with("npy") {
                read_npy(&p).unwrap()
            } else {
                read_csv(&p).unwrap()
            };
            assert_eq!((d, &back), (3, &rows));
        }
        std::fs::write(dir.join("h.csv"), "x,y\n1,2\n3,4\n").unwrap();
        assert_eq!(
            read_csv(&dir.join("h.csv")).unwrap(),
            (2, vec![1.0, 2.0, 3.0, 4.0])
        );
        std::fs::write(dir.join("bad.csv"), "1,2\n3\n").unwrap();
        assert!(read_csv(&dir.join("bad.csv")).is_err());
        let section = DataSection {
            source: dir.join("a.csv").display().to_string(),
            test_fraction: 0.2,
            ..Default::default()
        };
        let data = load(&section).unwrap();
        assert_eq!((data.dim, data.n_train(), data.n_test()), (3, 8, 2));
        assert!(write_rows(&dir.join("a.txt"), 3, &rows).is_err());
    }

    #[test]
    fn sources_parse() {
        assert!(matches!(
            DataSource::parse("moons").unwrap(),
            DataSource::Toy(Toy::Moons)
        ));
        assert!(matches!(
            DataSource::parse("x.NPY").unwrap(),
            DataSource::Npy(_)
        ));
        assert!(DataSource::parse("not-a-toy").is_err());
        let section = DataSection {
            source: "8gaussians".into(),
            n_train: 100,
            n_test: 50,
            ..Default::default()
        };
        let data = load(&section).unwrap();
        assert_eq!((data.n_train(), data.n_test()), (100, 50));
        assert!(data.test_entropy().unwrap().is_finite());
    }
}
