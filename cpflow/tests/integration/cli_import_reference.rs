//! `cpflow import-reference`: the authors' weights (the committed fixture
//! `tests/fixtures/reference/tabular_icnn2.safetensors`, see `reference_parity`) imported
//! through the CLI give the reference's log-densities, as a model that `eval` reads; a
//! state_dict that lacks a key, is not safetensors or holds a NaN is refused by name.
//!
//! Tolerance: as in `reference_parity` (`|ours − theirs| ≤ 1e-10·(1 + |theirs|)`, measured
//! differences ~1e-14 on that scale): the import writes the f64 weights unchanged, so the
//! written model must reproduce the reference as closely as the library path does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use cpflow::{FloatType, Flow};

use crate::cli_common::{cpflow, cpflow_fails, temp_dir};
use crate::reference_parity::{Fixture, TOL, differences, host};

/// The committed fixture (written by `benchmarks/reference_parity/export_fixtures.py`).
fn fixture_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference/tabular_icnn2.safetensors")
}

/// The `[model]` of the fixture's metadata (`arch = icnn2`, d = 6, `dimh = 16`,
/// `nhidden = 3`, `nblocks = 2`, plain softplus, no zero shift, no symmetric first
/// activation: `train_tabular.py`'s layout).
const CONFIG: &str = r#"
[model]
arch = "icnn2"
layout = "tabular"
blocks = 2
width = 16
depth = 3
activation = "softplus"
zero_shift = false
symm_act_first = false
float = "f64"
"#;

fn write_state_dict(path: &Path, sd: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(sd, path).unwrap();
}

