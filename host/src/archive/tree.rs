//! Source trees as blobs: a canonical manifest blob naming one blob per file.
//!
//! # Manifest format
//!
//! UTF-8 text, `\n`-terminated lines, the first line a header and then one
//! line per regular file, sorted by path (byte order), no duplicates:
//!
//! ```text
//! vivarium-tree 1
//! 100644 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae src/lib.rs
//! 100755 fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9 tools/run.sh
//! 100644 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 variant.toml
//! ```
//!
//! * mode: `100644`, or `100755` when any execute bit was set (git's two
//!   modes; owners, times and other bits are not kept);
//! * the file's sha256, which is also its blob's name;
//! * the path relative to the tree's root, `/`-separated, UTF-8, no control
//!   characters, no empty, `.` or `..` component (it may contain spaces:
//!   everything after the second space is the path).
//!
//! The tree's sha256 is the sha256 of these bytes, so the same files give
//! the same tree sha on every machine. Empty directories are not kept.
//! [`parse_manifest`] accepts only the canonical form (it re-encodes and
//! compares), so a manifest has exactly one valid spelling.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use super::blobs::{check_sha, is_sha256, BlobStore};
use crate::error::{Error, Result};

/// First line of every manifest.
pub const MANIFEST_HEADER: &str = "vivarium-tree 1";

/// Directory names that `put_tree` skips at any depth: build outputs,
/// dependency caches and version-control metadata are not part of a
/// variant's source. (A file named `.git`, a worktree link, is skipped too.)
pub const SKIPPED_DIRS: &[&str] = &["target", "node_modules", "__pycache__", ".git"];

/// Mode of an ordinary file in a manifest.
pub const MODE_FILE: u32 = 0o100644;
/// Mode of an executable file in a manifest.
pub const MODE_EXEC: u32 = 0o100755;

/// One file of a stored tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// `/`-separated path relative to the tree's root.
    pub path: String,
    /// sha256 of the file's bytes (its blob).
    pub sha256: String,
    /// [`MODE_FILE`] or [`MODE_EXEC`].
    pub mode: u32,
}

/// The canonical manifest bytes of `entries` (sorted here; the caller's
/// order does not matter). Fails on an invalid path or sha, or a duplicate.
pub fn encode_manifest(entries: &[TreeEntry]) -> Result<Vec<u8>> {
    let mut sorted: Vec<&TreeEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut out = String::with_capacity(MANIFEST_HEADER.len() + 1 + entries.len() * 100);
    out.push_str(MANIFEST_HEADER);
    out.push('\n');
    let mut prev: Option<&str> = None;
    for e in sorted {
        check_rel_path(&e.path)?;
        check_sha(&e.sha256)?;
        if e.mode != MODE_FILE && e.mode != MODE_EXEC {
            return Err(Error::invalid(format!("{}: mode {:o} is not 100644 or 100755", e.path, e.mode)));
        }
        if prev == Some(e.path.as_str()) {
            return Err(Error::invalid(format!("{}: listed twice in a tree", e.path)));
        }
        prev = Some(&e.path);
        out.push_str(&format!("{:o} {} {}\n", e.mode, e.sha256, e.path));
    }
    let bytes = out.into_bytes();
    check_no_file_dir_clash(entries)?;
    Ok(bytes)
}

/// Parse a manifest, accepting only its canonical form.
pub fn parse_manifest(bytes: &[u8]) -> Result<Vec<TreeEntry>> {
    let bad = |why: String| Error::invalid(format!("not a tree manifest: {why}"));
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    let body = text
        .strip_prefix(MANIFEST_HEADER)
        .and_then(|t| t.strip_prefix('\n'))
        .ok_or_else(|| bad(format!("the first line is not {MANIFEST_HEADER:?}")))?;
    let mut entries = Vec::new();
    for (i, line) in body.split_terminator('\n').enumerate() {
        let mut parts = line.splitn(3, ' ');
        let (Some(mode), Some(sha), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(format!("line {} is not `mode sha256 path`", i + 2)));
        };
        let mode = match mode {
            "100644" => MODE_FILE,
            "100755" => MODE_EXEC,
            other => return Err(bad(format!("line {}: mode {other:?}", i + 2))),
        };
        if !is_sha256(sha) {
            return Err(bad(format!("line {}: {sha:?} is not a sha256", i + 2)));
        }
        entries.push(TreeEntry { path: path.to_string(), sha256: sha.to_string(), mode });
    }
    let canonical = encode_manifest(&entries).map_err(|e| bad(e.to_string()))?;
    if canonical != bytes {
        return Err(bad("not in canonical form (unsorted, or a missing final newline)".into()));
    }
    Ok(entries)
}

/// `Err(Invalid)` unless `path` is a clean relative `/`-separated path.
pub(crate) fn check_rel_path(path: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid(format!("{path:?} is not a valid tree path: {why}"));
    if path.is_empty() {
        return Err(bad("empty"));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(bad("it contains a control character"));
    }
    if path.starts_with('/') {
        return Err(bad("absolute"));
    }
    if path.contains('\\') {
        return Err(bad("it contains a backslash"));
    }
    for comp in path.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return Err(bad("an empty, `.` or `..` component"));
        }
    }
    Ok(())
}

