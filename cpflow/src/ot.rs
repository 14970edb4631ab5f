//! Optimal-transport experiment helpers.