#[test]
fn imported_reference_model_gives_the_reference_log_densities() {
    let dir = temp_dir("import-reference");
    let fx = Fixture::load("tabular_icnn2");
    let (w, cfg) = (dir.join("W.safetensors"), dir.join("model.toml"));
    write_state_dict(&w, &fx.state_dict());
    std::fs::write(&cfg, CONFIG).unwrap();
    let out = dir.join("imported");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = [
        "import-reference",
        "--state-dict",
        &s(&w),
        "--config",
        &s(&cfg),
        "--out",
        &s(&out),
    ];
    let line = cpflow(&args);
    let n_keys = fx.state_dict().len();
    assert!(
        line.contains(&format!("imported {n_keys} tensors")),
        "{line}"
    );

    // The library reads the written model; its log p is the reference's.
    let flow = Flow::load(&out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!((flow.dim(), flow.float()), (6, FloatType::F64));
    assert!(flow.is_initialized().unwrap());
    let x = fx.tensor("in.x");
    let theirs = fx.values("out.logp");
    let ours = host(&flow.log_prob_exact(&x).unwrap());
    let w64 = differences(&ours, &theirs).2;
    eprintln!("import-reference f64: |log p − reference|/(1 + |ref|) ≤ {w64:.3e}");
    assert!(w64 <= TOL, "log p differs from the reference by {w64:.3e}");

    // `cpflow eval --model DIR` accepts it: its NLL on the fixture's inputs is −mean log p.
    let csv = dir.join("x.csv");
    let xs = host(&x);
    let text: String = xs
        .chunks(6)
        .map(|r| {
            let cells: Vec<String> = r.iter().map(|v| format!("{v}")).collect();
            cells.join(",") + "\n"
        })
        .collect();
    std::fs::write(&csv, text).unwrap();
    let json = cpflow(&["eval", "--model", &s(&out), "--data", &s(&csv)]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let nll = v["nll"].as_f64().unwrap();
    let expect = -theirs.iter().sum::<f64>() / theirs.len() as f64;
    assert!(
        (nll - expect).abs() <= TOL * (1.0 + expect.abs()),
        "eval NLL {nll} vs reference {expect}"
    );

    // `cpflow sample --model DIR` draws from it.
    let samples = dir.join("s.csv");
    cpflow(&["sample", "--model", &s(&out), "-n", "5", "-o", &s(&samples)]);
    let rows = std::fs::read_to_string(&samples).unwrap();
    assert_eq!(
        rows.lines().filter(|l| l.contains(',')).count(),
        5,
        "{rows}"
    );

    // An existing model is not replaced without --overwrite.
    let e = cpflow_fails(&args);
    assert!(e.contains("--overwrite"), "{e}");

    // --dtype f32: the same weights rounded to f32. Tolerance 1e-4·(1 + |log p|): f32 carries
    // ~1e-7 relative per operation, and the log-det's Cholesky and the two blocks' inverse
    // maps amplify it by the Hessians' conditioning; a wrong weight moves log p by O(1).
    let out32 = dir.join("imported32");
    let mut a32 = args.to_vec();
    let o32 = s(&out32);
    a32[6] = &o32;
    a32.extend(["--dtype", "f32"]);
    cpflow(&a32);
    let flow32 = Flow::load(&out32.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(flow32.float(), FloatType::F32);
    let x32 = x.to_dtype(DType::F32).unwrap();
    let w32 = differences(&host(&flow32.log_prob_exact(&x32).unwrap()), &theirs).2;
    eprintln!("import-reference f32: |log p − reference|/(1 + |ref|) ≤ {w32:.3e}");
    assert!(
        w32 <= 1e-4,
        "f32 log p differs from the reference by {w32:.3e}"
    );

    // The fixture itself (state_dict under `model.`, inputs and outputs beside it) with
    // --prefix: the same tensors are read.
    let line = cpflow(&[
        "import-reference",
        "--state-dict",
        &s(&fixture_file()),
        "--prefix",
        "model.",
        "--config",
        &s(&cfg),
        "--out",
        &s(&dir.join("prefixed")),
    ]);
    assert!(
        line.contains(&format!("imported {n_keys} tensors")),
        "{line}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_state_dicts_are_refused_by_name() {
    let dir = temp_dir("import-reference-bad");
    let fx = Fixture::load("tabular_icnn2");
    let cfg = dir.join("model.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = |w: &Path, out: &str| {
        cpflow_fails(&[
            "import-reference",
            "--state-dict",
            &s(w),
            "--config",
            &s(&cfg),
            "--out",
            &s(&dir.join(out)),
        ])
    };
    // A key removed: named as the reference names it, and nothing is written.
    let mut sd = fx.state_dict();
    sd.remove("flows.3.w1").unwrap();
    let w = dir.join("missing.safetensors");
    write_state_dict(&w, &sd);
    let e = run(&w, "missing");
    assert!(e.contains("flows.3.w1"), "{e}");
    assert!(!dir.join("missing").exists());
    // Not a safetensors file.
    let w = dir.join("model.pt");
    std::fs::write(&w, b"PK\x03\x04 a torch zip archive").unwrap();
    let e = run(&w, "notsafetensors");
    assert!(e.contains("is not a safetensors file"), "{e}");
    // A NaN weight.
    let mut sd = fx.state_dict();
    sd.insert(
        "flows.1.w0".into(),
        Tensor::new(&[f64::NAN], &Device::Cpu).unwrap(),
    );
    let w = dir.join("nan.safetensors");
    write_state_dict(&w, &sd);
    let e = run(&w, "nan");
    assert!(
        e.contains("flows.1.w0 holds a NaN or infinite value"),
        "{e}"
    );
    // The fixture without --prefix: its state_dict sits under `model.`.
    let e = run(&fixture_file(), "unprefixed");
    assert!(e.contains("pass --prefix model."), "{e}");
    // Another architecture in the config: the extra block's keys are missing.
    std::fs::write(&cfg, CONFIG.replace("blocks = 2", "blocks = 3")).unwrap();
    let w = dir.join("ok.safetensors");
    write_state_dict(&w, &fx.state_dict());
    let e = run(&w, "three");
    assert!(e.contains("flows.5.icnn") && e.contains("more"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
