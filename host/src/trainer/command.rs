//! The `command` backend: an operator-configured command (for example
//! `uv run train.py`) run once per job in a fresh job directory, inside the
//! same kind of sandbox as builds ([`crate::build::Sandbox`]).
//!
//! * **Job directory**: `$VIVARIUM_HOME/trainer-jobs/<job id>/`, holding
//!   `config.json` (the job's config) and, when the job has one, the
//!   variant's script under the configured `script_name` (default
//!   `train.py`). It is the working directory, the only writable path (with
//!   a private `TMPDIR`/`HOME` inside it) and is removed when the job ends.
//! * **Sandbox**: read-only: the program's own file (links resolved; never
//!   the directory it lies in), what any program needs to start (the
//!   shared-library directories, the loader's cache, the locale data:
//!   [`sandbox::system_runtime`]) and the operator's `read_only` list (the
//!   toolchain: a virtual environment, the uv cache, each other program the
//!   command runs, such as `/usr/bin/cat`); no network (a fresh network
//!   namespace and Landlock's TCP rules); `RLIMIT_AS` `memory`,
//!   `RLIMIT_CPU` the budget rounded up. Not `/usr/bin` or any other `bin`
//!   directory whole, so an installed `vivarium` (which holds the held-out
//!   tasks and graders) stays unreadable to the variant's script.
//!   The environment is cleared but for `VIVARIUM_JOB_CONFIG` (the config
//!   file's name), `VIVARIUM_JOB_SCRIPT` (the script's, when there is one),
//!   `VIVARIUM_JOB_SECONDS` (the budget), the operator's `env` table and,
//!   when the machine has NVIDIA devices (`/dev/nvidia*`), those devices
//!   (read-write) so a GPU is visible.
//! * **Budget**: the command and its whole process group are killed at the
//!   job's deadline (and on `cancel`).
//! * **Metrics**: the last line of its standard output or error that is a
//!   JSON object; its numeric fields (e.g. `{"val_bpb": 1.31}`). A command
//!   that ends with status 0 but prints none has failed. These are the
//!   command's claims: a grader that must not trust the variant measures
//!   the result itself.
//! * A run that fails with the sandbox's tell-tale errors (permission
//!   denied, network unreachable) fails with a message saying it reached
//!   outside its job directory or for the network.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{last_json_metrics, tail, Backend, BackendKind, JobContext, JobSpec, RunOutcome, LOG_TAIL_BYTES};
use crate::build::sandbox::{self, Sandbox};
use crate::units::ByteSize;

/// The `[command]` table of `trainer.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The program, an absolute path or a name looked up in the host's `PATH`.
    pub program: String,
    /// Its arguments, e.g. `["run", "train.py"]`.
    #[serde(default)]
    pub args: Vec<String>,
    /// The file the variant's script is written to in the job directory.
    #[serde(default = "default_script_name")]
    pub script_name: String,
    /// Recipes accepted (empty: any).
    #[serde(default)]
    pub recipes: Vec<String>,
    /// Extra paths the command may read (its toolchain: an interpreter's
    /// installation, each program it runs besides `program`).
    #[serde(default)]
    pub read_only: Vec<PathBuf>,
    /// Extra environment variables set for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `RLIMIT_AS` of each process.
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
}

fn default_script_name() -> String {
    "train.py".into()
}
fn default_memory() -> ByteSize {
    ByteSize(8 << 30)
}

impl CommandConfig {
    /// A configuration running `program args…` with every other field at its default.
    pub fn new(program: impl Into<String>, args: &[&str]) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            script_name: default_script_name(),
            recipes: Vec::new(),
            read_only: Vec::new(),
            env: BTreeMap::new(),
            memory: default_memory(),
        }
    }
}

/// The command backend.
#[derive(Debug)]
pub struct CommandBackend {
    config: CommandConfig,
    jobs_dir: PathBuf,
}

impl CommandBackend {
    /// A backend making job directories under `jobs_dir`.
    pub fn new(config: CommandConfig, jobs_dir: PathBuf) -> Self {
        Self { config, jobs_dir }
    }

