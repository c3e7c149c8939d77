//! The `wat` builder: text parsed in process, no toolchain.
//!
//! The variant's `src/agent.wat` is either component text, used as is, or
//! core-module text exporting the world's canonical-ABI names, wrapped into
//! a component with the host's embedded WIT.

use std::path::Path;
use std::time::Instant;

use super::BuildOutput;
use crate::error::{Error, Result};

/// The source file a `wat` variant keeps its text in.
pub const SOURCE: &str = "src/agent.wat";

/// Build `dir/src/agent.wat` into a component.
pub fn build_wat(dir: &Path) -> Result<BuildOutput> {
    let started = Instant::now();
    let path = dir.join(SOURCE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::invalid(format!("cannot read {}: {e}; a wat variant keeps its text there", path.display()))
    })?;
    let is_component = text.trim_start().trim_start_matches(|c: char| c == '(').trim_start().starts_with("component");
    let component = if is_component {
        wat::parse_str(&text).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?
    } else {
        crate::componentize::from_core_module(text.as_bytes(), true)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?
    };
    Ok(BuildOutput { component, path, log: String::new(), duration: started.elapsed() })
}
