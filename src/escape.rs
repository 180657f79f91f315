//! Escaping for each medium our output leaves through; one function per medium (and context).
//!
//! Node ids, baseline keys, results files and commit messages are data: a parametrized id can
//! hold `<script>`, `|`, ESC sequences or CR/LF. Whatever carries them out goes through here:
//!
//! - [`terminal`] / [`terminal_text`]: the terminal report and the `memcheck` command;
//! - [`markdown`] / [`markdown_code`]: the GitHub step summary and `memcheck diff --format markdown`;
//! - [`command_data`] / [`command_property`]: GitHub workflow commands (annotations);
//! - [`shell_word`]: a value inside a command we print for the user to run.

use std::fmt::Write as _;

/// Characters a terminal would act on rather than show: C0 (NUL, BEL, BS, TAB, LF, CR, ESC...),
/// DEL, C1 (0x80–0x9F, CSI among them), and the bidirectional overrides that reorder what is
/// shown ("Trojan source").
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// The visible form of an unsafe character: `\x1b`, `\x9b`, `\u{202e}`.
fn visible(out: &mut String, c: char) {
    let n = c as u32;
    if n <= 0xff {
        let _ = write!(out, "\\x{n:02x}");
    } else {
        let _ = write!(out, "\\u{{{n:04x}}}");
    }
}

