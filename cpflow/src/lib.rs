//! Convex Potential Flows (Huang, Tsirigotis, Chen, Courville, ICLR 2021).

pub mod actnorm;
pub mod adam;
pub mod config;
pub mod error;
pub mod prior;
pub mod rng;

pub mod datasets;
pub mod ot;
pub mod plot;
pub mod toy;

pub use error::{CpflowError, Result};
