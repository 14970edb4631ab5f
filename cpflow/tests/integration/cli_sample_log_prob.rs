//! `cpflow sample --log-prob FILE`: one exact log-density per sample, beside samples that are
//! byte for byte those written without it.
//!
//! (a) The values are the library's `log_prob_exact` of the samples (the file's rows for a
//! vector flow; for an image flow, the continuous samples the library draws from the same
//! seed, whose quantisation is the file's rows); (b) the samples file is the same with and
//! without `--log-prob`; (c) VAEs, conditional flows, a bad extension and the `--output`
//! path are refused, and an interrupt leaves neither file; (d) `.npy` and `.csv` both.
//!
//! Tolerance of (a): the CLI and the test evaluate the same f64 function at the same f64
//! points (a `.npy` row holds the bits; a `.csv` value is the shortest decimal that reads back
//! to the same f64), so they can differ only by the summation order of a batch of another
//! size (GEMM blocking, parallel row chunks), ~1e-15 relative; 1e-9 relative is far above
//! that and far below what moving a sample changes (a log-density's gradient is O(1) per
//! unit of x, so even a 1e-6 move of a sample is seen).

use crate::cli_common::{cpflow, cpflow_fails, npy_descr, temp_dir, tiny_trained_run};
use candle_core::{DType, Device, Tensor};
use cpflow::image::{ImageFlow, ImageModelConfig, ImageSet, quantize_pixels};
use cpflow::{FloatType, Flow, FlowConfig, FlowRng, PotentialConfig};
use icnn::ImageShape;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A 2-D model trained 3 steps on a CSV file with no test rows (`data.test_fraction = 0`).
fn tiny_run(dir: &Path) -> PathBuf {
    tiny_trained_run(dir, 1.0, &[]).0
}

/// The values of a `.npy` or `.csv` rows file, row by row, and its column count.
fn read_rows(path: &Path) -> (Vec<f64>, usize) {
    if path.extension().is_some_and(|e| e == "npy") {
        let m = cpflow::datasets::read_npy_file(path).unwrap();
        let cols = m.cols();
        return (m.into_data(), cols);
    }
    let text = std::fs::read_to_string(path).unwrap();
    let rows: Vec<Vec<f64>> = text
        .lines()
        .map(|l| l.split(',').map(|v| v.parse::<f64>().unwrap()).collect())
        .collect();
    let cols = rows.first().map_or(0, Vec::len);
    assert!(rows.iter().all(|r| r.len() == cols), "ragged {path:?}");
    (rows.concat(), cols)
}

/// Largest `|got − want| / max(1, |want|)`.
fn max_rel_diff(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
        .fold(0.0, f64::max)
}

