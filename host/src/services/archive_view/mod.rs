//! The `archive` service: a read-only view of one run of the archive.
//!
//! * **Scope.** The view shows the variants of exactly one run: the run id
//!   the caller puts in [`CallOptions::run`](crate::runtime::CallOptions::run).
//!   A call without a run id sees an empty archive. The guest never names a
//!   run; an id that belongs to another run answers exactly as an id that
//!   does not exist (`none`, an empty list, an error naming no run), so the
//!   view cannot be used to probe other runs.
//! * **What a variant sees.** `variant-info` has the id, parent, generation,
//!   language, the *visible* score and the children count — by construction
//!   nothing else: no held-out score, no per-task results or grader notes,
//!   no grant, no audit record. Ids must be given in full (no prefix lookup).
//! * **Sources.** `sources(id)` returns the editable tree of a variant of the
//!   same run, each blob verified on the way, up to [`MAX_SOURCE_BYTES`] in
//!   all (a larger tree is an error, not a partial answer).
//! * **Bounds.** `list` returns at most [`MAX_LIST`] rows per call; every
//!   answer is data already in the host, so copying it into the guest is
//!   bounded by the guest's own memory limit.
//! * **Failures.** A damaged index or a missing blob never traps the guest:
//!   it gets `none`, an empty list or an `err`, and the use record counts
//!   the failure under `errors`.

mod grant;
pub use grant::{ArchiveGrant, ArchiveRequest};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::archive::{Archive, VariantId, VariantRow};
use crate::bindings::vivarium::agent::archive as wit;
use crate::bindings::SourceFile;
use crate::error::Result;

/// Most rows one `list` returns.
pub const MAX_LIST: u32 = 1000;
/// Most bytes of source one `sources` call returns.
pub const MAX_SOURCE_BYTES: u64 = 8 << 20;

/// Where the view reads from: an archive the caller already holds, or the
/// one under a directory, opened on first use if it exists (a host with no
/// archive yet creates none).
#[derive(Debug)]
pub enum ArchiveSource {
    /// An open archive (the evolution loop's own).
    Shared(Arc<Archive>),
    /// The archive in this directory, opened when first needed.
    Lazy {
        /// The archive directory (`$VIVARIUM_HOME/archive`).
        dir: PathBuf,
        /// The archive once opened.
        opened: Mutex<Option<Arc<Archive>>>,
    },
}

impl ArchiveSource {
    /// The archive in `dir`, opened on first use.
    pub fn lazy(dir: impl Into<PathBuf>) -> Self {
        ArchiveSource::Lazy { dir: dir.into(), opened: Mutex::new(None) }
    }

    /// The archive, or `None` when there is none yet.
    pub fn archive(&self) -> Result<Option<Arc<Archive>>> {
        match self {
            ArchiveSource::Shared(a) => Ok(Some(a.clone())),
            ArchiveSource::Lazy { dir, opened } => {
                let mut guard = opened.lock().unwrap_or_else(PoisonError::into_inner);
                if guard.is_none() && Path::new(dir).join(crate::archive::INDEX_FILE).exists() {
                    *guard = Some(Arc::new(Archive::open(dir)?));
                }
                Ok(guard.clone())
            }
        }
    }
}

/// Usage counters of the archive view for one call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ArchiveUsage {
    /// The run the view was scoped to (`None`: an empty view).
    pub run: Option<String>,
    /// `get` calls.
    pub gets: u64,
    /// `list` calls.
    pub lists: u64,
    /// `lineage` calls.
    pub lineages: u64,
    /// `sources` calls.
    pub sources: u64,
    /// Variant records returned, over all calls.
    pub rows: u64,
    /// Source bytes returned.
    pub source_bytes: u64,
    /// Requests for an id outside the view (unknown, or of another run).
    pub not_found: u64,
    /// Archive failures (the guest got an empty answer).
    pub errors: u64,
}

#[derive(Debug)]
struct Inner {
    granted: bool,
    source: Option<Arc<ArchiveSource>>,
    run: Option<String>,
    usage: Mutex<ArchiveUsage>,
}

/// Per-call state of the archive view; cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub struct ArchiveViewState {
    inner: Arc<Inner>,
}

/// What the view may show of a row: never the held-out score.
fn info(row: &VariantRow) -> wit::VariantInfo {
    wit::VariantInfo {
        id: row.id.0.clone(),
        parent: row.parent.as_ref().map(|p| p.0.clone()),
        generation: row.generation,
        language: row.language.clone(),
        score: row.visible_score,
        children: row.children,
    }
}

impl ArchiveViewState {
    /// State for one call; `granted` false leaves the service unlinked.
    pub fn new(granted: bool, source: Option<Arc<ArchiveSource>>, run: Option<String>) -> Self {
        let usage = ArchiveUsage { run: run.clone(), ..ArchiveUsage::default() };
        Self { inner: Arc::new(Inner { granted, source, run, usage: Mutex::new(usage) }) }
    }

