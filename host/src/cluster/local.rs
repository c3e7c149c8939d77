//! A Ray cluster on this machine for tests and benchmarks:
//! `scripts/ray-cluster.sh up --hold`, stopped when the handle is dropped
//! (or when this process dies: the script stops the cluster when its stdin
//! closes).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::{Error, Result};

/// A local Ray cluster: a head and `workers` worker nodes.
pub struct LocalCluster {
    /// The address `[cluster] address` takes (`127.0.0.1:PORT`).
    pub address: String,
    /// The dashboard's URL (the job submission API).
    pub dashboard: String,
    child: Option<Child>,
}

impl LocalCluster {
    /// Start a head and `workers` worker nodes of one CPU each, from the
    /// repository's `scripts/ray-cluster.sh`.
    ///
    /// Errors: [`Error::Internal`] with the end of the script's output when
    /// the cluster does not come up (e.g. Ray not installed: run
    /// `scripts/setup.sh`).
    pub fn start(workers: u32) -> Result<Self> {
        let script = repo_root().join("scripts/ray-cluster.sh");
        // The script removes it on `down`, which may run after this
        // process is gone.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state = std::env::temp_dir().join(format!("vivarium-ray-{}-{n}", std::process::id()));
        let mut child = Command::new("bash")
            .arg(&script)
            .args(["up", "--hold", "--workers", &workers.to_string()])
            .env("VIVARIUM_RAY_STATE", &state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::io(format!("running {}", script.display()), e))?;
        let out = child.stdout.take().expect("piped");
        let mut dashboard = String::new();
        let mut address = String::new();
        for line in BufReader::new(out).lines() {
            let line = line.map_err(|e| Error::io("reading ray-cluster.sh's output", e))?;
            if let Some(d) = line.strip_prefix("dashboard: ") {
                dashboard = d.to_string();
            } else if !line.starts_with("state: ") && !dashboard.is_empty() {
                address = line;
                break;
            }
        }
        if address.is_empty() {
            let status = child.wait().ok();
            return Err(Error::Internal(anyhow::anyhow!(
                "scripts/ray-cluster.sh up did not print an address ({status:?}); is Ray installed (scripts/setup.sh)?"
            )));
        }
        Ok(Self { address, dashboard, child: Some(child) })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take()); // the script stops the cluster
            let _ = child.wait();
        }
    }
}

/// The repository this crate was built from.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).to_path_buf()
}