/// (a), (b), (d) for a vector flow: `.npy` and `.csv` samples and log-densities, the samples
/// byte for byte those of the plain command, the values `log_prob_exact` of the rows.
#[test]
fn sample_log_prob_of_a_vector_flow_is_log_prob_exact_of_the_rows() {
    let dir = temp_dir("sample-logp-flow");
    let run = tiny_run(&dir);
    let flow = Flow::load(&run.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(flow.float(), FloatType::F64);
    let base = ["sample", "-m", s(&run), "-n", "300", "--seed", "5"];
    let mut lps = Vec::new();
    for (samples, lp) in [("s.npy", "lp.csv"), ("s.csv", "lp.npy")] {
        let (plain, with) = (dir.join(format!("plain-{samples}")), dir.join(samples));
        let lp = dir.join(lp);
        cpflow(&[&base[..], &["-o", s(&plain)]].concat());
        let line = cpflow(&[&base[..], &["-o", s(&with), "--log-prob", s(&lp)]].concat());
        assert!(
            line.contains("wrote 300 samples") && line.contains("log-densities to"),
            "{line}"
        );
        // (b) The samples file, byte for byte.
        assert_eq!(
            std::fs::read(&plain).unwrap(),
            std::fs::read(&with).unwrap(),
            "{samples} differs with --log-prob"
        );
        // (a) log_prob_exact of the rows as written (f64 bits in .npy; shortest round-trip
        // decimals in .csv, read back to the same f64).
        let (rows, cols) = read_rows(&with);
        assert_eq!((rows.len(), cols), (600, 2));
        let x = Tensor::from_vec(rows, (300, 2), &Device::Cpu).unwrap();
        let want = flow.log_prob_exact(&x).unwrap().to_vec1::<f64>().unwrap();
        let (got, lp_cols) = read_rows(&lp);
        assert_eq!((got.len(), lp_cols), (300, 1));
        let worst = max_rel_diff(&got, &want);
        eprintln!("vector flow {samples}/{lp:?}: max rel diff to log_prob_exact {worst:.2e}");
        assert!(
            worst <= 1e-9,
            "log-prob file vs log_prob_exact: {worst:.3e}"
        );
        // Not a constant: the values tell the samples apart.
        assert!(want.iter().any(|v| (v - want[0]).abs() > 1e-3), "{want:?}");
        lps.push(got);
    }
    // (d) The same values whichever format (the csv decimals read back exactly).
    assert_eq!(lps[0], lps[1]);
    assert_eq!(npy_descr(&dir.join("lp.npy")), "<f8");

    // --dtype f32: the samples are `<f4`, the log-densities f32 results widened to `<f8`.
    let (s32, lp32) = (dir.join("s32.npy"), dir.join("lp32.npy"));
    cpflow(
        &[
            &base[..],
            &["--dtype", "f32", "-o", s(&s32), "--log-prob", s(&lp32)],
        ]
        .concat(),
    );
    assert_eq!(
        (npy_descr(&s32), npy_descr(&lp32)),
        ("<f4".into(), "<f8".into())
    );
    let mut cfg = flow.config().clone();
    cfg.float = FloatType::F32;
    let f32_flow = Flow::new(cfg, &Device::Cpu).unwrap();
    f32_flow
        .set_weights(&flow.weight_tensors().into_iter().collect(), "")
        .unwrap();
    let (rows, _) = read_rows(&s32);
    let x = Tensor::from_vec(rows, (300, 2), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let want = f32_flow
        .log_prob_exact(&x)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let (got, _) = read_rows(&lp32);
    assert!(
        got.iter().all(|v| f64::from(*v as f32) == *v),
        "not widened f32"
    );
    let want: Vec<f64> = want.into_iter().map(f64::from).collect();
    // f32 arithmetic: the batch-order rounding is ~1e-6 relative of the terms.
    let worst = max_rel_diff(&got, &want);
    assert!(worst <= 1e-4, "f32 log-prob vs log_prob_exact: {worst:.3e}");
}

/// A one-block f64 flow on 1×4×4 images, initialised on two dequantised images.
fn tiny_image_flow(path: &Path) -> ImageFlow {
    let shape = ImageShape::new(1, 4, 4);
    let model = ImageModelConfig {
        width: 4,
        depth: 2,
        nblocks: vec![1],
        float: FloatType::F64,
        ..Default::default()
    };
    let flow = ImageFlow::new(model.flow_config(shape, 0.05).unwrap(), &Device::Cpu).unwrap();
    let set = ImageSet::new(shape, (0..32).map(|i| (i * 37 % 256) as u8).collect()).unwrap();
    let mut rng = FlowRng::seed_from_u64(0);
    let x = set
        .dequantized_range(0, 2, DType::F64, &Device::Cpu, &mut rng)
        .unwrap();
    flow.initialize(&x).unwrap();
    flow.save(path).unwrap();
    flow
}

/// (a), (b), (d) for an image flow: the log-densities are those of the continuous samples
/// the library draws from the same seed (their quantisation is the samples file, bit for
/// bit), not of the written `k/255` pixels; the samples (rows and a PNG grid) are those of
/// the plain command.
#[test]
fn sample_log_prob_of_an_image_flow_is_that_of_the_continuous_samples() {
    let dir = temp_dir("sample-logp-image");
    let model = dir.join("img.safetensors");
    let flow = tiny_image_flow(&model);
    let (n, t, seed) = (6, 0.8, 3);
    let base = ["sample", "-m", s(&model), "-n", "6", "--temperature", "0.8"];
    let base = [&base[..], &["--seed", "3"]].concat();
    let (plain, with, lp) = (dir.join("p.npy"), dir.join("s.npy"), dir.join("lp.npy"));
    cpflow(&[&base[..], &["-o", s(&plain)]].concat());
    let line = cpflow(&[&base[..], &["-o", s(&with), "--log-prob", s(&lp)]].concat());
    assert!(line.contains("log-densities to"), "{line}");
    assert_eq!(
        std::fs::read(&plain).unwrap(),
        std::fs::read(&with).unwrap()
    );
    assert_eq!(npy_descr(&lp), "<f8");

    // The library's draw from the same stream (6 images: one chunk of the CLI's 64).
    let mut rng = FlowRng::seed_from_u64(seed);
    let inv = flow.sample(n, t, &mut rng).unwrap();
    let (rows, cols) = read_rows(&with);
    assert_eq!(cols, 16);
    let quantized = quantize_pixels(&inv.x).unwrap();
    assert_eq!(
        quantized.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
        rows
    );
    let want = flow
        .log_prob_exact(&inv.x)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let (got, lp_cols) = read_rows(&lp);
    assert_eq!((got.len(), lp_cols), (n, 1));
    let worst = max_rel_diff(&got, &want);
    eprintln!("image flow: max rel diff to log_prob_exact {worst:.2e}");
    assert!(
        worst <= 1e-9,
        "log-prob file vs log_prob_exact: {worst:.3e}"
    );
    // The density of the written (quantised) pixels is another number: the file is the
    // continuous samples'.
    let x_file = Tensor::from_vec(rows, (n, 16), &Device::Cpu).unwrap();
    let at_file = flow
        .log_prob_exact(&x_file)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert!(
        max_rel_diff(&got, &at_file) > 1e-6,
        "{got:?} vs {at_file:?}"
    );

    // A 2×3 PNG grid: the same PNG bytes with and without --log-prob, and the cells' log-
    // densities in row-major order, as a CSV (the same six draws as the rows above).
    let (png0, png1, lp_csv) = (dir.join("g0.png"), dir.join("g1.png"), dir.join("g.csv"));
    let grid = ["--grid", "2x3"];
    cpflow(&[&base[..], &grid[..], &["-o", s(&png0)]].concat());
    cpflow(
        &[
            &base[..],
            &grid[..],
            &["-o", s(&png1), "--log-prob", s(&lp_csv)],
        ]
        .concat(),
    );
    assert_eq!(std::fs::read(&png0).unwrap(), std::fs::read(&png1).unwrap());
    let (grid_lp, _) = read_rows(&lp_csv);
    assert_eq!(grid_lp, got);
}

/// (c) Refusals: a VAE (prior samples and `--reconstruct`), a conditional flow, a bad
/// extension, the `--output` file; nothing is written by any of them.
#[test]
fn sample_log_prob_refusals() {
    let dir = temp_dir("sample-logp-refuse");
    // A VAE weights file as `cpflow vae` writes it (untrained: only its kind matters).
    let vae_file = dir.join("vae.safetensors");
    {
        use cpflow::vae::{PosteriorKind, Vae, VaeArchitecture, VaeCheckpointMeta, VaeConfig};
        use cpflow::vae::{VaeDatasetName, save_vae_checkpoint};
        let mut cfg =
            VaeConfig::reference(VaeDatasetName::FreyFaces, "data", PosteriorKind::Gaussian);
        cfg.model.latent_dim = 2;
        cfg.model.architecture = VaeArchitecture {
            channels: 2,
            feature_dim: 4,
            head_channels: 2,
        };
        let ds = cfg.data.dataset;
        let vae = Vae::new(&cfg.model, ds.likelihood(), ds.image_size(), &Device::Cpu).unwrap();
        let weights = vae.weight_tensors().into_iter();
        let weights = weights.map(|(k, t)| (format!("model.{k}"), t)).collect();
        let meta = VaeCheckpointMeta {
            config: cfg,
            state: None,
            optimizer: None,
        };
        save_vae_checkpoint(&vae_file, &meta, weights).unwrap();
    }
    let out = dir.join("out");
    let (o, lp) = (out.join("s.npy"), out.join("lp.npy"));
    let vae = ["sample", "-m", s(&vae_file), "-n", "2", "-o", s(&o)];
    let e = cpflow_fails(&[&vae[..], &["--log-prob", s(&lp)]].concat());
    assert!(
        e.contains("--log-prob is not available for a VAE")
            && e.contains("no closed form")
            && e.contains("cpflow eval"),
        "{e}"
    );
    let e = cpflow_fails(&[&vae[..], &["--reconstruct", "--log-prob", s(&lp)]].concat());
    assert!(
        e.contains("--reconstruct") && e.contains("cpflow eval"),
        "{e}"
    );
    // Without --log-prob the VAE samples (the refusal is the flag's alone).
    let vae_samples = dir.join("vae.npy");
    cpflow(&[&vae[..5], &["-o", s(&vae_samples)]].concat());
    assert!(vae_samples.is_file());

    // A conditional flow (PICNN potential) saved by the library.
    let cond = dir.join("cond.safetensors");
    {
        let pot = PotentialConfig::Picnn(icnn::PicnnConfig {
            dim: 2,
            context_dim: 1,
            width: 4,
            depth: 2,
            ..Default::default()
        });
        let cfg = FlowConfig::tabular(2, 1, pot).with_float(FloatType::F64);
        let flow = Flow::new(cfg, &Device::Cpu).unwrap();
        let x = Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.5]], &Device::Cpu).unwrap();
        let c = Tensor::new(&[[0.0f64], [1.0], [-1.0]], &Device::Cpu).unwrap();
        flow.initialize_given(&x, &c).unwrap();
        flow.save(&cond).unwrap();
    }
    let conditional = ["sample", "-m", s(&cond), "-n", "2", "-o", s(&o)];
    for extra in [&["--log-prob", s(&lp)][..], &[]] {
        let e = cpflow_fails(&[&conditional[..], extra].concat());
        assert!(
            e.contains("is a conditional flow") && e.contains("sample_and_log_prob_given"),
            "{e}"
        );
    }

    // Paths: a bad extension, and the --output file under another spelling.
    let run = dir.join("flow.safetensors");
    tiny_vector_flow(&run);
    let flow_args = ["sample", "-m", s(&run), "-n", "2", "-o", s(&o)];
    for bad in ["lp.txt", "lp", "lp.png"] {
        let bad = out.join(bad);
        let e = cpflow_fails(&[&flow_args[..], &["--log-prob", s(&bad)]].concat());
        assert!(
            e.contains("--log-prob") && e.contains(".npy") && e.contains(s(&bad)),
            "{e}"
        );
    }
    let same = out.join("sub/../s.npy");
    let e = cpflow_fails(&[&flow_args[..], &["--log-prob", s(&same)]].concat());
    assert!(e.contains("is the --output file"), "{e}");
    // Nothing was written (nor a directory made) by any refusal.
    assert!(
        !out.exists(),
        "{:?}",
        std::fs::read_dir(&out).unwrap().count()
    );
    // And the same model writes both files when they are fine.
    cpflow(&[&flow_args[..], &["--log-prob", s(&lp)]].concat());
    assert_eq!(read_rows(&lp).0.len(), 2);
}