    /// The usage counters so far; `None` when the service is not granted.
    pub fn usage(&self) -> Option<ArchiveUsage> {
        self.inner.granted.then(|| self.inner.usage.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    fn count(&self, f: impl FnOnce(&mut ArchiveUsage)) {
        f(&mut self.inner.usage.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Run `f` against the archive and this call's run on a blocking thread.
    /// `None`: no view (not granted, no archive, no run) or a failure (counted).
    async fn run<R: Send + 'static>(&self, f: impl FnOnce(&Archive, &str) -> Result<R> + Send + 'static) -> Option<R> {
        if !self.inner.granted {
            return None;
        }
        let (Some(source), Some(run)) = (self.inner.source.clone(), self.inner.run.clone()) else {
            return None;
        };
        let job = tokio::task::spawn_blocking(move || match source.archive()? {
            Some(a) => f(&a, &run).map(Some),
            None => Ok(None),
        });
        match job.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!("archive view: {e}");
                self.count(|u| u.errors += 1);
                None
            }
            Err(e) => {
                tracing::warn!("archive view: the archive thread failed: {e}");
                self.count(|u| u.errors += 1);
                None
            }
        }
    }
}

/// Row `id` if it is in run `run`.
fn in_run(a: &Archive, run: &str, id: &str) -> Result<Option<VariantRow>> {
    // Only well-formed full ids are looked up: no prefixes, no SQL patterns.
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return Ok(None);
    }
    Ok(a.get(&VariantId(id.to_string()))?.filter(|row| row.run_id == run))
}

impl wit::Host for ArchiveViewState {
    async fn get(&mut self, id: String) -> wasmtime::Result<Option<wit::VariantInfo>> {
        self.count(|u| u.gets += 1);
        let row = self.run(move |a, run| in_run(a, run, &id)).await.flatten();
        self.count(|u| if row.is_some() { u.rows += 1 } else { u.not_found += 1 });
        Ok(row.as_ref().map(info))
    }

    async fn list(&mut self, offset: u32, limit: u32) -> wasmtime::Result<Vec<wit::VariantInfo>> {
        self.count(|u| u.lists += 1);
        let limit = limit.min(MAX_LIST) as usize;
        let rows = self
            .run(move |a, run| Ok(a.list(Some(run))?.into_iter().skip(offset as usize).take(limit).collect::<Vec<_>>()))
            .await
            .unwrap_or_default();
        self.count(|u| u.rows += rows.len() as u64);
        Ok(rows.iter().map(info).collect())
    }

    async fn lineage(&mut self, id: String) -> wasmtime::Result<Vec<wit::VariantInfo>> {
        self.count(|u| u.lineages += 1);
        let rows = self
            .run(move |a, run| {
                if in_run(a, run, &id)?.is_none() {
                    return Ok(Vec::new());
                }
                // Parents are in the same run (the archive enforces it); the
                // filter is a second lock on the door.
                Ok(a.lineage(&VariantId(id))?.into_iter().filter(|r| r.run_id == run).collect())
            })
            .await
            .unwrap_or_default();
        self.count(|u| if rows.is_empty() { u.not_found += 1 } else { u.rows += rows.len() as u64 });
        Ok(rows.iter().map(info).collect())
    }

    async fn sources(&mut self, id: String) -> wasmtime::Result<Result<Vec<SourceFile>, String>> {
        self.count(|u| u.sources += 1);
        let shown = id.chars().take(64).collect::<String>();
        let files = self
            .run(move |a, run| {
                let Some(row) = in_run(a, run, &id)? else { return Ok(None) };
                let entries = a.read_tree(&row.tree_sha)?;
                let mut total = 0u64;
                for e in &entries {
                    total += a.blobs().path_of(&e.sha256).ok().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len());
                }
                if total > MAX_SOURCE_BYTES {
                    return Ok(Some(Err(format!(
                        "the tree of {id} is {total} bytes; the archive view returns at most {MAX_SOURCE_BYTES} bytes of source"
                    ))));
                }
                let files = a
                    .tree_contents(&row.tree_sha)?
                    .into_iter()
                    .map(|(e, contents)| SourceFile { path: e.path, contents })
                    .collect::<Vec<_>>();
                Ok(Some(Ok(files)))
            })
            .await
            .flatten();
        Ok(match files {
            Some(Ok(files)) => {
                let bytes: u64 = files.iter().map(|f| f.contents.len() as u64).sum();
                self.count(|u| u.source_bytes += bytes);
                Ok(files)
            }
            Some(Err(e)) => Err(e),
            None => {
                self.count(|u| u.not_found += 1);
                Err(format!("no variant {shown:?} in this run's archive view"))
            }
        })
    }
}

