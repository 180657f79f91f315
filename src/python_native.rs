//! The Python boundary of the native diagnosis (`meter::native_sites`): two functions, listed
//! in `_engine.pyi`.

use pyo3::prelude::*;

use crate::error::Error;
use crate::meter::native_sites::{self, Caller};

/// A native site as Python gets it: frames (innermost first), the Python frames
/// (file, line, function; innermost first), retained bytes and blocks, bytes and blocks at the peak.
type Site = (Vec<String>, Vec<Caller>, u64, u64, u64, u64);

/// Open a native window that records the allocating stacks (the diagnosing run only).
#[pyfunction]
fn native_diagnosis_start() -> PyResult<()> {
    native_sites::start().map_err(|e| Error::Meter(e).into())
}

/// Close it: (native peak, native retained, sites by retained bytes then peak bytes, whether
/// stacks stopped being recorded when the run outlasted the budget).
#[pyfunction]
fn native_diagnosis_stop(py: Python<'_>) -> (u64, u64, Vec<Site>, bool) {
    let found = native_sites::stop(py);
    let sites = found
        .sites
        .into_iter()
        .map(|s| {
            (
                s.frames,
                s.python,
                s.retained,
                s.retained_blocks,
                s.peak,
                s.peak_blocks,
            )
        })
        .collect();
    (found.peak, found.retained, sites, found.past_budget)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(native_diagnosis_start, m)?)?;
    m.add_function(wrap_pyfunction!(native_diagnosis_stop, m)?)?;
    Ok(())
}