/// An interrupted `sample --log-prob` stops between chunks, names both files and leaves
/// neither them nor their temporary files.
#[cfg(unix)]
#[test]
fn an_interrupted_sample_log_prob_leaves_no_files() {
    use std::process::{Command, Stdio};
    let dir = temp_dir("sample-logp-interrupt");
    let run = tiny_run(&dir);
    let out_dir = dir.join("samples");
    std::fs::create_dir_all(&out_dir).unwrap();
    let (output, lp) = (out_dir.join("s.npy"), out_dir.join("lp.csv"));
    let child = Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(["sample", "-m", s(&run), "-n", "100000000", "-o", s(&output)])
        .args(["--log-prob", s(&lp)])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for both temporary files: sampling has begun.
    let t0 = std::time::Instant::now();
    while std::fs::read_dir(&out_dir).unwrap().count() < 2 {
        assert!(
            t0.elapsed().as_secs() < 60,
            "the output files were not opened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (ok, err) = crate::cli_common::interrupt_and_wait(child);
    assert!(!ok, "{err}");
    assert!(
        err.contains("interrupted after") && err.contains(&format!("nor to {}", s(&lp))),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "files left: {left:?}");
}

/// A 2-D f64 flow (ICNN width 4), initialised on three points, saved to `path`.
fn tiny_vector_flow(path: &Path) {
    let pot = PotentialConfig::Icnn3(icnn::Icnn3Config {
        dim: 2,
        width: 4,
        depth: 2,
        ..Default::default()
    });
    let cfg = FlowConfig::tabular(2, 1, pot).with_float(FloatType::F64);
    let flow = Flow::new(cfg, &Device::Cpu).unwrap();
    let x = Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.5]], &Device::Cpu).unwrap();
    flow.initialize(&x).unwrap();
    flow.save(path).unwrap();
}

