//! The guard's rules, one test per attack, and apply's all-or-nothing.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::*;
use crate::bindings::{Edit, Proposal, SourceFile};
use crate::caps::Language;
use crate::error::{Error, ExitCode};

const MANIFEST: &str = r#"[variant]
name = "base"
language = "rust"
description = "the parent"

[limits]
fuel = 1_000_000
memory = "64MiB"

[capabilities]
memory = { bytes = "1MiB" }
llm = { models = ["small", "large"], tokens = 1000 }
"#;

/// A parent tree like a Rust variant's, with build outputs beside it.
fn parent() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parent");
    for d in ["src/strategy", "wit", "target/debug", ".git", "crates/sub", "node_modules/x"] {
        fs::create_dir_all(p.join(d)).unwrap();
    }
    fs::write(p.join("variant.toml"), MANIFEST).unwrap();
    fs::write(p.join("Cargo.toml"), "[package]\nname = \"base\"\n").unwrap();
    fs::write(p.join("src/lib.rs"), "const STRATEGY: u32 = 1;\n").unwrap();
    fs::write(p.join("src/old.rs"), "// old\n").unwrap();
    fs::write(p.join("src/strategy/mod.rs"), "// strategy\n").unwrap();
    fs::write(p.join("wit/world.wit"), "package x:y;\n").unwrap();
    fs::write(p.join("target/debug/out.wasm"), "built").unwrap();
    fs::write(p.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    fs::write(p.join("node_modules/x/index.js"), "x").unwrap();
    fs::write(p.join("crates/sub/lib.rs"), "// sub\n").unwrap();
    (dir, p)
}

fn write(path: &str, contents: impl Into<Vec<u8>>) -> Edit {
    Edit::Write(SourceFile { path: path.into(), contents: contents.into() })
}

fn delete(path: &str) -> Edit {
    Edit::Delete(path.into())
}

fn proposal(edits: Vec<Edit>) -> Proposal {
    Proposal { summary: "try strategy 2".into(), edits }
}

fn check(parent: &Path, edits: Vec<Edit>) -> Result<CheckedProposal, Vec<Violation>> {
    check_proposal(parent, &proposal(edits), &GuardRules::for_language(Language::Rust))
}

/// The proposal is refused with exactly one violation: `rule` on `path`.
#[track_caller]
fn refused_once(parent: &Path, edits: Vec<Edit>, rule: Rule, path: &str) -> Violation {
    match check(parent, edits) {
        Ok(_) => panic!("accepted; expected {rule} on {path:?}"),
        Err(v) => {
            assert_eq!(v.len(), 1, "{v:#?}");
            assert_eq!((v[0].rule, v[0].path.as_str()), (rule, path), "{v:#?}");
            v.into_iter().next().unwrap()
        }
    }
}

