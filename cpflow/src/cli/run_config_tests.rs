//! Tests of `run_config.rs`: defaults, overrides, merging, the shipped configs.

use super::*;
use crate::LrSchedule;

#[test]
fn defaults_overrides_and_set_paths() {
    let cfg = resolve(None, &Overrides::default()).unwrap();
    assert_eq!(cfg, RunConfig::default());
    let ov = Overrides {
        set: vec![
            "model.width=8".into(),
            "train.lr_schedule=\"constant\"".into(),
        ],
        data: Some("moons".into()),
        iters: Some(7),
        lr: Some(0.01),
        dtype: Some(FloatType::F32),
        seed: Some(3),
        ..Default::default()
    };
    let cfg = resolve(None, &ov).unwrap();
    assert_eq!(cfg.model.width, 8);
    assert_eq!(cfg.train.lr_schedule, LrSchedule::Constant);
    assert_eq!(cfg.data.source, "moons");
    assert_eq!(cfg.train.max_iterations, 7);
    assert_eq!(cfg.train.adam.lr, 0.01);
    // Unset Adam fields keep the run defaults.
    assert_eq!(cfg.train.adam.beta2, 0.999);
    assert_eq!(cfg.model.float, FloatType::F32);
    assert_eq!(
        (cfg.data.seed, cfg.train.seed, cfg.model.init_seed),
        (3, 3, 3)
    );
    let bad = Overrides {
        set: vec!["model.nope=1".into()],
        ..Default::default()
    };
    assert!(resolve(None, &bad).is_err());
}

