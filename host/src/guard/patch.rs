//! Patch edits (`vivarium:agent@0.2.0`): search/replace and unified
//! diffs, applied exactly to the parent's tree before any other rule runs.
//!
//! [`resolve_edits`] turns a 0.2.0 proposal into the `write`/`delete` edits
//! it amounts to: the edits apply in order, each to the tree the earlier
//! ones made, and every file a patch touched becomes one `write` of its
//! final contents (or one `delete`). [`check_proposal`](super::check_proposal)
//! then checks those exactly as it checks any write: paths, sizes,
//! protected files, the manifest's sections, links. So a patch can do
//! nothing a write could not.
//!
//! Exact means no fuzz and no offsets: a search text must occur exactly
//! once; a hunk's context and removed lines must be the file's lines at the
//! hunk's own line number. A patch that does not apply is refused as
//! `patch-failed`, naming the path and, for a diff, the hunk's header and
//! the first line that does not match — what a coding agent needs to fix
//! its patch. A path is checked for its shape (no `..`, no absolute path,
//! no invisible characters) before any file is read for it.

use std::collections::BTreeMap;
use std::path::Path;

use super::path::check_shape;
use super::{GuardRules, Rule, Violation};
use crate::bindings::v0_2;
use crate::bindings::{Edit, Proposal, SourceFile};

/// The most characters of a line a `patch-failed` detail quotes.
const SHOWN_LINE: usize = 120;

/// The `write`/`delete` proposal that `proposal`'s edits amount to on the
/// tree at `parent_tree`.
///
/// A proposal of writes and deletes only maps one to one (so 0.1.0
/// proposals keep their digest and their `duplicate-path` rule). With a
/// search/replace or a diff among its edits, the edits apply in order and
/// each touched path becomes one edit, in the order paths were first
/// touched; a path created and removed again disappears.
///
/// Errors: every [`Violation`] found — `patch-failed` for a search text
/// found zero or several times, a hunk that does not apply, a diff that
/// does not parse, a file that is missing or not UTF-8 text; the path rules
/// for a patch's malformed path; `parent-tree` when the tree cannot be read.
pub fn resolve_edits(
    parent_tree: &Path,
    proposal: &v0_2::Proposal,
    rules: &GuardRules,
) -> Result<Proposal, Vec<Violation>> {
    let patched = proposal.edits.iter().any(|e| matches!(e, v0_2::Edit::SearchReplace(_) | v0_2::Edit::Patch(_)));
    if !patched {
        let edits = proposal
            .edits
            .iter()
            .map(|e| match e {
                v0_2::Edit::Write(f) => Edit::Write(SourceFile { path: f.path.clone(), contents: f.contents.clone() }),
                v0_2::Edit::Delete(p) => Edit::Delete(p.clone()),
                v0_2::Edit::SearchReplace(_) | v0_2::Edit::Patch(_) => unreachable!("checked above"),
            })
            .collect();
        return Ok(Proposal { summary: proposal.summary.clone(), edits });
    }
    let base: BTreeMap<String, Vec<u8>> = match super::editable_sources(parent_tree, rules) {
        Ok(files) => files.into_iter().map(|f| (f.path, f.contents)).collect(),
        Err(e) => return Err(vec![Violation::new(Rule::ParentTree, "", format!("the parent tree cannot be read: {e}"))]),
    };
    let mut tree = Tree { base: &base, state: BTreeMap::new(), order: Vec::new(), made: Default::default() };
    let mut violations = Vec::new();
    for edit in &proposal.edits {
        match edit {
            v0_2::Edit::Write(f) => tree.set(&f.path, Some(f.contents.clone())),
            v0_2::Edit::Delete(p) => tree.set(p, None),
            v0_2::Edit::SearchReplace(r) => {
                if let Err(v) = search_replace(&mut tree, r, rules) {
                    violations.push(v);
                }
            }
            v0_2::Edit::Patch(diff) => {
                if let Err(v) = apply_diff(&mut tree, diff, rules) {
                    violations.push(v);
                }
            }
        }
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    let mut edits = Vec::new();
    for path in &tree.order {
        match tree.state.remove(path).flatten() {
            Some(contents) => edits.push(Edit::Write(SourceFile { path: path.clone(), contents })),
            // Removing a path the parent has; one it never had (created and
            // removed again, or never there) needs no edit, except that a
            // plain `delete` of a missing path stays for the guard to refuse.
            None if !tree.created(path) => edits.push(Edit::Delete(path.clone())),
            None => {}
        }
    }
    Ok(Proposal { summary: proposal.summary.clone(), edits })
}

/// The tree as the edits so far made it.
struct Tree<'a> {
    base: &'a BTreeMap<String, Vec<u8>>,
    /// Paths touched so far: their contents now (`None`: absent).
    state: BTreeMap<String, Option<Vec<u8>>>,
    /// Touched paths, in the order first touched.
    order: Vec<String>,
    /// Paths an edit gave contents to at some point.
    made: std::collections::HashSet<String>,
}

