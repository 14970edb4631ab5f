//! krylov's integration tests, one module per topic, built as one test binary: every
//! test binary links candle and faer and instantiates the library's generics again, which
//! made the many small binaries a large part of CI's cold build (krylov's five took 65 s of
//! compile time on 2 cores, as one 15 s). One topic:
//! `cargo test -p krylov --test integration <module>::`.

mod common;

mod candle_backend;
mod cg_accuracy;
mod cg_behaviour;
mod cg_digest;
mod cg_f16_scale;
mod cg_host_syncs;
mod cg_overflow_scale;
mod cg_reporting;
mod cg_resolution;
mod cg_scale_invariance;
mod cg_underflow;
mod cg_underflow_plain;
mod input_checks;
mod lanczos;
mod proptests;
mod supplied_preconditioner;
