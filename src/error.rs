//! The one error type of the engine, and its one crossing into Python.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the engine. Each variant names where the bad input came from,
/// so the message alone tells the user what to fix.
#[derive(Debug)]
pub enum Error {
    /// A bad value given by the user: an option, a config key or a marker argument.
    /// `origin` says where it came from (`--memcheck-floor`, `pyproject.toml [tool.memcheck] floor`).
    Usage { origin: String, message: String },
    /// A TOML file (config or baseline) that cannot be read as what it should be.
    File {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// An I/O failure while reading or writing `path`.
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// The meter cannot measure now (nested measurement, allocator replaced by someone else…).
    Meter(String),
    /// A write the boundary refused (`src/boundary.rs`): `rule` names the rule it broke,
    /// `path` what was asked for, `message` where it came from and where it would have led.
    Refused {
        rule: &'static str,
        path: PathBuf,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn usage(origin: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Usage {
            origin: origin.into(),
            message: message.into(),
        }
    }

    /// An error at byte `offset` of `text`, read from `path`: line and column are 1-based,
    /// columns counted in characters as editors do.
    pub fn at_offset(
        path: impl Into<PathBuf>,
        text: &str,
        offset: usize,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_column(text, offset);
        Error::File {
            path: path.into(),
            line,
            column,
            message: message.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            action,
            source,
        }
    }
}

/// 1-based (line, column) of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage { origin, message } => write!(f, "{origin}: {message}"),
            Error::File {
                path,
                line,
                column,
                message,
            } => write!(f, "{}:{line}:{column}: {message}", path.display()),
            Error::Io {
                path,
                action,
                source,
            } => {
                // "Read-only file system (os error 30)": the number says nothing to a user.
                let text = source.to_string();
                let plain = match text.rfind(" (os error ") {
                    Some(i) if text.ends_with(')') => &text[..i],
                    _ => &text,
                };
                write!(f, "cannot {action} {}: {plain}", path.display())
            }
            Error::Meter(message) => write!(f, "{message}"),
            Error::Refused {
                rule,
                path,
                message,
            } => write!(f, "{message} (refused by rule {rule}: {})", path.display()),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(feature = "python")]
mod python {
    use super::Error;
    use pyo3::create_exception;
    use pyo3::exceptions::PyException;
    use pyo3::PyErr;

    create_exception!(
        _engine,
        MemcheckError,
        PyException,
        "Base class of the engine's errors."
    );
    create_exception!(
        _engine,
        UsageError,
        MemcheckError,
        "A bad option, config value or marker argument."
    );
    create_exception!(
        _engine,
        FileFormatError,
        MemcheckError,
        "A config or baseline file that cannot be read (the message names file:line:column)."
    );
    create_exception!(
        _engine,
        MeterError,
        MemcheckError,
        "The meter cannot measure now."
    );

    /// The one place where engine errors become Python exceptions.
    impl From<Error> for PyErr {
        fn from(err: Error) -> PyErr {
            // Messages carry node ids, paths and values from files: shown in a terminal.
            let message = crate::escape::terminal_text(&err.to_string());
            match err {
                Error::Usage { .. } | Error::Refused { .. } => UsageError::new_err(message),
                Error::File { .. } => FileFormatError::new_err(message),
                Error::Io { .. } => pyo3::exceptions::PyOSError::new_err(message),
                Error::Meter(_) => MeterError::new_err(message),
            }
        }
    }
}

#[cfg(feature = "python")]
pub use python::{FileFormatError, MemcheckError, MeterError, UsageError};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_without_the_os_error_number() {
        let e = Error::io(
            PathBuf::from("/b/t.toml"),
            "write",
            io::Error::from_raw_os_error(30),
        );
        assert_eq!(
            e.to_string(),
            "cannot write /b/t.toml: Read-only file system"
        );
    }

    #[test]
    fn line_column_counts_from_one() {
        let text = "a = 1\nbé = x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'x' is after a two-byte character: column counts characters.
        assert_eq!(line_column(text, text.find('x').unwrap()), (2, 6));
        assert_eq!(line_column(text, 10_000), (3, 1));
    }

    #[test]
    fn messages_name_their_origin() {
        let e = Error::usage("--memcheck-floor", "bad size 'x'");
        assert_eq!(e.to_string(), "--memcheck-floor: bad size 'x'");
        let e = Error::at_offset("b.toml", "a\nbc", 3, "oops");
        assert_eq!(e.to_string(), "b.toml:2:2: oops");
    }
}
