//! Sizes (`123`, `64 KiB`, `1.5MB`, `2 GiB`) and percentages (`5%`), parsed exactly.
//!
//! KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024, as in the SI and IEC
//! standards. Values are computed with integer arithmetic so `1.5 MiB` is exactly 1572864.

use std::fmt;

use crate::error::{Error, Result};

const UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

/// A non-negative decimal number split into integer digits and fraction digits, exact.
struct Decimal {
    digits: u128,
    scale: u32,
}

fn parse_decimal(text: &str) -> std::result::Result<Decimal, String> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() && frac.is_empty() {
        return Err("a number is missing".into());
    }
    if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return Err(format!("'{text}' is not a non-negative number"));
    }
    if int.len() + frac.len() > 30 {
        return Err("the number is too large".into());
    }
    let digits: u128 = format!("{int}{frac}").parse().map_err(|_| "not a number")?;
    Ok(Decimal {
        digits,
        scale: frac.len() as u32,
    })
}

/// Parse a size in bytes. `origin` names where the text came from, for the error message.
pub fn parse_size(text: &str, origin: &str) -> Result<u64> {
    let bad = |why: String| {
        Error::usage(
            origin,
            format!("invalid size '{text}': {why} (write e.g. 123, 64 KiB, 1.5MB, 2 GiB)"),
        )
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty".into()));
    }
    if trimmed.starts_with('-') {
        return Err(bad("sizes cannot be negative".into()));
    }
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim();
    let multiplier = if unit.is_empty() {
        1
    } else {
        let lower = unit.to_ascii_lowercase();
        match UNITS.iter().find(|(name, _)| *name == lower) {
            Some((_, m)) => *m,
            None => return Err(bad(format!("unknown unit '{unit}'"))),
        }
    };
    let decimal = parse_decimal(number).map_err(bad)?;
    // A fraction of a byte is no size: `peak=1.5` (a number in a marker) most likely means a
    // unit was forgotten, and rounding it to 2 B would be a limit nobody meant.
    if multiplier == 1 && decimal.digits % 10u128.pow(decimal.scale) != 0 {
        return Err(bad(format!(
            "a number without a unit is bytes, and a fraction of a byte is no size; add the unit you mean, e.g. '{number} MiB'"
        )));
    }
    let scaled = decimal
        .digits
        .checked_mul(multiplier as u128)
        .ok_or_else(|| bad("it is too large".into()))?;
    let divisor = 10u128.pow(decimal.scale);
    // Round half up: "1.3 KiB" is 1331.2 bytes, a limit of 1331 bytes. Quotient and remainder:
    // `scaled + divisor / 2` could wrap for 30-digit numbers near u128::MAX.
    let (whole, rest) = (scaled / divisor, scaled % divisor);
    let bytes = whole + u128::from(rest >= divisor - rest);
    u64::try_from(bytes).map_err(|_| bad("it is too large".into()))
}

/// A relative tolerance, stored in parts per million so limits are exact integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Percent {
    pub ppm: u64,
}

impl Percent {
    pub const fn from_percent(p: u64) -> Self {
        Percent { ppm: p * 10_000 }
    }

    /// `value × this percentage`, rounded down.
    pub fn of(self, value: u64) -> u64 {
        ((value as u128 * self.ppm as u128) / 1_000_000) as u64
    }
}

