//! Heap dumps of failing tests: folded stacks and flame graphs (inferno), for offline analysis.

use std::path::Path;

use crate::baseline::write_atomic;
use crate::error::{Error, Result};

/// A flame graph SVG of folded stacks (`frame;frame;frame bytes` per line).
pub fn flamegraph(folded: &str, title: &str) -> Result<String> {
    let mut options = inferno::flamegraph::Options::default();
    // inferno escapes the title as XML text; control characters are not allowed in XML at all.
    options.title = crate::escape::terminal(title);
    options.count_name = "bytes".to_string();
    let mut svg = Vec::new();
    let lines: Vec<&str> = folded.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Err(Error::Meter(format!("{title}: no allocations to draw")));
    }
    inferno::flamegraph::from_lines(&mut options, lines.iter().copied(), &mut svg)
        .map_err(|e| Error::Meter(format!("flame graph '{title}': {e}")))?;
    String::from_utf8(svg).map_err(|e| Error::Meter(e.to_string()))
}

/// Write `<stem>.folded` and `<stem>.svg` into `dir`.
pub fn write_flamegraph(dir: &Path, stem: &str, folded: &str, title: &str) -> Result<()> {
    write_atomic(&dir.join(format!("{stem}.folded")), folded.as_bytes())?;
    let svg = flamegraph(folded, title)?;
    write_atomic(&dir.join(format!("{stem}.svg")), svg.as_bytes())
}

/// A file name for a node id: readable, and safe on every file system.
pub fn file_stem(nodeid: &str) -> String {
    let mut out: String = nodeid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.[]".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(120);
    let hash = nodeid.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    format!("{}-{:08x}", out.trim_matches('.'), hash as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_names_the_frames() {
        let svg = flamegraph(
            "test_a (t.py:3);helper (h.py:9) 4096\ntest_a (t.py:3) 10\n",
            "peak",
        )
        .unwrap();
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("helper (h.py:9)"));
        assert!(flamegraph("", "x").is_err());
    }

    #[test]
    fn hostile_titles_are_text() {
        let svg = flamegraph("f 1\n", "t.py::t[<script>alert(1)</script>\u{1b}[2J\0]").unwrap();
        assert!(!svg.contains("<script>alert(1)"), "{svg}");
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;\\x1b[2J\\x00"));
        assert!(!svg.contains('\u{1b}') && !svg.contains('\0'));
    }

    #[test]
    fn stems_are_safe_and_distinct() {
        let a = file_stem("tests/t.py::test_x[../../etc]");
        assert!(!a.contains('/') && !a.starts_with('.'));
        assert_ne!(file_stem("t.py::a b"), file_stem("t.py::a_b"));
    }
}
