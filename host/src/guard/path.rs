//! The shape of an edit's path: relative, `/`-separated, canonical, bounded.

use super::{GuardRules, Rule};

/// Characters that are not control characters but hide or reorder text
/// (zero-width, default-ignorable, bidirectional controls, formats,
/// separators), by the Unicode data: [`crate::text::is_hidden`].
pub(crate) fn is_invisible(c: char) -> bool {
    !c.is_control() && crate::text::is_hidden(c)
}

/// The first shape rule `path` breaks, with a detail; `None` when the path
/// is a canonical relative path within the caps.
pub(crate) fn check_shape(path: &str, rules: &GuardRules) -> Option<(Rule, String)> {
    if path.is_empty() {
        return Some((Rule::PathEmpty, "the path is empty".into()));
    }
    if path.contains('\0') {
        return Some((Rule::PathNul, "the path contains a NUL byte".into()));
    }
    if let Some(c) = path.chars().find(|&c| c.is_control()) {
        return Some((
            Rule::PathControlChar,
            format!("the path contains the control character {}", c.escape_unicode()),
        ));
    }
    if let Some(c) = path.chars().find(|&c| is_invisible(c)) {
        return Some((
            Rule::PathControlChar,
            format!("the path contains the invisible or bidirectional character {}", c.escape_unicode()),
        ));
    }
    if path.len() > rules.max_path_bytes {
        return Some((
            Rule::PathTooLong,
            format!("the path is {} bytes; at most {}", path.len(), rules.max_path_bytes),
        ));
    }
    if path.contains('\\') {
        return Some((Rule::PathBackslash, "the path contains a backslash; separate components with `/`".into()));
    }
    if path.starts_with('/') {
        return Some((Rule::PathAbsolute, "the path is absolute; give a path relative to the variant's tree".into()));
    }
    if path.contains(':') {
        return Some((Rule::PathDrive, "the path contains `:` (a drive letter or stream name)".into()));
    }
    let components: Vec<&str> = path.split('/').collect();
    if components.iter().any(|c| c.is_empty()) {
        return Some((Rule::PathEmptyComponent, "the path has an empty component (`//` or a trailing `/`)".into()));
    }
    if components.contains(&"..") {
        return Some((Rule::PathParent, "the path contains `..`".into()));
    }
    if components.contains(&".") {
        return Some((Rule::PathDot, "the path contains a `.` component".into()));
    }
    if let Some(c) = components.iter().find(|c| c.len() > rules.max_component_bytes) {
        return Some((
            Rule::PathTooLong,
            format!("a component is {} bytes; at most {}", c.len(), rules.max_component_bytes),
        ));
    }
    if components.len() > rules.max_depth {
        return Some((
            Rule::PathTooDeep,
            format!("the path has {} components; at most {}", components.len(), rules.max_depth),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let r = GuardRules::default();
        let ok = ["a", "src/lib.rs", "a/b/c.txt", ".hidden", "a..b", "...", "~", "é/ü.rs", "target"];
        for p in ok {
            assert_eq!(check_shape(p, &r), None, "{p}");
        }
        let long_component = "x".repeat(256);
        let long_path = vec!["abcdefghi"; 110].join("/");
        let deep = vec!["a"; 33].join("/");
        let cases: Vec<(&str, Rule)> = vec![
            ("", Rule::PathEmpty),
            ("a\0b", Rule::PathNul),
            ("src/\u{1b}x", Rule::PathControlChar),
            ("a\nb", Rule::PathControlChar),
            ("a\u{85}b", Rule::PathControlChar),
            ("a\u{202e}b", Rule::PathControlChar),
            ("\u{feff}a", Rule::PathControlChar),
            ("a\\b", Rule::PathBackslash),
            ("..\\x", Rule::PathBackslash),
            ("/etc/passwd", Rule::PathAbsolute),
            ("//x", Rule::PathAbsolute),
            ("C:x", Rule::PathDrive),
            ("C:/x", Rule::PathDrive),
            ("a:stream", Rule::PathDrive),
            ("a//b", Rule::PathEmptyComponent),
            ("a/", Rule::PathEmptyComponent),
            ("..", Rule::PathParent),
            ("../x", Rule::PathParent),
            ("a/../../b", Rule::PathParent),
            ("a/..", Rule::PathParent),
            (".", Rule::PathDot),
            ("./a", Rule::PathDot),
            ("a/./b", Rule::PathDot),
            (&long_component, Rule::PathTooLong),
            (&long_path, Rule::PathTooLong),
            (&deep, Rule::PathTooDeep),
        ];
        for (p, rule) in cases {
            assert_eq!(check_shape(p, &r).map(|x| x.0), Some(rule), "{p:?}");
        }
        assert_eq!(check_shape(&vec!["a"; 32].join("/"), &r), None);
        assert_eq!(check_shape(&"x".repeat(255), &r), None);
    }
}
