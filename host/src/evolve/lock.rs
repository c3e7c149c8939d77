//! One writer per run: an OS file lock on `runs/<name>/.lock`.
//!
//! Two `vivarium evolve` processes on one run would race on its staging
//! directories and step ledger; the archive's transactions keep each row
//! whole, but not the run's plan. So the first process takes an exclusive
//! lock on the run's lock file (`File::try_lock`: `flock(2)` on Unix) and
//! writes its pid there; a second one fails at once ([`Error::Invalid`],
//! exit 2) naming the run and that pid.
//!
//! The kernel drops the lock when its holder dies, however it dies (kill -9
//! included), so a stale lock never blocks a resume and nothing needs
//! cleaning. The file itself stays; only the lock on it matters.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file's name inside a run's directory.
pub const LOCK_FILE: &str = ".lock";

/// A held run lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Take the lock of run `run_id`, whose directory is `run_dir` (made if
    /// missing), without waiting.
    ///
    /// Errors: [`Error::Invalid`] when another process holds it, naming the
    /// run and the holder's pid; [`Error::Io`] when the file cannot be made.
    pub fn acquire(run_dir: &Path, run_id: &str) -> Result<RunLock> {
        std::fs::create_dir_all(run_dir).map_err(|e| Error::io(format!("creating {}", run_dir.display()), e))?;
        let path = run_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("opening the run lock {}", path.display()), e))?;
        // The lock belongs to an open file, not a process: a writer killed
        // a moment ago can leave it with a process it was starting (between
        // fork and exec, which closes the file), for a moment. So when the
        // recorded writer is gone, wait a little for the lock to be let go.
        let started = std::time::Instant::now();
        while !try_lock(&file).map_err(|e| Error::io(format!("locking {}", path.display()), e))? {
            let pid = read_pid(&mut file);
            if pid.is_some_and(|p| !alive(p)) && started.elapsed() < STALE_WAIT {
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
            let holder = match pid {
                Some(p) if !alive(p) => format!("a process that process {p} (now gone) started"),
                Some(p) => format!("process {p}"),
                None => "another process".to_string(),
            };
            return Err(Error::invalid(format!(
                "run `{run_id}` is being written by {holder} (it holds {}); wait for it to end, \
                 or stop it and continue the run with `vivarium evolve <run.toml> --resume`",
                path.display()
            )));
        }
        // Ours now: record who holds it, for the next one to name.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        let _ = file.flush();
        Ok(RunLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid of the process holding the lock of the run in `run_dir`, or
/// `None` when no process holds it (the run is not being written now).
pub fn holder(run_dir: &Path) -> Option<u32> {
    let mut file = OpenOptions::new().read(true).write(true).open(run_dir.join(LOCK_FILE)).ok()?;
    match try_lock(&file) {
        // Free: ours for a moment; closing the file releases it.
        Ok(true) => None,
        Ok(false) => Some(read_pid(&mut file).unwrap_or(0)),
        Err(_) => None,
    }
}

/// How long a lock whose recorded writer is gone may still be held (by a
/// process that writer was starting) before the run is refused.
const STALE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// An exclusive, non-blocking lock (`flock(LOCK_EX | LOCK_NB)` on Unix):
/// `Ok(false)` when another open file holds it.
fn try_lock(file: &File) -> std::io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_run_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), "r1").unwrap();
        // flock locks belong to the open file, so a second open in this
        // process is refused like another process would be.
        let e = RunLock::acquire(dir.path(), "r1").unwrap_err();
        assert_eq!(e.exit_code(), crate::error::ExitCode::Invalid);
        let msg = e.to_string();
        assert!(msg.contains("run `r1`") && msg.contains(&format!("process {}", std::process::id())), "{msg}");
        assert_eq!(holder(dir.path()), Some(std::process::id()));
        drop(first);
        assert_eq!(holder(dir.path()), None);
        RunLock::acquire(dir.path(), "r1").unwrap();
    }

    /// A lock still held after its recorded writer died (by a process the
    /// writer was starting) is waited for, briefly; held for longer, the
    /// refusal says whose it was.
    #[test]
    fn a_lock_left_by_a_dead_writer_is_waited_for_briefly() {
        let dir = tempfile::tempdir().unwrap();
        let dead = {
            let mut c = std::process::Command::new("/bin/true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        let held = RunLock::acquire(dir.path(), "r").unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), dead.to_string()).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let started = std::time::Instant::now();
        RunLock::acquire(dir.path(), "r").expect("taken once the leftover holder let go");
        assert!(started.elapsed() >= std::time::Duration::from_millis(250));
        release.join().unwrap();

        let _held = RunLock::acquire(dir.path(), "s").unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), dead.to_string()).unwrap();
        let e = RunLock::acquire(dir.path(), "s").unwrap_err().to_string();
        assert!(e.contains(&format!("a process that process {dead} (now gone) started")), "{e}");
    }
}
