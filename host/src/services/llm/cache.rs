//! The response cache: every completed request under
//! `cache_dir/ab/<sha256>.json`, keyed by the exact request body, written
//! atomically; what `--replay` answers from.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::protocol::Completion;
use super::LlmService;

impl LlmService {
    pub(super) fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        self.cache_dir.as_ref().map(|d| d.join(&digest[..2]).join(format!("{digest}.json")))
    }

    pub(super) fn cache_get(&self, digest: &str) -> Option<Completion> {
        let path = self.cache_path(digest)?;
        let bytes = std::fs::read(&path).ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        serde_json::from_value(v.get("response")?.clone()).ok()
    }

    pub(super) fn cache_put(&self, digest: &str, body: &[u8], c: &Completion) {
        let Some(path) = self.cache_path(digest) else { return };
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let record = json!({ "digest": digest, "request": request, "response": c });
        let bytes = serde_json::to_vec_pretty(&record).expect("json serializes");
        if let Some(dir) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                tracing::warn!("llm cache: cannot create {}: {e}", dir.display());
                return;
            }
        }
        if let Err(e) = crate::fsio::write_atomic(&path, &bytes) {
            tracing::warn!("llm cache: cannot write {}: {e}", path.display());
        }
    }
}
