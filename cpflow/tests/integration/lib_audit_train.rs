//! An audit of training from Rust (not the CLI): the trainer's resume across float types,
//! objectives and conditional flows; files of another kind given to a loader; and the VAE's
//! library entry points (`run_vae_on` with data built in memory, `VaeConfig::validate`,
//! `score_vae_test`), whose malformed data and settings were accepted and produced NaN or
//! zero scores, or a run directory that could not be loaded back.

use crate::flow_common::*;
use crate::posterior_common::made_up_caltech_data;
use candle_core::{DType, Device};
use cpflow::vae::{
    PosteriorKind, VaeArchitecture, VaeConfig, VaeData, VaeDatasetName, VaeImages, VaeLikelihood,
    VaeRunOptions, VaeTestParams, load_vae, load_vae_file, run_vae_on, score_vae_test,
};
use cpflow::{
    AdamParams, Dataset, FloatType, Flow, FlowConfig, LrSchedule, NllEstimator, Objective,
    PotentialConfig, RunOptions, SlqConfig, TrainConfig, Trainer,
};

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-audit-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

/// Made-up Caltech-like data with a test split of two images.
fn vae_data() -> VaeData {
    made_up_caltech_data(&[0, 2])
}

/// A tiny Caltech VAE: one epoch of two batches, 4 importance samples.
fn vae_config(posterior: PosteriorKind) -> VaeConfig {
    let mut cfg = VaeConfig::reference(VaeDatasetName::Caltech101, "unused", posterior);
    cfg.model.latent_dim = 2;
    cfg.model.architecture = VaeArchitecture {
        channels: 2,
        feature_dim: 4,
        head_channels: 2,
    };
    (cfg.model.blocks, cfg.model.width, cfg.model.depth) = (1, 4, 2);
    (cfg.train.epochs, cfg.train.batch_size) = (1, 2);
    (cfg.eval.is_samples, cfg.eval.is_chunk) = (4, 4);
    cfg
}

fn run_error(cfg: &VaeConfig, data: &VaeData, out: &std::path::Path) -> String {
    match run_vae_on(cfg, data, out, &VaeRunOptions::default()) {
        Ok(r) => panic!("the run went through: validation curve {:?}", r.val_curve),
        Err(e) => e.to_string(),
    }
}

