//! The guard: what a variant's proposal for its own child may change, and
//! how an accepted proposal becomes a child tree.
//!
//! This module is a pure library — it never calls into wasm. `vivarium
//! improve` calls the meta-agent, hands its [`Proposal`] to
//! [`check_proposal`], writes the child with [`apply`], and audits the
//! verdict; `vivarium approve` works on the [`EscalationStore`].
//!
//! [`Proposal`]: crate::bindings::Proposal
//! [`Edit::Write`]: crate::bindings::Edit::Write
//!
//! # Checks ([`check_proposal`])
//!
//! Every refusal is a [`Violation`] naming its [`Rule`] (a kebab-case name,
//! e.g. `path-parent`), the offending path (escaped and shortened for
//! display; the path of the first edit past a cap for `too-many-edits` and
//! `too-many-bytes`) and a detail. All violations are collected, except that
//! a proposal with more than [`GuardRules::max_edits`] edits is refused at
//! once with one `too-many-edits` violation.
//!
//! | rule | refused |
//! |---|---|
//! | `path-empty` | an empty path |
//! | `path-nul` | a NUL byte |
//! | `path-control-char` | any control character, or a character that is invisible or reorders text (every `Default_Ignorable_Code_Point`, `Bidi_Control`, format or separator character: `crate::text::is_hidden`) |
//! | `path-too-long` | more than [`GuardRules::max_path_bytes`] (1024) in all, or a component over [`GuardRules::max_component_bytes`] (255) |
//! | `path-backslash` | `\` anywhere (Windows separators) |
//! | `path-absolute` | a leading `/` |
//! | `path-drive` | `:` anywhere (`C:x`, `C:/x`, NTFS streams `a:b`) |
//! | `path-empty-component` | `a//b`, a trailing `/` |
//! | `path-dot` | a `.` component (`./a`, `a/./b`) |
//! | `path-parent` | a `..` component (`../x`, `a/../../b`) |
//! | `path-too-deep` | more than [`GuardRules::max_depth`] (32) components |
//! | `build-output` | a path under a build-output or metadata directory (`target/`, `node_modules/`, `__pycache__/`, `.git/`, `.vivarium/`, at any depth, any case) |
//! | `protected-file` | a write or delete of a protected file ([`GuardRules::protected`]); deleting `variant.toml`; a path equal to `variant.toml` but for case |
//! | `invalid-manifest` | a new `variant.toml` (or the parent's) that does not parse |
//! | `protected-manifest-section` | a `variant.toml` whose `[capabilities]` or `[limits]`, or whose `[variant]` `language`, `builder` or `target` differ from the parent's |
//! | `path-symlink` | a path that is, or goes through, a symbolic link in the parent tree (every existing prefix is checked with `symlink_metadata`) |
//! | `path-conflict` | a prefix that is a file in the parent tree, a write onto a directory or special file, a delete of a missing path or of a directory, a write under a path another write creates as a file |
//! | `duplicate-path` | two edits of the same path |
//! | `too-many-edits` | more than [`GuardRules::max_edits`] (256) edits |
//! | `file-too-large` | one write over [`GuardRules::max_file_bytes`] (1 MiB) |
//! | `too-many-bytes` | writes totalling over [`GuardRules::max_total_bytes`] (4 MiB) |
//! | `invalid-escalation` | an `escalation.toml` that does not parse, is too large, or is deleted |
//! | `parent-tree` | the parent tree is missing or not a directory |
//! | `patch-failed` | a 0.2.0 patch edit that does not apply exactly: a search text found zero or several times, a diff hunk whose lines differ from the file's at its line number (the hunk's header and the first mismatching line are named), a diff that does not parse, a patched file that is missing or not UTF-8 ([`resolve_edits`]) |
//!
//! Protected names match ASCII-case-insensitively (so `CARGO.TOML` is as
//! protected as `Cargo.toml` on a case-insensitive file system). The rules
//! are data: [`GuardRules::default`] protects the build files of every
//! language, and [`GuardRules::for_language`] adds the ones a builder reads
//! for its language (`rust-toolchain.toml`, `requirements.txt`, `.npmrc`, …).
//!
//! # Escalation requests: `escalation.toml`
//!
//! The `[capabilities]` and `[limits]` of `variant.toml` cannot be changed by
//! an edit. A proposal that wants more asks for it explicitly, by writing a
//! file named `escalation.toml` at the root of the tree (an ordinary
//! [`Edit::Write`] in its edit list):
//!
//! ```toml
//! reason = "the grader's feedback says answers need a model; ask for a small one"
//!
//! [capabilities]                # required: the child's whole [capabilities] table,
//! llm = { models = ["small"], tokens = 50_000 }   # in the variant.toml format
//! memory = { bytes = "1MiB" }
//!
//! [limits]                      # optional: the child's whole [limits] table;
//! fuel = 10_000_000_000         # absent = the child keeps its manifest's limits
//! ```
//!
//! * `reason` is required: 1 to 4096 bytes of text, no control characters
//!   other than newline and tab. Unknown keys are refused.
//! * The tables **replace** the manifest's tables (they are not deltas):
//!   [`Escalation::child_manifest`] gives the child's manifest.
//! * The file is not written into the child tree; it is taken out of the
//!   edit list and handed back as [`CheckedProposal::escalation`]. It counts
//!   toward the edit and byte caps, and may be at most
//!   [`MAX_ESCALATION_BYTES`]. Deleting it is `invalid-escalation`.
//!   (`escalation.toml` anywhere else in the tree is an ordinary file.)
//!
//! The caller resolves the child's manifest against the policy into a
//! [`Grant`](crate::caps::Grant) and calls [`check_escalation`] (capability
//! monotonicity, via [`crate::caps::is_within`]). When the child would exceed its
//! parent, the request goes to the [`EscalationStore`] under
//! `$VIVARIUM_HOME/approvals/` and waits for a person.
//!
//! # Applying ([`apply`])
//!
//! The parent tree is copied to a temporary directory next to the target,
//! edits are applied there, and the directory is renamed into place: a
//! failure leaves no child directory behind. See [`apply`].

