//! convex-opt's integration tests, one module per topic, built as one test binary: every
//! test binary links candle and faer and instantiates the library's generics again, which
//! made the many small binaries a large part of CI's cold build (krylov's five took 65 s of
//! compile time on 2 cores, as one 15 s). One topic:
//! `cargo test -p convex-opt --test integration <module>::`.

/// Before `main`, while this process has one thread (so writing the environment is sound):
/// candle's thread count, set once, instead of re-counted at every CPU matrix product
/// (`icnn::export_candle_thread_count`).
#[ctor::ctor]
unsafe fn candle_thread_count_before_main() {
    // SAFETY: constructors run before `main`, before the test harness starts any thread.
    unsafe { icnn::export_candle_thread_count() };
}

mod closed_form;
mod common;

mod below_resolution;
mod flat_lbfgs_best_iterate;
mod flat_lbfgs_large_gradient;
mod flat_lbfgs_trial_points;
mod icnn_potentials;
mod input_checks;
mod lbfgs_rounding_floor;
mod line_search_fallback;
mod more_thuente_stall;
mod newton_cg_c1;
mod output_dtype;
mod params;
mod per_row_data;
mod prop_batching;
mod prop_icnn;
mod prop_inverse;
mod quadratic;
mod termination;
mod trial_point_stop;
