//! pytest-memcheck's engine: an exact per-test memory meter, baseline files and the gate.
//! This file only declares the modules and the Python extension.

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
pub mod meter;
mod python;
mod python_native;
pub mod report;
pub mod results;
pub mod session;
pub mod sizes;
pub mod spread;

use pyo3::prelude::*;

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    python::register(m)?;
    python_native::register(m)
}