impl Tree<'_> {
    fn get(&self, path: &str) -> Option<&[u8]> {
        match self.state.get(path) {
            Some(now) => now.as_deref(),
            None => self.base.get(path).map(Vec::as_slice),
        }
    }

    fn set(&mut self, path: &str, contents: Option<Vec<u8>>) {
        if !self.state.contains_key(path) {
            self.order.push(path.to_string());
        }
        if contents.is_some() {
            self.made.insert(path.to_string());
        }
        self.state.insert(path.to_string(), contents);
    }

    /// Whether an edit made `path`, which the parent does not have (so its
    /// absence now needs no delete).
    fn created(&self, path: &str) -> bool {
        !self.base.contains_key(path) && self.made.contains(path)
    }
}

fn failed(path: &str, detail: impl Into<String>) -> Violation {
    Violation::new(Rule::PatchFailed, path, detail)
}

/// The text of `path` now, or why a patch cannot edit it.
fn text_of<'t>(tree: &'t Tree<'_>, path: &str, rules: &GuardRules) -> Result<&'t str, Violation> {
    if let Some((rule, detail)) = check_shape(path, rules) {
        return Err(Violation::new(rule, path, detail));
    }
    let Some(bytes) = tree.get(path) else {
        return Err(failed(path, "not found: the tree has no such file (create it with a write)"));
    };
    std::str::from_utf8(bytes).map_err(|_| failed(path, "the file is not UTF-8 text; replace it with a write"))
}

fn search_replace(tree: &mut Tree<'_>, r: &v0_2::SearchReplace, rules: &GuardRules) -> Result<(), Violation> {
    let text = text_of(tree, &r.path, rules)?;
    if r.search.is_empty() {
        return Err(failed(&r.path, "the search text is empty"));
    }
    let n = text.matches(r.search.as_str()).count();
    match n {
        0 => Err(failed(&r.path, format!("the search text was not found: {}", shown_line(&r.search)))),
        1 => {
            let new = text.replacen(r.search.as_str(), &r.replace, 1);
            tree.set(&r.path, Some(new.into_bytes()));
            Ok(())
        }
        n => Err(failed(
            &r.path,
            format!("the search text was found {n} times; it must occur exactly once (add context to it)"),
        )),
    }
}