/// The `archive` service: its line in the registry (`services/registry.rs`).
pub struct ArchiveFactor;

impl super::Service for ArchiveFactor {
    type Grant = ArchiveGrant;
    type State = ArchiveViewState;
    type Usage = ArchiveUsage;
    const VERSIONS: &'static [&'static str] = &[crate::caps::imports::AGENT_VERSION];
}

impl super::PerCall for ArchiveFactor {
    fn state(
        section: Option<&ArchiveGrant>,
        _grant: &crate::caps::Grant,
        host: &super::HostServices,
        scope: &super::CallScope,
    ) -> ArchiveViewState {
        ArchiveViewState::new(section.is_some(), host.archive.clone(), scope.run.clone())
    }

    fn unlinked() -> ArchiveViewState {
        ArchiveViewState::new(false, None, None)
    }

    fn add_to_linker(
        linker: &mut wasmtime::component::Linker<crate::runtime::HostState>,
        get: fn(&mut crate::runtime::HostState) -> &mut ArchiveViewState,
    ) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, wasmtime::component::HasSelf<ArchiveViewState>>(linker, get)
    }

    fn usage(state: &ArchiveViewState) -> Option<ArchiveUsage> {
        state.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::wit::Host;
    use super::*;
    use crate::archive::{NewVariant, Split, TaskResult, VariantStatus};
    use crate::services::testing::TestEnvironment;
    use crate::services::HostServices;

    /// An evaluated variant in `run` with a visible and a held-out score.
    fn archived(archive: &Archive, run: &str, tag: &str, visible: f64, held_out: f64) -> VariantId {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("variant.toml"), format!("[variant]\nname = \"{tag}\"\nlanguage = \"rust\"\n"))
            .unwrap();
        let tree_sha = archive.put_tree(src.path()).unwrap();
        let id = archive
            .add_variant(&NewVariant {
                run_id: run.into(),
                parent: None,
                generation: 0,
                language: "rust".into(),
                component_sha: None,
                tree_sha,
                grant_digest: "g".into(),
                status: VariantStatus::Pending,
                summary: tag.into(),
            })
            .unwrap();
        let result =
            |split, score| TaskResult { task_id: "t1".into(), split, passed: true, score, note: String::new() };
        archive
            .record_results(
                &id,
                &[result(Split::Visible, visible), result(Split::HeldOut, held_out)],
                Some(visible),
                Some(held_out),
                VariantStatus::Evaluated,
            )
            .unwrap();
        id
    }

    /// An environment granted the view, on a home whose archive holds one
    /// variant in `run-a` and one in `run-b`.
    fn two_runs() -> (TestEnvironment, VariantId, VariantId) {
        let env = TestEnvironment::new().manifest("archive = {}").policy("archive = true");
        let archive = Arc::new(Archive::open(&env.home().archive_dir()).unwrap());
        archive.begin_run("run-a", &serde_json::json!({})).unwrap();
        archive.begin_run("run-b", &serde_json::json!({})).unwrap();
        let a = archived(&archive, "run-a", "a", 0.5, 0.875);
        let b = archived(&archive, "run-b", "b", 0.25, 0.125);
        let env = env.host(|_| HostServices {
            archive: Some(Arc::new(ArchiveSource::Shared(archive))),
            ..HostServices::default()
        });
        (env, a, b)
    }

    /// The call's run only, and only the visible score.
    #[tokio::test]
    async fn the_view_shows_the_calls_run_and_never_a_held_out_score() {
        let (env, a, b) = two_runs();
        let mut view = env.run("run-a").call().services.archive;
        let rows = view.list(0, 100).await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!((rows[0].id.as_str(), rows[0].score), (a.0.as_str(), Some(0.5)));
        assert_eq!(view.get(a.0.clone()).await.unwrap().and_then(|r| r.score), Some(0.5));
        assert!(view.get(b.0.clone()).await.unwrap().is_none(), "another run's variant is not in the view");
        let usage = view.usage().unwrap();
        assert_eq!(
            (usage.run.as_deref(), usage.lists, usage.gets, usage.rows, usage.not_found),
            (Some("run-a"), 1, 2, 2, 1)
        );
    }

    /// Outside any run the view is empty; ungranted, it is empty and
    /// reports no usage.
    #[tokio::test]
    async fn outside_a_run_or_ungranted_the_view_is_empty() {
        let (env, a, _) = two_runs();
        let mut view = env.call().services.archive;
        assert!(view.list(0, 100).await.unwrap().is_empty());
        assert!(view.get(a.0.clone()).await.unwrap().is_none());

        let (env, a, _) = two_runs();
        let mut view = env.manifest("").run("run-a").call().services.archive;
        assert!(view.get(a.0).await.unwrap().is_none());
        assert_eq!(view.usage(), None);
    }
}
