//! [`apply`]: a checked proposal becomes a new child tree, all or nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use super::check::CheckedProposal;
use super::rules::GuardRules;
use super::Rule;
use crate::bindings::SourceFile;
use crate::error::{Error, Result};

/// How [`apply_with`] writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// fsync every file of the child and its parent directory before and
    /// after the final rename, so the child survives power loss. Without it
    /// (the default) the rename is still atomic against the host process
    /// dying: the child is complete or absent.
    pub fsync: bool,
}

/// [`apply_with`] with the default options.
pub fn apply(parent_tree: &Path, checked: &CheckedProposal, child_tree: &Path) -> Result<()> {
    apply_with(parent_tree, checked, child_tree, &ApplyOptions::default())
}

/// Write the child tree: a copy of `parent_tree` with `checked`'s deletes
/// and writes applied, at `child_tree`.
///
/// * `parent_tree` must be the tree the proposal was checked against.
/// * `child_tree` must not exist, or be an empty directory; it must not be
///   inside the parent tree. Missing parent directories of it are created
///   (and removed again on failure).
/// * The copy skips directories named in [`GuardRules::skipped_dirs`]
///   (`target`, `node_modules`, `__pycache__`, `.git`, `.vivarium`) at any
///   depth, and refuses — [`Error::Refused`] naming `path-symlink` or
///   `path-conflict` and the path — a tree holding a symbolic link or a
///   special file anywhere else. Each file is opened and checked to be the
///   very file that was inspected, so a link swapped in meanwhile is caught.
///   Trees over [`GuardRules::max_tree_files`] or
///   [`GuardRules::max_tree_bytes`] are refused ([`Error::Invalid`]).
/// * Everything is built in a temporary directory next to `child_tree`
///   (`.<name>.tmp-XXXXXX`) and renamed into place at the end: on any
///   failure the temporary directory is removed and no child exists.
/// * Files keep their permission bits (`rwx` only; set-id and sticky bits
///   are dropped); written files get the default mode.
pub fn apply_with(parent_tree: &Path, checked: &CheckedProposal, child_tree: &Path, opts: &ApplyOptions) -> Result<()> {
    let parent = parent_tree
        .canonicalize()
        .map_err(|e| Error::io(format!("reading the parent tree {}", parent_tree.display()), e))?;
    if parent != checked.parent() {
        return Err(Error::invalid(format!(
            "the proposal was checked against {}, not {}",
            checked.parent().display(),
            parent.display()
        )));
    }
    match fs::symlink_metadata(child_tree) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("inspecting {}", child_tree.display()), e)),
        Ok(m) if m.is_dir() => {
            let mut entries =
                fs::read_dir(child_tree).map_err(|e| Error::io(format!("reading {}", child_tree.display()), e))?;
            if entries.next().is_some() {
                return Err(Error::invalid(format!(
                    "the child directory {} exists and is not empty; choose a new directory",
                    child_tree.display()
                )));
            }
        }
        Ok(_) => {
            return Err(Error::invalid(format!(
                "{} exists and is not a directory; choose a new directory",
                child_tree.display()
            )))
        }
    }
    let name = child_tree
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{} does not name a directory", child_tree.display())))?;
    let (existing, missing) = split_existing(child_tree)?;
    let canonical_existing =
        existing.canonicalize().map_err(|e| Error::io(format!("resolving {}", existing.display()), e))?;
    if canonical_existing.starts_with(&parent) {
        return Err(Error::invalid(format!(
            "the child directory {} is inside the parent tree {}; write it elsewhere",
            child_tree.display(),
            parent.display()
        )));
    }

    // Create the missing ancestors (not the child itself), remembering them
    // so a failure removes them again.
    let mut created: Vec<PathBuf> = Vec::new();
    let result = (|| {
        let mut at = existing.clone();
        for c in &missing[..missing.len() - 1] {
            at.push(c);
            fs::create_dir(&at).map_err(|e| Error::io(format!("creating {}", at.display()), e))?;
            created.push(at.clone());
        }
        let container = at;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.tmp-", name.to_string_lossy()))
            .tempdir_in(&container)
            .map_err(|e| Error::io(format!("creating a temporary directory in {}", container.display()), e))?;
        build(&parent, checked, tmp.path(), opts)?;
        if opts.fsync {
            sync_dir(tmp.path())?;
        }
        fs::rename(tmp.path(), child_tree)
            .map_err(|e| Error::io(format!("moving the child into place at {}", child_tree.display()), e))?;
        // Renamed: nothing left for the guard to remove.
        let _ = tmp.keep();
        if opts.fsync {
            sync_dir(&container)?;
        }
        Ok(())
    })();
    if result.is_err() {
        for dir in created.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
    result
}

