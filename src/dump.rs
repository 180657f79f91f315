//! Heap dumps of failing tests: folded stacks and flame graphs (inferno), for offline analysis.

use std::path::Path;

use crate::boundary::Boundary;
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

/// Write `<stem>.folded` and `<stem>.svg` under `dir` (the `--memcheck-dump` directory).
pub fn write_flamegraph(dir: &Boundary, stem: &str, folded: &str, title: &str) -> Result<()> {
    let folded_name = format!("{stem}.folded");
    dir.write(Path::new(&folded_name), folded.as_bytes(), "heap dump")?;
    let svg = flamegraph(folded, title)?;
    let svg_name = format!("{stem}.svg");
    dir.write(Path::new(&svg_name), svg.as_bytes(), "heap dump")?;
    Ok(())
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
    fn dumps_stay_in_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let b =
            Boundary::chosen(&dir.path().join("dumps"), "the --memcheck-dump directory").unwrap();
        write_flamegraph(&b, &file_stem("t.py::t[x]"), "f 1\n", "t").unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("dumps")).unwrap().count(),
            2
        );
        let e = write_flamegraph(&b, "../escape", "f 1\n", "t").unwrap_err();
        assert!(e.to_string().contains("no-parent"), "{e}");
        assert!(!dir.path().join("escape.folded").exists());
    }

    #[test]
    fn stems_are_safe_and_distinct() {
        let a = file_stem("tests/t.py::test_x[../../etc]");
        assert!(!a.contains('/') && !a.starts_with('.'));
        assert_ne!(file_stem("t.py::a b"), file_stem("t.py::a_b"));
    }
}
