//! pytest-memcheck's engine: an exact per-test memory meter, baseline files and the gate.
//! This file only declares the modules and the Python extension.
//!
//! The core (baselines, the gate, reports, the CLI's logic) is plain Rust and builds without
//! Python: `cargo test` runs it without libpython. The meter's window and the bindings
//! (`python.rs`) need the interpreter and come with the `python` feature, which maturin turns on.

pub mod baseline;
pub mod boundary;
pub mod cli;
pub mod config;
pub mod dump;
pub mod error;
pub mod escape;
#[cfg(test)]
mod fuzz;
pub mod gate;
pub mod git;
pub mod github;
pub mod markers;
pub mod meter;
#[cfg(feature = "python")]
mod python;
pub mod report;
pub mod results;
pub mod session;
pub mod sizes;
pub mod spread;
pub mod store;

#[cfg(feature = "python")]
#[pyo3::pymodule]
fn _engine(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    python::register(m)
}
