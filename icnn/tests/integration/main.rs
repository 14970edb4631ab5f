//! icnn's integration tests, one module per topic, built as one test binary (except
//! `autodiff_agreement`, which sets a process-wide switch of candle's and so stays a binary
//! of its own): every test binary links candle and faer and instantiates the library's
//! generics again, which made the many small binaries a large part of CI's cold build
//! (krylov's five took 65 s of compile time on 2 cores, as one 15 s). One topic:
//! `cargo test -p icnn --test integration <module>::`.

/// Before `main`, while this process has one thread (so writing the environment is sound):
/// candle's thread count, set once, instead of re-counted at every CPU matrix product
/// (`icnn::export_candle_thread_count`).
#[ctor::ctor]
unsafe fn candle_thread_count_before_main() {
    // SAFETY: constructors run before `main`, before the test harness starts any thread.
    unsafe { icnn::export_candle_thread_count() };
}

mod common;
mod conv_common;
mod host_check;
mod prop_networks;

mod actnorm_f32_offset;
mod actnorm_from_tensors;
mod actnorm_init;
mod api;
mod composed_activation;
mod concurrent_init;
mod conv_dense;
mod conv_derivatives;
mod conv_params;
mod custom_potential;
mod degenerate_sizes;
mod dtype_checks;
mod host_linearization;
mod host_linearization_conv;
mod host_weights;
mod input_derivatives;
mod layer_input;
mod layer_validation;
mod parameter_gradients;
mod prop_batch_invariance;
mod prop_derivatives;

/// The constructor above ran: candle's count is in the environment before any test starts
/// (a linker that dropped the constructor would leave it unset, and every product re-counting).
#[test]
fn candle_thread_count_is_set_before_main() {
    let n: usize = std::env::var(icnn::RAYON_NUM_THREADS)
        .expect("set before main")
        .parse()
        .expect("a count");
    assert!(n >= 1);
    assert_eq!(candle_core::utils::get_num_threads(), n);
}