mod apply;
mod check;
mod escalation;
mod patch;
mod path;
mod rules;

#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use apply::{apply, apply_with, editable_sources, ApplyOptions};
pub use check::{check_proposal, proposal_digest, CheckedProposal};
pub use escalation::{
    check_escalation, Escalation, EscalationStore, NewRequest, Request, Status, ESCALATION_FILE, MAX_ESCALATION_BYTES,
    MAX_REASON_BYTES,
};
pub use patch::resolve_edits;
pub use rules::{GuardRules, Protected, MANIFEST_FILE};

/// A guard rule, by its kebab-case name (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The path is empty.
    PathEmpty,
    /// The path holds a NUL byte.
    PathNul,
    /// The path holds a control, invisible or bidi-override character.
    #[serde(rename = "path-control-char")]
    PathControlChar,
    /// The path, or one component, is too long.
    PathTooLong,
    /// The path holds a backslash.
    PathBackslash,
    /// The path starts with `/`.
    PathAbsolute,
    /// The path holds `:` (a drive letter or stream name).
    PathDrive,
    /// The path has an empty component.
    PathEmptyComponent,
    /// The path has a `.` component.
    PathDot,
    /// The path has a `..` component.
    PathParent,
    /// The path nests too deep.
    PathTooDeep,
    /// The path is or goes through a symbolic link in the parent tree.
    PathSymlink,
    /// The path clashes with what is in the parent tree or another edit.
    PathConflict,
    /// The path is under a build-output or metadata directory.
    BuildOutput,
    /// The path is a protected file.
    ProtectedFile,
    /// `variant.toml` would change its capabilities, limits or build settings.
    ProtectedManifestSection,
    /// `variant.toml` does not parse.
    InvalidManifest,
    /// Two edits name the same path.
    DuplicatePath,
    /// More edits than the cap.
    TooManyEdits,
    /// One file larger than the cap.
    FileTooLarge,
    /// More bytes in all than the cap.
    TooManyBytes,
    /// `escalation.toml` is malformed, too large or deleted.
    InvalidEscalation,
    /// The parent tree is missing or not a directory.
    ParentTree,
    /// A search/replace or diff edit does not apply exactly.
    PatchFailed,
}

