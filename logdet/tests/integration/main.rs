//! logdet's integration tests, one module per topic, built as one test binary: every
//! test binary links candle and faer and instantiates the library's generics again, which
//! made the many small binaries a large part of CI's cold build (krylov's five took 65 s of
//! compile time on 2 cores, as one 15 s). One topic:
//! `cargo test -p logdet --test integration <module>::`.

mod common;

mod candle_backend;
mod degenerate_inputs;
mod estimator_properties;
mod exact_and_slq;
mod exact_properties;
mod input_checks;
mod singular_floor;
mod slq_bias_counts;
mod surrogate;
