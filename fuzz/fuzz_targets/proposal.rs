//! Proposal validation (the guard): any proposal against a real variant tree
//! is either refused with named violations or accepted; an accepted one
//! applies to a child tree that holds exactly its writes, never a byte
//! outside the child.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vivarium::caps::manifest::Language;
use vivarium::guard::{self, GuardRules};
use vivarium::runtime::bindings::{Edit, Proposal, SourceFile};

const MANIFEST: &str = include_str!("../../variants/arith-wat/variant.toml");
const AGENT: &str = include_str!("../../variants/arith-wat/src/agent.wat");

/// Paths that reach each rule, and raw ones.
const KNOWN: &[&str] = &[
    "variant.toml",
    "src/agent.wat",
    "src/new.wat",
    "escalation.toml",
    "../outside",
    "/etc/passwd",
    "link/passwd",
    "src",
    "Cargo.toml",
    "build.rs",
    "target/debug/x",
    ".git/config",
    "src/./a",
    "src\\a",
    "C:/x",
    "src/\u{202e}txt.wat",
    "src/a\0b",
    "",
];

#[derive(Debug, Arbitrary)]
enum FuzzPath {
    Known(u8),
    Raw(String),
    Under(u8, String),
}

#[derive(Debug, Arbitrary)]
enum FuzzContents {
    Raw(Vec<u8>),
    /// The parent's manifest with text appended (reaches the protected-section check).
    ManifestPlus(String),
    /// The manifest with one line replaced.
    ManifestLine(u8, String),
}

#[derive(Debug, Arbitrary)]
enum FuzzEdit {
    Write(FuzzPath, FuzzContents),
    Delete(FuzzPath),
}

#[derive(Debug, Arbitrary)]
struct FuzzProposal {
    summary: String,
    rust_rules: bool,
    edits: Vec<FuzzEdit>,
}

fn path(p: FuzzPath) -> String {
    match p {
        FuzzPath::Known(i) => KNOWN[i as usize % KNOWN.len()].to_string(),
        FuzzPath::Raw(s) => s,
        FuzzPath::Under(i, s) => format!("{}/{s}", KNOWN[i as usize % KNOWN.len()]),
    }
}

fn contents(c: FuzzContents) -> Vec<u8> {
    match c {
        FuzzContents::Raw(b) => b,
        FuzzContents::ManifestPlus(s) => format!("{MANIFEST}{s}").into_bytes(),
        FuzzContents::ManifestLine(i, s) => {
            let mut lines: Vec<String> = MANIFEST.lines().map(str::to_string).collect();
            let n = i as usize % lines.len();
            lines[n] = s;
            lines.join("\n").into_bytes()
        }
    }
}

/// The parent tree: arith-wat, plus a link that points out of it.
fn parent() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("a temp dir");
        std::fs::write(d.path().join("variant.toml"), MANIFEST).unwrap();
        std::fs::create_dir(d.path().join("src")).unwrap();
        std::fs::write(d.path().join("src/agent.wat"), AGENT).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("link")).unwrap();
        d
    })
    .path()
}

fn children() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temp dir")).path()
}

fuzz_target!(|p: FuzzProposal| {
    let proposal = Proposal {
        summary: p.summary,
        edits: p
            .edits
            .into_iter()
            .map(|e| match e {
                FuzzEdit::Write(p, c) => Edit::Write(SourceFile { path: path(p), contents: contents(c) }),
                FuzzEdit::Delete(p) => Edit::Delete(path(p)),
            })
            .collect(),
    };
    let rules = GuardRules::for_language(if p.rust_rules { Language::Rust } else { Language::Wat });
    let checked = match guard::check_proposal(parent(), &proposal, &rules) {
        Ok(c) => c,
        Err(violations) => {
            assert!(!violations.is_empty(), "a refusal names at least one violation");
            return;
        }
    };
    static N: AtomicU64 = AtomicU64::new(0);
    let child: PathBuf = children().join(N.fetch_add(1, Ordering::Relaxed).to_string());
    if guard::apply(parent(), &checked, &child).is_ok() {
        for (rel, bytes) in checked.writes() {
            let got = std::fs::read(child.join(rel)).expect("every accepted write is in the child");
            assert_eq!(got, bytes, "{rel} holds exactly the written bytes");
        }
        for rel in checked.deletes() {
            assert!(std::fs::symlink_metadata(child.join(rel)).is_err(), "{rel} was deleted");
        }
    }
    let _ = std::fs::remove_dir_all(&child);
});