    /// The program resolved against the host's `PATH` (the sandbox clears it).
    fn program(&self) -> Option<PathBuf> {
        let p = Path::new(&self.config.program);
        if p.is_absolute() {
            return Some(p.to_path_buf());
        }
        std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).map(|d| d.join(p)).find(|c| c.is_file()))
    }

    fn run_in(&self, dir: &Path, spec: &JobSpec, ctx: &JobContext) -> Result<RunOutcome, String> {
        let program = self
            .program()
            .ok_or_else(|| format!("the operator's trainer command {:?} was not found", self.config.program))?;
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write {name} in the job directory: {e}"))
        };
        write("config.json", &spec.config.to_string())?;
        if let Some(script) = &spec.script {
            write(&self.config.script_name, script)?;
        }
        let mut cmd = Command::new(&program);
        cmd.args(&self.config.args).current_dir(dir);
        cmd.env("VIVARIUM_JOB_CONFIG", "config.json");
        cmd.env("VIVARIUM_JOB_SECONDS", format!("{}", spec.budget.as_secs_f64()));
        if spec.script.is_some() {
            cmd.env("VIVARIUM_JOB_SCRIPT", &self.config.script_name);
        }
        for (k, v) in &self.config.env {
            cmd.env(k, v);
        }
        let mut sb = Sandbox::new()
            .with_read_write(dir)
            .with_read_write("/dev/null")
            .with_tmp_root(dir.join("tmp"))
            .with_memory(self.config.memory.0)
            .with_cpu_time(Duration::from_secs(spec.budget.as_secs_f64().ceil() as u64 + 1));
        // The program's own file, what any program needs to start, and the
        // toolchain the operator lists: never the directory around the
        // program (`/usr/bin`, `~/.cargo/bin`, where an installed
        // `vivarium` and its held-out tasks would be readable).
        let program_file = sandbox::program_file(&program).unwrap_or_else(|| program.clone());
        for p in std::iter::once(program_file)
            .chain(sandbox::system_runtime().iter().cloned())
            .chain(self.config.read_only.iter().cloned())
        {
            sb = sb.with_read_only(p);
        }
        // The GPU: NVIDIA's device nodes, when the machine has them.
        if let Ok(entries) = std::fs::read_dir("/dev") {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("nvidia") {
                    sb = sb.with_read_write(e.path());
                }
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Its own process group, so that the kill reaches every helper.
            cmd.process_group(0);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let applied = sb.apply(&mut cmd).map_err(|e| e.to_string())?;
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let log = Arc::new(Mutex::new(String::new()));
        let readers: Vec<_> = [
            child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>),
            child.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|pipe| spawn_reader(pipe, log.clone()))
        .collect();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) => {}
                Err(e) => return Err(format!("cannot watch the command: {e}")),
            }
            if ctx.stop_reason().is_some() {
                kill_group(&mut child);
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in readers {
            let _ = r.join();
        }
        drop(applied);
        let log = log.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let metrics = last_json_metrics(&log).unwrap_or_default();
        let error = match status {
            // Stopped: the trainer says why (cancelled or budget).
            None => None,
            Some(s) if s.success() && metrics.is_empty() => Some(
                "the command ended without printing its metrics; print them as a final JSON line, e.g. \
                 {\"val_bpb\": 1.31}"
                    .to_string(),
            ),
            Some(s) if s.success() => None,
            Some(s) => Some(match network_denied(&log).or_else(|| sandbox::classify_violation(&log)) {
                Some(sandbox::Violation::Network(lines)) => format!(
                    "the command ({s}) tried to reach the network, which training jobs may not: {}",
                    lines.join(" | ")
                ),
                Some(sandbox::Violation::OutsidePath(lines)) => format!(
                    "the command ({s}) reached outside its job directory, the only place it may write: {}",
                    lines.join(" | ")
                ),
                None => format!("the command failed ({s}); see the log tail"),
            }),
        };
        Ok(RunOutcome { error, metrics, log_tail: tail(&log, LOG_TAIL_BYTES), stopped: status.is_none() })
    }
}

/// Lines showing a refused connection: with no network namespace, Landlock
/// refuses `connect` with EACCES, which the generic classifier would read
/// as a file access.
fn network_denied(log: &str) -> Option<sandbox::Violation> {
    let lines: Vec<String> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("connect") && (l.contains("permission denied") || l.contains("os error 13"))
        })
        .map(|l| l.trim().chars().take(400).collect())
        .take(10)
        .collect();
    (!lines.is_empty()).then_some(sandbox::Violation::Network(lines))
}

/// Read `pipe` to its end into `log`, keeping only its last part.
fn spawn_reader(mut pipe: Box<dyn Read + Send>, log: Arc<Mutex<String>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut l = log.lock().unwrap_or_else(PoisonError::into_inner);
            l.push_str(&String::from_utf8_lossy(&buf[..n]));
            if l.len() > 4 * LOG_TAIL_BYTES {
                *l = tail(&l, 2 * LOG_TAIL_BYTES);
            }
        }
    })
}

fn kill_group(child: &mut Child) {
    #[cfg(unix)]
    // SAFETY: killpg only sends a signal; the child leads its own group.
    unsafe {
        libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Backend for CommandBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Command
    }

    fn check(&self, spec: &JobSpec) -> Result<(), String> {
        if !self.config.recipes.is_empty() && !self.config.recipes.contains(&spec.recipe) {
            return Err(format!(
                "unknown recipe {:?}: this host's training command accepts {:?}",
                spec.recipe, self.config.recipes
            ));
        }
        if spec.script.as_ref().is_some_and(|s| s.len() > 1 << 20) {
            return Err("the script is larger than 1 MiB; send a shorter one".into());
        }
        Ok(())
    }

    fn run(&self, spec: &JobSpec, ctx: &JobContext) -> RunOutcome {
        let dir = self.jobs_dir.join(&ctx.id);
        let made = std::fs::create_dir_all(&self.jobs_dir)
            .and_then(|_| std::fs::create_dir(&dir))
            .map_err(|e| format!("cannot make the job directory {}: {e}", dir.display()));
        let out = made.and_then(|_| {
            let abs = std::path::absolute(&dir).map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
            self.run_in(&abs, spec, ctx)
        });
        let _ = std::fs::remove_dir_all(&dir);
        out.unwrap_or_else(|e| RunOutcome { error: Some(e), ..RunOutcome::default() })
    }
}