/// Parse `5%`, `5 %`, `0.5%` or a bare `5` (read as percent); a bare fraction (`0.1`) is
/// refused as ambiguous.
pub fn parse_percent(text: &str, origin: &str) -> Result<Percent> {
    let bad = |why: String| {
        Error::usage(
            origin,
            format!("invalid percentage '{text}': {why} (write e.g. 10%, 2.5%)"),
        )
    };
    let trimmed = text.trim();
    let number = trimmed.strip_suffix('%').unwrap_or(trimmed).trim();
    if number.starts_with('-') {
        return Err(bad("it cannot be negative".into()));
    }
    let decimal = parse_decimal(number).map_err(bad)?;
    // A bare fraction is most likely meant as one (0.1 for ten percent), but a bare number is
    // read as percent: 0.1 would be a hundred times tighter than meant. The % sign says which.
    if !trimmed.ends_with('%') && decimal.digits > 0 && decimal.digits < 10u128.pow(decimal.scale) {
        return Err(Error::usage(
            origin,
            format!(
                "invalid percentage '{text}': ambiguous, a bare number is read as percent so it would mean {number}%; write {} for a fraction of {number}, or {number}% if you mean it",
                Percent { ppm: (decimal.digits * 1_000_000 / 10u128.pow(decimal.scale)) as u64 }
            ),
        ));
    }
    if decimal.scale > 4 {
        return Err(bad("at most 4 decimals".into()));
    }
    let ppm = decimal.digits * 10_000 / 10u128.pow(decimal.scale);
    if ppm > 100_000_000 {
        return Err(bad("at most 10000%".into()));
    }
    Ok(Percent { ppm: ppm as u64 })
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.ppm / 10_000;
        let frac = self.ppm % 10_000;
        if frac == 0 {
            write!(f, "{whole}%")
        } else {
            let s = format!("{frac:04}");
            write!(f, "{whole}.{}%", s.trim_end_matches('0'))
        }
    }
}

/// Human-readable binary size: `512 B`, `64.0 KiB`, `1.50 MiB`.
pub fn format_size(bytes: u64) -> String {
    const NAMES: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < NAMES.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$} {}", NAMES[unit])
}

/// A signed difference as a size: `+1.50 MiB`, `-512 B`.
pub fn format_delta(delta: i128) -> String {
    let sign = if delta < 0 { "-" } else { "+" };
    format!(
        "{sign}{}",
        format_size(delta.unsigned_abs().min(u64::MAX as u128) as u64)
    )
}

/// The change from `base` to `now`, the one form every report uses: `+1.00 MiB +100.0%` (no
/// percentage from zero).
pub fn format_change(now: u64, base: u64) -> String {
    let delta = format_delta(now as i128 - base as i128);
    match relative_change(now, base) {
        Some(relative) => format!("{delta} {relative}"),
        None => delta,
    }
}