/// A path may not be both a file and a directory of the tree.
fn check_no_file_dir_clash(entries: &[TreeEntry]) -> Result<()> {
    let files: std::collections::HashSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for e in entries {
        let mut rest = e.path.as_str();
        while let Some((dir, _)) = rest.rsplit_once('/') {
            if files.contains(dir) {
                return Err(Error::invalid(format!("{dir:?} is both a file and the directory of {:?}", e.path)));
            }
            rest = dir;
        }
    }
    Ok(())
}

/// Store every file under `dir` and then its manifest; returns the tree sha.
///
/// Skips [`SKIPPED_DIRS`]; refuses a symbolic link anywhere in the tree
/// ([`Error::Refused`], naming it) and any other non-regular file
/// ([`Error::Invalid`]), as well as a name that is not UTF-8 or holds a
/// control character. File blobs are written before the manifest that names
/// them.
pub fn put_tree(store: &BlobStore, dir: &Path) -> Result<String> {
    let meta = fs::metadata(dir).map_err(|e| Error::io(format!("cannot read source tree {}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::invalid(format!("{} is not a directory", dir.display())));
    }
    let mut entries = BTreeMap::new();
    walk(store, dir, "", &mut entries)?;
    let entries: Vec<TreeEntry> = entries.into_values().collect();
    store.put(&encode_manifest(&entries)?)
}

fn walk(store: &BlobStore, dir: &Path, prefix: &str, out: &mut BTreeMap<String, TreeEntry>) -> Result<()> {
    let ctx = |p: &Path| format!("cannot read {}", p.display());
    let rd = fs::read_dir(dir).map_err(|e| Error::io(ctx(dir), e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(ctx(dir), e))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(Error::invalid(format!("{}: file name is not UTF-8", path.display())));
        };
        let rel = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
        let ft = entry.file_type().map_err(|e| Error::io(ctx(&path), e))?;
        if ft.is_symlink() {
            return Err(Error::Refused {
                what: vec![format!("symlink {rel}")],
                detail: format!(
                    "{rel} is a symbolic link; a variant's source tree may not contain links ({})",
                    path.display()
                ),
            });
        }
        if SKIPPED_DIRS.contains(&name) && (ft.is_dir() || name == ".git") {
            continue;
        }
        check_rel_path(&rel)?;
        if ft.is_dir() {
            walk(store, &path, &rel, out)?;
        } else if ft.is_file() {
            let bytes = fs::read(&path).map_err(|e| Error::io(ctx(&path), e))?;
            let mode = if is_executable(&entry.metadata().map_err(|e| Error::io(ctx(&path), e))?) {
                MODE_EXEC
            } else {
                MODE_FILE
            };
            let sha256 = store.put(&bytes)?;
            out.insert(rel.clone(), TreeEntry { path: rel, sha256, mode });
        } else {
            return Err(Error::invalid(format!("{rel} is not a regular file or directory (a device, socket or pipe)")));
        }
    }
    Ok(())
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &fs::Metadata) -> bool {
    false
}

/// The entries of tree `tree_sha` (its manifest blob verified and parsed).
pub fn read_tree(store: &BlobStore, tree_sha: &str) -> Result<Vec<TreeEntry>> {
    parse_manifest(&store.get(tree_sha)?).map_err(|e| Error::invalid(format!("blob {tree_sha}: {e}")))
}

/// Every file of tree `tree_sha` with its bytes (each blob verified), in
/// manifest order.
pub fn tree_contents(store: &BlobStore, tree_sha: &str) -> Result<Vec<(TreeEntry, Vec<u8>)>> {
    read_tree(store, tree_sha)?
        .into_iter()
        .map(|e| {
            let bytes = store.get(&e.sha256)?;
            Ok((e, bytes))
        })
        .collect()
}

/// Write tree `tree_sha` out as `dest`.
///
/// `dest` must not exist, or be an empty directory. The files are written
/// into a fresh directory beside `dest` and it is renamed into place at the
/// end, so `dest` appears complete or not at all; every blob is verified on
/// the way. Modes come back as 0644 / 0755.
pub fn restore_tree(store: &BlobStore, tree_sha: &str, dest: &Path) -> Result<()> {
    let entries = read_tree(store, tree_sha)?;
    match fs::read_dir(dest) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::invalid(format!("cannot restore into {}: it is not empty", dest.display())));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(format!("cannot restore into {}", dest.display()), e));
        }
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
    let staging = tempfile::Builder::new()
        .prefix(".restore-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io(format!("cannot create a directory in {}", parent.display()), e))?;
    for e in &entries {
        // The manifest was validated; check again that the path stays inside.
        debug_assert!(Path::new(&e.path).components().all(|c| matches!(c, Component::Normal(_))));
        let target = staging.path().join(&e.path);
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).map_err(|err| Error::io(format!("cannot create {}", dir.display()), err))?;
        }
        let bytes = store.get(&e.sha256)?;
        fs::write(&target, &bytes).map_err(|err| Error::io(format!("cannot write {}", target.display()), err))?;
        set_mode(&target, e.mode)?;
    }
    if dest.exists() {
        fs::remove_dir(dest).map_err(|e| Error::io(format!("cannot replace empty {}", dest.display()), e))?;
    }
    // tempfile makes the staging directory 0700; give it a directory's usual mode.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(format!("cannot set the mode of {}", staging.path().display()), e))?;
    }
    let staged = staging.keep();
    fs::rename(&staged, dest).map_err(|e| {
        let _ = fs::remove_dir_all(&staged);
        Error::io(format!("cannot move the restored tree to {}", dest.display()), e)
    })?;
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o777))
        .map_err(|e| Error::io(format!("cannot set the mode of {}", path.display()), e))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}