/// The longest existing ancestor of `path` (made absolute) and the
/// components below it, the last being the child's own name.
fn split_existing(path: &Path) -> Result<(PathBuf, Vec<std::ffi::OsString>)> {
    let abs = std::path::absolute(path).map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
    let mut missing = Vec::new();
    let mut at = abs.as_path();
    loop {
        let exists = at != abs.as_path() && fs::symlink_metadata(at).is_ok();
        if exists {
            break;
        }
        match (at.parent(), at.components().next_back()) {
            (Some(up), Some(Component::Normal(c))) => {
                missing.push(c.to_os_string());
                at = up;
            }
            _ => {
                return Err(Error::invalid(format!(
                    "{} is not a plain path to a new directory (no `..` or `.` after the existing part)",
                    path.display()
                )))
            }
        }
    }
    missing.reverse();
    Ok((at.to_path_buf(), missing))
}

/// Copy the parent into `tmp`, then apply the deletes and writes.
fn build(parent: &Path, checked: &CheckedProposal, tmp: &Path, opts: &ApplyOptions) -> Result<()> {
    let rules = checked.rules();
    let entries = walk(parent, rules)?;
    for e in &entries {
        let dst = tmp.join(&e.rel);
        if e.dir {
            fs::create_dir(&dst).map_err(|err| Error::io(format!("creating {}", dst.display()), err))?;
        } else {
            let mut src = open_checked(e)?;
            let mut out =
                File::create_new(&dst).map_err(|err| Error::io(format!("creating {}", dst.display()), err))?;
            io::copy(&mut src, &mut out).map_err(|err| Error::io(format!("copying {}", e.abs.display()), err))?;
            set_mode(&out, &e.meta, &dst)?;
            if opts.fsync {
                out.sync_all().map_err(|err| Error::io(format!("syncing {}", dst.display()), err))?;
            }
        }
    }
    set_mode_path(tmp, &fs::metadata(parent).map_err(|e| Error::io(format!("reading {}", parent.display()), e))?)?;

    for path in checked.deletes() {
        let dst = tmp.join(path);
        match fs::symlink_metadata(&dst) {
            Ok(m) if m.is_file() => {
                fs::remove_file(&dst).map_err(|e| Error::io(format!("deleting {}", dst.display()), e))?
            }
            _ => {
                return Err(Error::invalid(format!(
                    "cannot delete `{path}`: not a file of the copied tree (is it under a skipped directory?)"
                )))
            }
        }
    }
    for (path, contents) in checked.writes() {
        let dst = tmp.join(path);
        // The copy holds no links, but check each existing prefix anyway.
        let mut at = tmp.to_path_buf();
        let components: Vec<&str> = path.split('/').collect();
        for c in &components[..components.len() - 1] {
            at.push(c);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::invalid(format!("cannot write `{path}`: `{}` is not a directory", at.display())))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&at).map_err(|e| Error::io(format!("creating {}", at.display()), e))?
                }
                Err(e) => return Err(Error::io(format!("inspecting {}", at.display()), e)),
            }
        }
        if let Ok(m) = fs::symlink_metadata(&dst) {
            if !m.is_file() {
                return Err(Error::invalid(format!("cannot write `{path}`: it is not a regular file")));
            }
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&dst)
            .map_err(|e| Error::io(format!("writing {}", dst.display()), e))?;
        f.write_all(contents).map_err(|e| Error::io(format!("writing {}", dst.display()), e))?;
        if opts.fsync {
            f.sync_all().map_err(|e| Error::io(format!("syncing {}", dst.display()), e))?;
        }
    }
    Ok(())
}

/// One entry of a tree: its `/`-separated relative path and its metadata
/// (taken without following links).
struct Entry {
    rel: String,
    abs: PathBuf,
    dir: bool,
    meta: fs::Metadata,
}

fn refused(rule: Rule, tree: &Path, rel: &str, why: &str) -> Error {
    Error::Refused {
        what: vec![format!("{rule}: {}", super::shown_path(rel))],
        detail: format!("the tree {} holds {why} at `{}`; refusing to copy it", tree.display(), super::shown_path(rel)),
    }
}

