//! Per-test rules from markers (`memcheck(...)`, pytest-memray's `limit_memory` and
//! `limit_leaks`), read as text and turned into the gate's `Rules` with the run's settings.

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::gate::{Rules, Tolerance, DEFAULT_NATIVE_TOLERANCE};
use crate::sizes::{parse_percent, parse_size};

/// Per-test settings from markers (`memcheck(...)`, `limit_memory`, `limit_leaks`), as text.
/// Python builds it as `pytest_memcheck._engine.MarkerRules` (keyword arguments, `python.rs`).
#[cfg_attr(
    feature = "python",
    pyo3::pyclass(frozen, module = "pytest_memcheck._engine")
)]
#[derive(Clone, Debug, Default)]
pub struct MarkerRules {
    pub peak: Option<String>,
    pub retained: Option<String>,
    /// Absolute limits of the native figures (`--memcheck-native`).
    pub native_peak: Option<String>,
    pub native_retained: Option<String>,
    pub tolerance: Option<String>,
    pub floor: Option<String>,
    pub gate_cycles: Option<bool>,
    /// False: retained is recorded but not compared with its baseline.
    pub gate_retained: Option<bool>,
    /// What the gate does with a metric recorded with a spread: `gate` (the default: judge it
    /// against the highest value recorded) or `skip` (record and report it, do not gate it).
    pub unstable: Option<String>,
    /// Where the values came from, for error messages (`memcheck marker of tests/t.py::test_a`).
    pub origin: String,
    /// Which marker set the peak / retained limit, for the failure message.
    pub peak_origin: &'static str,
    pub retained_origin: &'static str,
}

impl MarkerRules {
    /// The rules of a test without markers.
    pub fn unmarked() -> Self {
        MarkerRules {
            origin: "memcheck marker".into(),
            peak_origin: "the memcheck marker",
            retained_origin: "the memcheck marker",
            ..MarkerRules::default()
        }
    }

    /// Which marker set a limit, from its name as the plugin gives it.
    pub fn limit_origin(name: Option<&str>) -> &'static str {
        match name {
            Some("limit_memory") => "limit_memory",
            Some("limit_leaks") => "limit_leaks",
            _ => "the memcheck marker",
        }
    }

    /// The gate's rules for a test with these markers under `settings`; errors name the marker.
    pub fn rules(&self, settings: &Settings) -> Result<Rules> {
        let marks = self;
        let origin = |what: &str| format!("{} {what}=", marks.origin);
        let size = |v: &Option<String>, what: &str| -> Result<Option<u64>> {
            v.as_deref()
                .map(|t| parse_size(t, &origin(what)))
                .transpose()
        };
        let mut tolerance = settings.tolerance;
        // A marker's tolerance and floor hold for the native figures too.
        let mut native_tolerance = DEFAULT_NATIVE_TOLERANCE;
        if let Some(t) = &marks.tolerance {
            tolerance.relative = parse_percent(t, &origin("tolerance"))?;
            native_tolerance.relative = tolerance.relative;
        }
        if let Some(f) = size(&marks.floor, "floor")? {
            tolerance.floor = f;
            native_tolerance.floor = f;
        }
        Ok(Rules {
            tolerance: Some(tolerance),
            cycles_tolerance: Some(Tolerance {
                relative: Default::default(),
                floor: 0,
            }),
            native_tolerance: Some(native_tolerance),
            peak_limit: size(&marks.peak, "peak")?.map(|l| (l, marks.peak_origin)),
            retained_limit: size(&marks.retained, "retained")?.map(|l| (l, marks.retained_origin)),
            native_peak_limit: size(&marks.native_peak, "native_peak")?,
            native_retained_limit: size(&marks.native_retained, "native_retained")?,
            gate_cycles: marks.gate_cycles.unwrap_or(settings.gate_cycles),
            retained_ungated: marks.gate_retained == Some(false),
            unstable_ungated: match marks.unstable.as_deref() {
                None | Some("gate") => false,
                Some("skip") => true,
                Some(other) => {
                    return Err(Error::usage(
                        origin("unstable"),
                        format!("expected \"gate\" or \"skip\", got '{other}'"),
                    ))
                }
            },
            strict: settings.strict,
        })
    }
}
