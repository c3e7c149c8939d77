//! A run's own `llm.toml` (`[run] llm = "llm.toml"`): the model
//! configuration and response cache that travel with a run file.
//!
//! A run recorded against a model can ship its response cache beside its
//! run file; whoever replays it (`vivarium --replay evolve run.toml`, the
//! demo's second act) then needs no model and no configuration of their
//! own. So a run that names an `llm.toml` uses it instead of the home's (and
//! of `$VIVARIUM_LLM_CONFIG`), with a relative `cache_dir` resolved against
//! the file's folder, not the home. The token ledger stays in the home: it
//! is the operator's record of what was spent. `--replay`
//! (`$VIVARIUM_LLM_REPLAY`) applies to it as to any configuration.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::services::llm::{LlmConfig, LlmService};
use crate::variant::Session;

/// The configuration in `path`, its relative `cache_dir` (default
/// `llm-cache`) under the file's folder, replay on when the environment
/// asks for it.
///
/// Errors: the file cannot be read or is not a valid `llm.toml` (exit 2,
/// naming the file).
pub fn config_for_run(path: &Path) -> Result<LlmConfig> {
    let mut config = LlmConfig::load(path)?;
    // Absolute: the service puts a relative cache_dir under the home.
    let dir = std::path::absolute(path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
    let cache = config.cache_dir.take().unwrap_or_else(|| crate::services::llm::CACHE_DIR.into());
    config.cache_dir = Some(if cache.is_absolute() { cache } else { dir.join(cache) });
    let replay = std::env::var("VIVARIUM_LLM_REPLAY").unwrap_or_default();
    if matches!(replay.as_str(), "1" | "true" | "yes") {
        config.replay = true;
    }
    Ok(config)
}

/// Point `session`'s `llm` service at the run's own configuration when the
/// run file names one; otherwise leave the home's in place.
///
/// Errors: as [`config_for_run`], and the service cannot start.
pub fn use_run_llm(session: &mut Session, llm_toml: Option<&Path>) -> Result<()> {
    let Some(path) = llm_toml else { return Ok(()) };
    let config = config_for_run(path)?;
    let home = session.home.root().to_path_buf();
    let mut services = session.runtime.services().clone();
    let service = LlmService::with_ledger(config, Some(&home), services.ledger.clone())?;
    services.llm = Some(Arc::new(service));
    session.runtime.set_services(services);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_relative_cache_dir_is_under_its_llm_toml_not_the_home() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("llm.toml");
        std::fs::write(&file, "base_url = \"http://127.0.0.1:9/v1\"\ncache_dir = \"recorded\"\n").unwrap();
        let c = config_for_run(&file).unwrap();
        assert_eq!(c.cache_dir.as_deref(), Some(tmp.path().join("recorded").as_path()));
        std::fs::write(&file, "base_url = \"http://127.0.0.1:9/v1\"\n").unwrap();
        let c = config_for_run(&file).unwrap();
        assert_eq!(c.cache_dir.as_deref(), Some(tmp.path().join(crate::services::llm::CACHE_DIR).as_path()));
        std::fs::write(&file, "base_url = \"ftp://x\"\n").unwrap();
        let e = config_for_run(&file).unwrap_err().to_string();
        assert!(e.contains("llm.toml") && e.contains("must start with http"), "{e}");
    }
}