#[track_caller]
fn refused_with(parent: &Path, edits: Vec<Edit>, rule: Rule, path: &str) -> Vec<Violation> {
    match check(parent, edits) {
        Ok(_) => panic!("accepted; expected {rule} on {path:?}"),
        Err(v) => {
            assert!(v.iter().any(|x| x.rule == rule && x.path == path), "{v:#?}");
            v
        }
    }
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_plain_edit_is_accepted_and_applied() {
    let (tmp, parent) = parent();
    let before = files(&parent);
    let checked = check(
        &parent,
        vec![
            write("src/lib.rs", "const STRATEGY: u32 = 2;\n"),
            write("src/new/deep/mod.rs", "// new\n"),
            delete("src/old.rs"),
            write("src/target", "a file named target is fine"),
        ],
    )
    .unwrap();
    assert_eq!(checked.summary(), "try strategy 2");
    assert_eq!(checked.deletes(), ["src/old.rs".to_string()]);
    assert_eq!(checked.writes().count(), 3);
    assert!(checked.escalation().is_none());
    assert!(!checked.manifest_edited());
    assert_eq!(checked.total_bytes(), 25 + 7 + 27);
    assert_eq!(checked.audit_details()["writes"][0]["path"], "src/lib.rs");

    let child = tmp.path().join("runs/gen1/child");
    apply(&parent, &checked, &child).unwrap();
    assert_eq!(
        files(&child),
        [
            "Cargo.toml",
            "crates/sub/lib.rs",
            "src/lib.rs",
            "src/new/deep/mod.rs",
            "src/strategy/mod.rs",
            "src/target",
            "variant.toml",
            "wit/world.wit",
        ]
    );
    assert_eq!(fs::read_to_string(child.join("src/lib.rs")).unwrap(), "const STRATEGY: u32 = 2;\n");
    assert_eq!(fs::read_to_string(child.join("variant.toml")).unwrap(), MANIFEST);
    // The parent is untouched, and nothing else appeared beside the child.
    assert_eq!(files(&parent), before);
    assert_eq!(fs::read_to_string(parent.join("src/lib.rs")).unwrap(), "const STRATEGY: u32 = 1;\n");
    let beside: Vec<_> = fs::read_dir(child.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("child")]);
}

#[test]
fn escaping_paths_are_refused_by_name() {
    let (_tmp, parent) = parent();
    let long_component = format!("src/{}", "x".repeat(256));
    let long_path = vec!["abcdefghi"; 110].join("/");
    let deep = vec!["d"; 33].join("/");
    let cases: Vec<(&str, Rule, &str)> = vec![
        ("../x", Rule::PathParent, "../x"),
        ("a/../../b", Rule::PathParent, "a/../../b"),
        ("src/..", Rule::PathParent, "src/.."),
        ("/etc/passwd", Rule::PathAbsolute, "/etc/passwd"),
        ("/tmp/x", Rule::PathAbsolute, "/tmp/x"),
        ("a\\b", Rule::PathBackslash, "a\\b"),
        ("..\\..\\x", Rule::PathBackslash, "..\\..\\x"),
        ("C:x", Rule::PathDrive, "C:x"),
        ("C:/Windows/x", Rule::PathDrive, "C:/Windows/x"),
        ("src/\u{1b}x", Rule::PathControlChar, "src/\\u{1b}x"),
        ("src/a\u{202e}sr.exe", Rule::PathControlChar, "src/a\\u{202e}sr.exe"),
        ("src/a\0b", Rule::PathNul, "src/a\\u{0}b"),
        ("", Rule::PathEmpty, ""),
        ("src//lib.rs", Rule::PathEmptyComponent, "src//lib.rs"),
        ("src/", Rule::PathEmptyComponent, "src/"),
        ("./src/lib.rs", Rule::PathDot, "./src/lib.rs"),
        (&long_component, Rule::PathTooLong, ""),
        (&long_path, Rule::PathTooLong, ""),
        (&deep, Rule::PathTooDeep, &deep),
    ];
    for (path, rule, shown) in cases {
        let shown = if shown.is_empty() { shown_path(path) } else { shown.to_string() };
        for edit in [write(path, "x"), delete(path)] {
            refused_once(&parent, vec![edit], rule, &shown);
        }
    }
    // A long path is shown cut short.
    let v = refused_once(&parent, vec![write(&long_path, "x")], Rule::PathTooLong, &shown_path(&long_path));
    assert!(v.path.ends_with('…') && v.path.chars().count() == MAX_SHOWN_PATH + 1);
    assert_eq!(v.detail, "the path is 1099 bytes; at most 1024");
}