#[test]
fn image_configs_are_detected_and_resolved() {
    let dir = std::env::temp_dir().join(format!("cpflow-runcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("img.toml");
    std::fs::write(
        &img,
        "[data]\ndataset = \"mnist\"\nroot = \"data\"\n[train]\nmax_minutes = 1.0\n",
    )
    .unwrap();
    let toy = dir.join("toy.toml");
    std::fs::write(&toy, "[data]\nsource = \"moons\"\n").unwrap();
    assert!(is_image_config(Some(&img)).unwrap());
    assert!(!is_image_config(Some(&toy)).unwrap());
    assert!(!is_image_config(None).unwrap());
    let ov = Overrides {
        set: vec!["model.baseline=true".into()],
        iters: Some(5),
        seed: Some(2),
        ..Default::default()
    };
    let cfg = resolve_image(&img, &ov).unwrap();
    assert!(cfg.model.baseline);
    assert_eq!(cfg.train.max_iterations, Some(5));
    assert_eq!((cfg.train.seed, cfg.model.init_seed), (2, 2));
    let bad = Overrides {
        set: vec!["model.nope=1".into()],
        ..Default::default()
    };
    assert!(resolve_image(&img, &bad).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `configs/tabular.toml` is the reference `train_tabular.py` (cpflow-reference.md §4.1).
#[test]
fn tabular_config_is_the_reference_tabular_run() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/tabular.toml");
    let cfg = resolve(Some(&file), &Overrides::default()).unwrap();
    assert_eq!(
        (cfg.data.source.as_str(), cfg.data.root.as_path()),
        ("miniboone", Path::new("data"))
    );
    let m = &cfg.model;
    assert_eq!(
        (m.arch, m.blocks, m.width, m.depth),
        (Arch::Icnn2, 1, 64, 10)
    );
    assert_eq!(m.activation, ActivationKind::Softplus);
    assert!(!m.zero_shift && !m.symm_act_first);
    assert_eq!((m.layout, m.float), (Layout::Tabular, FloatType::F32));
    let t = &cfg.train;
    assert_eq!(
        (t.batch_size, t.val_every, t.early_stopping),
        (1024, 500, Some(20))
    );
    assert_eq!(t.lr_schedule, crate::LrSchedule::Plateau);
    assert_eq!(
        (t.adam.lr, t.adam.beta1, t.adam.beta2, t.adam.weight_decay),
        (1e-3, 0.9, 0.99, 1e-6)
    );
    assert_eq!((t.surrogate.cg_atol, t.surrogate.cg_rtol), (1e-3, 0.0));
    assert_eq!(
        t.val_estimator,
        crate::NllEstimator::Slq(crate::SlqConfig {
            probes: 1,
            steps: 10
        })
    );
    assert_eq!(t.clip_grad_norm, None);
    // One block between two ActNorms, trainable w0 (the tabular layout).
    assert_eq!(m.flow_config(43).unwrap().layers.len(), 3);
}

/// A schedule of another kind than the default `step` one replaces it (merged, the two
/// kinds made a table that no enum reads); the same kind is merged key by key.
#[test]
fn enum_tables_of_another_variant_replace_the_default() {
    let dir = std::env::temp_dir().join(format!("cpflow-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    let resolve_text = |text: &str| {
        std::fs::write(&file, text).unwrap();
        resolve(Some(&file), &Overrides::default())
    };
    let cfg = resolve_text("[train]\nlr_schedule = { cosine = { t_max = 100 } }\n").unwrap();
    assert_eq!(cfg.train.lr_schedule, LrSchedule::Cosine { t_max: 100 });
    let default = RunConfig::default().train.lr_schedule;
    let LrSchedule::Step { step_size, .. } = default else {
        panic!("the default schedule is {default:?}, this test expects a step schedule")
    };
    let cfg = resolve_text("[train.lr_schedule.step]\ngamma = 0.1\n").unwrap();
    assert_eq!(
        cfg.train.lr_schedule,
        LrSchedule::Step {
            step_size,
            gamma: 0.1
        }
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn layouts_build_valid_flows() {
    let mut m = ModelSection::default();
    let f = m.flow_config(2).unwrap();
    assert_eq!(f.layers.len(), 2);
    assert_eq!(f.prior.log_var, 2.0);
    m.blocks = 2;
    assert_eq!(m.flow_config(2).unwrap().layers.len(), 5);
    m.layout = Layout::Single;
    m.arch = Arch::Icnn2;
    let f = m.flow_config(3).unwrap();
    assert_eq!(f.layers.len(), 2);
    assert_eq!(f.prior.log_var, 0.0);
    m.blocks = 0;
    assert!(m.flow_config(2).is_err());
}

/// Every layout and architecture: the count checked before the layer list is built agrees
/// with the flow that is built (so the bound refuses exactly the flows it should), and an
/// absurd `blocks` or `depth` is refused at once, naming the size, instead of filling the
/// memory (`blocks = 10¹⁵` listed layers until it was killed; a depth near `usize::MAX`
/// panicked with "capacity overflow").
#[test]
fn layouts_are_counted_before_they_are_built() {
    let device = candle_core::Device::Cpu;
    for layout in [Layout::Toy, Layout::Tabular, Layout::Single] {
        for arch in [Arch::Icnn, Arch::Icnn2, Arch::Icnn3, Arch::DenseIcnn2] {
            for blocks in [1, 3] {
                let m = ModelSection {
                    layout,
                    arch,
                    blocks,
                    width: 6,
                    depth: 3,
                    ..Default::default()
                };
                let cfg = m.flow_config(3).unwrap();
                let built = crate::Flow::new(cfg.clone(), &device).unwrap();
                let what = format!("{layout:?} {arch:?} {blocks}");
                assert_eq!(
                    cfg.parameter_count(),
                    Some(built.num_parameters()),
                    "{what}"
                );
            }
            let huge = [
                ("blocks", usize::MAX / 4, 3),
                ("blocks", 1_000_000_000_000_000, 3),
                ("depth", 1, 100_000_000),
                ("depth", 1, usize::MAX),
            ];
            for (field, blocks, depth) in huge {
                let m = ModelSection {
                    layout,
                    arch,
                    blocks,
                    depth,
                    ..Default::default()
                };
                let err = m.flow_config(2).unwrap_err().to_string();
                assert!(
                    err.contains("a model may have at most"),
                    "{layout:?} {arch:?} {field}: {err}"
                );
            }
        }
    }
}

/// `--dtype` is checked as the flag, by clap (the config's error named `model.float`), for
/// a tabular/toy and an image config alike; a bad `model.float` in a config is named by its
/// key. Too many scales for the dataset's images name `model.nblocks`, the most it takes and
/// the dataset (the layer chain's error named a squeeze layer by index).
#[test]
fn dtype_flag_and_scales_are_named_by_their_keys() {
    let dir = std::env::temp_dir().join(format!("cpflow-runcfg-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("img.toml");
    std::fs::write(
        &img,
        "[data]\ndataset = \"mnist\"\nroot = \"data\"\n[train]\nmax_minutes = 1.0\n",
    )
    .unwrap();
    use clap::Parser;
    let img_arg = img.to_str().unwrap();
    for line in [
        &["cpflow", "train", "--dtype", "f16"][..],
        &["cpflow", "train", "--config", img_arg, "--dtype", "f16"][..],
    ] {
        let e = crate::cli::Cli::try_parse_from(line)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--dtype") && e.contains("'f16'") && e.contains("f32, f64"),
            "{e}"
        );
        assert!(!e.contains("model.float"), "{e}");
    }
    let float = Overrides {
        set: vec!["model.float=\"f16\"".into()],
        ..Default::default()
    };
    for e in [
        resolve(None, &float).unwrap_err(),
        resolve_image(&img, &float).unwrap_err(),
    ] {
        let e = format!("{e:#}");
        assert!(e.contains("model.float") && e.contains("f16"), "{e}");
    }
    let scales = |nblocks: &str| Overrides {
        set: vec![format!("model.nblocks={nblocks}")],
        ..Default::default()
    };
    assert!(resolve_image(&img, &scales("[1, 1, 1]")).is_ok());
    let e = format!(
        "{:#}",
        resolve_image(&img, &scales("[1, 1, 1, 1]")).unwrap_err()
    );
    assert!(
        e.contains("model.nblocks = [1, 1, 1, 1] has 4 scales")
            && e.contains("1×28×28 images of mnist")
            && e.contains("allow at most 3")
            && e.contains("28×28 → 14×14 → 7×7")
            && e.contains("e.g. model.nblocks = [1, 1, 1]"),
        "{e}"
    );
    // Said once: the library's check, not a second one in the CLI.
    assert_eq!(e.matches("has 4 scales").count(), 1, "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