/// The samples and the log-densities are one unit: a write error on the log-prob file after
/// the samples file is complete (a full disk: its temporary file, `.NAME.tmp-PID` in this
/// process, which runs the command in-process, is `/dev/full`) leaves the previous pair as it
/// was and no temporary file, for rows and for a PNG grid; the error says it was writing
/// log-densities. Once the disk has room, the command replaces both files and leaves no
/// backup. The old code renamed the new samples into place before finishing the log-prob
/// file (a new samples file beside the old log-densities) and said "writing samples".
#[cfg(target_os = "linux")]
#[test]
fn a_failed_log_prob_write_leaves_the_previous_pair() {
    let dir = temp_dir("sample-logp-pair");
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let (vector, image) = (
        models.join("flow.safetensors"),
        models.join("img.safetensors"),
    );
    tiny_vector_flow(&vector);
    tiny_image_flow(&image);
    let cases = [
        (&vector, "s.npy", "lp.csv", &[][..]),
        (&image, "g.png", "lp.npy", &["--grid", "2x3"][..]),
    ];
    for (model, samples, log_prob, extra) in cases {
        let out = dir.join(samples.replace('.', "-"));
        std::fs::create_dir_all(&out).unwrap();
        let (o, lp) = (out.join(samples), out.join(log_prob));
        std::fs::write(&o, "old samples").unwrap();
        std::fs::write(&lp, "old log-densities").unwrap();
        let tmp = out.join(format!(".{log_prob}.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        let args = [
            "cpflow",
            "sample",
            "-m",
            s(model),
            "-n",
            "3",
            "--no-progress",
        ];
        let args = [&args[..], extra, &["-o", s(&o), "--log-prob", s(&lp)]].concat();
        let e = format!("{:#}", cpflow::cli::run(&args).unwrap_err());
        assert!(e.contains("writing log-densities to"), "{e}");
        let text = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
        assert_eq!(text(&o), "old samples", "{e}");
        assert_eq!(text(&lp), "old log-densities");
        let mut left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|f| f.unwrap().file_name())
            .collect();
        left.sort();
        let mut want = [log_prob, samples];
        want.sort();
        assert_eq!(left, want, "{e}");

        cpflow::cli::run(&args).unwrap();
        assert_ne!(std::fs::read(&o).unwrap(), b"old samples");
        let (values, cols) = read_rows(&lp);
        assert_eq!(
            (values.len(), cols),
            (if extra.is_empty() { 3 } else { 6 }, 1)
        );
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2);
    }
}
