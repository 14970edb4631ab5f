//! `cpflow train` of an image flow.

use anyhow::{Context, Result, bail};

use super::train::overrides;
use crate::cli::TrainArgs;
use crate::cli::divergence::{image_remedies, split_divergence};
use crate::cli::interrupt::Interrupt;
use crate::cli::memory::{
    IMAGE_STEP_WEIGHT_COPIES, check_training_memory, image_training_memory, memory_limit,
};
use crate::cli::resume_check::{check_image_epochs, check_image_resume};
use crate::cli::run_config::{Overrides, resolve_image, with_root_beside_config};
use crate::cli::run_dir::{
    TRAIN_RUN, absolute, check_config_dir_is_out, check_new_run_of, take_run_dir, write_config,
};
use crate::cli::shell_words::resume_command;

/// `cpflow train` on an image config (`[data] dataset = "mnist" | "cifar10"`): the image
/// trainer of `crate::image::train`. Writes `config.toml`, `checkpoint.safetensors`,
/// `model.safetensors` (EMA weights), `metrics.jsonl` and `report.json` under `--out`
/// (default `runs/<dataset>`).
pub(super) fn train_image(a: TrainArgs) -> Result<()> {
    use crate::image::{ImageRunOptions, load_image_data, run_image_training};
    let file = a.config.as_deref().context("an image run needs --config")?;
    let ov = Overrides {
        device: None,
        out: None,
        ..overrides(&a)
    };
    let cfg = resolve_image(file, &ov)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("runs").join(cfg.data.dataset.name()));
    // A run's own config.toml without --out: the run goes to runs/<dataset>, which must be
    // that run's directory.
    check_config_dir_is_out(
        Some(file),
        a.out.is_some(),
        &out,
        "an image run's default without --out",
        a.resume,
    )?;
    // As for the other runs: checks first, then the data, then config.toml (absolute root).
    let mut saved = cfg.clone();
    saved.data.root = absolute(&saved.data.root)?;
    let resumed = if a.resume {
        Some(check_image_resume(&saved, &out)?)
    } else {
        check_new_run_of(&out, crate::cli::run_kind::RunKind::Image, a.overwrite)?;
        None
    };
    // What the image trainer would refuse at its start, before the run directory changes.
    let device = crate::cli::device(a.dev.device.as_deref())?;
    let data = load_image_data(&cfg.data)
        .map_err(|e| with_root_beside_config(e.into(), file, &cfg.data.root))?;
    if let Some(state) = &resumed {
        // Before config.toml takes the new data.root: a refused resume leaves the run as it was.
        state
            .check_training_images(data.train.len())
            .with_context(|| {
                format!(
                    "--resume of the run in {} on the images of data.root = {}",
                    out.display(),
                    saved.data.root.display()
                )
            })?;
        check_image_epochs(cfg.train.epochs, state, data.train.len(), &out)?;
    }
    let flow = cfg.flow_config()?;
    if data.shape() != flow.image {
        bail!(
            "the images of `{}` are {:?}, the model is configured for {:?}",
            cfg.data.dataset.name(),
            data.shape(),
            flow.image
        );
    }
    if let Some(n) = flow.parameter_count()? {
        let dtype = flow.float.dtype();
        let batch = cfg.train.batch_size.min(data.train.len());
        check_training_memory(
            "the image flow",
            &[(n, dtype)],
            IMAGE_STEP_WEIGHT_COPIES,
            image_training_memory(flow.total_hidden_units(), batch, dtype),
            &device,
            memory_limit(),
            "model.nblocks, model.width, model.depth or train.batch_size",
        )?;
    }
    // The network itself (widths, depths, kernel sizes are checked where it is built): a
    // throw-away copy, so that a refused value cannot cost the run `--overwrite` replaces.
    drop(crate::image::ImageFlow::new(flow.clone(), &device)?);
    let first = cfg.train.batch_size.min(data.train.len());
    if !a.resume && first < 2 {
        bail!(
            "the first training batch would have {first} image (train.batch_size = {}): the \
             flow initialises its ActNorm layers from it, which needs at least 2",
            cfg.train.batch_size
        );
    }
    let interrupt = Interrupt::install()?;
    let _lock = take_run_dir(&out, &TRAIN_RUN, a.overwrite)?;
    write_config(&out, &saved, a.resume)?;
    tracing::info!(
        dataset = cfg.data.dataset.name(),
        n_train = data.train.len(),
        n_val = data.val.len(),
        n_test = data.test.len(),
        cp_flow_blocks = flow.num_blocks(),
        baseline = cfg.model.baseline,
        out = %out.display(),
        "image run"
    );
    let opts = ImageRunOptions {
        out_dir: Some(out.clone()),
        resume: a.resume,
        progress_bar: !a.no_progress,
        interrupt: Some(interrupt.flag()),
        training_ended: Some(interrupt.training_ended()),
    };
    // A checkpoint, `metrics.jsonl` line, model or report that could not be written: where
    // the run is saved and how to continue it.
    let trained = match run_image_training(&flow, &cfg.train, &data, &device, &opts) {
        Err(e @ crate::CpflowError::CheckpointWrite { .. }) => {
            return Err(super::checkpoint_hint::with_checkpoint_hint(
                e, "train", &out,
            ));
        }
        r => r,
    };
    let trained = split_divergence(trained, || {
        image_remedies(
            cfg.train.adam.lr,
            cfg.train.warmup_iterations,
            cfg.train.clip_grad_norm,
        )
    })?;
    let r = Interrupt::with_resume_hint(trained, || resume_command("train", &out))?;
    let val = r.val_curve.last().map_or(String::new(), |p| {
        format!(
            "; validation bpd {}{} (SLQ, EMA)",
            super::score(p.val.bpd, 4),
            super::plus_minus(p.val.std_err, 4)
        )
    });
    let test = match &r.test {
        Some(t) if t.slq.images == 0 => "; no test images scored (train.test.images = 0)".into(),
        Some(t) => {
            let exact = t.exact.as_ref().map_or(String::new(), |e| {
                format!(
                    "; exact bpd on {} of them {} (SLQ − exact {}{})",
                    e.exact.images,
                    super::score(e.exact.bpd, 4),
                    super::signed_score(e.slq_minus_exact, 4),
                    super::plus_minus(e.slq_minus_exact_std_err, 4)
                )
            });
            format!(
                "; test bpd {}{} (SLQ, {} images){exact}",
                super::score(t.slq.bpd, 4),
                super::plus_minus(t.slq.std_err, 4),
                t.slq.images
            )
        }
        None => "; no test images".into(),
    };
    let unconverged = super::cg_unconverged_clause(
        r.cg_unconverged_steps,
        r.iterations,
        r.step_stats_since_iteration,
        "iteration",
    );
    println!(
        "trained {} parameters ({} CP-Flow blocks) for {} iterations ({:.2} epochs, {}) in {:.1} s of steps \
         ({:.3} s/step, CG {:.1} iterations){unconverged}{val}{test}; outputs in {}",
        r.parameters,
        r.cp_flow_blocks,
        r.iterations,
        r.epochs,
        r.stop_reason,
        r.train_time_s,
        r.mean_step_s,
        r.mean_cg_iterations,
        out.display()
    );
    Ok(())
}