/// A line for a message: hidden characters escaped, long lines cut.
fn shown_line(line: &str) -> String {
    let mut out = String::from("`");
    for (n, c) in line.chars().enumerate() {
        if n == SHOWN_LINE {
            out.push('…');
            break;
        }
        if c == '\n' {
            out.push_str("\\n");
        } else if crate::text::is_hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('`');
    out
}

/// One file's part of a unified diff.
#[derive(Debug)]
struct FilePatch {
    /// `None` for `/dev/null` (a new file).
    old: Option<String>,
    /// `None` for `/dev/null` (a removed file).
    new: Option<String>,
    hunks: Vec<Hunk>,
}

#[derive(Debug)]
struct Hunk {
    header: String,
    old_start: usize,
    old_len: usize,
    new_len: usize,
    /// (kind, text) with kind ' ', '-' or '+'.
    lines: Vec<(char, String)>,
    /// The hunk's last old / new line has no newline after it.
    old_no_eol: bool,
    new_no_eol: bool,
}

/// The path of a `---`/`+++` line: `None` for `/dev/null`; the `a/`/`b/`
/// prefix and a tab-separated timestamp removed.
fn diff_path(rest: &str, prefix: &str) -> Option<String> {
    let name = rest.split('\t').next().unwrap_or(rest).trim_end();
    if name == "/dev/null" {
        return None;
    }
    Some(name.strip_prefix(prefix).unwrap_or(name).to_string())
}

fn parse_range(s: &str) -> Option<(usize, usize)> {
    match s.split_once(',') {
        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
        None => Some((s.parse().ok()?, 1)),
    }
}

fn parse_header(line: &str) -> Option<(usize, usize, usize, usize)> {
    let rest = line.strip_prefix("@@ -")?;
    let (ranges, _) = rest.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let (os, ol) = parse_range(old)?;
    let (ns, nl) = parse_range(new)?;
    Some((os, ol, ns, nl))
}

/// Parse a unified diff; `Err((path, detail))` for one that does not parse.
fn parse_diff(diff: &str) -> Result<Vec<FilePatch>, (String, String)> {
    let lines: Vec<&str> = diff.split('\n').collect();
    let mut files = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(rest) = lines[i].strip_prefix("--- ") else {
            // `diff --git`, `index`, blank lines and prose between files.
            i += 1;
            continue;
        };
        let old = diff_path(rest, "a/");
        let Some(new_rest) = lines.get(i + 1).and_then(|l| l.strip_prefix("+++ ")) else {
            return Err((old.unwrap_or_default(), format!("line {}: `---` is not followed by `+++`", i + 1)));
        };
        let new = diff_path(new_rest, "b/");
        let path = new.clone().or_else(|| old.clone()).unwrap_or_default();
        i += 2;
        let mut hunks = Vec::new();
        while i < lines.len() && lines[i].starts_with("@@") {
            let header_line = lines[i];
            let Some((old_start, old_len, _new_start, new_len)) = parse_header(header_line) else {
                return Err((path, format!("line {}: a malformed hunk header {}", i + 1, shown_line(header_line))));
            };
            let header = header_line.split(" @@").next().map(|h| format!("{h} @@")).unwrap_or_default();
            i += 1;
            let mut hunk =
                Hunk { header, old_start, old_len, new_len, lines: Vec::new(), old_no_eol: false, new_no_eol: false };
            let (mut seen_old, mut seen_new) = (0, 0);
            while seen_old < old_len || seen_new < new_len {
                let Some(&line) = lines.get(i) else {
                    return Err((path, format!("the hunk {} ends before its {old_len} old and {new_len} new lines", hunk.header)));
                };
                // An empty line is a context line whose space was stripped.
                let (kind, text) = match line.chars().next() {
                    None => (' ', ""),
                    Some(c @ (' ' | '-' | '+')) => (c, &line[1..]),
                    Some(_) => {
                        return Err((
                            path,
                            format!(
                                "line {}: {} in the hunk {} is not a context (` `), removed (`-`) or added (`+`) line; the header's counts may be wrong",
                                i + 1,
                                shown_line(line),
                                hunk.header
                            ),
                        ))
                    }
                };
                match kind {
                    ' ' => {
                        seen_old += 1;
                        seen_new += 1;
                    }
                    '-' => seen_old += 1,
                    _ => seen_new += 1,
                }
                if seen_old > old_len || seen_new > new_len {
                    return Err((path, format!("the hunk {} holds more lines than its header counts", hunk.header)));
                }
                hunk.lines.push((kind, text.to_string()));
                i += 1;
                if lines.get(i).is_some_and(|l| l.starts_with('\\')) {
                    match kind {
                        '-' => hunk.old_no_eol = true,
                        '+' => hunk.new_no_eol = true,
                        _ => {
                            hunk.old_no_eol = true;
                            hunk.new_no_eol = true;
                        }
                    }
                    i += 1;
                }
            }
            hunks.push(hunk);
        }
        if hunks.is_empty() {
            return Err((path, "the file's part of the diff has no hunk (`@@ -l,n +l,n @@`)".into()));
        }
        files.push(FilePatch { old, new, hunks });
    }
    if files.is_empty() {
        return Err((String::new(), "the diff holds no file (`--- a/path`, `+++ b/path`, then hunks)".into()));
    }
    Ok(files)
}