/// Data built in memory that the run cannot use are refused before anything is written,
/// naming the split: an empty validation split (it was scored as a −ELBO of 0 every
/// epoch), an empty test split (refused only after training), grey levels in static binary
/// data (read as Bernoulli targets of up to 255: finite, meaningless scores), a pixel count
/// that does not match `n · H · W` (a bare candle shape error) and dynamic binarisation of
/// categorical data (refused at the first batch).
#[test]
fn malformed_vae_data_are_refused_before_training() {
    let dir = tmpdir("vae-data");
    let cfg = vae_config(PosteriorKind::Gaussian);
    let empty = || VaeImages {
        n: 0,
        pixels: vec![],
    };
    type Edit = Box<dyn Fn(&mut VaeData)>;
    let cases: Vec<(&str, Edit, &[&str])> = vec![
        (
            "empty-val",
            Box::new(move |d| d.val = empty()),
            &["validation split has no images"],
        ),
        (
            "empty-test",
            Box::new(move |d| d.test = empty()),
            &["test split has no images"],
        ),
        (
            "grey",
            Box::new(|d| d.train.pixels[784 + 3] = 200),
            &["image 1 of the training split", "value 200", "0/1"],
        ),
        (
            "short",
            Box::new(|d| {
                d.val.pixels.pop();
            }),
            &["validation split holds 1567 pixels", "need 1568"],
        ),
        (
            "dynamic-categorical",
            Box::new(|d| {
                d.likelihood = VaeLikelihood::Categorical256;
                d.dynamic_binarization = true;
            }),
            &["dynamic binarisation", "Bernoulli"],
        ),
    ];
    for (tag, edit, wanted) in cases {
        let mut data = vae_data();
        edit(&mut data);
        let out = dir.join(tag);
        let e = run_error(&cfg, &data, &out);
        for w in wanted {
            assert!(e.contains(w), "{tag}: {e}");
        }
        assert!(!out.exists(), "{tag}: the run wrote {}", out.display());
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A run directory is read back as the model of `config.data.dataset`: data of another
/// likelihood or image size trained a model that `load_vae` then refused (Frey's categorical
/// head has 256 channels, Caltech's Bernoulli one 1).
#[test]
fn vae_data_of_another_dataset_than_the_configuration_are_refused() {
    let dir = tmpdir("vae-other-dataset");
    let mut cfg = vae_config(PosteriorKind::Gaussian);
    cfg.data.dataset = VaeDatasetName::FreyFaces;
    let e = run_error(&cfg, &vae_data(), &dir);
    assert!(
        e.contains("28×28") && e.contains("frey-faces has 28×20"),
        "{e}"
    );
    assert!(!dir.exists());
    // The consistent configuration trains, and its run loads back.
    cfg.data.dataset = VaeDatasetName::Caltech101;
    run_vae_on(&cfg, &vae_data(), &dir, &VaeRunOptions::default()).unwrap();
    let (vae, _) = load_vae(&dir, &Device::Cpu).unwrap();
    assert_eq!(vae.image_hw(), (28, 28));
    std::fs::remove_dir_all(&dir).ok();
}

/// Batches of one image: the data-dependent initialisation of the CP-Flow posterior (its
/// PICNN ActNorm, and with latent_dim 1 its scalar ActNorm too) needs two distinct points,
/// and the run initialised from its first training batch, so `batch_size = 1` always failed
/// ("the batch has 1 row(s)"). It now initialises from the first two images and trains;
/// importance sampling with K = 1 gives a finite estimate.
#[test]
fn a_cpflow_vae_trains_with_batches_of_one_image() {
    let dir = tmpdir("vae-batch-1");
    for latent in [1, 2] {
        let mut cfg = vae_config(PosteriorKind::CpFlow);
        cfg.model.latent_dim = latent;
        cfg.train.batch_size = 1;
        (cfg.eval.is_samples, cfg.eval.is_chunk) = (1, 1);
        let out = dir.join(format!("z{latent}"));
        let r = run_vae_on(&cfg, &vae_data(), &out, &VaeRunOptions::default())
            .unwrap_or_else(|e| panic!("latent_dim {latent}: {e}"));
        assert!(r.best_val_neg_elbo.is_finite() && r.best_val_neg_elbo > 0.0);
        let is = r.test_is_nll.unwrap();
        assert!(is.mean.is_finite() && is.n == 2, "{is:?}");
        // K = 1: every image's estimate is one sample, with no standard error of its own, so
        // the Monte-Carlo error of the estimate cannot be estimated (it was reported as 0).
        assert_eq!(r.test_is_mc_std_err, None);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `VaeConfig::validate` names the architecture's fields and refuses a model over the size
/// limit before the data load (both were refused only by `Vae::new`, after loading the data:
/// minutes for MNIST), refuses `eval.is_images = 0` (a report with a NaN importance-sampled
/// NLL), and its messages give the value they refuse; `score_vae_test` refuses 0 images.
#[test]
fn vae_configuration_is_checked_by_key_before_the_data_load() {
    type Edit = Box<dyn Fn(&mut VaeConfig)>;
    let cases: Vec<(Edit, &[&str])> = vec![
        (
            Box::new(|c| c.model.architecture.channels = 0),
            &["model.architecture.channels"],
        ),
        (
            Box::new(|c| c.model.architecture.head_channels = 0),
            &["model.architecture.head_channels"],
        ),
        (
            Box::new(|c| c.model.architecture.channels = 1 << 40),
            &["at most 4294967296"],
        ),
        (
            Box::new(|c| c.eval.is_images = Some(0)),
            &["eval.is_images"],
        ),
        (
            Box::new(|c| c.train.max_beta = f64::NAN),
            &["train.max_beta", "got NaN"],
        ),
        (
            Box::new(|c| c.train.max_minutes = Some(-1.0)),
            &["train.max_minutes", "got -1"],
        ),
    ];
    for (edit, wanted) in cases {
        let mut c = vae_config(PosteriorKind::CpFlow);
        c.validate().unwrap();
        edit(&mut c);
        let e = c.validate().unwrap_err().to_string();
        for w in wanted {
            assert!(e.contains(w), "{w}: {e}");
        }
    }
    let cfg = vae_config(PosteriorKind::Gaussian);
    let out = tmpdir("vae-score-0");
    run_vae_on(&cfg, &vae_data(), &out, &VaeRunOptions::default()).unwrap();
    let (vae, _) = load_vae(&out, &Device::Cpu).unwrap();
    for (images, is_images) in [(Some(0), None), (None, Some(0))] {
        let params = VaeTestParams {
            images,
            is_images,
            ..VaeTestParams::of_run(&cfg)
        };
        let r = score_vae_test(&vae, &vae_data(), &params, |_| Ok(()));
        let e = r.map(|s| s.neg_elbo).unwrap_err().to_string();
        assert!(e.contains("at least 1 image"), "{e}");
    }
    std::fs::remove_dir_all(&out).ok();
}

/// A file given to the loader of another kind is refused naming what it is (a VAE
/// checkpoint was "not a cpflow checkpoint"), a checkpoint of another format version names
/// the file, and a VAE weights-only file resumed as a checkpoint names the file.
#[test]
fn files_of_another_kind_are_refused_naming_their_kind() {
    let dir = tmpdir("kinds");
    let cfg = vae_config(PosteriorKind::Gaussian);
    run_vae_on(
        &cfg,
        &vae_data(),
        &dir.join("vae"),
        &VaeRunOptions::default(),
    )
    .unwrap();
    let vae_ckpt = dir.join("vae/checkpoint.safetensors");
    let e = Trainer::resume(&vae_ckpt, &Device::Cpu, None)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is a VAE checkpoint") && e.contains("load_vae_file"),
        "{e}"
    );
    let e = Flow::load(&vae_ckpt, &Device::Cpu)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a VAE checkpoint"), "{e}");

    let flow = Flow::new(
        FlowConfig::tabular(2, 1, icnn3(2, 4, 2)).with_float(FloatType::F64),
        &Device::Cpu,
    )
    .unwrap();
    let tc = TrainConfig {
        batch_size: 8,
        max_iterations: 2,
        val_every: 0,
        train_slq_every: 0,
        ..Default::default()
    };
    let opts = RunOptions {
        out_dir: Some(dir.join("flow")),
        ..Default::default()
    };
    let mut t = Trainer::new(flow, tc).unwrap().with_options(opts);
    t.fit(&Dataset::new(data(16, 2, 1)), None).unwrap();
    let flow_ckpt = dir.join("flow/checkpoint.safetensors");
    let e = load_vae_file(&flow_ckpt, &Device::Cpu)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is a flow checkpoint") && e.contains("not a VAE file"),
        "{e}"
    );
    // The image-flow loader names the kinds too.
    for (file, kind) in [
        (&flow_ckpt, "is a flow checkpoint"),
        (&vae_ckpt, "is a VAE checkpoint"),
    ] {
        let e = cpflow::image::ImageFlow::load(file, &Device::Cpu)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(kind) && e.contains("not an image-flow file"),
            "{e}"
        );
    }

    let mut ck = cpflow::load_checkpoint(&flow_ckpt, &Device::Cpu).unwrap();
    ck.meta.format_version += 6;
    let v7 = dir.join("flow/v7.safetensors");
    cpflow::checkpoint::save_checkpoint(&v7, &ck.meta, ck.tensors.into_iter().collect()).unwrap();
    let e = Trainer::resume(&v7, &Device::Cpu, None)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("v7.safetensors") && e.contains("format 7"),
        "{e}"
    );

    std::fs::copy(dir.join("vae/best.safetensors"), &vae_ckpt).unwrap();
    let resume = VaeRunOptions {
        resume: true,
        ..Default::default()
    };
    let e = run_vae_on(&cfg, &vae_data(), &dir.join("vae"), &resume)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("checkpoint.safetensors") && e.contains("weights-only"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Resume after 5 steps ends where the uninterrupted run ends, bit for bit, for f32 weights,
/// the exact-NLL objective and a conditional (PICNN) flow, with the plateau schedule, SLQ
/// validation, clipping, train-SLQ records, `restore_best` and early stopping all active
/// (the existing resume tests are f64, unconditional, surrogate objective).
#[test]
fn resume_is_bit_for_bit_for_f32_exact_and_conditional_flows() {
    let dir = tmpdir("resume-variants");
    let config = |objective: Objective| TrainConfig {
        batch_size: 16,
        max_iterations: 40,
        lr_schedule: LrSchedule::Plateau,
        adam: AdamParams {
            lr: 2e-2,
            ..Default::default()
        },
        objective,
        val_every: 2,
        val_estimator: NllEstimator::Slq(SlqConfig {
            probes: 2,
            steps: 3,
        }),
        early_stopping: Some(2),
        train_slq_every: 3,
        log_every: 1,
        restore_best: true,
        clip_grad_norm: Some(1.0),
        seed: 11,
        ..TrainConfig::default()
    };
    for (tag, float, objective, conditional) in [
        ("f32", FloatType::F32, Objective::CgSurrogate, false),
        ("exact", FloatType::F64, Objective::ExactNll, false),
        ("conditional", FloatType::F64, Objective::CgSurrogate, true),
    ] {
        let pot = if conditional {
            PotentialConfig::Picnn(icnn::PicnnConfig {
                dim: 2,
                context_dim: 1,
                width: 6,
                depth: 2,
                ..Default::default()
            })
        } else {
            icnn3(2, 6, 2)
        };
        let fc = FlowConfig::tabular(2, 2, pot)
            .with_float(float)
            .with_init_seed(4);
        let (x, vx) = (data(56, 2, 3), data(20, 2, 5));
        let (train, val) = if conditional {
            let (c, vc) = (data(56, 1, 4), data(20, 1, 6));
            (Dataset::with_context(x, c), Dataset::with_context(vx, vc))
        } else {
            (Dataset::new(x), Dataset::new(vx))
        };
        let cfg = config(objective);
        let new_trainer =
            || Trainer::new(Flow::new(fc.clone(), &Device::Cpu).unwrap(), cfg.clone());
        let mut straight = new_trainer().unwrap();
        let rep = straight.fit(&train, Some(&val)).unwrap();
        let opts = RunOptions {
            out_dir: Some(dir.join(tag)),
            ..Default::default()
        };
        let mut first = new_trainer().unwrap().with_options(opts.clone());
        assert_eq!(
            first.fit_steps(&train, Some(&val), 5).unwrap().iterations,
            5
        );
        drop(first);
        let ck = dir.join(tag).join("checkpoint.safetensors");
        let mut resumed = Trainer::resume(&ck, &Device::Cpu, None)
            .unwrap()
            .with_options(opts);
        let rep2 = resumed.fit(&train, Some(&val)).unwrap();
        assert_eq!(
            (
                rep2.iterations,
                rep2.stop_reason,
                rep2.best_val_nll,
                rep2.best_iteration
            ),
            (
                rep.iterations,
                rep.stop_reason,
                rep.best_val_nll,
                rep.best_iteration
            ),
            "{tag}"
        );
        let (a, b) = (
            straight.flow().weight_tensors(),
            resumed.flow().weight_tensors(),
        );
        for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
            assert_eq!(ka, kb);
            let (ta, tb) = (
                ta.to_dtype(DType::F64).unwrap(),
                tb.to_dtype(DType::F64).unwrap(),
            );
            assert_eq!(max_abs_diff(&ta, &tb), 0.0, "{tag}: {ka}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
