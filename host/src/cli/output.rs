//! Rendering results as text or JSON, and errors as exit codes.
//!
//! Every line the CLI prints for a person goes through [`Out`], which
//! escapes hidden characters ([`vivarium::text::for_terminal`]) at this one
//! place: guest text (answers, summaries, reasons, import names, quoted
//! source lines inside errors) can reach any command's output, and no
//! command should have to remember that. Guest text inside a one-line field
//! is also passed through [`vivarium::text::one_line`] where the field is
//! laid out, so it cannot forge a line. JSON is printed exact.

use std::process::ExitCode;

use serde_json::json;
use vivarium::text::for_terminal;
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
        let text =
            if self.json { serde_json::to_string_pretty(value).unwrap_or_default() } else { for_terminal(&text()) };
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
            self.note(&format!("error: {e}"));
        }
        ExitCode::from(code)
    }

    /// Print a line for a person on stderr (a warning, progress, the
    /// reason beside a failed call's result), escaped like all text output.
    pub fn note(&self, line: &str) {
        eprintln!("{}", for_terminal(line));
    }

    /// A spinner on stderr naming a step that may take a while (a build,
    /// the first compile of a component), shown only once the step has run
    /// for a second, only on a terminal and never under `--json`; it is
    /// cleared when the returned guard drops.
    pub fn progress(&self, step: &str) -> Progress {
        use std::io::IsTerminal;
        if self.json || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::hidden();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(for_terminal(step));
        let shown = bar.clone();
        let timer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(1));
            if !shown.is_finished() {
                shown.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                shown.enable_steady_tick(std::time::Duration::from_millis(120));
            }
        });
        drop(timer);
        Progress(Some(bar))
    }
}

impl Out {
    /// A progress bar on stderr for `total` steps, on a terminal only and
    /// never under `--json` (`None` then).
    pub fn bar(&self, total: u64, step: &str) -> Option<indicatif::ProgressBar> {
        use std::io::IsTerminal;
        if self.json || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} ({per_sec}, {eta} left)")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(for_terminal(step));
        Some(bar)
    }
}

/// The guard of [`Out::progress`]: clears the spinner when dropped.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