fn apply_diff(tree: &mut Tree<'_>, diff: &str, rules: &GuardRules) -> Result<(), Violation> {
    let files = parse_diff(diff).map_err(|(path, detail)| failed(&path, format!("the diff does not parse: {detail}")))?;
    for file in files {
        let path = match (&file.old, &file.new) {
            (Some(o), Some(n)) if o != n => {
                return Err(failed(n, format!("renames are not supported (`{o}` to `{n}`); delete and write instead")))
            }
            (_, Some(p)) | (Some(p), None) => p.clone(),
            (None, None) => return Err(failed("/dev/null", "both sides of a file's diff are /dev/null")),
        };
        if let Some((rule, detail)) = check_shape(&path, rules) {
            return Err(Violation::new(rule, &path, detail));
        }
        let (old_lines, old_eol) = match &file.old {
            None => {
                if tree.get(&path).is_some() {
                    return Err(failed(&path, "the diff creates the file (`--- /dev/null`), but it exists"));
                }
                (Vec::new(), true)
            }
            Some(_) => {
                let text = text_of(tree, &path, rules)?;
                split_lines(text)
            }
        };
        let (new_lines, new_eol) = apply_hunks(&path, &old_lines, old_eol, &file.hunks)?;
        if file.new.is_none() {
            if !new_lines.is_empty() {
                return Err(failed(&path, "the diff removes the file (`+++ /dev/null`) but leaves lines in it"));
            }
            tree.set(&path, None);
        } else {
            let mut text = new_lines.join("\n");
            if new_eol && !new_lines.is_empty() {
                text.push('\n');
            }
            tree.set(&path, Some(text.into_bytes()));
        }
    }
    Ok(())
}

/// A text's lines (without their `\n`) and whether it ends in a newline.
fn split_lines(text: &str) -> (Vec<String>, bool) {
    if text.is_empty() {
        return (Vec::new(), true);
    }
    let eol = text.ends_with('\n');
    let body = text.strip_suffix('\n').unwrap_or(text);
    (body.split('\n').map(str::to_string).collect(), eol)
}

