//! `cpflow train` / `eval` on a MAF tabular benchmark by name (`--data miniboone`), read from
//! a data root with MAF's preprocessing and split: here the 1,523-row MINIBOONE fragment of
//! the shared data, placed where `cargo xtask download miniboone --dir ROOT` puts the file.

use crate::cli_common::{cpflow, cpflow_fails, temp_dir};
use candle_core::{DType, Device};
use cpflow::datasets::{GaussianBaseline, load_miniboone};
use cpflow::{Dataset, Flow, FlowRng, NllEstimator, nll_estimate};
use std::path::{Path, PathBuf};

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A data root holding the MINIBOONE fragment as `miniboone/data.npy`.
fn miniboone_root(dir: &Path) -> PathBuf {
    let root = dir.join("data");
    std::fs::create_dir_all(root.join("miniboone")).unwrap();
    let fragment = repo_file("../shared/data/miniboone/maf_miniboone_first1523rows_float64.npy");
    std::fs::copy(&fragment, root.join("miniboone/data.npy"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", fragment.display()));
    root
}

fn report(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap()
}

#[test]
fn tabular_benchmark_trains_on_maf_split_and_scores_its_test_split() {
    let dir = temp_dir("tabular");
    let root = miniboone_root(&dir);
    let run = dir.join("run");
    let config = repo_file("configs/tabular.toml");
    let root_set = format!("data.root={}", root.display());
    let out = cpflow(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--data",
        "miniboone",
        "--set",
        &root_set,
        "--set",
        "model.width=8",
        "--set",
        "model.depth=2",
        "--set",
        "train.val_every=2",
        "--iters",
        "4",
        "--batch-size",
        "64",
        "--no-progress",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(out.contains("trained 4 iterations"), "{out}");

    // The CLI's parts are MAF's split of the same file, as the library loads it.
    let split = load_miniboone(&root).unwrap();
    let (n_train, n_val, n_test) = split.sizes();
    assert!(n_train > 0 && n_val > 0 && n_test > 0);
    let rep = report(&run);
    assert_eq!(rep["dim"], 43, "{rep}");
    assert_eq!(
        (
            rep["n_train"].as_u64(),
            rep["n_val"].as_u64(),
            rep["n_test"].as_u64()
        ),
        (
            Some(n_train as u64),
            Some(n_val as u64),
            Some(n_test as u64)
        ),
        "{rep}"
    );

    // The reported test NLL is the exact NLL of the saved model on MAF's test rows, computed
    // here by the library from the file and the weights alone. f32 model: the two runs of the
    // same code on the same weights and rows agree to rounding (1e-5 relative).
    let test_nll = rep["test_nll"].as_f64().expect("a test NLL");
    let flow = Flow::load(&run.join("model.safetensors"), &Device::Cpu).unwrap();
    let test = Dataset::new(split.test.to_tensor(DType::F32, &Device::Cpu).unwrap());
    let mut rng = FlowRng::seed_from_u64(0);
    let est = nll_estimate(&flow, &test, &NllEstimator::Exact, 1024, &mut rng).unwrap();
    let nll = est.mean;
    assert!(
        (nll - test_nll).abs() <= 1e-5 * nll.abs().max(1.0),
        "report {test_nll}, library {nll}"
    );
    // Its standard error too (the rows' spread over √n; same rounding argument).
    let se = est.std_err.unwrap();
    let test_se = rep["test_nll_std_err"].as_f64().expect("a standard error");
    assert!(
        (se - test_se).abs() <= 1e-4 * se,
        "report {test_se}, library {se}"
    );

    // The Gaussian floor: the full-covariance Gaussian of MAF's training rows on its test
    // rows, as the library computes it from the file (same code, same f32 values: equal to
    // rounding of the summation order, which is the same too).
    let g = GaussianBaseline::fit(&split.train).unwrap();
    let want = g.mean_nll(&split.test).unwrap();
    let got = rep["gaussian_test_nll"]
        .as_f64()
        .expect("a Gaussian baseline");
    assert!(
        (got - want.mean).abs() <= 1e-9 * want.mean.abs(),
        "report {got}, library {want:?}"
    );
    let got_se = rep["gaussian_test_nll_std_err"].as_f64().unwrap();
    let want_se = want.std_err.expect("more than one test row");
    assert!(
        (got_se - want_se).abs() <= 1e-9 * want_se,
        "{got_se} vs {want:?}"
    );
    assert!(
        out.contains(&format!(
            "full-covariance Gaussian {:.4}, flow − Gaussian {:+.4}",
            got,
            test_nll - got
        )),
        "{out}"
    );

    // `eval` scores the same rows: from the run's config, and with the benchmark named.
    for extra in [&[][..], &["--data", "miniboone"][..]] {
        let mut args = vec!["eval", "--model", run.to_str().unwrap()];
        args.extend_from_slice(extra);
        let line = cpflow(&args);
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["points"].as_u64(), Some(n_test as u64), "{v}");
        let got = v["nll"].as_f64().unwrap();
        assert!(
            (got - test_nll).abs() <= 1e-5 * got.abs().max(1.0),
            "{extra:?}: eval {got}, report {test_nll}"
        );
        let got_se = v["nll_std_err"].as_f64().unwrap();
        assert!(
            (got_se - se).abs() <= 1e-4 * se,
            "{extra:?}: eval ± {got_se}, library ± {se}"
        );
    }
}

#[test]
fn missing_tabular_data_names_the_download_command_and_root() {
    let dir = temp_dir("tabular-missing");
    let root = dir.join("empty-root");
    std::fs::create_dir_all(&root).unwrap();
    let root_set = format!("data.root={}", root.display());
    let err = cpflow_fails(&[
        "train",
        "--data",
        "gas",
        "--set",
        &root_set,
        "--no-progress",
        "--out",
        dir.join("run").to_str().unwrap(),
    ]);
    let want = format!("cargo xtask download gas --dir {}", root.display());
    assert!(err.contains(&want), "{err}");
    // Only that command: not also the library's, without `--dir`.
    assert!(!err.contains("download gas`"), "{err}");

    // A misspelt name lists what a source can be.
    let run = dir.join("misspelt");
    let err = cpflow_fails(&[
        "train",
        "--data",
        "minibone",
        "--no-progress",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(err.contains("miniboone") && err.contains("toy"), "{err}");
    assert!(!run.exists(), "a failed load left {}", run.display());
}