/// One line for a terminal: every control character (line breaks and tabs too) shown as `\xNN`;
/// everything else, unicode included, as it is.
pub fn terminal(s: &str) -> String {
    if !s.chars().any(is_unsafe) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            visible(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// Text of several lines for a terminal (a failure message, an error): the line breaks are kept,
/// each line is escaped by [`terminal`] (so a CR cannot overwrite a line).
pub fn terminal_text(s: &str) -> String {
    s.split('\n').map(terminal).collect::<Vec<_>>().join("\n")
}

/// Inline text in GitHub-flavoured Markdown (a table cell, a line): rendered as the same text,
/// never as markup. `&`, `<`, `>` become entities (no HTML, no autolink); the punctuation that
/// Markdown acts on inline — `\` `` ` `` `*` `_` `[` `]` `|` `~` `$` — is backslash-escaped (`|`
/// would end a table cell, `[`/`]` make links, `$` math); control characters, line breaks among
/// them, are shown as `\xNN` so a table row stays one line.
pub fn markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '~' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c if is_unsafe(c) => {
                // The backslash of `\x1b` is itself Markdown: escape it.
                out.push('\\');
                visible(&mut out, c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A fenced code block holding `s` literally (a command to copy): the fence is longer than any
/// run of backticks in `s`, and control characters (line breaks too) are shown as `\xNN`, so
/// nothing can close the block early.
pub fn markdown_code(s: &str, info: &str) -> String {
    let text = terminal(s);
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}{info}\n{text}\n{fence}\n")
}

/// The data of a GitHub workflow command (after `::`): GitHub unescapes `%25`, `%0D`, `%0A`;
/// other control characters are shown as `\xNN` (the line is also printed in the job's log).
pub fn command_data(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c if is_unsafe(c) => visible(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

/// A property value of a workflow command (`file=`, `title=`): as data, and also `:` and `,`,
/// which would end the value.
pub fn command_property(s: &str) -> String {
    command_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// One word for a POSIX shell, as Python's `shlex.quote`: as it is when it holds only
/// characters no shell acts on, else in single quotes (a `'` inside as `'"'"'`).
pub fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shell_words_are_quoted_as_shlex_does() {
        assert_eq!(shell_word("ci-baselines/py3.11"), "ci-baselines/py3.11");
        assert_eq!(shell_word("mem/{python}"), "'mem/{python}'");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("it's; rm -rf ~"), "'it'\"'\"'s; rm -rf ~'");
    }

    const HOSTILE: &[&str] = &[
        "<script>alert(1)</script>",
        "a|b|c",
        "`code` ```fence",
        "x]y[z](javascript:alert(1))",
        "100%",
        "cr\rlf\nend",
        "nul\0byte",
        "\u{1b}[31mred\u{1b}[0m\u{1b}]0;title\u{7}",
        "csi\u{9b}31m",
        "bidi\u{202e}txt.exe",
    ];

    fn long() -> String {
        "<a|`]%\r\n\0\u{1b}[".repeat(200)
    }

    /// What GitHub's runner makes of an escaped command value.
    fn unescape_command(s: &str) -> String {
        s.replace("%0D", "\r")
            .replace("%0A", "\n")
            .replace("%3A", ":")
            .replace("%2C", ",")
            .replace("%25", "%")
    }

    /// What a CommonMark renderer shows for our escaped inline text (entities and backslash
    /// escapes of ASCII punctuation), enough to check the text survives.
    fn render_markdown(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            let entity = [("&lt;", '<'), ("&gt;", '>'), ("&amp;", '&')]
                .into_iter()
                .find(|(e, _)| rest.starts_with(e));
            if let Some((e, ch)) = entity {
                out.push(ch);
                rest = &rest[e.len()..];
                continue;
            }
            let mut it = rest.chars();
            it.next();
            match it.next() {
                Some(n) if c == '\\' && n.is_ascii_punctuation() => {
                    out.push(n);
                    rest = &rest[1 + n.len_utf8()..];
                }
                _ => {
                    out.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        out
    }

    #[test]
    fn terminal_shows_control_characters_and_keeps_unicode() {
        assert_eq!(terminal("\u{1b}[31mred\u{1b}[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(terminal("a\rb\nc\td\0"), "a\\x0db\\x0ac\\x09d\\x00");
        assert_eq!(terminal("c1 \u{9b}2J del \u{7f}"), "c1 \\x9b2J del \\x7f");
        assert_eq!(terminal("x\u{202e}y"), "x\\u{202e}y");
        // Negative control: ordinary text, unicode and markup are left alone.
        for s in ["tests/t.py::test_ü[π-😀]", "<script>", "a|b", "100%"] {
            assert_eq!(terminal(s), s);
        }
        assert_eq!(
            terminal_text("line 1\nline\u{1b} 2\r"),
            "line 1\nline\\x1b 2\\x0d"
        );
        for s in HOSTILE.iter().copied().chain([long().as_str()]) {
            let t = terminal(s);
            assert!(!t.chars().any(is_unsafe), "{t:?}");
            assert_eq!(terminal(&t), t, "idempotent");
        }
    }

    #[test]
    fn markdown_renders_as_the_same_text() {
        assert_eq!(
            markdown("<script>alert(1)</script>"),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(markdown("t.py::t[a|b]"), "t.py::t\\[a\\|b\\]");
        assert_eq!(
            markdown("`x` *y* _z_ ~~s~~ $m$ \\"),
            "\\`x\\` \\*y\\* \\_z\\_ \\~\\~s\\~\\~ \\$m\\$ \\\\"
        );
        assert_eq!(markdown("a\r\nb\0"), "a\\\\x0d\\\\x0ab\\\\x00");
        assert_eq!(markdown("&lt;"), "&amp;lt;");
        // Negative control: text Markdown does not act on is unchanged.
        assert_eq!(
            markdown("tests/t.py::test ok-1.5 (ü)"),
            "tests/t.py::test ok-1.5 (ü)"
        );
        for s in HOSTILE.iter().copied().chain([long().as_str()]) {
            let m = markdown(s);
            assert!(
                !m.contains('<') && !m.contains('>') && !m.contains('\n') && !m.contains('\r'),
                "{m}"
            );
            // Every pipe is escaped: a table row keeps its columns.
            assert!(
                !m.replace("\\\\", "").replace("\\|", "").contains('|'),
                "{m}"
            );
            assert_eq!(render_markdown(&m), terminal(s), "{s:?}");
        }
        let long = long();
        assert_eq!(markdown(&long).matches("&lt;").count(), 200);
    }

    #[test]
    fn code_blocks_cannot_be_closed_early() {
        assert_eq!(
            markdown_code("memcheck update --from r.json", "sh"),
            "```sh\nmemcheck update --from r.json\n```\n"
        );
        let b = markdown_code("x ````` y\n```\nrm -rf /", "sh");
        assert!(b.starts_with("``````sh\n"), "{b}");
        assert_eq!(b.lines().count(), 3, "{b}");
    }

    #[test]
    fn workflow_commands_escape_as_github_unescapes() {
        assert_eq!(command_data("50%\r\n::x"), "50%25%0D%0A::x");
        assert_eq!(
            command_property("t.py::t[100%,a:b]"),
            "t.py%3A%3At[100%25%2Ca%3Ab]"
        );
        assert_eq!(command_data("e\u{1b}[2J\0"), "e\\x1b[2J\\x00");
        // Negative control: plain text is unchanged.
        assert_eq!(command_property("tests/t.py"), "tests/t.py");
        for s in HOSTILE.iter().copied().chain([long().as_str()]) {
            let d = command_data(s);
            let p = command_property(s);
            assert!(!d.contains('\n') && !d.contains('\r') && !d.chars().any(is_unsafe));
            assert!(!p.contains(':') && !p.contains(','), "{p}");
            assert_eq!(
                unescape_command(&p),
                terminal(s).replace("\\x0d", "\r").replace("\\x0a", "\n")
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn every_medium_holds_for_any_text(s in "\\PC*|[\\x00-\\x1f\\x7f-\\x9f<>&|`\\[\\]*_~$%:,\\\\\u{202e}a-z]{0,60}") {
            let t = terminal(&s);
            prop_assert!(!t.chars().any(is_unsafe));
            prop_assert_eq!(terminal(&t), t.clone());
            let m = markdown(&s);
            prop_assert!(!m.contains('<') && !m.contains('>') && !m.contains('\n'));
            prop_assert_eq!(render_markdown(&m), t.clone());
            let p = command_property(&s);
            prop_assert!(!p.contains(':') && !p.contains(',') && !p.contains('\n') && !p.contains('\r'));
            let d = command_data(&s);
            prop_assert!(!d.contains('\n') && !d.contains('\r'));
        }
    }
}
