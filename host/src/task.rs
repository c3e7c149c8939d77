//! Task files: one `task` record as JSON, for `vivarium run --task`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bindings;
use crate::error::{Error, Result};

/// A task as written in a task file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Task id.
    pub id: String,
    /// The task domain (selects the grader on the host).
    pub domain: String,
    /// What to do.
    pub instruction: String,
    /// The input.
    pub input: String,
}

impl TaskSpec {
    /// Read and validate a task file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(format!("cannot read task file {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse a task from JSON; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        if text.trim_start().starts_with('[') {
            return Err(Error::invalid(format!(
                "{origin} holds a JSON array; a task file holds one task object \
                 {{\"id\", \"domain\", \"instruction\", \"input\"}}: write one file per task"
            )));
        }
        serde_json::from_str(text).map_err(|e| {
            Error::invalid(format!(
                "{origin}:{}:{}: {e}; a task file holds one object {{\"id\", \"domain\", \"instruction\", \"input\"}} of strings",
                e.line(),
                e.column()
            ))
        })
    }
}

impl From<TaskSpec> for bindings::Task {
    fn from(t: TaskSpec) -> Self {
        bindings::Task { id: t.id, domain: t.domain, instruction: t.instruction, input: t.input }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_and_missing_fields() {
        let ok = TaskSpec::parse(r#"{"id":"t","domain":"echo","instruction":"i","input":"x"}"#, "t.json").unwrap();
        assert_eq!(ok.input, "x");
        let err = TaskSpec::parse(r#"{"id":"t","domain":"echo","instruction":"i"}"#, "t.json").unwrap_err();
        assert!(err.to_string().starts_with("t.json:1:"), "{err}");
        assert!(err.to_string().contains("missing field `input`"), "{err}");
        let err =
            TaskSpec::parse(r#"{"id":"t","domain":"e","instruction":"i","input":"x","x":1}"#, "t.json").unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
    }
}
