//! Rendering results as text or JSON, and errors as exit codes.

use std::process::ExitCode;

use serde_json::json;
use vivarium::Error;

/// How to print.
pub struct Out {
    /// JSON instead of text.
    pub json: bool,
}

impl Out {
    /// Print a JSON value (JSON mode) or the text (text mode).
    pub fn print(&self, value: &serde_json::Value, text: impl FnOnce() -> String) {
        // A closed pipe (`vivarium … | head`) is not an error worth a panic.
        use std::io::Write;
        let text = if self.json { serde_json::to_string_pretty(value).unwrap_or_default() } else { text() };
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }

    /// Print an error and return its exit code.
    pub fn error(&self, e: &Error) -> ExitCode {
        let code = e.exit_code() as u8;
        let status = match e {
            Error::Refused { .. } => "refused",
            Error::Guest(_) => "trapped",
            _ => "error",
        };
        if self.json {
            let reason = match e {
                Error::Refused { what, .. } => what.join(", "),
                Error::Guest(g) => g.kind.to_string(),
                _ => e.to_string(),
            };
            let v = json!({ "status": status, "reason": reason, "detail": e.to_string(), "exit_code": code });
            use std::io::Write;
            let _ = writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            eprintln!("error: {e}");
        }
        ExitCode::from(code)
    }
}
