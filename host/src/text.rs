//! Text that came from a guest, made safe for a person to read.
//!
//! A hostile variant controls many strings the host shows: log lines, the
//! answer of a call, a proposal's summary, an escalation's reason, the
//! names of its imports, the lines of its source that a parse error
//! quotes. Printed raw, such a string can clear the screen and draw a fake
//! verdict (terminal escapes), set the operator's clipboard (OSC 52), hide
//! words from the operator that a model reading the same history still
//! reads (zero-width, tag and other default-ignorable characters), reorder
//! what is shown (bidirectional controls), or forge a whole extra line of
//! output (a newline inside a one-line field).
//!
//! What counts as hidden comes from the Unicode Character Database through
//! ICU4X (`icu_properties`), not from a hand list: every
//! `Default_Ignorable_Code_Point`, every `Bidi_Control`, and the general
//! categories that are not visible text (controls, formats, line and
//! paragraph separators). [`sanitize`] replaces them (for text the host
//! stores, such as log lines); [`for_terminal`] and [`one_line`] escape them
//! visibly (`\u{1b}`), for text printed to a person. JSON output needs none
//! of this: serde escapes every control character, and a JSON reader is a
//! program, not a person.

use icu_properties::props::{BidiControl, DefaultIgnorableCodePoint, GeneralCategory};
use icu_properties::{CodePointMapData, CodePointSetData};

/// Whether `c` is invisible, reorders text, or controls a terminal: a
/// control character (tab and newline included; callers keep the ones they
/// lay out themselves), a format character, a line or paragraph separator,
/// a default-ignorable code point or a bidirectional control.
pub fn is_hidden(c: char) -> bool {
    if c.is_control() {
        return true;
    }
    if CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
        || CodePointSetData::new::<BidiControl>().contains(c)
    {
        return true;
    }
    matches!(
        CodePointMapData::<GeneralCategory>::new().get(c),
        GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
    )
}

/// Lossy UTF-8 with every hidden character ([`is_hidden`]) replaced by
/// `�`, keeping tabs: the form in which the host stores guest text.
pub fn sanitize(bytes: &[u8]) -> String {
    replace_hidden(&String::from_utf8_lossy(bytes), |c| c == '\t')
}

/// `s` with every hidden character ([`is_hidden`]) for which `keep` is
/// false replaced by `�`: the stored form of guest text ([`sanitize`]) and
/// of text the host hands to other programs (a commit message).
pub fn replace_hidden(s: &str, keep: impl Fn(char) -> bool) -> String {
    s.chars().map(|c| if !keep(c) && is_hidden(c) { '\u{FFFD}' } else { c }).collect()
}

/// `s` for a terminal: every hidden character but newline and tab escaped
/// as `\u{…}`. Applied to everything the CLI prints in text mode, so no
/// command can forget it; the newlines it keeps are the layout's own, which
/// is why guest text placed inside a one-line field goes through
/// [`one_line`] first.
pub fn for_terminal(s: &str) -> String {
    escape(s, |c| c == '\n' || c == '\t')
}

/// `s` as one line: every hidden character escaped, newlines and tabs
/// included, so a guest's field cannot forge a line of the host's output.
pub fn one_line(s: &str) -> String {
    escape(s, |_| false)
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> String {
    if !s.chars().any(|c| is_hidden(c) && !keep(c)) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_hidden(c) && !keep(c) {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                _ => out.extend(c.escape_unicode()),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character the review found passing the old hand list, and the
    /// ones the hand list had.
    const HIDDEN: &[char] = &[
        '\u{1b}',
        '\u{9b}',
        '\u{7f}',
        '\r',
        '\u{0}', // controls, C1 CSI
        '\u{200B}',
        '\u{200D}',
        '\u{200E}',
        '\u{202E}',
        '\u{2066}',
        '\u{FEFF}', // the old list
        '\u{2060}',
        '\u{2061}',
        '\u{2062}',
        '\u{2063}',
        '\u{2064}', // word joiner, invisible operators
        '\u{061C}',
        '\u{180E}',
        '\u{00AD}',
        '\u{034F}',
        '\u{115F}',
        '\u{3164}', // ALM, MVS, SHY, CGJ, fillers
        '\u{FFF9}',
        '\u{FFFA}',
        '\u{FFFB}',
        '\u{2028}',
        '\u{2029}', // annotations, separators
        '\u{E0000}',
        '\u{E0001}',
        '\u{E0041}',
        '\u{E007F}', // tag characters
    ];

    #[test]
    fn every_invisible_or_bidi_character_is_hidden() {
        for &c in HIDDEN {
            assert!(is_hidden(c), "{} passes", c.escape_unicode());
        }
        for c in ['a', 'é', 'ж', '中', '😀', ' ', '-', '…', '�'] {
            assert!(!is_hidden(c), "{} is visible text", c.escape_unicode());
        }
    }

    #[test]
    fn sanitize_replaces_hidden_characters_and_keeps_tabs() {
        let s: String = HIDDEN.iter().collect();
        let clean = sanitize(format!("a\t{s}b\n").as_bytes());
        assert_eq!(clean, format!("a\t{}b\u{FFFD}", "\u{FFFD}".repeat(HIDDEN.len())));
    }

    #[test]
    fn terminal_text_keeps_layout_and_escapes_the_rest() {
        assert_eq!(for_terminal("ok\n\x1b[2Jall 12 tasks passed\t!"), "ok\n\\u{1b}[2Jall 12 tasks passed\t!");
        assert_eq!(for_terminal("hid\u{E0041}den"), "hid\\u{e0041}den");
        assert_eq!(for_terminal("plain text"), "plain text");
    }

    #[test]
    fn one_line_escapes_newlines_so_no_line_is_forged() {
        assert_eq!(one_line("why\napproved  req-9\r"), "why\\napproved  req-9\\r");
        assert!(!one_line("a\u{2028}b\nc").contains(['\n', '\u{2028}']));
    }
}
