//! File-level helpers: the head file, reading the log's tail, advisory locks,
//! directory fsync.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The chain's head as kept in `head.json`: the last record's `seq` and `hash`.
///
/// Written atomically after every append. A log that ends before the head's
/// `seq` was truncated; a log that goes past it had its head rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// `seq` of the last record.
    pub seq: u64,
    /// `hash` of the last record.
    pub hash: String,
}

/// What the head file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeadState {
    /// No head file (a fresh log, or a deleted head).
    Missing,
    /// A well-formed head.
    Present(Head),
    /// A head file that is not a head; the reason.
    Garbled(String),
}

/// Read the head file. I/O failures other than "not found" are errors.
pub(crate) fn read_head(path: &Path) -> Result<HeadState> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HeadState::Missing),
        Err(e) => return Err(Error::io(format!("cannot read audit head {}", path.display()), e)),
    };
    Ok(match serde_json::from_slice::<Head>(&bytes) {
        Ok(h) if is_hash(&h.hash) => HeadState::Present(h),
        Ok(h) => HeadState::Garbled(format!("its hash {:?} is not 64 lowercase hex digits", h.hash)),
        Err(e) => HeadState::Garbled(format!("not a head record: {e}")),
    })
}

/// Replace the head file atomically: write `tmp`, fsync it, rename it over
/// `path`, fsync the directory (the fsyncs only when `fsync`).
pub(crate) fn write_head(dir: &Path, path: &Path, tmp: &Path, head: &Head, fsync: bool) -> Result<()> {
    let mut bytes =
        serde_json::to_vec(head).map_err(|e| Error::Internal(anyhow::anyhow!("cannot serialize audit head: {e}")))?;
    bytes.push(b'\n');
    let ctx = || format!("cannot write audit head {}", tmp.display());
    let mut f = File::create(tmp).map_err(|e| Error::io(ctx(), e))?;
    f.write_all(&bytes).map_err(|e| Error::io(ctx(), e))?;
    if fsync {
        f.sync_all().map_err(|e| Error::io(ctx(), e))?;
    }
    drop(f);
    fs::rename(tmp, path)
        .map_err(|e| Error::io(format!("cannot replace audit head {} with {}", path.display(), tmp.display()), e))?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Fsync a directory so that a rename or a new file in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let ctx = || format!("cannot fsync directory {}", dir.display());
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(ctx(), e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Whether `s` is 64 lowercase hex digits.
pub(crate) fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The end of the log file.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    /// Up to the requested number of last complete lines, oldest first,
    /// without their `\n`.
    pub lines: Vec<Vec<u8>>,
    /// Bytes after the last `\n` (a write that did not complete); usually empty.
    pub fragment: Vec<u8>,
    /// File offset where `fragment` starts (= the length of the complete part).
    pub fragment_offset: u64,
}

/// Read the last `want` complete lines of `file` (and any unterminated
/// fragment after them), reading backwards in chunks.
pub(crate) fn read_tail(file: &File, want: usize) -> io::Result<Tail> {
    const CHUNK: u64 = 16 * 1024;
    let mut f = file;
    let len = f.seek(SeekFrom::End(0))?;
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    // `want` complete lines need `want + 1` newlines in view (the one before
    // the first of them), unless the view reaches the start of the file.
    while start > 0 && buf.iter().filter(|&&b| b == b'\n').count() <= want {
        let step = CHUNK.min(start);
        start -= step;
        let mut chunk = vec![0u8; step as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let fragment = buf[complete..].to_vec();
    let mut lines: Vec<&[u8]> = buf[..complete].split(|&b| b == b'\n').collect();
    lines.pop(); // the empty piece after the final '\n' (or the only, empty, piece)
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // begins before the view: partial
    }
    let skip = lines.len().saturating_sub(want);
    Ok(Tail {
        lines: lines[skip..].iter().map(|l| l.to_vec()).collect(),
        fragment,
        fragment_offset: start + complete as u64,
    })
}

/// An advisory lock on an open file (`flock` on Unix), released on drop.
pub(crate) struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    /// Wait for the exclusive lock (writers).
    pub fn exclusive(file: &'a File, path: &Path) -> Result<Self> {
        file.lock().map_err(|e| Error::io(format!("cannot lock audit log {}", path.display()), e))?;
        Ok(FileLock(file))
    }

    /// Wait for a shared lock (readers).
    pub fn shared(file: &'a File, path: &Path) -> Result<Self> {
        file.lock_shared().map_err(|e| Error::io(format!("cannot lock audit log {}", path.display()), e))?;
        Ok(FileLock(file))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(content: &[u8], want: usize) -> Tail {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, content).unwrap();
        read_tail(&File::open(&p).unwrap(), want).unwrap()
    }

    #[test]
    fn tail_of_small_files() {
        let t = tail_of(b"", 2);
        assert!(t.lines.is_empty() && t.fragment.is_empty() && t.fragment_offset == 0);
        let t = tail_of(b"a\n", 2);
        assert_eq!(t.lines, vec![b"a".to_vec()]);
        assert_eq!(t.fragment_offset, 2);
        let t = tail_of(b"a\nbb\nccc\n", 2);
        assert_eq!(t.lines, vec![b"bb".to_vec(), b"ccc".to_vec()]);
        assert!(t.fragment.is_empty());
        let t = tail_of(b"a\nbb\nccc\ndd", 2);
        assert_eq!(t.lines, vec![b"bb".to_vec(), b"ccc".to_vec()]);
        assert_eq!(t.fragment, b"dd");
        assert_eq!(t.fragment_offset, 9);
        let t = tail_of(b"frag", 1);
        assert!(t.lines.is_empty());
        assert_eq!((t.fragment.as_slice(), t.fragment_offset), (&b"frag"[..], 0));
    }

    #[test]
    fn tail_across_chunks() {
        // Lines longer than the chunk size, and many of them.
        let long_a = vec![b'a'; 40_000];
        let long_b = vec![b'b'; 17_000];
        let mut content = Vec::new();
        for i in 0..50 {
            content.extend_from_slice(format!("line{i}\n").as_bytes());
        }
        content.extend_from_slice(&long_a);
        content.push(b'\n');
        content.extend_from_slice(&long_b);
        content.push(b'\n');
        content.extend_from_slice(b"xyz");
        let t = tail_of(&content, 2);
        assert_eq!(t.lines, vec![long_a.clone(), long_b.clone()]);
        assert_eq!(t.fragment, b"xyz");
        assert_eq!(t.fragment_offset, content.len() as u64 - 3);
        let t = tail_of(&content[..content.len() - 3], 3);
        assert_eq!(t.lines, vec![b"line49".to_vec(), long_a, long_b]);
    }

    #[test]
    fn head_states() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("head.json");
        assert_eq!(read_head(&p).unwrap(), HeadState::Missing);
        let h = Head { seq: 3, hash: "ab".repeat(32) };
        write_head(dir.path(), &p, &dir.path().join("head.json.tmp"), &h, true).unwrap();
        assert_eq!(read_head(&p).unwrap(), HeadState::Present(h));
        assert!(!dir.path().join("head.json.tmp").exists());
        fs::write(&p, b"{\"seq\":1}").unwrap();
        assert!(matches!(read_head(&p).unwrap(), HeadState::Garbled(m) if m.contains("hash")));
        fs::write(&p, b"{\"seq\":1,\"hash\":\"XYZ\"}").unwrap();
        assert!(matches!(read_head(&p).unwrap(), HeadState::Garbled(m) if m.contains("64 lowercase hex")));
    }
}