impl Rule {
    /// Every rule, in declaration order.
    pub const ALL: [Rule; 24] = [
        Rule::PathEmpty,
        Rule::PathNul,
        Rule::PathControlChar,
        Rule::PathTooLong,
        Rule::PathBackslash,
        Rule::PathAbsolute,
        Rule::PathDrive,
        Rule::PathEmptyComponent,
        Rule::PathDot,
        Rule::PathParent,
        Rule::PathTooDeep,
        Rule::PathSymlink,
        Rule::PathConflict,
        Rule::BuildOutput,
        Rule::ProtectedFile,
        Rule::ProtectedManifestSection,
        Rule::InvalidManifest,
        Rule::DuplicatePath,
        Rule::TooManyEdits,
        Rule::FileTooLarge,
        Rule::TooManyBytes,
        Rule::InvalidEscalation,
        Rule::ParentTree,
        Rule::PatchFailed,
    ];

    /// The rule's kebab-case name, as in audit records and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::PathEmpty => "path-empty",
            Rule::PathNul => "path-nul",
            Rule::PathControlChar => "path-control-char",
            Rule::PathTooLong => "path-too-long",
            Rule::PathBackslash => "path-backslash",
            Rule::PathAbsolute => "path-absolute",
            Rule::PathDrive => "path-drive",
            Rule::PathEmptyComponent => "path-empty-component",
            Rule::PathDot => "path-dot",
            Rule::PathParent => "path-parent",
            Rule::PathTooDeep => "path-too-deep",
            Rule::PathSymlink => "path-symlink",
            Rule::PathConflict => "path-conflict",
            Rule::BuildOutput => "build-output",
            Rule::ProtectedFile => "protected-file",
            Rule::ProtectedManifestSection => "protected-manifest-section",
            Rule::InvalidManifest => "invalid-manifest",
            Rule::DuplicatePath => "duplicate-path",
            Rule::TooManyEdits => "too-many-edits",
            Rule::FileTooLarge => "file-too-large",
            Rule::TooManyBytes => "too-many-bytes",
            Rule::InvalidEscalation => "invalid-escalation",
            Rule::ParentTree => "parent-tree",
            Rule::PatchFailed => "patch-failed",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason a proposal is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The rule broken.
    pub rule: Rule,
    /// The edit's path, for display: control characters escaped, at most
    /// [`MAX_SHOWN_PATH`] characters (longer ones end in `…`). Empty for
    /// proposal-wide violations without a path (`parent-tree`).
    pub path: String,
    /// What is wrong, in words.
    pub detail: String,
}

/// The most characters of a path a [`Violation`] shows.
pub const MAX_SHOWN_PATH: usize = 200;

impl Violation {
    pub(crate) fn new(rule: Rule, path: &str, detail: impl Into<String>) -> Self {
        Self { rule, path: shown_path(path), detail: detail.into() }
    }
}

impl fmt::Display for Violation {
    /// `rule: `path`: detail`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: `{}`: {}", self.rule, self.path, self.detail)
    }
}

/// `path` for messages: control, invisible and bidi characters escaped
/// (`\u{1b}`), cut to [`MAX_SHOWN_PATH`] characters with `…`.
pub fn shown_path(path: &str) -> String {
    let mut out = String::new();
    for (n, c) in path.chars().enumerate() {
        if n == MAX_SHOWN_PATH {
            out.push('…');
            break;
        }
        if crate::text::is_hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`Error::Refused`](crate::Error::Refused) (exit 3) for a refused
/// proposal: `what` holds `rule: path` per violation, `detail` every
/// violation on one line.
pub fn refusal(violations: &[Violation]) -> crate::Error {
    let what = violations.iter().map(|v| format!("{}: {}", v.rule, v.path)).collect();
    let detail = format!(
        "proposal refused by the guard: {}",
        violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    );
    crate::Error::Refused { what, detail }
}
