//! Opening what the user points at — a variant directory, a `.wasm`
//! component or a `.wat` text — and running it: the library side of
//! `vivarium run`, `inspect` and `build`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::caps::{Grant, Limits};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::inspect::{self, Inspection};
use crate::runtime::bindings::{Answer, Task};
use crate::runtime::{CallOptions, CallReport, Loaded, Runtime, RuntimeConfig};
use crate::units::{ByteSize, HumanDuration};

/// Limits given on the command line; they can only tighten the grant.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--fuel`.
    pub fuel: Option<u64>,
    /// `--memory`.
    pub memory: Option<ByteSize>,
    /// `--wall`.
    pub wall: Option<HumanDuration>,
}

impl Overrides {
    /// Apply to `limits`, never loosening them.
    pub fn tighten(&self, limits: &Limits) -> Limits {
        let mut l = limits.clone();
        if let Some(f) = self.fuel {
            l.fuel = l.fuel.min(f);
        }
        if let Some(m) = self.memory {
            l.memory = l.memory.min(m);
        }
        if let Some(w) = self.wall {
            l.wall = l.wall.min(w);
        }
        l
    }
}

/// A runtime plus the state directory: what one CLI invocation works with.
pub struct Session {
    /// The state directory.
    pub home: Home,
    /// The runtime.
    pub runtime: Runtime,
}

/// A component resolved from a user path, with the grant it runs under.
pub struct Opened {
    /// The compiled component.
    pub loaded: Loaded,
    /// The grant computed for it.
    pub grant: Grant,
}

impl Session {
    /// A session on `$VIVARIUM_HOME`.
    pub async fn open_default() -> Result<Self> {
        Self::open(Home::from_env())
    }

    /// A session on `home`, with the compile cache under it.
    pub fn open(home: Home) -> Result<Self> {
        home.ensure(&home.cache_dir())?;
        let runtime = Runtime::new(RuntimeConfig { cache_dir: Some(home.cache_dir()), ..RuntimeConfig::default() })?;
        Ok(Self { home, runtime })
    }

    /// Read, build if needed, compile and compute the grant for `target`.
    pub async fn open_target(&self, target: &Path, policy: Option<&Path>, overrides: &Overrides) -> Result<Opened> {
        let _ = policy;
        let bytes = if target.is_dir() {
            build_dir(target, None)?.component
        } else {
            std::fs::read(target).map_err(|e| {
                Error::invalid(format!("cannot read {}: {e}; give a variant directory, a .wasm or a .wat file", target.display()))
            })?
        };
        let loaded = self.runtime.load(&bytes).await.map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("{}: {m}", target.display())),
            other => other,
        })?;
        let mut grant = Grant::minimal(Limits::default());
        grant.limits = overrides.tighten(&grant.limits);
        Ok(Opened { loaded, grant })
    }

    /// `vivarium run`: open `target` and call `solve` once.
    pub async fn run(
        &self,
        target: &Path,
        policy: Option<&Path>,
        overrides: &Overrides,
        task: Task,
        opts: &CallOptions,
    ) -> Result<CallReport<Answer>> {
        let opened = self.open_target(target, policy, overrides).await?;
        let prepared = self.runtime.prepare(&opened.loaded, opened.grant)?;
        self.runtime.solve(&prepared, &task, opts).await
    }

    /// `vivarium inspect`.
    pub async fn inspect(&self, target: &Path, policy: Option<&Path>) -> Result<Inspection> {
        let opened = self.open_target(target, policy, &Overrides::default()).await?;
        Ok(inspect::inspect(&opened.loaded, &opened.grant))
    }
}

/// A built component and where it is.
pub struct Built {
    /// The component bytes.
    pub component: Vec<u8>,
    /// Where the component was written.
    pub path: PathBuf,
    /// sha256 of the bytes.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Build time.
    pub duration_ms: u64,
}

/// Build the variant in `dir`; copy the component to `out` when given.
pub fn build_dir(dir: &Path, out: Option<&Path>) -> Result<Built> {
    let start = Instant::now();
    let _ = dir;
    let component: Vec<u8> = return Err(Error::invalid("building variants is not wired yet"));
    #[allow(unreachable_code)]
    {
        let path = out.map(Path::to_path_buf).unwrap_or_default();
        Ok(Built {
            sha256: hex::encode(Sha256::digest(&component)),
            bytes: component.len() as u64,
            component,
            path,
            duration_ms: start.elapsed().as_millis() as u64,
        })
    }
}
