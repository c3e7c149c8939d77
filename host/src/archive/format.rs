//! How an archive row is shown to a person: the one set of formatters the
//! CLI (`vivarium archive`, `audit`) and the HTML report share, so a score,
//! an id or a summary reads the same in both.
//!
//! These shape text; they do not escape it. A summary is guest-derived: the
//! CLI prints it through `cli/output.rs` and the report through
//! [`crate::report::escape`].

use super::VariantRow;

/// How many characters of an id a table shows (the CLI's columns, `audit log`).
pub const ID_COLUMN: usize = 12;
/// How many characters of an id a label shows (the report's graph and table).
pub const ID_LABEL: usize = 8;

/// A score as every view shows it: four decimals, or `missing` when there
/// is none (`-` in a terminal, `–` in the report).
pub fn score(s: Option<f64>, missing: &str) -> String {
    s.map(|x| format!("{x:.4}")).unwrap_or_else(|| missing.to_string())
}

/// The first `len` characters of an id (ids and digests are ASCII hex).
pub fn short_id(id: &str, len: usize) -> &str {
    id.get(..len).unwrap_or(id)
}

/// The first line of a summary that is not blank, trimmed.
pub fn first_line(summary: &str) -> &str {
    summary.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
}

/// [`first_line`] cut to `max` characters, ending in `…` when anything was
/// left out: more of that line, or more lines after it.
pub fn summary_line(summary: &str, max: usize) -> String {
    let l = first_line(summary);
    let mut t: String = l.chars().take(max).collect();
    if t.chars().count() < l.chars().count() || summary.trim() != l {
        t.push('…');
    }
    t
}

/// Visible − held-out score, when both are known: how much a variant's
/// visible score overstates it.
pub fn gap(v: &VariantRow) -> Option<f64> {
    Some(v.visible_score? - v.held_out_score?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_have_four_decimals_or_the_views_placeholder() {
        assert_eq!(score(Some(0.5), "-"), "0.5000");
        assert_eq!(score(Some(2.0 / 3.0), "-"), "0.6667");
        assert_eq!(score(None, "-"), "-");
        assert_eq!(score(None, "–"), "–");
    }

    #[test]
    fn ids_are_cut_to_the_views_width() {
        let sha = "9372374be3c9a1b2c3d4";
        assert_eq!(short_id(sha, ID_COLUMN), "9372374be3c9");
        assert_eq!(short_id(sha, ID_LABEL), "9372374b");
        assert_eq!(short_id("abc", ID_COLUMN), "abc");
    }

    #[test]
    fn a_summary_line_says_when_something_was_left_out() {
        assert_eq!(first_line("\n  arith: turn on REMAINDER \nmore"), "arith: turn on REMAINDER");
        assert_eq!(summary_line("one line", 60), "one line");
        assert_eq!(summary_line("one line\n\nand a body", 60), "one line…");
        assert_eq!(summary_line("a long line", 6), "a long…");
        assert_eq!(summary_line("", 6), "");
    }
}
