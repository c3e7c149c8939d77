//! The guard's rules as data: caps, protected files, skipped directories.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::caps::Language;

/// The manifest's file name at the root of a variant tree.
pub use crate::caps::manifest::MANIFEST_FILE;

/// A file (or set of files) no proposal may write or delete.
///
/// Every match is ASCII-case-insensitive; paths are the `/`-separated
/// relative paths of the proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum Protected {
    /// Exactly this relative path (e.g. `rust-toolchain.toml` at the root).
    Path(String),
    /// A file with this name in any directory (e.g. `Cargo.toml`, `build.rs`).
    Name(String),
    /// Everything under this root-level directory (e.g. `wit`).
    Dir(String),
    /// Everything under a directory of this name at any depth (e.g. `.cargo`).
    DirName(String),
    /// Every file with this extension, without the dot (e.g. `wit`).
    Extension(String),
}

impl Protected {
    /// Whether `path` (a valid relative path) is protected by this entry.
    pub fn matches(&self, path: &str) -> bool {
        let components: Vec<&str> = path.split('/').collect();
        let file = components.last().copied().unwrap_or_default();
        match self {
            Protected::Path(p) => path.eq_ignore_ascii_case(p),
            Protected::Name(n) => file.eq_ignore_ascii_case(n),
            Protected::Dir(d) => {
                components.len() > 1 && components[0].eq_ignore_ascii_case(d) || path.eq_ignore_ascii_case(d)
            }
            Protected::DirName(d) => components.iter().any(|c| c.eq_ignore_ascii_case(d)),
            Protected::Extension(e) => {
                file.rsplit_once('.').is_some_and(|(stem, ext)| !stem.is_empty() && ext.eq_ignore_ascii_case(e))
            }
        }
    }
}

impl fmt::Display for Protected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protected::Path(p) => write!(f, "`{p}`"),
            Protected::Name(n) => write!(f, "`{n}` in any directory"),
            Protected::Dir(d) => write!(f, "anything under `{d}/`"),
            Protected::DirName(d) => write!(f, "anything under a `{d}/` directory"),
            Protected::Extension(e) => write!(f, "`*.{e}` files"),
        }
    }
}

/// The guard's rules. [`Default`] holds the caps and the protected build
/// files of every language; [`GuardRules::for_language`] adds a language's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardRules {
    /// The most edits one proposal may hold (default 256).
    pub max_edits: usize,
    /// The most bytes all writes together may hold (default 4 MiB).
    pub max_total_bytes: u64,
    /// The most bytes one write may hold (default 1 MiB).
    pub max_file_bytes: u64,
    /// The longest path, in bytes (default 1024).
    pub max_path_bytes: usize,
    /// The longest path component, in bytes (default 255).
    pub max_component_bytes: usize,
    /// The most components a path may have (default 32).
    pub max_depth: usize,
    /// Files no proposal may write or delete.
    pub protected: Vec<Protected>,
    /// Directory names that hold build outputs or metadata: never copied into
    /// a child (exact name), never editable (any case, any depth).
    pub skipped_dirs: Vec<String>,
    /// The most files a tree may hold when it is copied or read (default 10 000).
    pub max_tree_files: usize,
    /// The most bytes a tree may hold when it is copied or read (default 64 MiB).
    pub max_tree_bytes: u64,
}

impl Default for GuardRules {
    fn default() -> Self {
        let names = ["Cargo.toml", "Cargo.lock", "build.rs", "package.json", "package-lock.json", "pyproject.toml"];
        let mut protected: Vec<Protected> = names.iter().map(|n| Protected::Name(n.to_string())).collect();
        protected.push(Protected::Dir("wit".into()));
        protected.push(Protected::Extension("wit".into()));
        protected.push(Protected::DirName(".cargo".into()));
        Self {
            max_edits: 256,
            max_total_bytes: 4 << 20,
            max_file_bytes: 1 << 20,
            max_path_bytes: 1024,
            max_component_bytes: 255,
            max_depth: 32,
            protected,
            skipped_dirs: ["target", "node_modules", "__pycache__", ".git", ".vivarium"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_tree_files: 10_000,
            max_tree_bytes: 64 << 20,
        }
    }
}

impl GuardRules {
    /// The defaults plus the files the builder for `language` reads as
    /// configuration (toolchain pins, dependency lists, package-manager
    /// settings).
    pub fn for_language(language: Language) -> Self {
        let mut rules = Self::default();
        let (paths, names): (&[&str], &[&str]) = match language {
            Language::Rust => (&["rust-toolchain", "rust-toolchain.toml"], &["Cargo.toml", "Cargo.lock", "build.rs"]),
            Language::Python => (
                &[],
                &[
                    "setup.py",
                    "setup.cfg",
                    "requirements.txt",
                    "Pipfile",
                    "Pipfile.lock",
                    "poetry.lock",
                    "uv.lock",
                    "pip.conf",
                    "sitecustomize.py",
                    "usercustomize.py",
                ],
            ),
            Language::Javascript => {
                (&[], &[".npmrc", ".yarnrc", ".yarnrc.yml", "yarn.lock", "pnpm-lock.yaml", "npm-shrinkwrap.json"])
            }
            Language::C => (&[], &["Makefile", "CMakeLists.txt"]),
            Language::Wat => (&[], &[]),
        };
        for p in paths {
            rules.protect(Protected::Path(p.to_string()));
        }
        for n in names {
            rules.protect(Protected::Name(n.to_string()));
        }
        rules
    }

    /// Add `entry` to the protected files (once).
    pub fn protect(&mut self, entry: Protected) -> &mut Self {
        if !self.protected.contains(&entry) {
            self.protected.push(entry);
        }
        self
    }

    /// The first protected entry `path` matches.
    pub fn protected_by(&self, path: &str) -> Option<&Protected> {
        self.protected.iter().find(|p| p.matches(path))
    }

    /// The first component of `path` that names a skipped directory (any case).
    pub fn skipped_component<'a>(&self, path: &'a str) -> Option<&'a str> {
        let components: Vec<&str> = path.split('/').collect();
        // The last component is the file itself; a file named `target` is fine.
        components[..components.len().saturating_sub(1)]
            .iter()
            .copied()
            .find(|c| self.skipped_dirs.iter().any(|s| s.eq_ignore_ascii_case(c)))
    }

    /// Whether a directory named exactly `name` is skipped when a tree is copied.
    pub fn skips_dir(&self, name: &str) -> bool {
        self.skipped_dirs.iter().any(|s| s == name)
    }
}