/// Every directory and file of `tree`, parents before children, sorted by
/// path; skipped directories left out. Refuses links, special files,
/// non-UTF-8 names and trees over the caps.
fn walk(tree: &Path, rules: &GuardRules) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(tree.to_path_buf(), String::new())];
    let mut bytes: u64 = 0;
    while let Some((dir, rel_dir)) = stack.pop() {
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))? {
            let entry = entry.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
            let name = entry.file_name().into_string().map_err(|name| {
                Error::invalid(format!("{}: a file name in {} is not UTF-8", name.to_string_lossy(), dir.display()))
            })?;
            names.push(name);
            if out.len() + names.len() > rules.max_tree_files {
                return Err(Error::invalid(format!(
                    "the tree {} holds more than {} files and directories",
                    tree.display(),
                    rules.max_tree_files
                )));
            }
        }
        // Sorted, so that the first refusal is the same on every file system.
        names.sort();
        let mut children = Vec::new();
        for name in &names {
            let name = name.as_str();
            let rel = if rel_dir.is_empty() { name.to_string() } else { format!("{rel_dir}/{name}") };
            let abs = dir.join(name);
            let meta = fs::symlink_metadata(&abs).map_err(|e| Error::io(format!("inspecting {}", abs.display()), e))?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                return Err(refused(Rule::PathSymlink, tree, &rel, "a symbolic link"));
            }
            if ft.is_dir() {
                if rules.skips_dir(name) {
                    continue;
                }
            } else if !ft.is_file() {
                return Err(refused(Rule::PathConflict, tree, &rel, "a special file (device, socket or pipe)"));
            } else {
                bytes = bytes.saturating_add(meta.len());
            }
            children.push(Entry { rel, abs, dir: ft.is_dir(), meta });
        }
        children.sort_by(|a, b| a.rel.cmp(&b.rel));
        for c in children.iter().rev().filter(|c| c.dir) {
            stack.push((c.abs.clone(), c.rel.clone()));
        }
        out.extend(children);
        if out.len() > rules.max_tree_files {
            return Err(Error::invalid(format!(
                "the tree {} holds more than {} files and directories",
                tree.display(),
                rules.max_tree_files
            )));
        }
        if bytes > rules.max_tree_bytes {
            return Err(Error::invalid(format!(
                "the tree {} holds more than {} bytes",
                tree.display(),
                rules.max_tree_bytes
            )));
        }
    }
    // Parents come before children, but a depth-first stack interleaves
    // siblings' subtrees; sorting by path keeps parents first.
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// Open the file `e` and make sure it is the very file `walk` inspected (a
/// link or another file swapped in since then is refused).
fn open_checked(e: &Entry) -> Result<File> {
    let f = File::open(&e.abs).map_err(|err| Error::io(format!("opening {}", e.abs.display()), err))?;
    let now = f.metadata().map_err(|err| Error::io(format!("inspecting {}", e.abs.display()), err))?;
    if !now.is_file() || !same_file(&now, &e.meta) {
        return Err(Error::Refused {
            what: vec![format!("{}: {}", Rule::PathSymlink, e.rel)],
            detail: format!("`{}` changed while the tree was being read; refusing it", e.abs.display()),
        });
    }
    Ok(f)
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

#[cfg(unix)]
fn set_mode(f: &File, src: &fs::Metadata, dst: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(fs::Permissions::from_mode(src.permissions().mode() & 0o777))
        .map_err(|e| Error::io(format!("setting the mode of {}", dst.display()), e))
}

#[cfg(not(unix))]
fn set_mode(_f: &File, _src: &fs::Metadata, _dst: &Path) -> Result<()> {
    Ok(())
}

#[cfg(unix)]
fn set_mode_path(dst: &Path, src: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dst, fs::Permissions::from_mode(src.permissions().mode() & 0o777))
        .map_err(|e| Error::io(format!("setting the mode of {}", dst.display()), e))
}

#[cfg(not(unix))]
fn set_mode_path(_dst: &Path, _src: &fs::Metadata) -> Result<()> {
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
}

/// The editable tree of a variant, as the meta-agent sees it in its
/// `improve-context`: every file (build files and manifest included, as
/// read-only information), sorted by path, with skipped directories left
/// out. Refuses symbolic links and special files anywhere ([`Error::Refused`])
/// and trees over the caps ([`Error::Invalid`]), like [`apply`].
pub fn editable_sources(tree: &Path, rules: &GuardRules) -> Result<Vec<SourceFile>> {
    let mut out = Vec::new();
    for e in walk(tree, rules)?.into_iter().filter(|e| !e.dir) {
        let mut f = open_checked(&e)?.take(rules.max_tree_bytes.saturating_add(1));
        let mut contents = Vec::with_capacity(e.meta.len().min(rules.max_tree_bytes) as usize);
        f.read_to_end(&mut contents).map_err(|err| Error::io(format!("reading {}", e.abs.display()), err))?;
        out.push(SourceFile { path: e.rel, contents });
    }
    let total: u64 = out.iter().map(|f| f.contents.len() as u64).sum();
    if total > rules.max_tree_bytes {
        return Err(Error::invalid(format!(
            "the tree {} holds more than {} bytes",
            tree.display(),
            rules.max_tree_bytes
        )));
    }
    Ok(out)
}
