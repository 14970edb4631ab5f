//! cpflow's integration tests, one module per topic, built as one test binary: every
//! test binary links candle and faer and instantiates the library's generics again, which
//! made the many small binaries a large part of CI's cold build (krylov's five took 65 s of
//! compile time on 2 cores, as one 15 s). One topic:
//! `cargo test -p cpflow --test integration <module>::`.

/// Before `main`, while this process has one thread (so writing the environment is sound):
/// candle's thread count, set once, instead of re-counted at every CPU matrix product
/// (`icnn::export_candle_thread_count`).
#[ctor::ctor]
unsafe fn candle_thread_count_before_main() {
    // SAFETY: constructors run before `main`, before the test harness starts any thread.
    unsafe { icnn::export_candle_thread_count() };
}

#[cfg(feature = "cli")]
mod cli_common;
#[macro_use]
mod device_common;
mod flow_common;
mod image_common;
mod posterior_common;

mod actnorm_f32_offset;
mod block_potential_value;
mod checkpoint_header_digest;
mod checkpoint_header_edit;
mod checkpoint_header_files;
mod checkpoint_header_resume;
mod checkpoint_header_size;
mod checkpoint_header_tensors;
mod checkpoint_state_resume;
#[cfg(feature = "cli")]
mod cli_audit_messages;
#[cfg(feature = "cli")]
mod cli_config_forms;
#[cfg(feature = "cli")]
mod cli_custom_potential;
#[cfg(feature = "cli")]
mod cli_data_config_audit;
#[cfg(feature = "cli")]
mod cli_eval_image;
#[cfg(feature = "cli")]
mod cli_eval_scored_points;
#[cfg(feature = "cli")]
mod cli_f32_cg_tolerance;
#[cfg(feature = "cli")]
mod cli_final_validation_and_outputs;
#[cfg(feature = "cli")]
mod cli_help_texts;
#[cfg(feature = "cli")]
mod cli_image_cg_and_data;
#[cfg(feature = "cli")]
mod cli_image_cg_warning;
#[cfg(feature = "cli")]
mod cli_image_resume_limits;
#[cfg(feature = "cli")]
mod cli_import_reference;
#[cfg(feature = "cli")]
mod cli_killed_before_checkpoint;
#[cfg(feature = "cli")]
mod cli_memory_limit;
#[cfg(feature = "cli")]
mod cli_model_io;
#[cfg(feature = "cli")]
mod cli_ot;
#[cfg(feature = "cli")]
mod cli_overwrite_safety;
#[cfg(feature = "cli")]
mod cli_robust_outputs;
#[cfg(feature = "cli")]
mod cli_run_dir;
#[cfg(feature = "cli")]
mod cli_run_dir_temp_files;
#[cfg(feature = "cli")]
mod cli_run_dir_writers;
#[cfg(feature = "cli")]
mod cli_run_kind_messages;
#[cfg(feature = "cli")]
mod cli_run_readers;
#[cfg(feature = "cli")]
mod cli_sample_log_prob;
#[cfg(feature = "cli")]
mod cli_sample_stale_backup;
#[cfg(feature = "cli")]
mod cli_small_fixes;
#[cfg(feature = "cli")]
mod cli_smoke;
#[cfg(feature = "cli")]
mod cli_tabular;
#[cfg(feature = "cli")]
mod cli_thread_count;
#[cfg(feature = "cli")]
mod cli_toml_integer_limits;
#[cfg(feature = "cli")]
mod cli_train_log_write;
#[cfg(feature = "cli")]
mod cli_train_model_exact;
#[cfg(feature = "cli")]
mod cli_train_resume_stats;
#[cfg(all(feature = "cli", unix))]
mod cli_train_validation_interrupt;
#[cfg(feature = "cli")]
mod cli_train_validation_report;
#[cfg(feature = "cli")]
mod cli_user_data;
#[cfg(feature = "cli")]
mod cli_vae_checkpoint_write;
#[cfg(feature = "cli")]
mod cli_vae_checks;
#[cfg(feature = "cli")]
mod cli_vae_log_write;
#[cfg(feature = "cli")]
mod cli_vae_model;
#[cfg(feature = "cli")]
mod cli_vae_run_settings;
mod conditional_inverse;
mod custom_potential;
mod device_composed_path;
mod device_derivatives;
mod device_flow;
mod device_solvers;
mod device_training;
mod flow_core;
mod flow_edge_cases;
mod flow_final_validation;
mod flow_initialize_atomic;
mod flow_sample_given;
mod image_ema;
mod image_flow;
mod image_layers;
mod image_logit_saturation;
#[cfg(feature = "datasets")]
mod image_mnist;
mod image_resume;
mod image_resume_epochs;
mod image_sample_log_prob;
mod image_surrogate_loss;
mod image_train;
mod image_train_improves_bpd;
mod inverse_f32_resolution;
mod lib_audit_api;
#[cfg(feature = "vae")]
mod lib_audit_train;
mod non_finite_weights;
mod posterior_flow;
mod posterior_importance;
mod prop_flow;
mod prop_image_posterior;
mod reference_parity;
#[cfg(feature = "vae")]
mod reference_parity_vae;
#[cfg(feature = "vae")]
mod reference_parity_vae_is;
mod run_lifecycle;
mod slq_bias_counts;
mod surrogate_cg_attainable;
mod surrogate_preconditioner;
mod toy_reference;
mod training;
#[cfg(feature = "vae")]
mod vae_custom_posterior;
#[cfg(feature = "vae")]
mod vae_importance_one_sample;
