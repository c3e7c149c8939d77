//! Novelty rejection: a child whose source is a near-duplicate of a
//! variant already in the run is not evaluated.
//!
//! The measure is the Jaccard similarity of the two source trees' sets of
//! *line shingles*: every run of [`SHINGLE`] consecutive non-blank lines
//! (whitespace trimmed), per file, tagged with the file's path. A tree
//! whose text is the same except for blank lines or indentation scores 1;
//! a one-line edit in a 300-line file changes at most `SHINGLE` shingles of
//! ~300, so it scores ≈ 0.99; a rewrite scores near 0. Binary files (not
//! UTF-8) count as one shingle of their bytes' hash. It needs nothing but
//! the two trees — no embedding model, no service — and it is symmetric
//! and deterministic. ShinkaEvolve and OpenEvolve reject by embedding
//! similarity; a user who wants "same program, cosmetic edit" rejected
//! sets `novelty_threshold` just below 1 (e.g. 0.98), one who wants
//! broader moves lower.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

/// Lines per shingle.
pub const SHINGLE: usize = 3;

/// A tree's shingle set: 64-bit hashes.
pub type Shingles = HashSet<u64>;

fn h(parts: &[&[u8]]) -> u64 {
    let mut d = Sha256::new();
    for p in parts {
        d.update((p.len() as u64).to_le_bytes());
        d.update(p);
    }
    let out = d.finalize();
    u64::from_le_bytes(out[..8].try_into().expect("8 bytes"))
}

/// The shingles of a tree given as `(path, bytes)` pairs.
pub fn shingles<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Shingles {
    let mut out = HashSet::new();
    for (path, bytes) in files {
        let Ok(text) = std::str::from_utf8(bytes) else {
            out.insert(h(&[path.as_bytes(), bytes]));
            continue;
        };
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if lines.len() < SHINGLE {
            // A short file is one shingle of all its lines.
            let joined = lines.join("\n");
            out.insert(h(&[path.as_bytes(), joined.as_bytes()]));
            continue;
        }
        for w in lines.windows(SHINGLE) {
            let joined = w.join("\n");
            out.insert(h(&[path.as_bytes(), joined.as_bytes()]));
        }
    }
    out
}

/// Jaccard similarity `|a ∩ b| / |a ∪ b|`, in `[0, 1]`; two empty trees are
/// identical (1).
pub fn similarity(a: &Shingles, b: &Shingles) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(src: &str) -> Shingles {
        shingles([("src/lib.rs", src.as_bytes()), ("variant.toml", b"[variant]\nname = \"x\"\n".as_slice())])
    }

    #[test]
    fn cosmetic_edits_are_identical_and_rewrites_are_not() {
        let body: String = (0..100).map(|i| format!("let x{i} = {i};\n")).collect();
        let a = tree(&body);
        let reindented: String = body.lines().map(|l| format!("    {l}\n\n")).collect();
        assert_eq!(similarity(&a, &tree(&reindented)), 1.0);
        let one_line = body.replace("let x50 = 50;", "let x50 = 51;");
        let s = similarity(&a, &tree(&one_line));
        assert!(s > 0.9 && s < 1.0, "{s}");
        let other: String = (0..100).map(|i| format!("fn f{i}() {{}}\n")).collect();
        let s = similarity(&a, &tree(&other));
        assert!(s < 0.1, "{s}");
        assert_eq!(similarity(&a, &tree(&other)), similarity(&tree(&other), &a), "symmetric");
    }

    #[test]
    fn the_same_text_under_another_path_is_different_and_binaries_hash_whole() {
        let a = shingles([("a.rs", b"1\n2\n3\n".as_slice())]);
        let b = shingles([("b.rs", b"1\n2\n3\n".as_slice())]);
        assert_eq!(similarity(&a, &b), 0.0);
        let x = shingles([("x.bin", [0xff_u8, 0xfe].as_slice())]);
        let y = shingles([("x.bin", [0xff_u8, 0xfd].as_slice())]);
        assert_eq!(similarity(&x, &x.clone()), 1.0);
        assert_eq!(similarity(&x, &y), 0.0);
        assert_eq!(similarity(&Shingles::new(), &Shingles::new()), 1.0);
    }
}