/// `now` relative to `base`: `+13.4%`, `-50.0%`, or from ten times on a factor (`×1627`), which
/// reads better than `+162600.0%` over a near-empty baseline. None from zero.
pub fn relative_change(now: u64, base: u64) -> Option<String> {
    if base == 0 {
        return None;
    }
    let ratio = now as f64 / base as f64;
    Some(if ratio >= 10.0 {
        format!("×{ratio:.0}")
    } else {
        format!("{:+.1}%", (now as f64 - base as f64) * 100.0 / base as f64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_change_is_a_percentage_below_ten_times_and_a_factor_from_there() {
        assert_eq!(format_change(2048, 1024), "+1.00 KiB +100.0%");
        assert_eq!(format_change(512, 1024), "-512 B -50.0%");
        assert_eq!(format_change(10239, 1024), "+9.00 KiB +899.9%");
        assert_eq!(format_change(10240, 1024), "+9.00 KiB ×10");
        assert_eq!(format_change(2_000_233, 1229), "+1.91 MiB ×1628");
        assert_eq!(format_change(100, 0), "+100 B");
    }

    #[test]
    fn sizes_in_every_unit() {
        let cases = [
            ("123", 123),
            ("0", 0),
            ("0 B", 0),
            ("64 KiB", 65_536),
            ("64KiB", 65_536),
            ("1.5MB", 1_500_000),
            ("1.5 MiB", 1_572_864),
            ("2 GiB", 2_147_483_648),
            ("2 gib", 2_147_483_648),
            ("1 kb", 1000),
            ("24 MB", 24_000_000),
            (" 7 B ", 7),
            ("1.3 KiB", 1331),
            ("0.0005 KB", 1),
            ("3.0", 3),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text, "t").unwrap(), want, "{text}");
        }
    }

    #[test]
    fn long_numbers_near_the_limit_do_not_wrap() {
        // 316912650057057350374175801343 × 2^30 is within 5e28 of u128::MAX: adding half the
        // divisor before dividing wrapped to 0 in release builds.
        assert_eq!(
            parse_size("3.16912650057057350374175801343 GiB", "t").unwrap(),
            3_402_823_669
        );
        assert_eq!(parse_size("0.0005 KB", "t").unwrap(), 1);
        assert_eq!(parse_size("0.00049 KB", "t").unwrap(), 0);
        assert_eq!(parse_size("0.0025 KB", "t").unwrap(), 3);
    }

    #[test]
    fn bad_sizes_name_their_origin() {
        for text in [
            "",
            "MiB",
            "-1",
            "12 parsecs",
            "1.2.3 KiB",
            "1e3",
            "99999999999999 TiB",
        ] {
            let err = parse_size(text, "--memcheck-floor")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("--memcheck-floor: invalid size"), "{err}");
        }
        let err = parse_size("12 parsecs", "o").unwrap_err().to_string();
        assert!(err.contains("unknown unit 'parsecs'"), "{err}");
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("5%", "t").unwrap(), Percent::from_percent(5));
        assert_eq!(parse_percent("5 %", "t").unwrap(), Percent::from_percent(5));
        assert_eq!(parse_percent("10", "t").unwrap(), Percent::from_percent(10));
        // a bare fraction is ambiguous (0.1 for ten percent would be read as 0.1 %): refused
        let err = parse_percent("0.1", "tolerance").unwrap_err().to_string();
        assert!(
            err.contains("write 10% for a fraction of 0.1, or 0.1% if you mean it"),
            "{err}"
        );
        assert_eq!(parse_percent("0.1%", "t").unwrap().ppm, 1_000);
        assert_eq!(parse_percent("1.5", "t").unwrap().ppm, 15_000);
        assert_eq!(parse_percent("0", "t").unwrap().ppm, 0);
        assert_eq!(parse_percent("0.5%", "t").unwrap().ppm, 5_000);
        assert_eq!(parse_percent("2.25%", "t").unwrap().to_string(), "2.25%");
        assert_eq!(Percent::from_percent(10).to_string(), "10%");
        for bad in ["", "%", "-5%", "ten%", "1.23456%", "20000%"] {
            let err = parse_percent(bad, "--memcheck-tolerance")
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("--memcheck-tolerance: invalid percentage"),
                "{err}"
            );
        }
    }

    #[test]
    fn percent_of_is_exact() {
        assert_eq!(Percent::from_percent(10).of(1_048_576), 104_857);
        assert_eq!(Percent::from_percent(0).of(u64::MAX), 0);
        assert_eq!(Percent::from_percent(100).of(u64::MAX), u64::MAX);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1.00 KiB");
        assert_eq!(format_size(1_572_864), "1.50 MiB");
        assert_eq!(format_size(200 << 20), "200 MiB");
        assert_eq!(format_delta(-512), "-512 B");
        assert_eq!(format_delta(65_536), "+64.0 KiB");
        assert_eq!(format_change(3 << 20, 1 << 20), "+2.00 MiB +200.0%");
        assert_eq!(format_change(1 << 20, 2 << 20), "-1.00 MiB -50.0%");
        assert_eq!(format_change(512, 0), "+512 B");
    }

    proptest! {
        #[test]
        fn parse_size_never_panics(text in ".{0,40}") {
            let _ = parse_size(&text, "fuzz");
            let _ = parse_percent(&text, "fuzz");
        }

        #[test]
        fn a_fraction_of_a_byte_is_refused(whole in 0u64..1000, tenths in 1u64..10) {
            for text in [format!("{whole}.{tenths}"), format!("{whole}.{tenths} B")] {
                let err = parse_size(&text, "t").unwrap_err().to_string();
                prop_assert!(err.contains("a fraction of a byte"), "{}", err);
            }
            // while a whole number written with a fraction, and a fraction of a unit, are sizes
            prop_assert_eq!(parse_size(&format!("{whole}.0"), "t").unwrap(), whole);
            prop_assert_eq!(parse_size(&format!("{whole}.{tenths} KB"), "t").unwrap(), whole * 1000 + tenths * 100);
        }

        #[test]
        fn integers_round_trip(n in 0u64..u64::MAX) {
            prop_assert_eq!(parse_size(&n.to_string(), "t").unwrap(), n);
            prop_assert_eq!(parse_size(&format!("{n} B"), "t").unwrap(), n);
        }
    }
}