/// The file's lines after `hunks`, each applied at its own line number,
/// with no fuzz, and whether it ends in a newline.
fn apply_hunks(path: &str, old: &[String], old_eol: bool, hunks: &[Hunk]) -> Result<(Vec<String>, bool), Violation> {
    let mut out = Vec::with_capacity(old.len());
    let mut cursor = 0usize; // the next old line (0-based) not yet copied
    let mut eol = old_eol;
    for hunk in hunks {
        // `@@ -0,0 …` inserts before the first line; otherwise the start is 1-based.
        let start = if hunk.old_len == 0 { hunk.old_start } else { hunk.old_start.saturating_sub(1) };
        if hunk.old_start == 0 && hunk.old_len != 0 {
            return Err(failed(path, format!("the hunk {} starts at line 0", hunk.header)));
        }
        if start < cursor {
            return Err(failed(path, format!("the hunk {} overlaps or precedes the one before it", hunk.header)));
        }
        if start > old.len() {
            return Err(failed(
                path,
                format!("the hunk {} does not apply: the file has only {} lines", hunk.header, old.len()),
            ));
        }
        out.extend_from_slice(&old[cursor..start]);
        let mut at = start;
        for (kind, text) in &hunk.lines {
            match kind {
                ' ' | '-' => {
                    match old.get(at) {
                        Some(line) if line == text => {}
                        Some(line) => {
                            return Err(failed(
                                path,
                                format!(
                                    "the hunk {} does not apply: line {} is {} where the hunk expects {}",
                                    hunk.header,
                                    at + 1,
                                    shown_line(line),
                                    shown_line(text)
                                ),
                            ))
                        }
                        None => {
                            return Err(failed(
                                path,
                                format!(
                                    "the hunk {} does not apply: it expects {} at line {}, past the file's end ({} lines)",
                                    hunk.header,
                                    shown_line(text),
                                    at + 1,
                                    old.len()
                                ),
                            ))
                        }
                    }
                    if *kind == ' ' {
                        out.push(text.clone());
                    }
                    at += 1;
                }
                _ => out.push(text.clone()),
            }
        }
        debug_assert_eq!(at - start, hunk.old_len);
        cursor = at;
        if cursor == old.len() && hunk.new_len > 0 {
            // The hunk reaches the end: its last new line says the newline.
            eol = !hunk.new_no_eol;
        }
    }
    out.extend_from_slice(&old[cursor..]);
    Ok((out, eol))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("variant.toml"), "[variant]\nname = \"p\"\nlanguage = \"python\"\n").unwrap();
        for (p, t) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, t).unwrap();
        }
        dir
    }

    fn proposal(edits: Vec<v0_2::Edit>) -> v0_2::Proposal {
        v0_2::Proposal { summary: "s".into(), edits }
    }

    fn sr(path: &str, search: &str, replace: &str) -> v0_2::Edit {
        v0_2::Edit::SearchReplace(v0_2::SearchReplace { path: path.into(), search: search.into(), replace: replace.into() })
    }

    fn written(p: &Proposal) -> Vec<(String, String)> {
        p.edits
            .iter()
            .map(|e| match e {
                Edit::Write(f) => (f.path.clone(), String::from_utf8(f.contents.clone()).unwrap()),
                Edit::Delete(p) => (p.clone(), "<deleted>".into()),
            })
            .collect()
    }

    const AGENT: &str = "A = 1\nB = 2\nC = 3\nD = 4\n";

    #[test]
    fn a_unified_diff_applies_exactly_to_several_files() {
        let dir = parent(&[("src/agent.py", AGENT), ("src/util.py", "x = 1\n")]);
        let diff = "diff --git a/src/agent.py b/src/agent.py\n--- a/src/agent.py\n+++ b/src/agent.py\n@@ -2,2 +2,3 @@\n B = 2\n-C = 3\n+C = 30\n+E = 5\n--- /dev/null\n+++ b/src/new.py\n@@ -0,0 +1,1 @@\n+y = 2\n--- a/src/util.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-x = 1\n";
        let p = resolve_edits(dir.path(), &proposal(vec![v0_2::Edit::Patch(diff.into())]), &GuardRules::default())
            .unwrap();
        assert_eq!(
            written(&p),
            [
                ("src/agent.py".to_string(), "A = 1\nB = 2\nC = 30\nE = 5\nD = 4\n".to_string()),
                ("src/new.py".into(), "y = 2\n".into()),
                ("src/util.py".into(), "<deleted>".into()),
            ]
        );
    }

    #[test]
    fn a_hunk_that_does_not_match_is_refused_with_its_header_and_line() {
        let dir = parent(&[("src/agent.py", AGENT)]);
        let diff = "--- a/src/agent.py\n+++ b/src/agent.py\n@@ -2,2 +2,2 @@\n B = 2\n-C = 4\n+C = 30\n";
        let v = resolve_edits(dir.path(), &proposal(vec![v0_2::Edit::Patch(diff.into())]), &GuardRules::default())
            .unwrap_err();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].rule, Rule::PatchFailed);
        assert_eq!(v[0].path, "src/agent.py");
        assert_eq!(
            v[0].detail,
            "the hunk @@ -2,2 +2,2 @@ does not apply: line 3 is `C = 3` where the hunk expects `C = 4`"
        );
        // No fuzz: the right lines at the wrong line number do not apply either.
        let shifted = "--- a/src/agent.py\n+++ b/src/agent.py\n@@ -1,2 +1,2 @@\n B = 2\n-C = 3\n+C = 30\n";
        let v = resolve_edits(dir.path(), &proposal(vec![v0_2::Edit::Patch(shifted.into())]), &GuardRules::default())
            .unwrap_err();
        assert_eq!(v[0].detail, "the hunk @@ -1,2 +1,2 @@ does not apply: line 1 is `A = 1` where the hunk expects `B = 2`");
    }

    #[test]
    fn search_replace_needs_exactly_one_occurrence_and_sees_earlier_edits() {
        let dir = parent(&[("src/agent.py", AGENT)]);
        let rules = GuardRules::default();
        let v = resolve_edits(dir.path(), &proposal(vec![sr("src/agent.py", "Z = 9", "")]), &rules).unwrap_err();
        assert_eq!((v[0].rule, v[0].detail.as_str()), (Rule::PatchFailed, "the search text was not found: `Z = 9`"));
        let v = resolve_edits(dir.path(), &proposal(vec![sr("src/agent.py", " = ", "=")]), &rules).unwrap_err();
        assert_eq!(
            v[0].detail,
            "the search text was found 4 times; it must occur exactly once (add context to it)"
        );
        let v = resolve_edits(dir.path(), &proposal(vec![sr("src/missing.py", "a", "b")]), &rules).unwrap_err();
        assert_eq!(v[0].detail, "not found: the tree has no such file (create it with a write)");
        // In order: the second edit sees the first's result; one write comes out.
        let p = resolve_edits(
            dir.path(),
            &proposal(vec![sr("src/agent.py", "A = 1", "A = 10"), sr("src/agent.py", "A = 10\n", "A = 100\n")]),
            &rules,
        )
        .unwrap();
        assert_eq!(written(&p), [("src/agent.py".to_string(), "A = 100\nB = 2\nC = 3\nD = 4\n".to_string())]);
    }

    #[test]
    fn a_patch_path_is_checked_before_any_file_is_read() {
        let dir = parent(&[("src/agent.py", AGENT)]);
        let rules = GuardRules::default();
        let v = resolve_edits(dir.path(), &proposal(vec![sr("../../etc/passwd", "root", "x")]), &rules).unwrap_err();
        assert_eq!(v[0].rule, Rule::PathParent);
        let diff = "--- /dev/null\n+++ b/src/a\u{200b}.py\n@@ -0,0 +1 @@\n+x = 1\n";
        let v = resolve_edits(dir.path(), &proposal(vec![v0_2::Edit::Patch(diff.into())]), &rules).unwrap_err();
        assert_eq!(v[0].rule, Rule::PathControlChar);
    }

    #[test]
    fn no_newline_markers_are_honoured() {
        let dir = parent(&[("src/a.py", "x = 1")]);
        let diff = "--- a/src/a.py\n+++ b/src/a.py\n@@ -1 +1 @@\n-x = 1\n\\ No newline at end of file\n+x = 2\n";
        let p = resolve_edits(dir.path(), &proposal(vec![v0_2::Edit::Patch(diff.into())]), &GuardRules::default())
            .unwrap();
        assert_eq!(written(&p), [("src/a.py".to_string(), "x = 2\n".to_string())]);
    }

    #[test]
    fn writes_and_deletes_alone_map_one_to_one() {
        let dir = parent(&[]);
        let w = |p: &str| v0_2::Edit::Write(v0_2::SourceFile { path: p.into(), contents: b"x".to_vec() });
        let p = resolve_edits(dir.path(), &proposal(vec![w("a"), w("a")]), &GuardRules::default()).unwrap();
        // The guard's duplicate-path rule still sees both.
        assert_eq!(p.edits.len(), 2);
    }
}
