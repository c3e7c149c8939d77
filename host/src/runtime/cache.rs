//! On-disk cache of compiled components.
//!
//! Key: sha256 of the component bytes plus a hash of the engine's settings
//! (`Engine::precompile_compatibility_hash`), so a host built differently
//! never loads another's code. Deserializing is `unsafe` in Wasmtime because
//! the bytes are trusted machine code: the cache only ever loads files this
//! host wrote, each checked against a sha256 sidecar written with it, and it
//! lives under `$VIVARIUM_HOME`, which must be writable by the operator only
//! (no variant is ever granted a path there).

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// A directory of compiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_tag: String,
}

impl CompileCache {
    /// A cache in `dir` for code compiled by `engine`.
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        Self { dir, engine_tag: format!("{:016x}", h.finish()) }
    }

    fn paths(&self, sha256: &str) -> (PathBuf, PathBuf) {
        let stem = format!("{sha256}-{}", self.engine_tag);
        (self.dir.join(format!("{stem}.cwasm")), self.dir.join(format!("{stem}.sha256")))
    }

    /// The cached component for `sha256`, if present and intact.
    pub fn get(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let (art, sum) = self.paths(sha256);
        let bytes = std::fs::read(&art).ok()?;
        let expected = std::fs::read_to_string(&sum).ok()?;
        if hex::encode(Sha256::digest(&bytes)) != expected.trim() {
            tracing::warn!(path = %art.display(), "compiled-code cache entry is corrupt; recompiling");
            return None;
        }
        // SAFETY: the bytes are this host's own `Component::serialize` output
        // (checked by the sidecar digest written alongside it), produced by an
        // engine with the same compatibility hash.
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "cached component rejected; recompiling");
                None
            }
        }
    }

    /// Store `component` under `sha256`; failures only cost a recompile later.
    pub fn put(&self, sha256: &str, component: &Component) {
        if let Err(e) = self.try_put(sha256, component) {
            tracing::warn!(error = %e, "could not write compiled-code cache");
        }
    }

    /// Store an artifact serialized by this host's own compiler process
    /// (`runtime::compile`) under `sha256`; failures only cost a recompile.
    pub fn put_serialized(&self, sha256: &str, bytes: &[u8]) {
        if let Err(e) = self.try_put_bytes(sha256, bytes) {
            tracing::warn!(error = %e, "could not write compiled-code cache");
        }
    }

    fn try_put(&self, sha256: &str, component: &Component) -> anyhow::Result<()> {
        self.try_put_bytes(sha256, &component.serialize()?)
    }

    fn try_put_bytes(&self, sha256: &str, bytes: &[u8]) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let (art, sum) = self.paths(sha256);
        crate::fsio::write_atomic(&sum, hex::encode(Sha256::digest(bytes)).as_bytes())?;
        crate::fsio::write_atomic(&art, bytes)?;
        Ok(())
    }
}