#[test]
fn symlinks_in_the_parent_tree_are_refused() {
    let (tmp, parent) = parent();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    symlink(&outside, parent.join("src/link")).unwrap();
    symlink("/etc/passwd", parent.join("src/passwd.rs")).unwrap();
    symlink("../..", parent.join("src/up")).unwrap();
    let v = refused_once(&parent, vec![write("src/link/x.rs", "x")], Rule::PathSymlink, "src/link/x.rs");
    assert_eq!(v.detail, "the path goes through `src/link`, a symbolic link in the parent tree");
    let v = refused_once(&parent, vec![write("src/passwd.rs", "x")], Rule::PathSymlink, "src/passwd.rs");
    assert_eq!(v.detail, "`src/passwd.rs` is a symbolic link in the parent tree");
    refused_once(&parent, vec![delete("src/passwd.rs")], Rule::PathSymlink, "src/passwd.rs");
    refused_once(&parent, vec![write("src/up/parent/src/lib.rs", "x")], Rule::PathSymlink, "src/up/parent/src/lib.rs");
    refused_once(&parent, vec![write("src/link", "x")], Rule::PathSymlink, "src/link");
    // Nothing was written through the link.
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    // A proposal that avoids the links still cannot be applied: the tree
    // holding them is refused, and nothing is left behind.
    let checked = check(&parent, vec![write("src/lib.rs", "x")]).unwrap();
    let child = tmp.path().join("new/child");
    match apply(&parent, &checked, &child) {
        Err(Error::Refused { what, detail }) => {
            assert_eq!(what, vec!["path-symlink: src/link".to_string()]);
            assert!(detail.contains("a symbolic link at `src/link`"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!child.exists());
    assert!(!tmp.path().join("new").exists(), "the created ancestor is removed again");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn protected_files_are_refused() {
    let (_tmp, parent) = parent();
    let cases = [
        write("Cargo.toml", "[dependencies]\nevil = \"1\"\n"),
        write("Cargo.lock", ""),
        write("build.rs", "fn main() {}"),
        write("crates/sub/build.rs", "fn main() {}"),
        write("crates/sub/Cargo.toml", ""),
        write("CARGO.TOML", ""),
        write("wit/world.wit", "package evil:x;"),
        write("wit/new.txt", ""),
        write("src/other.wit", ""),
        write(".cargo/config.toml", "[build]\nrustflags = []\n"),
        write("src/.cargo/config", ""),
        write("package.json", "{}"),
        write("web/package-lock.json", "{}"),
        write("pyproject.toml", ""),
        write("rust-toolchain.toml", ""),
        write("Variant.toml", ""),
        delete("Cargo.toml"),
        delete("wit/world.wit"),
        delete("variant.toml"),
    ];
    for edit in cases {
        let path = match &edit {
            Edit::Write(f) => f.path.clone(),
            Edit::Delete(p) => p.clone(),
        };
        refused_once(&parent, vec![edit], Rule::ProtectedFile, &path);
    }
    let v = refused_once(&parent, vec![write("crates/sub/build.rs", "")], Rule::ProtectedFile, "crates/sub/build.rs");
    assert_eq!(
        v.detail,
        "protected (`build.rs` in any directory); build files and the WIT cannot be written by a proposal"
    );
    // The rules are data: a language adds its own, a caller can add more.
    let p = proposal(vec![write("rust-toolchain.toml", "")]);
    assert!(check_proposal(&parent, &p, &GuardRules::default()).is_ok());
    assert!(check_proposal(&parent, &p, &GuardRules::for_language(Language::Rust)).is_err());
    let p = proposal(vec![write("requirements.txt", "evil")]);
    assert!(check_proposal(&parent, &p, &GuardRules::for_language(Language::Rust)).is_ok());
    assert!(check_proposal(&parent, &p, &GuardRules::for_language(Language::Python)).is_err());
    let mut rules = GuardRules::default();
    rules.protect(Protected::Path("src/grader.rs".into())).protect(Protected::Path("src/grader.rs".into()));
    assert_eq!(rules.protected.iter().filter(|p| **p == Protected::Path("src/grader.rs".into())).count(), 1);
    let p = proposal(vec![write("src/grader.rs", "")]);
    assert_eq!(check_proposal(&parent, &p, &rules).unwrap_err()[0].rule, Rule::ProtectedFile);
    // Near misses are ordinary files.
    assert!(
        check(&parent, vec![write("src/build.rs.txt", ""), write("src/wit.rs", ""), write("witness/a", "")]).is_ok()
    );
}

#[test]
fn build_outputs_are_not_editable() {
    let (_tmp, parent) = parent();
    for path in [
        "target/debug/out.wasm",
        "src/node_modules/x.js",
        ".git/hooks/pre-commit",
        "a/__pycache__/m.pyc",
        "Target/x",
        ".vivarium/audit/audit.jsonl",
    ] {
        refused_once(&parent, vec![write(path, "x")], Rule::BuildOutput, path);
    }
}

fn manifest_with(old: &str, new: &str) -> String {
    assert!(MANIFEST.contains(old), "{old}");
    MANIFEST.replace(old, new)
}

#[test]
fn the_manifest_keeps_its_capabilities_and_limits() {
    let (_tmp, parent) = parent();
    // Only the description: allowed.
    let ok = manifest_with("description = \"the parent\"", "description = \"a child\"");
    let checked = check(&parent, vec![write("variant.toml", ok.clone())]).unwrap();
    assert!(checked.manifest_edited());
    // Reformatting and reordering lists is no change either.
    let reordered = manifest_with(
        "models = [\"small\", \"large\"], tokens = 1000",
        "tokens = 1_000, models = [\"large\", \"small\"]",
    )
    .replace("memory = \"64MiB\"", "memory = 67108864")
        + "# a comment\n";
    assert!(check(&parent, vec![write("variant.toml", reordered)]).is_ok());

    let raised = manifest_with("tokens = 1000", "tokens = 1000000");
    let v = refused_once(&parent, vec![write("variant.toml", raised)], Rule::ProtectedManifestSection, "variant.toml");
    assert_eq!(v.detail, "`[capabilities]` differs from the parent's; ask for more in `escalation.toml` instead");
    let added = manifest_with("[capabilities]\n", "[capabilities]\nenv = [\"HOME\"]\n");
    refused_once(&parent, vec![write("variant.toml", added)], Rule::ProtectedManifestSection, "variant.toml");
    let dropped = manifest_with("memory = { bytes = \"1MiB\" }\n", "");
    refused_once(&parent, vec![write("variant.toml", dropped)], Rule::ProtectedManifestSection, "variant.toml");
    let fuel = manifest_with("fuel = 1_000_000", "fuel = 1_000_000_000");
    let v = refused_once(&parent, vec![write("variant.toml", fuel)], Rule::ProtectedManifestSection, "variant.toml");
    assert!(v.detail.starts_with("`[limits]` differs"), "{}", v.detail);
    let lang = manifest_with("language = \"rust\"", "language = \"python\"");
    let v = refused_once(&parent, vec![write("variant.toml", lang)], Rule::ProtectedManifestSection, "variant.toml");
    assert_eq!(v.detail, "`[variant] language` changed from `rust` to `python`");
    let builder = manifest_with("description", "builder = \"evil\"\ndescription");
    refused_once(&parent, vec![write("variant.toml", builder)], Rule::ProtectedManifestSection, "variant.toml");
    // Both sections at once: two violations.
    let both = manifest_with("tokens = 1000", "tokens = 2000").replace("fuel = 1_000_000", "fuel = 2_000_000");
    assert_eq!(check(&parent, vec![write("variant.toml", both)]).unwrap_err().len(), 2);

    let v = refused_once(&parent, vec![write("variant.toml", "[variant\n")], Rule::InvalidManifest, "variant.toml");
    assert!(v.detail.starts_with("the new manifest does not parse: variant.toml:1:"), "{}", v.detail);
    refused_once(&parent, vec![write("variant.toml", vec![0xff, 0xfe])], Rule::InvalidManifest, "variant.toml");

    // A parent without a manifest: a new one may not ask for anything.
    fs::remove_file(parent.join("variant.toml")).unwrap();
    let v =
        refused_with(&parent, vec![write("variant.toml", MANIFEST)], Rule::ProtectedManifestSection, "variant.toml");
    assert_eq!(v.len(), 2, "capabilities and limits: {v:#?}");
    let bare = "[variant]\nname = \"x\"\nlanguage = \"wat\"\n";
    assert!(check(&parent, vec![write("variant.toml", bare)]).is_ok());
}

#[test]
fn caps_on_edits_and_bytes() {
    let (_tmp, parent) = parent();
    // 100 000 small edits: one violation, naming the first edit past the cap.
    let many: Vec<Edit> = (0..100_000).map(|i| write(&format!("src/f{i}.rs"), "x")).collect();
    let v = refused_once(&parent, many, Rule::TooManyEdits, "src/f256.rs");
    assert_eq!(v.detail, "the proposal holds 100000 edits; at most 256");
    let exactly: Vec<Edit> = (0..256).map(|i| write(&format!("src/f{i}.rs"), "x")).collect();
    assert!(check(&parent, exactly).is_ok());

    // One file over the per-file cap (and so over the total).
    let big = vec![b'x'; (5 << 20) + 1];
    let v = check(&parent, vec![write("src/big.rs", big)]).unwrap_err();
    assert_eq!(
        v.iter().map(|v| (v.rule, v.path.as_str())).collect::<Vec<_>>(),
        [(Rule::FileTooLarge, "src/big.rs"), (Rule::TooManyBytes, "src/big.rs")]
    );
    // Many files under the per-file cap, over the total: named at the edit that crosses it.
    let chunk = vec![b'y'; 1 << 20];
    let edits: Vec<Edit> = (0..6).map(|i| write(&format!("src/c{i}.rs"), chunk.clone())).collect();
    let v = refused_once(&parent, edits, Rule::TooManyBytes, "src/c4.rs");
    assert_eq!(v.detail, "the writes hold 6291456 bytes in all, past the cap of 4194304 at this edit");
    let edits: Vec<Edit> = (0..4).map(|i| write(&format!("src/c{i}.rs"), chunk.clone())).collect();
    assert!(check(&parent, edits).is_ok());
}

#[test]
fn duplicates_and_conflicts() {
    let (_tmp, parent) = parent();
    refused_once(&parent, vec![write("src/a.rs", "1"), write("src/a.rs", "2")], Rule::DuplicatePath, "src/a.rs");
    refused_once(&parent, vec![write("src/lib.rs", "1"), delete("src/lib.rs")], Rule::DuplicatePath, "src/lib.rs");
    let v = refused_once(&parent, vec![write("src/lib.rs/x.rs", "")], Rule::PathConflict, "src/lib.rs/x.rs");
    assert_eq!(v.detail, "`src/lib.rs` is a file in the parent tree, not a directory");
    refused_once(&parent, vec![write("src", "")], Rule::PathConflict, "src");
    refused_once(&parent, vec![delete("src/strategy")], Rule::PathConflict, "src/strategy");
    refused_once(&parent, vec![delete("src/missing.rs")], Rule::PathConflict, "src/missing.rs");
    refused_once(&parent, vec![write("src/n", ""), write("src/n/m.rs", "")], Rule::PathConflict, "src/n/m.rs");
    // Every violation is reported, not just the first.
    let v = check(&parent, vec![write("../x", ""), write("Cargo.toml", ""), write("src/ok.rs", "")]).unwrap_err();
    assert_eq!(v.iter().map(|v| v.rule).collect::<Vec<_>>(), [Rule::PathParent, Rule::ProtectedFile]);
}

#[test]
fn escalation_requests_ride_along_but_are_not_written() {
    let (tmp, parent) = parent();
    let request = "reason = \"need a bigger model\"\n\n[capabilities]\nllm = { models = [\"huge\"], tokens = 99 }\n";
    let checked = check(&parent, vec![write("src/lib.rs", "// 2"), write("escalation.toml", request)]).unwrap();
    let e = checked.escalation().unwrap();
    assert_eq!(e.reason, "need a bigger model");
    assert_eq!(e.capabilities.llm.as_ref().unwrap().models, vec!["huge".to_string()]);
    assert_eq!(checked.writes().map(|(p, _)| p).collect::<Vec<_>>(), ["src/lib.rs"]);
    assert_eq!(checked.audit_details()["escalation"]["reason"], "need a bigger model");
    let child = tmp.path().join("child");
    apply(&parent, &checked, &child).unwrap();
    assert!(!child.join(ESCALATION_FILE).exists());

    let v = refused_once(
        &parent,
        vec![write("escalation.toml", "reason = 1\n")],
        Rule::InvalidEscalation,
        "escalation.toml",
    );
    assert!(v.detail.starts_with("escalation.toml:1:10: reason: invalid type"), "{}", v.detail);
    refused_once(
        &parent,
        vec![write("escalation.toml", "reason = \"x\"\n")],
        Rule::InvalidEscalation,
        "escalation.toml",
    );
    refused_once(&parent, vec![delete("escalation.toml")], Rule::InvalidEscalation, "escalation.toml");
    let huge = format!("reason = \"x\"\n[capabilities]\n{}", "# pad\n".repeat(20_000));
    refused_once(&parent, vec![write("escalation.toml", huge)], Rule::InvalidEscalation, "escalation.toml");
    // Anywhere else it is an ordinary file.
    assert!(check(&parent, vec![write("src/escalation.toml", "anything")]).unwrap().escalation().is_none());
}

#[test]
fn apply_is_all_or_nothing() {
    let (tmp, parent) = parent();
    let checked = check(&parent, vec![write("src/lib.rs", "// 2")]).unwrap();

    // An existing, non-empty child is refused and left alone.
    let busy = tmp.path().join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("keep"), "mine").unwrap();
    let e = apply(&parent, &checked, &busy).unwrap_err();
    assert!(matches!(e, Error::Invalid(_)) && e.to_string().contains("exists and is not empty"), "{e}");
    assert_eq!(files(&busy), ["keep"]);
    // A file in the way is refused too.
    let file = tmp.path().join("afile");
    fs::write(&file, "x").unwrap();
    assert!(apply(&parent, &checked, &file).is_err());
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
    // An empty directory is filled.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    apply(&parent, &checked, &empty).unwrap();
    assert_eq!(fs::read_to_string(empty.join("src/lib.rs")).unwrap(), "// 2");
    // Inside the parent tree: refused.
    let inside = parent.join("src/child");
    assert!(apply(&parent, &checked, &inside).unwrap_err().to_string().contains("inside the parent tree"));
    assert!(!inside.exists());
    // Another tree than the one checked: refused.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    assert!(apply(&other, &checked, &tmp.path().join("c2")).unwrap_err().to_string().contains("was checked against"));
    assert!(!tmp.path().join("c2").exists());

    // A failure half-way (a special file deep in the tree) leaves nothing:
    // no child, no temporary directory, no created ancestors.
    let fifo = parent.join("src/strategy/zz.fifo");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let container = tmp.path().join("runs");
    fs::create_dir(&container).unwrap();
    let child = container.join("a/b/child");
    match apply(&parent, &checked, &child) {
        Err(Error::Refused { what, .. }) => assert_eq!(what, ["path-conflict: src/strategy/zz.fifo"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read_dir(&container).unwrap().count(), 0, "nothing left in {}", container.display());
    fs::remove_file(&fifo).unwrap();
    apply(&parent, &checked, &child).unwrap();
    assert!(child.join("src/lib.rs").is_file());
    // The same proposal on the same child again: refused, child unchanged.
    assert!(apply(&parent, &checked, &child).is_err());
}

#[cfg(unix)]
#[test]
fn apply_keeps_permission_bits() {
    use std::os::unix::fs::PermissionsExt;
    let (tmp, parent) = parent();
    let script = parent.join("src/run.sh");
    fs::write(&script, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o4755)).unwrap();
    let checked = check(&parent, vec![write("src/lib.rs", "// 2")]).unwrap();
    let child = tmp.path().join("child");
    apply_with(&parent, &checked, &child, &ApplyOptions { fsync: true }).unwrap();
    assert_eq!(fs::metadata(child.join("src/run.sh")).unwrap().permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        fs::metadata(&child).unwrap().permissions().mode() & 0o777,
        fs::metadata(&parent).unwrap().permissions().mode() & 0o777
    );
}

#[test]
fn editable_sources_lists_the_tree() {
    let (_tmp, parent) = parent();
    let sources = editable_sources(&parent, &GuardRules::default()).unwrap();
    let paths: Vec<&str> = sources.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "Cargo.toml",
            "crates/sub/lib.rs",
            "src/lib.rs",
            "src/old.rs",
            "src/strategy/mod.rs",
            "variant.toml",
            "wit/world.wit"
        ]
    );
    assert_eq!(sources[2].contents, b"const STRATEGY: u32 = 1;\n");
    let small = GuardRules { max_tree_bytes: 10, ..GuardRules::default() };
    assert!(editable_sources(&parent, &small).is_err());
    let few = GuardRules { max_tree_files: 3, ..GuardRules::default() };
    assert!(editable_sources(&parent, &few).is_err());
    symlink("/etc/passwd", parent.join("src/p")).unwrap();
    assert!(matches!(editable_sources(&parent, &GuardRules::default()), Err(Error::Refused { .. })));
}

#[test]
fn a_missing_parent_tree_is_a_violation() {
    let tmp = tempfile::tempdir().unwrap();
    let v = check_proposal(&tmp.path().join("nope"), &proposal(vec![]), &GuardRules::default()).unwrap_err();
    assert_eq!((v.len(), v[0].rule), (1, Rule::ParentTree));
}

#[test]
fn digest_covers_every_byte() {
    let a = proposal(vec![write("src/a.rs", "1"), delete("src/b.rs")]);
    let d = proposal_digest(&a);
    assert_eq!(d.len(), 64);
    assert_eq!(proposal_digest(&a.clone()), d);
    let variants = [
        proposal(vec![write("src/a.rs", "2"), delete("src/b.rs")]),
        proposal(vec![write("src/a.rs", "1"), delete("src/c.rs")]),
        proposal(vec![delete("src/b.rs"), write("src/a.rs", "1")]),
        proposal(vec![write("src/a.rs1", ""), delete("src/b.rs")]),
        Proposal { summary: "other".into(), edits: vec![write("src/a.rs", "1"), delete("src/b.rs")] },
    ];
    for p in &variants {
        assert_ne!(proposal_digest(p), d);
    }
}

#[test]
fn violations_become_a_refusal() {
    let (_tmp, parent) = parent();
    let v = check(&parent, vec![write("../x", ""), write("Cargo.toml", "")]).unwrap_err();
    assert_eq!(v[0].to_string(), "path-parent: `../x`: the path contains `..`");
    let e = refusal(&v);
    assert_eq!(e.exit_code(), ExitCode::Refused);
    match &e {
        Error::Refused { what, detail } => {
            assert_eq!(what, &["path-parent: ../x".to_string(), "protected-file: Cargo.toml".to_string()]);
            assert!(detail.starts_with("proposal refused by the guard: path-parent: `../x`"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let json = serde_json::to_value(&v[0]).unwrap();
    assert_eq!(json["rule"], "path-parent");
    for rule in Rule::ALL {
        assert_eq!(serde_json::to_value(rule).unwrap(), rule.as_str());
    }
}
